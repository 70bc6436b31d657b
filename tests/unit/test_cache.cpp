// The response caches without a server: LRU/TTL bounds, exact and semantic
// lookups, threshold, partitioning, eviction from the HNSW graph (hnswlib
// 0.6.2 has only markDelete), the --cache-dir round trip, entry encoding
// and redis:// URLs. Vectors come from the controlled TableEmbedder.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <random>

#include "kiln/cache/cache_snapshot.h"
#include "kiln/cache/exact_cache.h"
#include "kiln/cache/hnsw_index.h"
#include "kiln/cache/redis_url.h"
#include "kiln/cache/response_cache.h"
#include "kiln/cache/semantic_cache.h"
#include "kiln/cache/table_embedder.h"

namespace kiln::cache {
namespace {

CacheEntry exact_entry(const std::string& key, const std::string& payload) {
  CacheEntry e;
  e.key = key;
  e.payload = payload;
  return e;
}

std::string temp_dir(const std::string& name) {
  auto p = std::filesystem::temp_directory_path() /
           ("kiln_test_cache_" + name + "_" + std::to_string(::getpid()));
  std::filesystem::remove_all(p);
  return p.string();
}

TEST(CacheLru, EvictsLeastRecentlyUsedByCount) {
  CacheLimits lim;
  lim.max_entries = 3;
  lim.ttl_ms = 0;
  ExactCache c(lim);
  for (int i = 0; i < 3; ++i)
    EXPECT_TRUE(c.insert(exact_entry("k" + std::to_string(i), "v"), 1000));
  ASSERT_TRUE(c.lookup("k0", 1001));  // k0 becomes most recent: k1 is the oldest now
  EXPECT_TRUE(c.insert(exact_entry("k3", "v"), 1002));
  EXPECT_EQ(c.size(), 3u);
  EXPECT_FALSE(c.lookup("k1", 1003));
  EXPECT_TRUE(c.lookup("k0", 1003));
  EXPECT_TRUE(c.lookup("k2", 1003));
  EXPECT_TRUE(c.lookup("k3", 1003));
  EXPECT_EQ(c.counters().evictions.load(), 1u);
  EXPECT_EQ(c.counters().hits.load(), 4u);
  EXPECT_EQ(c.counters().misses.load(), 1u);
}

TEST(CacheLru, EvictsByBytesAndRefusesOversizedEntries) {
  CacheLimits lim;
  lim.max_entries = 100;
  lim.ttl_ms = 0;
  const size_t one = exact_entry("a", std::string(1000, 'x')).bytes();
  lim.max_bytes = one * 2 + one / 2;  // room for two
  ExactCache c(lim);
  EXPECT_TRUE(c.insert(exact_entry("a", std::string(1000, 'x')), 1));
  EXPECT_TRUE(c.insert(exact_entry("b", std::string(1000, 'x')), 1));
  EXPECT_TRUE(c.insert(exact_entry("c", std::string(1000, 'x')), 1));
  EXPECT_EQ(c.size(), 2u);
  EXPECT_FALSE(c.lookup("a", 2));
  EXPECT_LE(c.counters().bytes.load(), lim.max_bytes);
  EXPECT_FALSE(c.insert(exact_entry("huge", std::string(lim.max_bytes, 'x')), 3));
  EXPECT_EQ(c.size(), 2u);  // a refused entry evicts nothing
}

TEST(CacheLru, TtlExpiresAndTheEarlierExpiryWins) {
  CacheLimits lim;
  lim.ttl_ms = 1000;
  ExactCache c(lim);
  EXPECT_TRUE(c.insert(exact_entry("a", "v"), 10'000));
  EXPECT_TRUE(c.lookup("a", 10'999));
  EXPECT_FALSE(c.lookup("a", 11'000));
  EXPECT_EQ(c.counters().expirations.load(), 1u);
  // An entry from another instance keeps its own (earlier) expiry.
  auto e = exact_entry("b", "v");
  e.expires_ms = 20'100;
  EXPECT_TRUE(c.insert(e, 20'000));
  EXPECT_FALSE(c.lookup("b", 20'200));
  // An already expired one is not stored at all.
  e.key = "c";
  EXPECT_FALSE(c.insert(e, 30'000));
}

TEST(CacheLru, ReplacingAKeyKeepsOneEntryAndTheNewValue) {
  ExactCache c(CacheLimits{});
  EXPECT_TRUE(c.insert(exact_entry("a", "old"), 1));
  EXPECT_TRUE(c.insert(exact_entry("a", "new"), 2));
  EXPECT_EQ(c.size(), 1u);
  EXPECT_EQ(c.lookup("a", 3)->payload, "new");
  EXPECT_EQ(c.counters().evictions.load(), 0u);
}

// A semantic fixture: dim 16, texts placed by hand.
struct Sem {
  TableEmbedder emb{16};
  std::vector<float> base = emb.axis(0);
  SemanticCache cache;
  explicit Sem(SemanticConfig cfg = {}) : cache(cfg, 16) {}
  CacheEntry entry(const std::string& partition, const std::string& text, std::vector<float> v,
                   const std::string& payload) {
    CacheEntry e;
    e.partition = partition;
    e.text = text;
    e.vec = std::move(v);
    e.payload = payload;
    return e;
  }
};

TEST(CacheSemantic, ThresholdDecides) {
  SemanticConfig cfg;
  cfg.threshold = 0.95f;
  cfg.limits.ttl_ms = 0;
  Sem s(cfg);
  ASSERT_TRUE(s.cache.insert(s.entry("p", "How do magnets work?", s.base, "A"), 1));
  auto above = TableEmbedder::rotated(s.base, 1, 0.96f);
  auto below = TableEmbedder::rotated(s.base, 1, 0.94f);
  auto hit = s.cache.lookup("p", "How do magnets work exactly?", above, 2);
  ASSERT_TRUE(hit);
  EXPECT_NEAR(hit->similarity, 0.96f, 1e-3);
  EXPECT_EQ(hit->entry->payload, "A");
  EXPECT_FALSE(s.cache.lookup("p", "How do magnets work exactly?", below, 3));
  EXPECT_EQ(s.cache.counters().hits.load(), 1u);
  EXPECT_EQ(s.cache.counters().misses.load(), 1u);
  EXPECT_EQ(s.cache.counters().guard_rejections.load(), 0u);
}

TEST(CacheSemantic, PartitionsNeverMix) {
  Sem s;
  ASSERT_TRUE(s.cache.insert(s.entry("system=pirate", "Tell me a joke", s.base, "Arr"), 1));
  EXPECT_FALSE(s.cache.lookup("system=plain", "Tell me a joke", s.base, 2));
  EXPECT_TRUE(s.cache.lookup("system=pirate", "Tell me a joke", s.base, 2));
  EXPECT_EQ(s.cache.n_partitions(), 1u);
}

TEST(CacheSemantic, GuardRejectionIsCountedAndABetterCandidateStillServes) {
  Sem s;
  ASSERT_TRUE(s.cache.insert(s.entry("p", "What is 2 + 2?", s.base, "4"), 1));
  // The query is closest to "2 + 2" but the guard refuses it; a less similar
  // entry with the same numbers is served instead.
  ASSERT_TRUE(s.cache.insert(
      s.entry("p", "What does 2 + 3 make?", TableEmbedder::rotated(s.base, 1, 0.97f), "5"), 1));
  auto hit = s.cache.lookup("p", "What is 2 + 3?", TableEmbedder::rotated(s.base, 2, 0.99f), 2);
  ASSERT_TRUE(hit);
  EXPECT_EQ(hit->entry->payload, "5");
  EXPECT_FALSE(s.cache.lookup("p", "What is 7 + 7?", s.base, 3));
  EXPECT_EQ(s.cache.counters().guard_rejections.load(), 1u);
}

std::vector<float> random_unit(std::mt19937& rng, int32_t dim) {
  std::normal_distribution<float> n;
  std::vector<float> v(static_cast<size_t>(dim));
  for (auto& x : v) x = n(rng);
  l2_normalize(v);
  return v;
}

TEST(CacheSemantic, EvictionRemovesFromTheGraphAndLiveEntriesStayFound) {
  SemanticConfig cfg;
  cfg.limits.max_entries = 400;  // above HnswIndex::kGraphMin: the hnswlib graph is in use
  cfg.limits.ttl_ms = 0;
  cfg.guard = false;  // texts here are labels, not questions
  SemanticCache cache(cfg, 32);
  std::mt19937 rng(7);
  std::vector<std::vector<float>> vecs;
  for (int i = 0; i < 1200; ++i) {
    vecs.push_back(random_unit(rng, 32));
    CacheEntry e;
    e.partition = "p";
    e.text = "t" + std::to_string(i);
    e.vec = vecs.back();
    e.payload = std::to_string(i);
    ASSERT_TRUE(cache.insert(e, i));
  }
  EXPECT_EQ(cache.size(), 400u);
  EXPECT_EQ(cache.counters().evictions.load(), 800u);
  int found = 0, stale = 0;
  for (int i = 0; i < 1200; ++i) {
    auto hit = cache.lookup("p", "t", vecs[size_t(i)], 5000);
    if (i >= 800 && hit && hit->entry->payload == std::to_string(i)) ++found;
    if (hit && std::stoi(hit->entry->payload) < 800) ++stale;  // an evicted entry served
  }
  EXPECT_EQ(stale, 0);
  EXPECT_GE(found, 396);  // HNSW is approximate; recall stays near 1 after rebuilds
}

TEST(CacheHnsw, MarkDeleteThenRebuildBoundsDeadSlots) {
  std::mt19937 rng(3);
  HnswIndex idx(16);
  std::vector<std::vector<float>> v;
  for (uint64_t l = 0; l < 600; ++l) {
    v.push_back(random_unit(rng, 16));
    idx.add(l, v.back());
  }
  EXPECT_TRUE(idx.has_graph());
  for (uint64_t l = 0; l < 400; ++l) idx.remove(l);
  EXPECT_EQ(idx.live(), 200u);
  EXPECT_GE(idx.rebuilds(), 1u);
  EXPECT_LE(idx.dead(), idx.live());  // dead slots never outnumber live ones for long
  for (uint64_t l = 0; l < 600; l += 7) {
    auto r = idx.search(v[l], 1);
    ASSERT_EQ(r.size(), 1u);
    EXPECT_GE(r[0].first, 400u);
    if (l >= 400) {
      EXPECT_EQ(r[0].first, l);
    }
  }
  for (uint64_t l = 400; l < 560; ++l) idx.remove(l);
  EXPECT_FALSE(idx.has_graph());  // small again: exact scan, graph memory freed
  EXPECT_EQ(idx.search(v[580], 1)[0].first, 580u);
}

TEST(CacheEntryCodec, RoundTripsEveryField) {
  CacheEntry e;
  e.kind = CacheKind::semantic;
  e.key = "k";
  e.payload = "{\"x\":\"\xC3\xA9\"}";
  e.expires_ms = 123456789;
  e.partition = "part";
  e.text = "Why? \"quoted\"\n";
  e.vec = {0.1f, -2.5f, 3.25e-7f};
  auto back = entry_from_json(entry_to_json(e));
  ASSERT_TRUE(back) << back.message();
  EXPECT_EQ(back->kind, e.kind);
  EXPECT_EQ(back->key, e.key);
  EXPECT_EQ(back->payload, e.payload);
  EXPECT_EQ(back->expires_ms, e.expires_ms);
  EXPECT_EQ(back->partition, e.partition);
  EXPECT_EQ(back->text, e.text);
  EXPECT_EQ(back->vec, e.vec);  // bit-exact
  EXPECT_FALSE(entry_from_json("{\"kind\":\"other\"}"));
  EXPECT_FALSE(entry_from_json("not json"));
}

TEST(CacheSnapshot, ResponseCacheRoundTripThroughCacheDir) {
  const std::string dir = temp_dir("roundtrip");
  TableEmbedder emb(8, "table-8");
  emb.set("Why is the sky blue?", emb.axis(0));
  emb.set("Why does the sky look blue?", TableEmbedder::rotated(emb.axis(0), 1, 0.97f));
  ResponseCacheConfig cfg;
  cfg.semantic = true;
  cfg.dir = dir;
  cfg.save_interval_ms = 0;
  {
    auto rc = ResponseCache::create(cfg, &emb);
    ASSERT_TRUE(rc) << rc.message();
    (*rc)->store_exact("exact-key", "exact payload");
    auto v = (*rc)->embed("Why is the sky blue?");
    ASSERT_TRUE(v);
    (*rc)->store_semantic("part", "Why is the sky blue?", *v, "semantic payload");
  }  // the destructor writes the snapshot
  ASSERT_TRUE(std::filesystem::exists(dir + "/responses.jsonl"));
  {
    auto rc = ResponseCache::create(cfg, &emb);
    ASSERT_TRUE(rc) << rc.message();
    EXPECT_EQ((*rc)->loaded_from_disk(), 2u);
    auto e = (*rc)->lookup_exact("exact-key");
    ASSERT_TRUE(e);
    EXPECT_EQ(e->payload, "exact payload");
    auto q = (*rc)->embed("Why does the sky look blue?");
    ASSERT_TRUE(q);
    auto hit = (*rc)->lookup_semantic("part", "Why does the sky look blue?", *q);
    ASSERT_TRUE(hit);
    EXPECT_EQ(hit->entry->payload, "semantic payload");
    EXPECT_NEAR(hit->similarity, 0.97f, 1e-3);
  }
  // Another embedder: semantic entries are not comparable and are dropped.
  TableEmbedder other(8, "another-model");
  {
    auto rc = ResponseCache::create(cfg, &other);
    ASSERT_TRUE(rc);
    EXPECT_EQ((*rc)->loaded_from_disk(), 1u);
    EXPECT_TRUE((*rc)->lookup_exact("exact-key"));
  }
  // A torn last line (crash mid-write) loses that line only.
  {
    std::ofstream f(dir + "/responses.jsonl", std::ios::app);
    f << "{\"kind\":\"exa";
  }
  auto snap = load_snapshot(dir);
  ASSERT_TRUE(snap);
  EXPECT_EQ(snap->skipped, 1u);
  std::filesystem::remove_all(dir);
}

TEST(CacheConfig, SemanticNeedsAnEmbedderAndKillSwitchMakesItInert) {
  ResponseCacheConfig cfg;
  cfg.semantic = true;
  auto rc = ResponseCache::create(cfg, nullptr);
  ASSERT_FALSE(rc);
  EXPECT_NE(rc.message().find("--embedding-model"), std::string::npos);
  cfg.semantic = false;
  cfg.exact = false;
  auto off = ResponseCache::create(cfg, nullptr);
  ASSERT_TRUE(off);
  (*off)->store_exact("k", "v");
  EXPECT_FALSE((*off)->lookup_exact("k"));
  EXPECT_FALSE((*off)->exact_enabled());
}

TEST(CacheRedisUrl, ParsesTheUsualForms) {
  auto a = parse_redis_url("redis://10.0.0.3:6380");
  ASSERT_TRUE(a) << a.message();
  EXPECT_EQ(a->host, "10.0.0.3");
  EXPECT_EQ(a->port, 6380);
  auto b = parse_redis_url("redis://:s3cret@redis.internal/2");
  ASSERT_TRUE(b) << b.message();
  EXPECT_EQ(b->host, "redis.internal");
  EXPECT_EQ(b->port, 6379);
  EXPECT_EQ(b->password, "s3cret");
  EXPECT_EQ(b->db, 2);
  auto c = parse_redis_url("redis://[::1]:7000");
  ASSERT_TRUE(c) << c.message();
  EXPECT_EQ(c->host, "::1");
  EXPECT_EQ(c->port, 7000);
  EXPECT_FALSE(parse_redis_url("rediss://host:6379"));
  EXPECT_FALSE(parse_redis_url("http://host"));
  EXPECT_FALSE(parse_redis_url("redis://host:99999"));
  EXPECT_FALSE(parse_redis_url("redis://"));
}

}  // namespace
}  // namespace kiln::cache
