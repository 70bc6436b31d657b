// SemanticCache: LruStore for the entries, one HnswIndex per partition, the
// false-hit guard on every candidate above the threshold.
#include "kiln/cache/semantic_cache.h"

#include "kiln/cache/false_hit_guard.h"

namespace kiln::cache {

SemanticCache::SemanticCache(SemanticConfig cfg, int32_t dim)
    : cfg_(cfg),
      dim_(dim),
      store_(cfg.limits, [this](const CacheEntry& e, RemoveReason why) { on_remove(e, why); }) {}

std::string SemanticCache::entry_key(const std::string& partition, std::string_view text) {
  std::string m = partition;
  m += '\x1f';
  m += text;
  return hash_hex(m);
}

void SemanticCache::sync_gauges() {
  c_.entries.store(store_.size(), std::memory_order_relaxed);
  c_.bytes.store(store_.bytes(), std::memory_order_relaxed);
}

// Runs under mu_ (called from the store).
void SemanticCache::on_remove(const CacheEntry& e, RemoveReason why) {
  if (why == RemoveReason::evicted) c_.evictions.fetch_add(1, std::memory_order_relaxed);
  if (why == RemoveReason::expired) c_.expirations.fetch_add(1, std::memory_order_relaxed);
  auto w = where_.find(e.key);
  if (w == where_.end()) return;
  auto p = partitions_.find(w->second.partition);
  label_key_.erase(w->second.label);
  if (p != partitions_.end()) {
    p->second->remove(w->second.label);
    if (p->second->live() == 0) partitions_.erase(p);
  }
  where_.erase(w);
}

std::optional<SemanticHit> SemanticCache::lookup(const std::string& partition,
                                                 std::string_view text, std::vector<float> vec,
                                                 int64_t now_ms) {
  if (int32_t(vec.size()) != dim_) {
    c_.misses.fetch_add(1, std::memory_order_relaxed);
    return std::nullopt;
  }
  l2_normalize(vec);
  std::lock_guard<std::mutex> lock(mu_);
  auto p = partitions_.find(partition);
  bool rejected = false;
  if (p != partitions_.end()) {
    for (const auto& [label, sim] : p->second->search(vec, cfg_.k)) {
      if (sim < cfg_.threshold) break;  // best first: the rest are lower
      auto k = label_key_.find(label);
      if (k == label_key_.end()) continue;
      // peek, then get only for the one served: get() may expire the entry,
      // which changes the graph under this loop.
      EntryPtr e = store_.peek(k->second);
      if (!e || (e->expires_ms != 0 && e->expires_ms <= now_ms)) continue;
      if (cfg_.guard && !false_hit_guard(text, e->text).pass) {
        rejected = true;
        continue;
      }
      store_.get(e->key, now_ms);  // mark as recently used
      c_.hits.fetch_add(1, std::memory_order_relaxed);
      return SemanticHit{e, sim};
    }
  }
  if (rejected) c_.guard_rejections.fetch_add(1, std::memory_order_relaxed);
  c_.misses.fetch_add(1, std::memory_order_relaxed);
  return std::nullopt;
}

bool SemanticCache::insert(CacheEntry e, int64_t now_ms) {
  if (int32_t(e.vec.size()) != dim_) return false;
  e.kind = CacheKind::semantic;
  l2_normalize(e.vec);
  e.key = entry_key(e.partition, e.text);
  auto ptr = std::make_shared<const CacheEntry>(std::move(e));
  std::lock_guard<std::mutex> lock(mu_);
  // The store first: replacing or evicting runs on_remove, which frees
  // graph slots before the new one is added.
  if (!store_.put(ptr, now_ms)) {
    sync_gauges();
    return false;
  }
  EntryPtr stored = store_.peek(ptr->key);
  auto& graph = partitions_[stored->partition];
  if (!graph) graph = std::make_unique<HnswIndex>(dim_);
  const uint64_t label = next_label_++;
  graph->add(label, stored->vec);
  where_[stored->key] = Located{stored->partition, label};
  label_key_[label] = stored->key;
  c_.inserts.fetch_add(1, std::memory_order_relaxed);
  sync_gauges();
  return true;
}

std::vector<EntryPtr> SemanticCache::snapshot(int64_t now_ms) const {
  std::lock_guard<std::mutex> lock(mu_);
  return store_.snapshot(now_ms);
}

size_t SemanticCache::size() const {
  std::lock_guard<std::mutex> lock(mu_);
  return store_.size();
}

size_t SemanticCache::n_partitions() const {
  std::lock_guard<std::mutex> lock(mu_);
  return partitions_.size();
}

}  // namespace kiln::cache
