// One cached response, as the local caches, the --cache-dir snapshot and the
// Redis sync all hold it. The payload (the recorded response) is opaque here:
// the server writes and replays it.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "kiln/core/status.h"

namespace kiln::cache {

enum class CacheKind : uint8_t { exact, semantic };
const char* kind_name(CacheKind k);

struct CacheEntry {
  CacheKind kind = CacheKind::exact;
  // exact: hash of the normalized request; semantic: hash of partition + text.
  std::string key;
  std::string payload;     // the recorded response
  int64_t expires_ms = 0;  // Unix milliseconds; 0: no expiry
  // Semantic entries only.
  std::string partition;   // hash of model, embedder, conversation before the last turn, sampling
  std::string text;        // the last user turn, which the false-hit guard compares
  std::vector<float> vec;  // [dim] L2-normalized embedding of `text`

  // What the entry costs in memory (the --cache-max-bytes accounting).
  size_t bytes() const {
    return sizeof(CacheEntry) + key.size() + payload.size() + partition.size() + text.size() +
           vec.size() * sizeof(float);
  }
};
using EntryPtr = std::shared_ptr<const CacheEntry>;

// One JSON object per entry: the line format of the --cache-dir snapshot and
// the value format in Redis. Vectors travel as base64 of little-endian f32
// (exact round trip, a third of the size of decimal text).
std::string entry_to_json(const CacheEntry& e);
Result<CacheEntry> entry_from_json(std::string_view text);

int64_t unix_ms_now();

// 128-bit hash, as 32 lowercase hex digits (keys, partitions).
std::string hash_hex(std::string_view data);

void l2_normalize(std::vector<float>& v);

}  // namespace kiln::cache
