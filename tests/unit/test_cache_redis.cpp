// Sharing the response caches through a real redis-server started by the
// test (loopback, no persistence): two in-process kiln edges, each with its
// own ResponseCache and scripted engine, are two instances. An answer cached
// by one is a hit on the other (live through the stream, and for an instance
// started later through the key scan); with Redis killed or frozen both keep
// answering at once from their local caches; once Redis is back sharing
// resumes, including what was cached while it was away.
#include <gtest/gtest.h>

#include "common/cache_router.h"
#include "common/redis_process.h"
#include "kiln/cache/table_embedder.h"

namespace kiln::server {
namespace {

using namespace std::chrono_literals;
using test::CacheRouter;

template <class F>
bool eventually(F f, std::chrono::milliseconds limit = 5000ms) {
  const auto end = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < end) {
    if (f()) return true;
    std::this_thread::sleep_for(10ms);
  }
  return f();
}

std::string chat(const std::string& user) {
  Json b;
  b["messages"] = Json::array(
      {{{"role", "system"}, {"content", "Be brief."}}, {{"role", "user"}, {"content", user}}});
  b["temperature"] = 0;
  b["max_tokens"] = 12;
  return b.dump();
}

struct Instance {
  std::unique_ptr<cache::ResponseCache> cache;
  std::unique_ptr<CacheRouter> edge;
  Instance(const std::string& url, cache::TextEmbedder* emb) {
    cache::ResponseCacheConfig cfg;
    cfg.semantic = emb != nullptr;
    cfg.redis.url = url;
    // Short timeouts so the test reacts fast; the defaults are similar in kind.
    cfg.redis.connect_timeout_ms = 300;
    cfg.redis.command_timeout_ms = 500;
    cfg.redis.block_ms = 100;
    cfg.redis.max_backoff_ms = 300;
    auto rc = cache::ResponseCache::create(cfg, emb);
    KILN_ASSERT(rc.ok());
    cache = std::move(*rc);
    edge = std::make_unique<CacheRouter>(cache.get());
  }
  ~Instance() {
    edge.reset();
    cache.reset();
  }
  bool connected() const { return cache->redis()->counters().connected.load() == 1; }
  size_t exact_entries() const { return cache->exact()->size(); }
  size_t semantic_entries() const { return cache->semantic() ? cache->semantic()->size() : 0; }
};

class CacheRedis : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!test::RedisProcess::available()) GTEST_SKIP() << "redis-server is not installed";
    ASSERT_TRUE(redis.start());
    const auto base = emb.axis(0);
    emb.set("How far away is the Moon?", base);
    emb.set("What is the distance to the Moon?", cache::TableEmbedder::rotated(base, 1, 0.97f));
    for (int i = 0; i < 8; ++i) emb.set("question " + std::to_string(i), emb.axis(2 + i));
  }
  test::RedisProcess redis;
  cache::TableEmbedder emb{16, "table-16"};
};

TEST_F(CacheRedis, AnEntryCachedByOneInstanceIsAHitOnTheOther) {
  Instance a(redis.url(), &emb), b(redis.url(), &emb);
  ASSERT_TRUE(eventually([&] { return a.connected() && b.connected(); }));
  auto first = a.edge->post("/v1/chat/completions", chat("How far away is the Moon?"));
  ASSERT_EQ(first.status, 200);
  EXPECT_EQ(first.cache(), "miss");
  // Both indexes receive the entry (the semantic one may land a moment
  // after the exact one: waiting for the exact alone failed once in CI).
  ASSERT_TRUE(eventually([&] { return b.exact_entries() == 1 && b.semantic_entries() == 1; }));
  auto on_b = b.edge->post("/v1/chat/completions", chat("How far away is the Moon?"));
  EXPECT_EQ(on_b.cache(), "exact");
  EXPECT_EQ(b.edge->engine_requests(), 0u);
  EXPECT_EQ(Json::parse(on_b.body)["choices"][0]["message"]["content"],
            Json::parse(first.body)["choices"][0]["message"]["content"]);
  // The semantic entry travelled too (vector included): a paraphrase hits on B.
  auto para = b.edge->post("/v1/chat/completions", chat("What is the distance to the Moon?"));
  EXPECT_EQ(para.cache().rfind("semantic", 0), 0u) << para.cache();
  EXPECT_EQ(b.edge->engine_requests(), 0u);
  // An instance started later loads what Redis holds.
  Instance c(redis.url(), &emb);
  ASSERT_TRUE(eventually([&] { return c.connected() && c.exact_entries() == 1; }));
  EXPECT_EQ(c.edge->post("/v1/chat/completions", chat("How far away is the Moon?")).cache(),
            "exact");
  EXPECT_GE(a.cache->redis()->counters().published.load(), 2u);
}

TEST_F(CacheRedis, RedisKilledMidRunBothKeepServingThenSharingResumes) {
  Instance a(redis.url(), &emb), b(redis.url(), &emb);
  ASSERT_TRUE(eventually([&] { return a.connected() && b.connected(); }));
  ASSERT_EQ(a.edge->post("/v1/chat/completions", chat("question 0")).status, 200);
  ASSERT_TRUE(eventually([&] { return b.exact_entries() == 1; }));

  redis.kill();
  // Every request still answers, promptly, from the engine or the local cache.
  for (int round = 0; round < 2; ++round) {
    for (Instance* inst : {&a, &b}) {
      const auto t0 = std::chrono::steady_clock::now();
      auto r =
          inst->edge->post("/v1/chat/completions", chat(inst == &a ? "question 1" : "question 2"));
      const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                          std::chrono::steady_clock::now() - t0)
                          .count();
      EXPECT_EQ(r.status, 200) << r.body;
      EXPECT_EQ(r.cache(), round == 0 ? "miss" : "exact");
      EXPECT_LT(ms, 250) << "a request waited for the dead Redis";
    }
  }
  EXPECT_EQ(b.edge->post("/v1/chat/completions", chat("question 0")).cache(), "exact");
  ASSERT_TRUE(eventually([&] { return !a.connected() && !b.connected(); }));

  ASSERT_TRUE(redis.start());  // same port, empty (no persistence)
  ASSERT_TRUE(eventually([&] { return a.connected() && b.connected(); }));
  // What each cached while Redis was away was queued and now reaches the other.
  ASSERT_TRUE(eventually([&] { return a.exact_entries() == 3 && b.exact_entries() == 3; }))
      << a.exact_entries() << " " << b.exact_entries();
  EXPECT_EQ(b.edge->post("/v1/chat/completions", chat("question 1")).cache(), "exact");
  EXPECT_EQ(a.edge->post("/v1/chat/completions", chat("question 2")).cache(), "exact");
  // And new entries flow live again.
  ASSERT_EQ(b.edge->post("/v1/chat/completions", chat("question 3")).cache(), "miss");
  ASSERT_TRUE(eventually([&] { return a.exact_entries() == 4; }));
  EXPECT_EQ(a.edge->post("/v1/chat/completions", chat("question 3")).cache(), "exact");
  EXPECT_EQ(a.edge->engine_requests() + b.edge->engine_requests(), 4u);
}

TEST_F(CacheRedis, AFrozenRedisNeverStallsARequest) {
  Instance a(redis.url(), &emb);
  ASSERT_TRUE(eventually([&] { return a.connected(); }));
  redis.freeze();  // the port accepts, nothing answers: timeouts, not errors, decide
  for (int i = 4; i < 8; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    auto r = a.edge->post("/v1/chat/completions", chat("question " + std::to_string(i)));
    EXPECT_EQ(r.status, 200);
    EXPECT_LT(std::chrono::steady_clock::now() - t0, 250ms);
  }
  EXPECT_EQ(a.edge->post("/v1/chat/completions", chat("question 4")).cache(), "exact");
  redis.thaw();
}

}  // namespace
}  // namespace kiln::server
