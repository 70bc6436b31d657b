// Counters of one response cache, read by /metrics (lock-free reads).
#pragma once

#include <atomic>
#include <cstdint>

namespace kiln::cache {

struct CacheCounters {
  std::atomic<uint64_t> hits{0};
  std::atomic<uint64_t> misses{0};
  std::atomic<uint64_t> guard_rejections{0};  // semantic: similar enough, refused by the guard
  std::atomic<uint64_t> evictions{0};         // pushed out by the size/count bounds
  std::atomic<uint64_t> expirations{0};       // TTL ran out
  std::atomic<uint64_t> inserts{0};           // stored locally (own, remote, seeded, loaded)
  std::atomic<uint64_t> entries{0};           // gauge: entries held now
  std::atomic<uint64_t> bytes{0};             // gauge: bytes held now
};

}  // namespace kiln::cache
