// The semantic response cache: entries are (partition, last user turn,
// embedding, response). A lookup searches the partition's HNSW graph and
// serves the most similar entry whose similarity reaches the threshold and
// which the false-hit guard accepts. Partitions keep answers apart that must
// never mix (another model, system prompt, history or sampling setting).
// Thread-safe: one mutex over the store and every partition's graph.
#pragma once

#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <unordered_map>

#include "kiln/cache/cache_stats.h"
#include "kiln/cache/hnsw_index.h"
#include "kiln/cache/lru_store.h"

namespace kiln::cache {

struct SemanticConfig {
  CacheLimits limits;
  float threshold = 0.95f;  // --semantic-threshold: cosine similarity a hit needs
  bool guard = true;        // the false-hit guard (off only in tests that measure the raw index)
  size_t k = 8;             // candidates examined per lookup
};

struct SemanticHit {
  EntryPtr entry;
  float similarity = 0;
};

class SemanticCache {
 public:
  SemanticCache(SemanticConfig cfg, int32_t dim);

  // `vec` [dim] (normalized here). Counts a hit, a miss, or a guard
  // rejection (a candidate reached the threshold but every such candidate
  // failed the guard; that also counts as a miss).
  std::optional<SemanticHit> lookup(const std::string& partition, std::string_view text,
                                    std::vector<float> vec, int64_t now_ms);
  // `e.partition`, `e.text`, `e.vec` set; the key is derived from partition
  // and text. false: not stored (wrong dimension, too large, expired).
  bool insert(CacheEntry e, int64_t now_ms);
  std::vector<EntryPtr> snapshot(int64_t now_ms) const;

  size_t size() const;
  size_t n_partitions() const;
  int32_t dim() const { return dim_; }
  const SemanticConfig& config() const { return cfg_; }
  const CacheCounters& counters() const { return c_; }
  CacheCounters& counters() { return c_; }

  static std::string entry_key(const std::string& partition, std::string_view text);

 private:
  struct Located {
    std::string partition;
    uint64_t label = 0;
  };
  void on_remove(const CacheEntry& e, RemoveReason why);
  void sync_gauges();

  SemanticConfig cfg_;
  int32_t dim_;
  mutable std::mutex mu_;
  std::map<std::string, std::unique_ptr<HnswIndex>> partitions_;
  std::unordered_map<std::string, Located> where_;       // entry key -> its graph slot
  std::unordered_map<uint64_t, std::string> label_key_;  // graph label -> entry key
  uint64_t next_label_ = 1;
  LruStore store_;  // after the maps: its removal hook touches them
  CacheCounters c_;
};

}  // namespace kiln::cache
