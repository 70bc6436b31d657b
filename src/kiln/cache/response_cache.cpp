// ResponseCache: wiring of the exact and semantic caches, the snapshot and
// the Redis sync.
#include "kiln/cache/response_cache.h"

#include <fmt/format.h>

#include <random>

#include "kiln/cache/cache_snapshot.h"

namespace kiln::cache {

namespace {
uint64_t inserts_of(const ExactCache* e, const SemanticCache* s) {
  return (e ? e->counters().inserts.load() : 0) + (s ? s->counters().inserts.load() : 0);
}
}  // namespace

ResponseCache::ResponseCache(ResponseCacheConfig cfg, TextEmbedder* embedder)
    : cfg_(std::move(cfg)), embedder_(embedder) {}

Result<std::unique_ptr<ResponseCache>> ResponseCache::create(ResponseCacheConfig cfg,
                                                             TextEmbedder* embedder) {
  if (cfg.semantic && !embedder)
    return make_error("--semantic-cache needs an embedding model: pass --embedding-model FILE");
  if (cfg.semantic_threshold <= 0.0f || cfg.semantic_threshold > 1.0f)
    return make_error("--semantic-threshold must be in (0, 1]");
  if (cfg.origin.empty()) {
    std::mt19937_64 rng(std::random_device{}());
    cfg.origin = fmt::format("{:016x}", rng());
  }
  std::unique_ptr<ResponseCache> rc(new ResponseCache(std::move(cfg), embedder));
  const auto& c = rc->cfg_;
  if (c.exact) rc->exact_ = std::make_unique<ExactCache>(c.limits);
  if (c.semantic) {
    SemanticConfig sc;
    sc.limits = c.limits;
    sc.threshold = c.semantic_threshold;
    rc->semantic_ = std::make_unique<SemanticCache>(sc, embedder->dim());
  }
  if (!rc->exact_ && !rc->semantic_) return rc;  // everything off: an inert cache
  if (!c.dir.empty()) {
    auto snap = load_snapshot(c.dir);
    if (!snap) return snap.error();
    const bool same_embedder = rc->semantic_ && snap->header.embedder == embedder->model_id() &&
                               snap->header.dim == embedder->dim();
    for (auto& e : snap->entries) {
      if (e.kind == CacheKind::semantic && !same_embedder) continue;
      rc->apply(std::move(e));
      ++rc->loaded_;
    }
  }
  if (!c.redis.url.empty()) {
    auto sync = RedisSync::create(c.redis, c.origin,
                                  [raw = rc.get()](CacheEntry e) { raw->apply(std::move(e)); });
    if (!sync) return sync.error();
    rc->redis_ = std::move(*sync);
    rc->redis_->start();
  }
  if (!c.dir.empty() && c.save_interval_ms > 0)
    rc->saver_ = std::thread([raw = rc.get()] { raw->saver_loop(); });
  return rc;
}

ResponseCache::~ResponseCache() {
  {
    std::lock_guard<std::mutex> lock(saver_mu_);
    saver_stop_ = true;
  }
  saver_cv_.notify_all();
  if (saver_.joinable()) saver_.join();
  if (redis_) redis_->stop();
  if (auto st = save(); !st) std::fprintf(stderr, "kiln cache: %s\n", st.message().c_str());
}

void ResponseCache::apply(CacheEntry e) {
  const int64_t now = unix_ms_now();
  if (e.kind == CacheKind::exact) {
    if (exact_) exact_->insert(std::move(e), now);
  } else if (semantic_ && int32_t(e.vec.size()) == semantic_->dim()) {
    // The partition names the embedder, so vectors of another model never
    // land where this one's are compared.
    semantic_->insert(std::move(e), now);
  }
}

EntryPtr ResponseCache::lookup_exact(const std::string& key) {
  if (!exact_) return nullptr;
  return exact_->lookup(key, unix_ms_now());
}

void ResponseCache::store_exact(const std::string& key, std::string payload) {
  if (!exact_) return;
  CacheEntry e;
  e.kind = CacheKind::exact;
  e.key = key;
  e.payload = std::move(payload);
  const int64_t now = unix_ms_now();
  if (cfg_.limits.ttl_ms > 0) e.expires_ms = now + cfg_.limits.ttl_ms;
  if (redis_) redis_->publish(e);
  exact_->insert(std::move(e), now);
}

bool ResponseCache::seed_exact(const std::string& key, std::string payload) {
  if (!exact_) return false;
  CacheEntry e;
  e.kind = CacheKind::exact;
  e.key = key;
  e.payload = std::move(payload);
  return exact_->insert(std::move(e), unix_ms_now());
}

Result<std::vector<float>> ResponseCache::embed(std::string_view text) {
  if (!embedder_) return make_error("no embedding model");
  return embedder_->embed(text);
}

std::optional<SemanticHit> ResponseCache::lookup_semantic(const std::string& partition,
                                                          std::string_view text,
                                                          const std::vector<float>& vec) {
  if (!semantic_) return std::nullopt;
  return semantic_->lookup(partition, text, vec, unix_ms_now());
}

void ResponseCache::store_semantic(const std::string& partition, std::string text,
                                   std::vector<float> vec, std::string payload) {
  if (!semantic_) return;
  CacheEntry e;
  e.kind = CacheKind::semantic;
  e.partition = partition;
  e.key = SemanticCache::entry_key(partition, text);
  e.text = std::move(text);
  e.vec = std::move(vec);  // normalized by SemanticCache::insert, here and on every receiver
  e.payload = std::move(payload);
  const int64_t now = unix_ms_now();
  if (cfg_.limits.ttl_ms > 0) e.expires_ms = now + cfg_.limits.ttl_ms;
  if (redis_) redis_->publish(e);
  semantic_->insert(std::move(e), now);
}

Status ResponseCache::save() {
  if (cfg_.dir.empty() || (!exact_ && !semantic_)) return Status::success();
  std::lock_guard<std::mutex> lock(save_mu_);
  const int64_t now = unix_ms_now();
  std::vector<EntryPtr> all;
  if (exact_) all = exact_->snapshot(now);
  if (semantic_) {
    auto s = semantic_->snapshot(now);
    all.insert(all.end(), s.begin(), s.end());
  }
  SnapshotHeader h;
  h.embedder = embedder_id();
  h.dim = embedder_ ? embedder_->dim() : 0;
  return save_snapshot(cfg_.dir, h, all);
}

void ResponseCache::saver_loop() {
  uint64_t saved_at = inserts_of(exact_.get(), semantic_.get());
  std::unique_lock<std::mutex> lock(saver_mu_);
  while (!saver_stop_) {
    saver_cv_.wait_for(lock, std::chrono::milliseconds(cfg_.save_interval_ms),
                       [&] { return saver_stop_; });
    if (saver_stop_) break;
    const uint64_t now = inserts_of(exact_.get(), semantic_.get());
    if (now == saved_at) continue;  // nothing new: no disk write
    lock.unlock();
    if (auto st = save(); !st) std::fprintf(stderr, "kiln cache: %s\n", st.message().c_str());
    saved_at = now;
    lock.lock();
  }
}

}  // namespace kiln::cache
