// The response caches through the routes (in-process edge, scripted engine):
// the x-kiln-cache header, exact hits that never reach the engine, streamed
// replays, key normalization (stream/user ignored, sampling respected), the
// determinism rule, per-request opt-out, semantic hits by partition, and the
// /metrics series.
#include <gtest/gtest.h>

#include "common/cache_router.h"
#include "kiln/cache/table_embedder.h"
#include "kiln/server/cache_metrics.h"
#include "kiln/server/response_caching.h"

namespace kiln::server {
namespace {

using test::CacheRouter;

std::unique_ptr<cache::ResponseCache> make_cache(cache::ResponseCacheConfig cfg = {},
                                                 cache::TextEmbedder* emb = nullptr) {
  auto rc = cache::ResponseCache::create(std::move(cfg), emb);
  KILN_ASSERT(rc.ok());
  return std::move(*rc);
}

std::string chat_body(const std::string& user, const std::string& extra = "",
                      const std::string& system = "You are terse.") {
  Json b;
  b["model"] = "toy";
  b["messages"] = Json::array(
      {{{"role", "system"}, {"content", system}}, {{"role", "user"}, {"content", user}}});
  b["temperature"] = 0;
  b["max_tokens"] = 16;
  std::string s = b.dump();
  if (!extra.empty()) s = s.substr(0, s.size() - 1) + "," + extra + "}";
  return s;
}

TEST(CacheServer, ExactHitNeverReachesTheEngineAndMatchesTheAnswer) {
  auto rc = make_cache();
  CacheRouter inst(rc.get());
  auto a = inst.post("/v1/chat/completions", chat_body("What is the capital of France?"));
  ASSERT_EQ(a.status, 200) << a.body;
  EXPECT_EQ(a.cache(), "miss");
  EXPECT_EQ(inst.engine_requests(), 1u);
  // `stream` and `user` are not part of the key.
  auto b = inst.post("/v1/chat/completions",
                     chat_body("What is the capital of France?", "\"user\":\"someone-else\""));
  ASSERT_EQ(b.status, 200);
  EXPECT_EQ(b.cache(), "exact");
  EXPECT_EQ(inst.engine_requests(), 1u);
  auto ja = Json::parse(a.body), jb = Json::parse(b.body);
  EXPECT_EQ(jb["choices"][0]["message"]["content"], ja["choices"][0]["message"]["content"]);
  EXPECT_EQ(jb["choices"][0]["finish_reason"], ja["choices"][0]["finish_reason"]);
  EXPECT_EQ(jb["usage"]["completion_tokens"], ja["usage"]["completion_tokens"]);
  EXPECT_NE(jb["id"], ja["id"]);  // a fresh response, not a byte copy
  EXPECT_EQ(rc->exact()->counters().hits.load(), 1u);
  EXPECT_EQ(rc->exact()->counters().misses.load(), 1u);
}

TEST(CacheServer, StreamedRepliesAreReplayedAsAStream) {
  auto rc = make_cache();
  CacheRouter inst(rc.get());
  auto a = inst.post("/v1/chat/completions", chat_body("Hi there"));
  ASSERT_EQ(a.status, 200);
  auto s = inst.post(
      "/v1/chat/completions",
      chat_body("Hi there", "\"stream\":true,\"stream_options\":{\"include_usage\":true}"));
  EXPECT_TRUE(s.streamed);
  EXPECT_EQ(s.cache(), "exact");
  EXPECT_EQ(inst.engine_requests(), 1u);
  // Reassemble the stream.
  std::string text;
  bool done = false, usage = false, finish = false;
  size_t pos = 0;
  while ((pos = s.body.find("data: ", pos)) != std::string::npos) {
    const size_t end = s.body.find("\n\n", pos);
    const std::string ev = s.body.substr(pos + 6, end - pos - 6);
    pos = end;
    if (ev == "[DONE]") {
      done = true;
      continue;
    }
    auto j = Json::parse(ev);
    if (!j["usage"].is_null()) usage = true;
    if (j["choices"].empty()) continue;
    const auto& d = j["choices"][0]["delta"];
    if (d.contains("content")) text += d["content"].get<std::string>();
    if (!j["choices"][0]["finish_reason"].is_null()) finish = true;
  }
  EXPECT_TRUE(done && usage && finish);
  EXPECT_EQ(text, Json::parse(a.body)["choices"][0]["message"]["content"].get<std::string>());
}

TEST(CacheServer, SamplingParamsMaxTokensAndPromptAreInTheKey) {
  auto rc = make_cache();
  CacheRouter inst(rc.get());
  EXPECT_EQ(
      inst.post("/v1/completions", R"({"prompt":"abc","temperature":0,"max_tokens":8})").cache(),
      "miss");
  EXPECT_EQ(
      inst.post("/v1/completions",
                R"({"prompt":"abc","temperature":0,"max_tokens":8,"top_p":0.5,"stream":false})")
          .cache(),
      "exact")
      << "greedy ignores top_p: the same key";
  EXPECT_EQ(
      inst.post("/v1/completions", R"({"prompt":"abc","temperature":0,"max_tokens":9})").cache(),
      "miss");
  EXPECT_EQ(
      inst.post("/v1/completions", R"({"prompt":"abd","temperature":0,"max_tokens":8})").cache(),
      "miss");
  EXPECT_EQ(inst.post("/v1/completions",
                      R"({"prompt":"abc","temperature":0,"max_tokens":8,"frequency_penalty":1})")
                .cache(),
            "miss");
  EXPECT_EQ(inst.post("/v1/completions",
                      R"({"prompt":"abc","temperature":0,"max_tokens":8,"stop":["x"]})")
                .cache(),
            "miss");
  // A fixed seed makes sampling deterministic: cached, keyed by the seed.
  EXPECT_EQ(
      inst.post("/v1/completions", R"({"prompt":"abc","temperature":0.8,"seed":5,"max_tokens":8})")
          .cache(),
      "miss");
  EXPECT_EQ(
      inst.post("/v1/completions", R"({"prompt":"abc","temperature":0.8,"seed":5,"max_tokens":8})")
          .cache(),
      "exact");
  EXPECT_EQ(
      inst.post("/v1/completions", R"({"prompt":"abc","temperature":0.8,"seed":6,"max_tokens":8})")
          .cache(),
      "miss");
}

TEST(CacheServer, SampledRequestsAndOptOutBypassUnlessTheOperatorOptsIn) {
  auto rc = make_cache();
  CacheRouter inst(rc.get());
  const std::string sampled = R"({"prompt":"abc","temperature":0.8,"max_tokens":8})";
  EXPECT_EQ(inst.post("/v1/completions", sampled).cache(), "miss; bypass=sampled");
  EXPECT_EQ(inst.post("/v1/completions", sampled).cache(), "miss; bypass=sampled");
  EXPECT_EQ(inst.engine_requests(), 2u);
  const std::string greedy = R"({"prompt":"abc","temperature":0,"max_tokens":8})";
  inst.post("/v1/completions", greedy);
  EXPECT_EQ(inst.post("/v1/completions",
                      R"({"prompt":"abc","temperature":0,"max_tokens":8,"cache":false})")
                .cache(),
            "miss; bypass=request");
  EXPECT_EQ(inst.post("/v1/completions",
                      R"({"prompt":"abc","temperature":0,"max_tokens":8,"logprobs":2})")
                .cache(),
            "miss; bypass=logprobs");
  EXPECT_EQ(inst.engine_requests(), 5u);

  cache::ResponseCacheConfig cfg;
  cfg.nondeterministic = true;
  auto rc2 = make_cache(cfg);
  CacheRouter inst2(rc2.get());
  EXPECT_EQ(inst2.post("/v1/completions", sampled).cache(), "miss");
  EXPECT_EQ(inst2.post("/v1/completions", sampled).cache(), "exact");
}

TEST(CacheServer, KillSwitchAndNoCacheSendNoHeader) {
  cache::ResponseCacheConfig cfg;
  cfg.exact = false;
  auto rc = make_cache(cfg);
  CacheRouter off(rc.get());
  off.post("/v1/completions", R"({"prompt":"abc","temperature":0,"max_tokens":8})");
  auto r = off.post("/v1/completions", R"({"prompt":"abc","temperature":0,"max_tokens":8})");
  EXPECT_EQ(r.cache(), "");
  EXPECT_EQ(off.engine_requests(), 2u);
  CacheRouter none(nullptr);
  EXPECT_EQ(none.post("/v1/completions", R"({"prompt":"abc","temperature":0})").cache(), "");
}

TEST(CacheServer, SemanticHitsWithinAPartitionOnly) {
  cache::TableEmbedder emb(16, "table-16");
  const auto base = emb.axis(0);
  emb.set("What is the capital of France?", base);
  emb.set("What's the capital city of France?", cache::TableEmbedder::rotated(base, 1, 0.97f));
  emb.set("What is the capital of Spain?", cache::TableEmbedder::rotated(base, 2, 0.98f));
  emb.set("Tell me a joke", emb.axis(5));
  cache::ResponseCacheConfig cfg;
  cfg.semantic = true;
  auto rc = make_cache(cfg, &emb);
  CacheRouter inst(rc.get());
  ASSERT_EQ(inst.post("/v1/chat/completions", chat_body("What is the capital of France?")).cache(),
            "miss");
  auto hit = inst.post("/v1/chat/completions", chat_body("What's the capital city of France?"));
  EXPECT_EQ(hit.cache().rfind("semantic; similarity=0.97", 0), 0u) << hit.cache();
  EXPECT_EQ(inst.engine_requests(), 1u);
  // Similar enough, but the guard sees another name.
  EXPECT_EQ(inst.post("/v1/chat/completions", chat_body("What is the capital of Spain?")).cache(),
            "miss");
  EXPECT_EQ(rc->semantic()->counters().guard_rejections.load(), 1u);
  // Another system prompt is another partition; other sampling too.
  EXPECT_EQ(inst.post("/v1/chat/completions",
                      chat_body("What's the capital city of France?", "", "You are verbose."))
                .cache(),
            "miss");
  EXPECT_EQ(inst.post("/v1/chat/completions",
                      chat_body("What's the capital city of France?", "\"max_tokens\":17"))
                .cache(),
            "miss");
  EXPECT_EQ(inst.engine_requests(), 4u);

  register_cache_metrics(inst.metrics().registry(), *rc);
  const std::string m = inst.metrics().render();
  EXPECT_NE(m.find("kiln_response_cache_hits_total{cache=\"semantic\"} 1"), std::string::npos) << m;
  EXPECT_NE(m.find("kiln_response_cache_guard_rejections_total{cache=\"semantic\"} 1"),
            std::string::npos);
  EXPECT_NE(m.find("kiln_response_cache_misses_total{cache=\"exact\"}"), std::string::npos);
}

TEST(CacheServer, SeedingServesAnIdenticalRequest) {
  auto rc = make_cache();
  CacheRouter inst(rc.get());
  GenerationOptions g;
  g.sampling.temperature = 0;
  g.max_tokens = 8;
  const auto prompt = test::cache_test_vocab().encode("warm prompt", true, true);
  ASSERT_TRUE(seed_response(
      {rc.get(), "test-model-fp"}, Api::completions, {prompt}, g,
      make_record(Api::completions, {{" recorded answer", "length"}}, int64_t(prompt.size()), 8)));
  auto r =
      inst.post("/v1/completions", R"({"prompt":"warm prompt","temperature":0,"max_tokens":8})");
  EXPECT_EQ(r.cache(), "exact");
  EXPECT_EQ(Json::parse(r.body)["choices"][0]["text"], " recorded answer");
  EXPECT_EQ(inst.engine_requests(), 0u);
}

TEST(CacheServer, SeedingFromARecordedRequestLine) {
  auto rc = make_cache();
  CacheRouter inst(rc.get());
  const CacheContext ctx{rc.get(), "test-model-fp"};
  const Json line = {{"messages", {{{"role", "user"}, {"content", "Warm question?"}}}},
                     {"max_tokens", 8},
                     {"temperature", 0}};
  const Json rec = make_record(Api::chat, {{"Warm answer.", "stop"}}, 5, 3);
  std::string why;
  // The prompt text exactly as the routes render it (the test template).
  ASSERT_TRUE(seed_from_request(ctx, test::cache_test_vocab(), line,
                                "<user>Warm question?\n<assistant>", rec, &why))
      << why;
  auto r = inst.post("/v1/chat/completions", line.dump());
  EXPECT_EQ(r.cache(), "exact");
  EXPECT_EQ(Json::parse(r.body)["choices"][0]["message"]["content"], "Warm answer.");
  EXPECT_EQ(inst.engine_requests(), 0u);
  // Sampled lines without a seed are not seeded.
  Json sampled = line;
  sampled["temperature"] = 0.7;
  EXPECT_FALSE(seed_from_request(ctx, test::cache_test_vocab(), sampled, "x", rec, &why));
}

}  // namespace
}  // namespace kiln::server
