// ExactCache: an LruStore behind a mutex, with hit/miss/eviction counters.
#include "kiln/cache/exact_cache.h"

namespace kiln::cache {

ExactCache::ExactCache(CacheLimits limits)
    : store_(limits, [this](const CacheEntry&, RemoveReason why) {
        if (why == RemoveReason::evicted) c_.evictions.fetch_add(1, std::memory_order_relaxed);
        if (why == RemoveReason::expired) c_.expirations.fetch_add(1, std::memory_order_relaxed);
      }) {}

void ExactCache::sync_gauges() {
  c_.entries.store(store_.size(), std::memory_order_relaxed);
  c_.bytes.store(store_.bytes(), std::memory_order_relaxed);
}

EntryPtr ExactCache::lookup(const std::string& key, int64_t now_ms) {
  std::lock_guard<std::mutex> lock(mu_);
  EntryPtr e = store_.get(key, now_ms);
  (e ? c_.hits : c_.misses).fetch_add(1, std::memory_order_relaxed);
  sync_gauges();
  return e;
}

bool ExactCache::insert(CacheEntry e, int64_t now_ms) {
  e.kind = CacheKind::exact;
  std::lock_guard<std::mutex> lock(mu_);
  const bool ok = store_.put(std::make_shared<const CacheEntry>(std::move(e)), now_ms);
  if (ok) c_.inserts.fetch_add(1, std::memory_order_relaxed);
  sync_gauges();
  return ok;
}

std::vector<EntryPtr> ExactCache::snapshot(int64_t now_ms) const {
  std::lock_guard<std::mutex> lock(mu_);
  return store_.snapshot(now_ms);
}

size_t ExactCache::size() const {
  std::lock_guard<std::mutex> lock(mu_);
  return store_.size();
}

}  // namespace kiln::cache
