// --cache-dir: the local caches written to disk and read back at start, for
// deployments whose disk outlives the process (not Cloud Run: its disk is
// memory; use --cache-redis there).
//
// Layout: DIR/responses.jsonl, JSON lines. Line 1 is a header
//   {"kiln_response_cache": 1, "embedder": "<model id>", "dim": N}
// then one entry per line (cache_entry.h's entry_to_json), least recently
// used first. Written to a temporary file and renamed, so a crash leaves the
// previous snapshot whole.
#pragma once

#include <string>
#include <vector>

#include "kiln/cache/cache_entry.h"

namespace kiln::cache {

struct SnapshotHeader {
  std::string embedder;  // semantic entries are kept only if the embedder is the same
  int32_t dim = 0;
};

Status save_snapshot(const std::string& dir, const SnapshotHeader& header,
                     const std::vector<EntryPtr>& entries);

struct LoadedSnapshot {
  SnapshotHeader header;
  std::vector<CacheEntry> entries;
  size_t skipped = 0;  // unreadable lines
};
// A missing file is an empty snapshot, not an error.
Result<LoadedSnapshot> load_snapshot(const std::string& dir);

}  // namespace kiln::cache
