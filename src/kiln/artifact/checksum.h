// Integrity trailer of baked artifact files (weights.bin, warm.bin): XXH3-64
// of the file's header and of every fixed-size chunk of its body, appended at
// the end so the body is written first and the front of the file stays a
// standard format (GGUF readers ignore bytes after the last tensor). Chunks
// let verification run on every core (or inside a loader's read pipeline):
// a multi-GB check costs a fraction of a second from the page cache.
//
// Layout, little-endian, at the very end of the file:
//   u64 chunk_xxh3[n_chunks]  XXH3-64 of body chunk i: bytes
//                             [header_bytes + i*chunk_size, + min(chunk_size, rest))
//   u64 header_xxh3           XXH3-64 of bytes [0, header_bytes)
//   u64 header_bytes
//   u64 body_bytes
//   u64 chunk_size
//   u64 n_chunks              ceil(body_bytes / chunk_size)
//   u64 trailer_xxh3          XXH3-64 of the trailer bytes before this field
//   char magic[8]             "KILNSUM1"
// so file size = header_bytes + body_bytes + 8 * n_chunks + 56: a truncated
// or extended file fails before any hashing.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "kiln/core/status.h"

namespace kiln {
class ThreadPool;
}

namespace kiln::artifact {

inline constexpr uint64_t kDefaultChunkSize = 16ull << 20;
inline constexpr size_t kTrailerFixedBytes = 56;

struct Integrity {
  uint64_t header_bytes = 0;
  uint64_t body_bytes = 0;
  uint64_t chunk_size = 0;
  uint64_t header_xxh3 = 0;
  std::vector<uint64_t> chunk_xxh3;  // [n_chunks]
  // XXH3-128 of the trailer (hex, 32 digits): names the whole file's content,
  // so warm.bin can say which weights.bin it was baked against.
  std::string digest;

  uint64_t trailer_bytes() const { return 8 * chunk_xxh3.size() + kTrailerFixedBytes; }
  uint64_t file_bytes() const { return header_bytes + body_bytes + trailer_bytes(); }
};

// Hashes `path` (header = its first header_bytes bytes, body = the rest) and
// appends the trailer, then fsyncs. `pool` spreads the chunks over threads.
Result<Integrity> append_integrity_trailer(const std::string& path, uint64_t header_bytes,
                                           ThreadPool& pool,
                                           uint64_t chunk_size = kDefaultChunkSize);

// Reads and checks the trailer's structure (magic, its own checksum, sizes
// against the file's); hashes nothing else. `name` prefixes messages.
Result<Integrity> read_integrity_trailer(std::span<const uint8_t> file, const std::string& name);

// Verifies the header and (unless !body: a loader that checks chunks with
// verify_chunk as it reads them) every body chunk of a whole file image.
Status verify_integrity(std::span<const uint8_t> file, const Integrity& in, ThreadPool& pool,
                        const std::string& name, bool body = true);
// One body chunk, for a loader that verifies as it reads: `chunk` is body
// chunk i (its exact bytes).
Status verify_chunk(const Integrity& in, uint64_t i, std::span<const uint8_t> chunk,
                    const std::string& name);

// Hex of XXH3-128 over a file image hashed in chunk_size pieces in parallel
// (XXH3-64 per chunk, then XXH3-128 over those and the size): the source
// model's identity in the fingerprint.
std::string content_hash(std::span<const uint8_t> bytes, ThreadPool& pool,
                         uint64_t chunk_size = kDefaultChunkSize);

}  // namespace kiln::artifact
