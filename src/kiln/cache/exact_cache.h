// The exact-match response cache: key -> recorded response, LRU with size,
// count and TTL bounds. Thread-safe (one mutex; every operation is a hash
// lookup or an eviction, so the lock is held for microseconds).
#pragma once

#include <mutex>

#include "kiln/cache/cache_stats.h"
#include "kiln/cache/lru_store.h"

namespace kiln::cache {

class ExactCache {
 public:
  explicit ExactCache(CacheLimits limits);

  // Counts a hit or a miss.
  EntryPtr lookup(const std::string& key, int64_t now_ms);
  // Stores (replacing one with the same key); false when not stored.
  bool insert(CacheEntry e, int64_t now_ms);
  std::vector<EntryPtr> snapshot(int64_t now_ms) const;
  size_t size() const;

  const CacheCounters& counters() const { return c_; }
  CacheCounters& counters() { return c_; }

 private:
  void sync_gauges();

  mutable std::mutex mu_;
  LruStore store_;
  CacheCounters c_;
};

}  // namespace kiln::cache
