// The response caches of one kiln serve process: exact and (optionally)
// semantic, persisted to --cache-dir and shared through --cache-redis.
// The server decides what a key or partition is (server/response_caching.h);
// this class stores, finds, shares and persists. Every call is non-blocking
// with respect to the network: Redis traffic runs on RedisSync's threads.
#pragma once

#include <atomic>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

#include "kiln/cache/embedder.h"
#include "kiln/cache/exact_cache.h"
#include "kiln/cache/redis_sync.h"
#include "kiln/cache/semantic_cache.h"

namespace kiln::cache {

struct ResponseCacheConfig {
  bool exact = true;      // kill switch: --no-response-cache / KILN_RESPONSE_CACHE=off
  bool semantic = false;  // --semantic-cache (needs an embedder)
  // Cache answers of sampled requests without a seed too (--cache-nondeterministic):
  // every later identical request then gets that one sample.
  bool nondeterministic = false;
  CacheLimits limits;  // --cache-max-entries / --cache-max-bytes / --cache-ttl (each cache)
  float semantic_threshold = 0.95f;  // --semantic-threshold
  std::string dir;                   // --cache-dir; empty: nothing persisted
  int64_t save_interval_ms = 30000;  // snapshot period while entries change (with dir)
  RedisSyncConfig redis;             // redis.url empty: not shared
  std::string origin;                // this instance's id in Redis announcements (random if empty)
};

class ResponseCache {
 public:
  // `embedder` may be null unless cfg.semantic; it must outlive the cache.
  // Loads the --cache-dir snapshot, starts the Redis threads and the saver.
  static Result<std::unique_ptr<ResponseCache>> create(ResponseCacheConfig cfg,
                                                       TextEmbedder* embedder);
  ~ResponseCache();  // stops the threads, writes a last snapshot
  ResponseCache(const ResponseCache&) = delete;
  ResponseCache& operator=(const ResponseCache&) = delete;

  const ResponseCacheConfig& config() const { return cfg_; }
  bool exact_enabled() const { return exact_ != nullptr; }
  bool semantic_enabled() const { return semantic_ != nullptr; }

  // ---- exact -------------------------------------------------------------
  EntryPtr lookup_exact(const std::string& key);
  // Stores locally and shares (Redis).
  void store_exact(const std::string& key, std::string payload);
  // Seeding (recorded outputs, e.g. a baked artifact's warm prompts): stored
  // locally only; every instance seeds itself from the same artifact.
  bool seed_exact(const std::string& key, std::string payload);

  // ---- semantic ----------------------------------------------------------
  Result<std::vector<float>> embed(std::string_view text);
  std::optional<SemanticHit> lookup_semantic(const std::string& partition, std::string_view text,
                                             const std::vector<float>& vec);
  void store_semantic(const std::string& partition, std::string text, std::vector<float> vec,
                      std::string payload);
  std::string embedder_id() const { return embedder_ ? embedder_->model_id() : std::string(); }

  // ---- persistence, sharing, metrics -------------------------------------
  Status save();  // writes the snapshot now (no-op without a dir)
  const ExactCache* exact() const { return exact_.get(); }
  const SemanticCache* semantic() const { return semantic_.get(); }
  const RedisSync* redis() const { return redis_.get(); }
  size_t loaded_from_disk() const { return loaded_; }

 private:
  explicit ResponseCache(ResponseCacheConfig cfg, TextEmbedder* embedder);
  void apply(CacheEntry e);  // an entry from Redis or the snapshot
  void saver_loop();

  ResponseCacheConfig cfg_;
  TextEmbedder* embedder_;
  std::unique_ptr<ExactCache> exact_;
  std::unique_ptr<SemanticCache> semantic_;
  std::unique_ptr<RedisSync> redis_;
  size_t loaded_ = 0;

  std::mutex save_mu_;  // one snapshot at a time
  std::mutex saver_mu_;
  std::condition_variable saver_cv_;
  bool saver_stop_ = false;
  std::thread saver_;
};

}  // namespace kiln::cache
