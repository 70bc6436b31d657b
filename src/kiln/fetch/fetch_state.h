// The sidecar file that makes a pull resumable: which chunks of
// DEST.partial are complete, for which remote object and chunk layout.
// Layout (JSON, rewritten atomically after each chunk):
//   {"version":1, "url":..., "size":N, "validator":..., "chunk_size":C, "done":[i, ...]}
// Also the completion record DEST.fetch.json that lets `kiln serve` reuse a
// verified download: {"version":1, "url":..., "size":N, "validator":..., "verified":...}.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "kiln/core/status.h"

namespace kiln::fetch {

struct FetchState {
  std::string url;
  uint64_t size = 0;
  std::string validator;
  uint64_t chunk_size = 0;
  std::vector<bool> done;  // one per chunk
};

// Missing, unreadable or malformed files read as "nothing to resume".
std::optional<FetchState> load_fetch_state(const std::string& path);
// Write-then-rename, so a crash leaves either the old or the new state.
Status save_fetch_state(const std::string& path, const FetchState& s);

struct FetchRecord {
  std::string url;
  uint64_t size = 0;
  std::string validator;
  std::string verified;
};
std::optional<FetchRecord> load_fetch_record(const std::string& path);
Status save_fetch_record(const std::string& path, const FetchRecord& r);

// Write `text` to `path` through a temporary file and rename.
Status write_file_atomic(const std::string& path, const std::string& text);

}  // namespace kiln::fetch
