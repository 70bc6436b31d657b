// RedisSync over hiredis 0.14's blocking API, used only on its own threads
// with connect and read/write timeouts, so a dead or slow Redis costs those
// threads time and never a request.
#include "kiln/cache/redis_sync.h"

#include <fmt/format.h>
#if KILN_HAVE_HIREDIS
#include <hiredis/hiredis.h>
#endif
#include <sys/time.h>

#include <algorithm>
#include <cstdio>
#include <vector>

namespace kiln::cache {

#if KILN_HAVE_HIREDIS
namespace {

timeval to_timeval(int ms) {
  timeval tv;
  tv.tv_sec = ms / 1000;
  tv.tv_usec = (ms % 1000) * 1000;
  return tv;
}

struct ReplyDeleter {
  void operator()(redisReply* r) const {
    if (r) freeReplyObject(r);
  }
};
using Reply = std::unique_ptr<redisReply, ReplyDeleter>;

std::string str_of(const redisReply* r) {
  return (r && (r->type == REDIS_REPLY_STRING || r->type == REDIS_REPLY_STATUS))
             ? std::string(r->str, r->len)
             : std::string();
}

}  // namespace

struct RedisSync::Conn {
  redisContext* ctx = nullptr;
  ~Conn() {
    if (ctx) redisFree(ctx);
  }
  // nullptr: the connection is broken (ctx->err says why).
  Reply command(const std::vector<std::string>& args) {
    std::vector<const char*> argv;
    std::vector<size_t> lens;
    for (const auto& a : args) {
      argv.push_back(a.data());
      lens.push_back(a.size());
    }
    return Reply(static_cast<redisReply*>(
        redisCommandArgv(ctx, int(args.size()), argv.data(), lens.data())));
  }
  void append(const std::vector<std::string>& args) {
    std::vector<const char*> argv;
    std::vector<size_t> lens;
    for (const auto& a : args) {
      argv.push_back(a.data());
      lens.push_back(a.size());
    }
    redisAppendCommandArgv(ctx, int(args.size()), argv.data(), lens.data());
  }
  Reply get_reply() {
    void* r = nullptr;
    if (redisGetReply(ctx, &r) != REDIS_OK) return nullptr;
    return Reply(static_cast<redisReply*>(r));
  }
  std::string error() const { return ctx ? std::string(ctx->errstr) : "no connection"; }
};

#else
// Built without hiredis: create() refuses, so nothing below ever runs.
struct RedisSync::Conn {};
#endif

Result<std::unique_ptr<RedisSync>> RedisSync::create(RedisSyncConfig cfg, std::string origin,
                                                     Apply apply, Log log) {
#if !KILN_HAVE_HIREDIS
  return make_error("--cache-redis: this kiln was built without hiredis, so caches cannot be "
                    "shared through Redis; install libhiredis-dev (scripts/setup) and rebuild");
#endif
  auto ep = parse_redis_url(cfg.url);
  if (!ep) return ep.error();
  if (!log) log = [](const std::string& m) { std::fprintf(stderr, "kiln cache: %s\n", m.c_str()); };
  return std::unique_ptr<RedisSync>(
      new RedisSync(std::move(cfg), *ep, std::move(origin), std::move(apply), std::move(log)));
}

RedisSync::RedisSync(RedisSyncConfig cfg, RedisEndpoint ep, std::string origin, Apply apply,
                     Log log)
    : cfg_(std::move(cfg)),
      ep_(std::move(ep)),
      origin_(std::move(origin)),
      apply_(std::move(apply)),
      log_(std::move(log)) {}

RedisSync::~RedisSync() {
  stop();
}

void RedisSync::start() {
  std::lock_guard<std::mutex> lock(mu_);
  if (writer_.joinable()) return;
  stopping_ = false;
  writer_ = std::thread([this] { writer_loop(); });
  reader_ = std::thread([this] { reader_loop(); });
}

void RedisSync::stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (writer_.joinable()) writer_.join();
  if (reader_.joinable()) reader_.join();
}

size_t RedisSync::pending() const {
  std::lock_guard<std::mutex> lock(mu_);
  return pending_keys_.size();
}

std::string RedisSync::redis_key(const CacheEntry& e) const {
  return cfg_.prefix + (e.kind == CacheKind::exact ? "e:" : "s:") + e.key;
}

void RedisSync::publish(const CacheEntry& e) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    pending_keys_.push_back(redis_key(e));
    pending_values_.push_back(entry_to_json(e));
    pending_expiry_.push_back(e.expires_ms);
    while (pending_keys_.size() > cfg_.max_pending) {
      pending_keys_.pop_front();
      pending_values_.pop_front();
      pending_expiry_.pop_front();
      c_.dropped.fetch_add(1, std::memory_order_relaxed);
    }
  }
  cv_.notify_all();
}

bool RedisSync::pause(int ms) {
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait_for(lock, std::chrono::milliseconds(ms), [&] { return stopping_; });
  return !stopping_;
}

void RedisSync::note_down(const std::string& what) {
  c_.errors.fetch_add(1, std::memory_order_relaxed);
  c_.connected.store(0, std::memory_order_relaxed);
  // Once per outage, not once per retry: a down Redis must not flood the log.
  if (!down_logged_.exchange(true))
    log_(
        fmt::format("redis {}:{} unavailable ({}); serving from the local cache, reconnecting in "
                    "the background",
                    ep_.host, ep_.port, what));
}

void RedisSync::note_up() {
  c_.connected.store(up_.load() == 2 ? 1 : 0, std::memory_order_relaxed);
  if (up_.load() == 2 && down_logged_.exchange(false)) {
    c_.reconnects.fetch_add(1, std::memory_order_relaxed);
    log_(fmt::format("redis {}:{} reachable again; sharing resumed", ep_.host, ep_.port));
  }
}

#if KILN_HAVE_HIREDIS
std::unique_ptr<RedisSync::Conn> RedisSync::connect(int read_timeout_ms) {
  auto c = std::make_unique<Conn>();
  c->ctx = redisConnectWithTimeout(ep_.host.c_str(), ep_.port, to_timeval(cfg_.connect_timeout_ms));
  if (!c->ctx || c->ctx->err) {
    note_down(c->ctx ? c->error() : "out of memory");
    return nullptr;
  }
  redisSetTimeout(c->ctx, to_timeval(read_timeout_ms));
  auto ok = [&](Reply r) {
    if (!r || r->type == REDIS_REPLY_ERROR) {
      note_down(r ? str_of(r.get()) : c->error());
      return false;
    }
    return true;
  };
  if (!ep_.password.empty()) {
    std::vector<std::string> auth = {"AUTH"};
    if (!ep_.user.empty()) auth.push_back(ep_.user);
    auth.push_back(ep_.password);
    if (!ok(c->command(auth))) return nullptr;
  }
  if (ep_.db != 0 && !ok(c->command({"SELECT", std::to_string(ep_.db)}))) return nullptr;
  return c;
}

void RedisSync::writer_loop() {
  std::unique_ptr<Conn> conn;
  int backoff = 50;
  const std::string stream = cfg_.prefix + "stream";
  for (;;) {
    std::vector<std::string> keys, values;
    std::vector<int64_t> expiry;
    {
      std::unique_lock<std::mutex> lock(mu_);
      // Connect eagerly (not only when there is something to write), so the
      // connected gauge tells the truth from the start.
      cv_.wait(lock, [&] { return stopping_ || !pending_keys_.empty() || !conn; });
      if (stopping_) break;
      const size_t n = std::min<size_t>(pending_keys_.size(), 64);
      keys.assign(pending_keys_.begin(), pending_keys_.begin() + long(n));
      values.assign(pending_values_.begin(), pending_values_.begin() + long(n));
      expiry.assign(pending_expiry_.begin(), pending_expiry_.begin() + long(n));
    }
    if (!conn) {
      conn = connect(cfg_.command_timeout_ms);
      if (!conn) {
        if (!pause(backoff)) break;
        backoff = std::min(backoff * 2, cfg_.max_backoff_ms);
        continue;
      }
      backoff = 50;
      ++up_;
      note_up();
    }
    if (keys.empty()) continue;
    // Pipelined: one round trip for the whole batch.
    const int64_t now = unix_ms_now();
    size_t n_sent = 0;
    for (size_t i = 0; i < keys.size(); ++i) {
      const int64_t ttl = expiry[i] == 0 ? 0 : expiry[i] - now;
      if (expiry[i] != 0 && ttl <= 0) continue;  // expired while queued
      if (ttl > 0)
        conn->append({"SET", keys[i], values[i], "PX", std::to_string(ttl)});
      else
        conn->append({"SET", keys[i], values[i]});
      conn->append({"XADD", stream, "MAXLEN", "~", std::to_string(cfg_.stream_maxlen), "*", "o",
                    origin_, "e", values[i]});
      ++n_sent;
    }
    bool broken = false;
    for (size_t i = 0; i < 2 * n_sent && !broken; ++i) {
      Reply r = conn->get_reply();
      if (!r)
        broken = true;
      else if (r->type == REDIS_REPLY_ERROR)
        c_.errors.fetch_add(1, std::memory_order_relaxed);
    }
    if (broken) {
      note_down(conn->error());
      conn.reset();
      --up_;
      continue;  // the batch stays queued
    }
    c_.published.fetch_add(n_sent, std::memory_order_relaxed);
    std::lock_guard<std::mutex> lock(mu_);
    // publish() may have dropped from the front meanwhile: pop what is still ours.
    for (size_t i = 0;
         i < keys.size() && !pending_keys_.empty() && pending_keys_.front() == keys[i]; ++i) {
      pending_keys_.pop_front();
      pending_values_.pop_front();
      pending_expiry_.pop_front();
    }
  }
  if (conn) --up_;
}

void RedisSync::reader_loop() {
  std::unique_ptr<Conn> conn;
  int backoff = 50;
  const std::string stream = cfg_.prefix + "stream";
  std::string last_id = "0-0";
  auto deliver = [&](const std::string& json) {
    auto e = entry_from_json(json);
    if (!e) return;
    c_.applied.fetch_add(1, std::memory_order_relaxed);
    apply_(std::move(*e));
  };
  auto fail = [&](const std::string& what) {
    note_down(what);
    conn.reset();
    --up_;
  };
  for (;;) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (stopping_) break;
    }
    if (!conn) {
      conn = connect(cfg_.command_timeout_ms + cfg_.block_ms);
      if (!conn) {
        if (!pause(backoff)) break;
        backoff = std::min(backoff * 2, cfg_.max_backoff_ms);
        continue;
      }
      backoff = 50;
      ++up_;
      // Where the stream ends now, then every existing key: entries written
      // after this point arrive through the stream, earlier ones through the
      // scan (some through both, which is harmless). After a Redis restart
      // the stream starts over, so the position is always taken afresh.
      Reply tail = conn->command({"XREVRANGE", stream, "+", "-", "COUNT", "1"});
      if (!tail) {
        fail(conn->error());
        continue;
      }
      last_id = "0-0";
      if (tail->type == REDIS_REPLY_ARRAY && tail->elements == 1 &&
          tail->element[0]->type == REDIS_REPLY_ARRAY && tail->element[0]->elements >= 1)
        last_id = str_of(tail->element[0]->element[0]);
      std::string cursor = "0";
      bool broken = false;
      do {
        Reply scan =
            conn->command({"SCAN", cursor, "MATCH", cfg_.prefix + "[es]:*", "COUNT", "500"});
        if (!scan || scan->type != REDIS_REPLY_ARRAY || scan->elements != 2) {
          broken = true;
          break;
        }
        cursor = str_of(scan->element[0]);
        const redisReply* keys = scan->element[1];
        if (keys->elements == 0) continue;
        std::vector<std::string> mget = {"MGET"};
        for (size_t i = 0; i < keys->elements; ++i) mget.push_back(str_of(keys->element[i]));
        Reply vals = conn->command(mget);
        if (!vals || vals->type != REDIS_REPLY_ARRAY) {
          broken = true;
          break;
        }
        for (size_t i = 0; i < vals->elements; ++i)
          if (vals->element[i]->type == REDIS_REPLY_STRING) deliver(str_of(vals->element[i]));
      } while (cursor != "0");
      if (broken) {
        fail(conn ? conn->error() : "scan failed");
        continue;
      }
      note_up();
    }
    Reply r = conn->command({"XREAD", "COUNT", "256", "BLOCK", std::to_string(cfg_.block_ms),
                             "STREAMS", stream, last_id});
    if (!r) {
      fail(conn->error());
      continue;
    }
    if (r->type != REDIS_REPLY_ARRAY) continue;  // nil: nothing new within block_ms
    for (size_t s = 0; s < r->elements; ++s) {
      const redisReply* st = r->element[s];
      if (st->type != REDIS_REPLY_ARRAY || st->elements != 2) continue;
      const redisReply* items = st->element[1];
      for (size_t i = 0; i < items->elements; ++i) {
        const redisReply* item = items->element[i];
        if (item->type != REDIS_REPLY_ARRAY || item->elements != 2) continue;
        last_id = str_of(item->element[0]);
        const redisReply* fields = item->element[1];
        std::string origin, value;
        for (size_t f = 0; f + 1 < fields->elements; f += 2) {
          const std::string name = str_of(fields->element[f]);
          if (name == "o") origin = str_of(fields->element[f + 1]);
          if (name == "e") value = str_of(fields->element[f + 1]);
        }
        if (origin != origin_ && !value.empty()) deliver(value);
      }
    }
  }
  if (conn) --up_;
}

#else
std::unique_ptr<RedisSync::Conn> RedisSync::connect(int) { return nullptr; }
void RedisSync::writer_loop() {}
void RedisSync::reader_loop() {}
#endif

}  // namespace kiln::cache
