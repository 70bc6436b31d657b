// Sharing cache entries between kiln instances through Redis (--cache-redis).
// Each entry is written as a key with its TTL (so a starting instance loads
// what exists) and announced on a Redis Stream (so running instances pick it
// up within a fraction of a second). Two background threads, each with its
// own connection and timeouts: a writer draining a bounded queue and a
// reader that loads existing keys on every (re)connect and then follows the
// stream. Nothing here is ever waited on by a request: publish() only
// enqueues. Redis down -> log once, keep retrying with backoff; entries
// queued meanwhile are written when it is back (up to max_pending).
#pragma once

#include <atomic>
#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "kiln/cache/cache_entry.h"
#include "kiln/cache/redis_url.h"

namespace kiln::cache {

struct RedisSyncConfig {
  std::string url;  // redis://host:port
  std::string prefix =
      "kiln:rc:";  // key namespace: <prefix>e:<key>, <prefix>s:<key>, <prefix>stream
  int connect_timeout_ms = 500;
  int command_timeout_ms = 1000;
  int block_ms = 200;             // XREAD BLOCK: how long stop() may wait for the reader
  int max_backoff_ms = 1000;      // reconnect attempts back off up to this
  size_t max_pending = 10000;     // entries queued while Redis is away; older ones are dropped
  size_t stream_maxlen = 100000;  // approximate cap of the announcement stream
};

struct RedisCounters {
  std::atomic<uint64_t> published{0};  // entries written to Redis
  std::atomic<uint64_t> applied{0};    // entries received from Redis (other instances, or loaded)
  std::atomic<uint64_t> dropped{0};    // queued entries dropped (queue full while Redis was away)
  std::atomic<uint64_t> errors{0};     // failed connects or commands
  std::atomic<uint64_t> reconnects{0};
  std::atomic<int> connected{0};  // gauge: 1 while both connections are up
};

class RedisSync {
 public:
  // Called on the reader thread for every entry from Redis (never our own
  // announcements; keys loaded at (re)connect may include our own).
  using Apply = std::function<void(CacheEntry)>;
  using Log = std::function<void(const std::string&)>;

  // Checks the URL; connects lazily in the background after start().
  static Result<std::unique_ptr<RedisSync>> create(RedisSyncConfig cfg, std::string origin,
                                                   Apply apply, Log log = {});
  ~RedisSync();
  RedisSync(const RedisSync&) = delete;
  RedisSync& operator=(const RedisSync&) = delete;

  void start();
  void stop();  // joins both threads (within about block_ms + a timeout)

  // Queues the entry for Redis; never blocks on the network.
  void publish(const CacheEntry& e);

  const RedisCounters& counters() const { return c_; }
  const std::string& origin() const { return origin_; }
  size_t pending() const;

 private:
  RedisSync(RedisSyncConfig cfg, RedisEndpoint ep, std::string origin, Apply apply, Log log);
  struct Conn;
  void writer_loop();
  void reader_loop();
  std::unique_ptr<Conn> connect(int read_timeout_ms);
  void note_down(const std::string& what);
  void note_up();
  // Sleeps up to `ms` unless stop() is called; false when stopping.
  bool pause(int ms);
  std::string redis_key(const CacheEntry& e) const;

  RedisSyncConfig cfg_;
  RedisEndpoint ep_;
  std::string origin_;
  Apply apply_;
  Log log_;

  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::string> pending_keys_, pending_values_;  // parallel; values are entry JSON
  std::deque<int64_t> pending_expiry_;
  bool stopping_ = false;
  std::thread writer_, reader_;
  std::atomic<int> up_{0};  // connections up (0..2)
  std::atomic<bool> down_logged_{false};
  RedisCounters c_;
};

}  // namespace kiln::cache
