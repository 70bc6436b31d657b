// LruStore: a list for recency plus a hash map into it.
#include "kiln/cache/lru_store.h"

#include <algorithm>

namespace kiln::cache {

LruStore::LruStore(CacheLimits limits, RemoveFn on_remove)
    : limits_(limits), on_remove_(std::move(on_remove)) {}

void LruStore::remove(std::unordered_map<std::string, Slot>::iterator it, RemoveReason why) {
  if (on_remove_) on_remove_(*it->second.entry, why);
  if (why == RemoveReason::evicted) ++evictions_;
  if (why == RemoveReason::expired) ++expirations_;
  bytes_ -= it->second.bytes;
  order_.erase(it->second.pos);
  map_.erase(it);
}

bool LruStore::put(EntryPtr e, int64_t now_ms) {
  // Expired entries are swept now and then rather than on every put: a full
  // scan per insert would make inserts O(n).
  if (now_ms >= next_purge_ms_) purge_expired(now_ms);
  if (limits_.ttl_ms > 0) {
    const int64_t local = now_ms + limits_.ttl_ms;
    if (e->expires_ms == 0 || e->expires_ms > local) {
      auto copy = std::make_shared<CacheEntry>(*e);
      copy->expires_ms = local;
      e = std::move(copy);
    }
  }
  if (expired(*e, now_ms)) return false;
  const size_t b = e->bytes();
  if (b > limits_.max_bytes || limits_.max_entries == 0) return false;
  if (auto it = map_.find(e->key); it != map_.end()) remove(it, RemoveReason::replaced);
  while (!order_.empty() &&
         (map_.size() + 1 > limits_.max_entries || bytes_ + b > limits_.max_bytes))
    remove(map_.find(order_.back()), RemoveReason::evicted);
  order_.push_front(e->key);
  const std::string key = e->key;
  map_.emplace(key, Slot{std::move(e), order_.begin(), b});
  bytes_ += b;
  return true;
}

EntryPtr LruStore::get(const std::string& key, int64_t now_ms) {
  auto it = map_.find(key);
  if (it == map_.end()) return nullptr;
  if (expired(*it->second.entry, now_ms)) {
    remove(it, RemoveReason::expired);
    return nullptr;
  }
  order_.splice(order_.begin(), order_, it->second.pos);
  return it->second.entry;
}

EntryPtr LruStore::peek(const std::string& key) const {
  auto it = map_.find(key);
  return it == map_.end() ? nullptr : it->second.entry;
}

bool LruStore::erase(const std::string& key) {
  auto it = map_.find(key);
  if (it == map_.end()) return false;
  remove(it, RemoveReason::replaced);
  return true;
}

void LruStore::purge_expired(int64_t now_ms) {
  for (auto it = map_.begin(); it != map_.end();) {
    auto next = std::next(it);
    if (expired(*it->second.entry, now_ms)) remove(it, RemoveReason::expired);
    it = next;
  }
  // A sweep costs O(n): at most every second, or every tenth of the TTL.
  next_purge_ms_ = now_ms + std::clamp<int64_t>(limits_.ttl_ms / 10, 10, 1000);
}

std::vector<EntryPtr> LruStore::snapshot(int64_t now_ms) const {
  std::vector<EntryPtr> out;
  out.reserve(map_.size());
  for (auto it = order_.rbegin(); it != order_.rend(); ++it) {
    const auto& e = map_.at(*it).entry;
    if (!expired(*e, now_ms)) out.push_back(e);
  }
  return out;
}

}  // namespace kiln::cache
