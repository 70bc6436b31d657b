// The size-, count- and TTL-bounded LRU map both response caches keep their
// entries in. Not thread-safe: the cache that owns it holds the lock, so that
// its own side structures (the HNSW index) change in the same critical section.
#pragma once

#include <cstdint>
#include <functional>
#include <list>
#include <string>
#include <unordered_map>
#include <vector>

#include "kiln/cache/cache_entry.h"

namespace kiln::cache {

struct CacheLimits {
  size_t max_entries = 10000;
  size_t max_bytes = 256u << 20;
  int64_t ttl_ms = 3600 * 1000;  // 0: entries never expire
};

enum class RemoveReason { replaced, evicted, expired };

class LruStore {
 public:
  // Called for every entry leaving the store, before it is gone.
  using RemoveFn = std::function<void(const CacheEntry&, RemoveReason)>;
  explicit LruStore(CacheLimits limits, RemoveFn on_remove = {});

  // Inserts (or replaces) as most recently used, evicting the least recently
  // used entries to fit. An entry's expiry is the earlier of its own
  // (e.g. set by another instance) and now + ttl. false: not stored (larger
  // than max_bytes alone, or already expired).
  bool put(EntryPtr e, int64_t now_ms);
  // The live entry under `key`, made most recently used; expired -> removed.
  EntryPtr get(const std::string& key, int64_t now_ms);
  // The entry without touching the LRU order or expiry (side lookups).
  EntryPtr peek(const std::string& key) const;
  bool erase(const std::string& key);
  // Removes every expired entry.
  void purge_expired(int64_t now_ms);
  // Live entries, least recently used first (so replaying them with put()
  // restores the order).
  std::vector<EntryPtr> snapshot(int64_t now_ms) const;

  size_t size() const { return map_.size(); }
  size_t bytes() const { return bytes_; }
  uint64_t evictions() const { return evictions_; }
  uint64_t expirations() const { return expirations_; }
  const CacheLimits& limits() const { return limits_; }

 private:
  struct Slot {
    EntryPtr entry;
    std::list<std::string>::iterator pos;  // in order_
    size_t bytes = 0;
  };
  void remove(std::unordered_map<std::string, Slot>::iterator it, RemoveReason why);
  static bool expired(const CacheEntry& e, int64_t now_ms) {
    return e.expires_ms != 0 && e.expires_ms <= now_ms;
  }

  CacheLimits limits_;
  RemoveFn on_remove_;
  std::list<std::string> order_;  // front: most recently used
  std::unordered_map<std::string, Slot> map_;
  size_t bytes_ = 0;
  uint64_t evictions_ = 0, expirations_ = 0;
  int64_t next_purge_ms_ = 0;
};

}  // namespace kiln::cache
