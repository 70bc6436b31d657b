// The engine on the real CPU backend with a tiny random model: continuous
// batching gives every request the output it gets alone (the CPU backend is
// batch-invariant, so token for token), under preemption too; prefix caching
// skips computation (counters) without changing outputs and survives forced
// hash collisions; cancellation, finish reasons, refusals, embeddings.
#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "common/delegating_backend.h"
#include "common/tiny_lm.h"
#include "common/tiny_model.h"
#include "kiln/backend/cpu/cpu_backend.h"
#include "kiln/engine/engine.h"
#include "kiln/engine/prefix_blocks.h"
#include "kiln/engine/prefix_cache.h"
#include "kiln/engine/sampler.h"
#include "kiln/gguf/gguf.h"
#include "kiln/model/model.h"
#include "kiln/tokenizer/tokenizer.h"

namespace {

using namespace kiln;
using namespace kiln::engine;
using Clock = std::chrono::steady_clock;

constexpr int32_t kEos = 2;

// A tiny llama (head size 32, so q8_0 KV works) with a made-up SentencePiece
// vocabulary: <unk>, <s>, </s> (EOS, the only end-of-generation token), then
// plain pieces.
struct TinyLm {
  test::TinyModel tiny;
  std::vector<uint8_t> bytes;
  std::unique_ptr<model::Model> model;
  std::unique_ptr<Tokenizer> tok;

  TinyLm() {
    test::TinySpec spec;
    spec.n_vocab = 96;
    spec.n_embd = 64;
    spec.n_head = 2;
    spec.n_head_kv = 1;
    spec.n_ff = 128;
    spec.n_layer = 2;
    spec.seed = 7;
    tiny = test::make_tiny_model(spec);
    gguf::Writer w = tiny.writer();
    test::add_tiny_sp_vocab(w, spec.n_vocab);  // </s> (id 2) is kEos
    bytes = w.to_bytes();
    auto f = gguf::File::parse(bytes, "tiny-engine.gguf");
    if (!f) ADD_FAILURE() << f.message();
    auto t = Tokenizer::from_gguf(**f);
    if (!t) ADD_FAILURE() << t.message();
    tok = std::make_unique<Tokenizer>(std::move(*t));
    auto m = model::Model::from_file(std::move(*f));
    if (!m) ADD_FAILURE() << m.message();
    model = std::move(*m);
  }
  int32_t n_vocab() const { return int32_t(tiny.spec.n_vocab); }
};

const TinyLm& lm() {
  static const TinyLm* m = new TinyLm();
  return *m;
}

// One compute thread: the model is tiny, and on a shared 2-core machine a
// second spinning worker only slows things down (test_forward covers
// multi-threaded batch invariance).
std::unique_ptr<cpu::CpuBackend> make_backend(cpu::MatmulPath path = cpu::MatmulPath::fast) {
  cpu::CpuOptions o;
  o.n_threads = 1;
  o.path = path;
  o.read_env = false;
  auto be = std::make_unique<cpu::CpuBackend>(o);
  EXPECT_TRUE(be->load_weights(*lm().model).ok());
  return be;
}

EngineConfig config(int32_t n_parallel, int32_t max_batch_tokens, int32_t block_size,
                    int32_t n_blocks, bool prefix_cache, KvType kv = KvType::f16) {
  EngineConfig c;
  c.n_parallel = n_parallel;
  c.max_batch_tokens = max_batch_tokens;
  c.ctx_size = 512;
  c.kv.type = kv;
  c.kv.block_size = block_size;
  c.kv.n_blocks = n_blocks;
  c.prefix_cache = prefix_cache;
  return c;
}

// An engine with its own backend (the KV pool lives in the backend).
struct TestEngine {
  std::unique_ptr<cpu::CpuBackend> backend;
  std::unique_ptr<Engine> engine;
  explicit TestEngine(const EngineConfig& cfg, bool start = true) : backend(make_backend()) {
    auto e = Engine::create(*backend, *lm().model, *lm().tok, cfg);
    EXPECT_TRUE(e.ok()) << e.message();
    engine = std::move(*e);
    if (start) engine->start();
  }
  Engine* operator->() { return engine.get(); }
};

// What one request produced.
struct Output {
  std::vector<int32_t> tokens;
  std::vector<std::optional<Logprobs>> logprobs;
  FinishReason finish = FinishReason::none;
  std::string error;
  int32_t cached = -1;
  int n_events = 0;
  uint64_t steps_at_end = 0;        // EngineStats::steps when the final event was pushed
  int64_t blocks_used_at_end = -1;  // EngineStats::kv_blocks_used then
  uint64_t steps_at_cancel = 0;     // EngineStats::steps when cancel_after() fired
  int64_t blocks_used_at_cancel = -1;
};

// Collects a request's events; the notifier runs on the engine thread, so it
// can snapshot the engine's counters at the exact moment of each push.
class Collector {
 public:
  explicit Collector(const EngineStats* stats = nullptr)
      : ch_(std::make_shared<ResultChannel>()), stats_(stats) {
    ch_->set_notifier([this] {
      std::lock_guard<std::mutex> lock(mu_);
      std::vector<TokenEvent> evs;
      ch_->drain(evs);
      for (auto& e : evs) {
        ++out_.n_events;
        if (out_.cached < 0) out_.cached = e.cached_prompt_tokens;
        if (e.token >= 0) {
          out_.tokens.push_back(e.token);
          out_.logprobs.push_back(e.logprobs);
        }
        if (e.finish == FinishReason::none && cancel_after_ > 0 &&
            out_.tokens.size() >= cancel_after_ && !out_.steps_at_cancel && stats_) {
          out_.steps_at_cancel = stats_->steps.load();
          out_.blocks_used_at_cancel = stats_->kv_blocks_used.load();
          ch_->cancel();
        }
        if (e.finish != FinishReason::none) {
          out_.finish = e.finish;
          out_.error = e.error;
          if (stats_) {
            out_.steps_at_end = stats_->steps.load();
            out_.blocks_used_at_end = stats_->kv_blocks_used.load();
          }
        }
      }
      cv_.notify_all();
    });
  }
  ~Collector() { ch_->set_notifier(nullptr); }
  // Cancels from inside the notifier (the engine thread, during the step
  // that delivered the n-th token), so the test knows exactly which step the
  // flag was raised in. Set before submitting.
  void cancel_after(size_t n) { cancel_after_ = n; }
  const std::shared_ptr<ResultChannel>& channel() const { return ch_; }

  // Waits until the request ended (or 60 s: a hang fails the test instead of
  // blocking it).
  Output wait() {
    std::unique_lock<std::mutex> lock(mu_);
    const bool ok = cv_.wait_for(lock, std::chrono::seconds(60),
                                 [&] { return out_.finish != FinishReason::none; });
    EXPECT_TRUE(ok) << "request did not finish";
    return out_;
  }
  // Waits until at least n tokens arrived.
  void wait_tokens(size_t n) {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait_for(lock, std::chrono::seconds(60),
                 [&] { return out_.tokens.size() >= n || out_.finish != FinishReason::none; });
  }

 private:
  std::shared_ptr<ResultChannel> ch_;
  const EngineStats* stats_;
  size_t cancel_after_ = 0;
  std::mutex mu_;
  std::condition_variable cv_;
  Output out_;
};

GenerationRequest greedy(std::vector<int32_t> prompt, int32_t max_tokens, bool ignore_eos) {
  GenerationRequest r;
  r.prompt = std::move(prompt);
  r.max_tokens = max_tokens;
  r.sampling.temperature = 0.0f;
  r.sampling.ignore_eos = ignore_eos;
  return r;
}

// Distinct prompts of 6..34 tokens, avoiding the special ids 0..2.
std::vector<int32_t> prompt_for(int i, int32_t len = 0) {
  const int32_t n = len > 0 ? len : 6 + (i * 7) % 29;
  std::vector<int32_t> p;
  for (int32_t j = 0; j < n; ++j) p.push_back(3 + (i * 31 + j * 17 + j * j * 5 + 11) % 93);
  p[0] = 3 + i % 93;  // the first token alone tells the prompts apart
  return p;
}

std::vector<GenerationRequest> request_set(int n) {
  std::vector<GenerationRequest> reqs;
  for (int i = 0; i < n; ++i) {
    auto r = greedy(prompt_for(i), 10 + i % 7, i % 2 == 1);
    if (i % 5 == 0) r.n_top_logprobs = 2;
    reqs.push_back(std::move(r));
  }
  return reqs;
}

Output run_one(Engine& e, GenerationRequest req) {
  Collector c(&e.stats());
  auto st = e.submit(std::move(req), c.channel());
  EXPECT_TRUE(st.ok()) << st.message();
  return c.wait();
}

// Each request alone: one slot, no prefix cache, a roomy pool.
std::vector<Output> run_alone(const std::vector<GenerationRequest>& reqs, KvType kv = KvType::f16) {
  TestEngine e(config(1, 64, 16, 64, false, kv));
  std::vector<Output> out;
  for (const auto& r : reqs) out.push_back(run_one(*e.engine, r));
  return out;
}

// All requests at once (submitted from several threads).
std::vector<Output> run_together(Engine& e, const std::vector<GenerationRequest>& reqs) {
  std::vector<std::unique_ptr<Collector>> cs;
  for (size_t i = 0; i < reqs.size(); ++i) cs.push_back(std::make_unique<Collector>(&e.stats()));
  std::vector<std::thread> submitters;
  for (int t = 0; t < 4; ++t)
    submitters.emplace_back([&, t] {
      for (size_t i = size_t(t); i < reqs.size(); i += 4) {
        auto st = e.submit(reqs[i], cs[i]->channel());
        EXPECT_TRUE(st.ok()) << st.message();
      }
    });
  for (auto& t : submitters) t.join();
  std::vector<Output> out;
  for (auto& c : cs) out.push_back(c->wait());
  return out;
}

void expect_same(const std::vector<Output>& got, const std::vector<Output>& want) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i) {
    EXPECT_EQ(got[i].tokens, want[i].tokens) << "request " << i;
    EXPECT_EQ(got[i].finish, want[i].finish) << "request " << i;
    ASSERT_EQ(got[i].logprobs.size(), want[i].logprobs.size());
    for (size_t k = 0; k < got[i].logprobs.size(); ++k) {
      ASSERT_EQ(got[i].logprobs[k].has_value(), want[i].logprobs[k].has_value());
      if (!got[i].logprobs[k]) continue;
      EXPECT_EQ(got[i].logprobs[k]->chosen.logprob, want[i].logprobs[k]->chosen.logprob);
      ASSERT_EQ(got[i].logprobs[k]->top.size(), want[i].logprobs[k]->top.size());
      for (size_t j = 0; j < got[i].logprobs[k]->top.size(); ++j)
        EXPECT_EQ(got[i].logprobs[k]->top[j].id, want[i].logprobs[k]->top[j].id);
    }
  }
}

// The engine against a plain greedy loop on a bare backend: the engine's
// bookkeeping (positions, block tables, the token fed back) is right, not
// merely self-consistent.
TEST(Engine, MatchesPlainGreedyLoop) {
  const auto req = greedy(prompt_for(3, 21), 12, true);
  auto be = make_backend();
  KvCacheConfig kv;
  kv.block_size = 16;
  kv.n_blocks = 4;
  ASSERT_TRUE(be->init_kv_cache(kv).ok());
  const std::vector<int32_t> blocks = {3, 1, 2, 0};
  std::vector<int32_t> want;
  Batch b;
  int32_t pos = 0;
  std::vector<int32_t> feed = req.prompt;
  while (int32_t(want.size()) < req.max_tokens) {
    b.clear();
    const int32_t s = b.add_seq(blocks);
    for (size_t i = 0; i < feed.size(); ++i) b.add(feed[i], pos++, s, i + 1 == feed.size());
    ASSERT_TRUE(be->forward(b).ok());
    ASSERT_TRUE(be->synchronize().ok());
    const auto l = be->logits(0);
    want.push_back(engine::argmax(l.data(), int32_t(l.size())));
    feed = {want.back()};
  }
  TestEngine e(config(4, 8, 4, 32, true));  // prefill in chunks of 8, blocks of 4
  const Output got = run_one(*e.engine, req);
  EXPECT_EQ(got.tokens, want);
  EXPECT_EQ(got.finish, FinishReason::length);
  EXPECT_EQ(got.cached, 0);
}

TEST(Engine, SixtyFourConcurrentRequestsMatchRunningAlone) {
  const auto reqs = request_set(64);
  const auto alone = run_alone(reqs);
  TestEngine e(config(64, 256, 16, 512, true));
  const auto together = run_together(*e.engine, reqs);
  expect_same(together, alone);
  const EngineStats& st = e->stats();
  std::printf(
      "[ engine ] 64 requests: %llu steps, max %lld seqs/step, %llu mixed steps (max %lld "
      "seqs)\n",
      (unsigned long long)st.steps.load(), (long long)st.max_seqs_in_step.load(),
      (unsigned long long)st.mixed_steps.load(), (long long)st.max_seqs_in_mixed_step.load());
  EXPECT_GE(st.max_seqs_in_mixed_step.load(), 32);
  EXPECT_GT(st.mixed_steps.load(), 0u);
  EXPECT_EQ(st.preemptions.load(), 0u);
  int64_t generated = 0, prompt = 0;
  for (size_t i = 0; i < reqs.size(); ++i) {
    generated += int64_t(together[i].tokens.size());
    prompt += int64_t(reqs[i].prompt.size());
  }
  EXPECT_EQ(st.generated_tokens.load(), uint64_t(generated));
  EXPECT_EQ(st.prompt_tokens.load(), uint64_t(prompt));
  EXPECT_EQ(st.prompt_tokens_computed.load() + st.prompt_tokens_cached.load(), uint64_t(prompt));
  // Everything done: no sequence holds a block; the engine sleeps (no busy loop).
  EXPECT_EQ(st.running.load(), 0);
  EXPECT_EQ(st.waiting.load(), 0);
  EXPECT_EQ(st.kv_blocks_used.load(), 0);
  const uint64_t steps = st.steps.load();
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EXPECT_EQ(st.steps.load(), steps);
}

// A pool far too small for the running set: the newest sequences are
// preempted and recomputed, and every output still matches.
class EnginePreemption : public ::testing::TestWithParam<std::tuple<KvType, bool>> {};

TEST_P(EnginePreemption, TinyKvPoolGivesIdenticalOutputs) {
  const auto [kv, prefix] = GetParam();
  const auto reqs = request_set(12);
  const auto alone = run_alone(reqs, kv);
  // Blocks of 4, 16 of them (64 positions): every request fits alone
  // (<= 34 + 16 positions), 8 running at once never do.
  TestEngine e(config(8, 48, 4, 16, prefix, kv));
  const auto together = run_together(*e.engine, reqs);
  expect_same(together, alone);
  const EngineStats& st = e->stats();
  EXPECT_GT(st.preemptions.load(), 0u);
  EXPECT_EQ(st.kv_blocks_used.load(), 0);
  EXPECT_EQ(st.running.load(), 0);
}

INSTANTIATE_TEST_SUITE_P(KvTypes, EnginePreemption,
                         ::testing::Combine(::testing::Values(KvType::f16, KvType::fp8,
                                                              KvType::q8_0, KvType::f32),
                                            ::testing::Bool()),
                         [](const auto& info) {
                           return std::string(kv_type_name(std::get<0>(info.param))) +
                                  (std::get<1>(info.param) ? "_prefix" : "_noprefix");
                         });

// Everything at once: shared prefixes, a pool that forces preemption and
// eviction, seeded sampling (its state must survive preemption) and
// cancellations at arbitrary moments.
TEST(Engine, StressSharedPrefixesPreemptionAndCancels) {
  std::vector<GenerationRequest> reqs;
  for (int i = 0; i < 48; ++i) {
    std::vector<int32_t> p = prompt_for(100 + i / 4, 20);  // 12 groups of 4 share 20 tokens
    for (int j = 0; j < 4 + (i * 5) % 9; ++j) p.push_back(3 + (i * 11 + j * 7) % 93);
    auto r = greedy(p, 8 + i % 5, i % 2 == 0);
    if (i % 3 == 0) {
      r.sampling.temperature = 0.8f;
      r.sampling.top_k = 10;
      r.sampling.seed = uint64_t(i);
    }
    if (i % 4 == 1) r.n_top_logprobs = 1;
    reqs.push_back(std::move(r));
  }
  const auto alone = run_alone(reqs);

  TestEngine e(config(16, 40, 4, 20, true));
  std::vector<std::unique_ptr<Collector>> cs;
  for (size_t i = 0; i < reqs.size(); ++i) {
    cs.push_back(std::make_unique<Collector>(&e->stats()));
    ASSERT_TRUE(e->submit(reqs[i], cs[i]->channel()).ok());
    if (i % 7 == 3) cs[i]->channel()->cancel();
    if (i % 7 == 5 && i > 0) cs[i - 1]->channel()->cancel();
  }
  for (size_t i = 0; i < reqs.size(); ++i) {
    const Output o = cs[i]->wait();
    if (o.finish == FinishReason::cancelled) {
      ASSERT_TRUE(i % 7 == 3 || i % 7 == 4) << "request " << i;
      ASSERT_LE(o.tokens.size(), alone[i].tokens.size());
      EXPECT_TRUE(std::equal(o.tokens.begin(), o.tokens.end(), alone[i].tokens.begin()));
    } else {
      EXPECT_EQ(o.tokens, alone[i].tokens) << "request " << i;
      EXPECT_EQ(o.finish, alone[i].finish) << "request " << i;
    }
  }
  const EngineStats& st = e->stats();
  std::printf("[ engine ] stress: %llu steps, %llu preemptions, prefix hits %llu / %llu\n",
              (unsigned long long)st.steps.load(), (unsigned long long)st.preemptions.load(),
              (unsigned long long)st.prefix_hits.load(),
              (unsigned long long)st.prefix_lookups.load());
  EXPECT_GT(st.preemptions.load(), 0u);
  EXPECT_GT(st.prefix_hits.load(), 0u);
  EXPECT_EQ(st.kv_blocks_used.load(), 0);
  EXPECT_EQ(st.running.load(), 0);
  EXPECT_EQ(st.waiting.load(), 0);
}

TEST(Engine, PrefixCacheSkipsComputationAndKeepsOutputs) {
  const std::vector<int32_t> a = prompt_for(5, 45);
  std::vector<int32_t> b(a.begin(), a.begin() + 37);
  for (int j = 0; j < 8; ++j) b.push_back(3 + (j * 13 + 7) % 93);  // differs from position 37 on
  ASSERT_NE(b[37], a[37]);
  const auto want = run_alone({greedy(a, 8, true), greedy(b, 8, true)});

  TestEngine e(config(4, 64, 8, 64, true));
  const EngineStats& st = e->stats();
  const Output first = run_one(*e.engine, greedy(a, 8, true));
  EXPECT_EQ(first.cached, 0);
  EXPECT_EQ(first.tokens, want[0].tokens);
  EXPECT_EQ(st.prompt_tokens_computed.load(), a.size());

  // b shares 37 tokens with a: 4 full blocks of 8.
  const uint64_t computed0 = st.prompt_tokens_computed.load();
  const uint64_t hits0 = st.prefix_hits.load(), lookups0 = st.prefix_lookups.load();
  const Output second = run_one(*e.engine, greedy(b, 8, true));
  EXPECT_EQ(second.cached, 32);
  EXPECT_EQ(second.tokens, want[1].tokens);
  EXPECT_EQ(st.prompt_tokens_computed.load() - computed0, b.size() - 32);
  EXPECT_EQ(st.prefix_hits.load() - hits0, 4u);
  EXPECT_EQ(st.prefix_lookups.load() - lookups0, (b.size() - 1) / 8);
  EXPECT_EQ(st.prompt_tokens_cached.load(), 32u);

  // a again: every full block but the one holding its last token (whose
  // logits must be computed): (45 - 1) / 8 = 5 blocks.
  const Output third = run_one(*e.engine, greedy(a, 8, true));
  EXPECT_EQ(third.cached, 40);
  EXPECT_EQ(third.tokens, want[0].tokens);
  EXPECT_EQ(st.prefix_collisions.load(), 0u);
  EXPECT_GT(st.kv_blocks_cached.load(), 0);
  EXPECT_EQ(st.kv_blocks_used.load(), 0);

  // Several requests with the same prompt at once share blocks and agree.
  std::vector<GenerationRequest> same(6, greedy(a, 8, true));
  for (const auto& o : run_together(*e.engine, same)) {
    EXPECT_EQ(o.tokens, want[0].tokens);
    EXPECT_EQ(o.cached, 40);
  }
}

TEST(Engine, PrefixCacheEvictsUnreferencedBlocksWhenThePoolRunsOut) {
  // 12 blocks of 4: each 30-token prompt leaves 7 full blocks cached; the
  // next distinct prompts must reclaim them (LRU) rather than fail.
  const auto reqs = request_set(6);
  const auto want = run_alone(reqs);
  TestEngine e(config(1, 64, 4, 14, true));
  for (size_t i = 0; i < reqs.size(); ++i)
    EXPECT_EQ(run_one(*e.engine, reqs[i]).tokens, want[i].tokens);
  EXPECT_EQ(e->stats().kv_blocks_used.load(), 0);
  EXPECT_GT(e->stats().kv_blocks_cached.load(), 0);
  EXPECT_EQ(e->stats().preemptions.load(), 0u);
}

// With every key forced to the same value, lookups find the wrong blocks;
// verification against the stored token ids (and the parent entry) must
// reject them, and the outputs must not change.
TEST(Engine, ForcedHashCollisionsAreCaughtByTokenVerification) {
  const std::vector<int32_t> a = prompt_for(8, 30);
  const std::vector<int32_t> b = prompt_for(9, 30);
  // c repeats one block of 8 tokens: block 1 has the same token ids as block
  // 0 but follows a different prefix (other positions): only the parent
  // check tells them apart.
  std::vector<int32_t> c;
  for (int r = 0; r < 3; ++r)
    for (int j = 0; j < 8; ++j) c.push_back(a[size_t(j)]);
  c.push_back(50);
  const auto want = run_alone({greedy(a, 6, true), greedy(b, 6, true), greedy(c, 6, true)});

  EngineConfig cfg = config(2, 64, 8, 64, true);
  cfg.prefix_hash_for_testing = [](uint64_t, std::span<const int32_t>) { return uint64_t(42); };
  TestEngine e(cfg);
  const EngineStats& st = e->stats();
  const Output oa = run_one(*e.engine, greedy(a, 6, true));
  EXPECT_EQ(oa.tokens, want[0].tokens);
  const uint64_t coll0 = st.prefix_collisions.load();  // a's own block 1 collided with block 0
  EXPECT_GT(coll0, 0u);
  const Output ob = run_one(*e.engine, greedy(b, 6, true));
  EXPECT_EQ(ob.cached, 0);  // key 42 found a's block 0: other tokens, rejected
  EXPECT_EQ(ob.tokens, want[1].tokens);
  EXPECT_GT(st.prefix_collisions.load(), coll0);
  const Output oa2 = run_one(*e.engine, greedy(a, 6, true));
  EXPECT_EQ(oa2.cached, 8);  // block 0 verified; block 1's lookup found block 0 again: rejected
  EXPECT_EQ(oa2.tokens, want[0].tokens);
  const uint64_t coll1 = st.prefix_collisions.load();
  const Output oc = run_one(*e.engine, greedy(c, 6, true));
  EXPECT_EQ(oc.cached, 8);  // c's block 1 = a's block 0 token for token, but not the same prefix
  EXPECT_EQ(oc.tokens, want[2].tokens);
  EXPECT_GT(st.prefix_collisions.load(), coll1);
}

TEST(PrefixCache, ChainsVerifiesAndEvictsLeastRecentlyUsed) {
  KvBlockPool pool(6);
  PrefixCache cache(pool, 2);
  const std::vector<int32_t> t = {5, 6, 7, 8, 9, 10};
  std::vector<int32_t> table;
  ASSERT_TRUE(pool.grow(table, 6, 2));
  PrefixChain chain;
  cache.insert(t, table, 3, chain);
  EXPECT_EQ(cache.n_cached(), 3);
  EXPECT_EQ(pool.ref_count(table[0]), 2);
  cache.release_all(table);
  EXPECT_EQ(cache.n_evictable(), 3);
  EXPECT_EQ(pool.n_free(), 3);
  // A lookup shares the chain; a different second block stops it.
  std::vector<int32_t> t2 = {5, 6, 1, 1, 9, 10}, table2;
  PrefixChain chain2;
  EXPECT_EQ(cache.match(t2, 3, table2, chain2), 1);
  EXPECT_EQ(cache.n_evictable(), 2);
  cache.release_all(table2);
  // Eviction takes the tail of the chain first (released last block first),
  // then the head that was just used.
  EXPECT_EQ(cache.evict(2), 2);
  std::vector<int32_t> table3;
  PrefixChain chain3;
  EXPECT_EQ(cache.match(t, 3, table3, chain3), 1);
  cache.release_all(table3);
  EXPECT_EQ(cache.evict(5), 1);
  EXPECT_EQ(pool.n_free(), 6);
  EXPECT_EQ(cache.n_cached(), 0);
}

// Tails (a baked prompt's partial last block): found only right after their
// parent, longest first, never mistaken for a full block, held while a
// sequence copies them and evictable like baked blocks.
TEST(PrefixCache, TailsMatchAfterTheirParentAndEvict) {
  KvBlockPool pool(6);
  PrefixCache cache(pool, 4);
  const std::vector<int32_t> head = {5, 6, 7, 8};
  std::vector<int32_t> one;
  ASSERT_TRUE(pool.grow(one, 4, 4));
  PrefixChain root, after;
  ASSERT_TRUE(cache.adopt(head, one[0], after));  // the full block, chain advanced
  std::vector<int32_t> t1, t2;
  ASSERT_TRUE(pool.grow(t1, 4, 4));
  ASSERT_TRUE(pool.grow(t2, 4, 4));
  const std::vector<int32_t> tail3 = {9, 10, 11}, tail1 = {9};
  ASSERT_TRUE(cache.adopt_tail(tail3, t1[0], after));
  ASSERT_TRUE(cache.adopt_tail(tail1, t2[0], after));
  EXPECT_FALSE(cache.adopt_tail(tail3, t2[0], after));  // already cached (caller keeps its block)
  EXPECT_EQ(cache.n_evictable(), 3);

  // Longest first, at most max_tokens, only after the right parent.
  const std::vector<int32_t> rest = {9, 10, 11, 12};
  auto hit = cache.match_tail(rest, 3, after);
  EXPECT_EQ(hit.block, t1[0]);
  EXPECT_EQ(hit.n_tokens, 3);
  EXPECT_EQ(pool.ref_count(t1[0]), 2);  // held for the copy
  EXPECT_EQ(cache.n_evictable(), 2);
  cache.release(hit.block);
  EXPECT_EQ(cache.n_evictable(), 3);
  EXPECT_EQ(cache.match_tail(rest, 2, after).n_tokens, 1);  // 3 does not fit: the 1-token tail
  cache.release(t2[0]);
  EXPECT_EQ(cache.match_tail(rest, 3, root).block, -1);     // not after the root
  EXPECT_EQ(cache.match_tail(std::vector<int32_t>{9, 99}, 3, after).n_tokens, 1);
  cache.release(t2[0]);
  // A full block of the same leading tokens is not a tail and vice versa.
  std::vector<int32_t> table;
  PrefixChain c;
  const std::vector<int32_t> prompt = {5, 6, 7, 8, 9, 10, 11, 12};
  EXPECT_EQ(cache.match(prompt, 2, table, c), 1);
  cache.release_all(table);
  EXPECT_EQ(cache.peek_tail(tail3, after), t1[0]);
  EXPECT_EQ(cache.peek_tail(std::vector<int32_t>{9, 10}, after), -1);

  EXPECT_EQ(cache.evict(6), 3);
  EXPECT_EQ(pool.n_free(), 6);
  EXPECT_EQ(cache.match_tail(rest, 3, after).block, -1);
}

TEST(PrefixBlocks, LongestChainFollowsParentsToTheDeepestBlock) {
  PrefixBlocks b;
  b.block_size = 2;
  EXPECT_TRUE(longest_prefix_chain(b).empty());
  auto add = [&](int32_t parent, std::vector<int32_t> t) { b.blocks.push_back({parent, std::move(t), {}}); };
  add(-1, {1, 2});     // 0: chain A
  add(0, {3, 4});      // 1
  add(-1, {7, 8});     // 2: chain B, longer once its tail counts
  add(2, {9, 10});     // 3
  add(1, {5});         // 4: A's tail, A = 5 tokens
  add(3, {11, 12});    // 5
  add(5, {13});        // 6: B's tail, B = 7 tokens
  add(0, {30, 31});    // 7: a branch of A
  EXPECT_EQ(longest_prefix_chain(b), (std::vector<int32_t>{7, 8, 9, 10, 11, 12, 13}));
  // Every chain, one per block that is nobody's parent, in block order.
  const std::vector<std::vector<int32_t>> chains = {{1, 2, 3, 4, 5}, {7, 8, 9, 10, 11, 12, 13}, {1, 2, 30, 31}};
  EXPECT_EQ(prefix_chains(b), chains);
  b.blocks.resize(5);  // B without its last two blocks: 4 tokens, A is longest
  EXPECT_EQ(longest_prefix_chain(b), (std::vector<int32_t>{1, 2, 3, 4, 5}));
}

TEST(Engine, CancellationFreesBlocksWithinOneStep) {
  TestEngine e(config(1, 64, 4, 128, true));
  const EngineStats& st = e->stats();
  Collector a(&st), b(&st);
  a.cancel_after(3);
  ASSERT_TRUE(e->submit(greedy(prompt_for(1, 20), 400, true), a.channel()).ok());
  ASSERT_TRUE(e->submit(greedy(prompt_for(2, 10), 5, true), b.channel()).ok());  // waits: 1 slot
  const Output oa = a.wait();
  EXPECT_EQ(oa.finish, FinishReason::cancelled);
  EXPECT_EQ(oa.tokens.size(), 3u);
  EXPECT_GT(oa.blocks_used_at_cancel, 0);
  // The flag went up during step k; step k+1 dropped the sequence before
  // running anything (the step counter had not moved), blocks all free.
  EXPECT_EQ(oa.steps_at_end, oa.steps_at_cancel);
  EXPECT_EQ(oa.blocks_used_at_end, 0);  // b not admitted yet
  const Output ob = b.wait();
  EXPECT_EQ(ob.finish, FinishReason::length);
  EXPECT_EQ(ob.tokens.size(), 5u);
  // From another thread at any moment: a request cancelled while waiting
  // ends with no token; a running one within a step of the flag.
  Collector c(&st), d(&st);
  ASSERT_TRUE(e->submit(greedy(prompt_for(3, 10), 480, true), c.channel()).ok());
  ASSERT_TRUE(e->submit(greedy(prompt_for(4, 10), 5, true), d.channel()).ok());
  d.channel()->cancel();
  const Output od = d.wait();
  EXPECT_EQ(od.finish, FinishReason::cancelled);
  EXPECT_TRUE(od.tokens.empty());
  EXPECT_EQ(od.cached, 0);
  const uint64_t s0 = st.steps.load();
  c.channel()->cancel();
  const Output oc = c.wait();
  if (oc.finish == FinishReason::cancelled) {  // (480 tokens could win on a stalled machine)
    EXPECT_LE(oc.steps_at_end, s0 + 1);  // the step in flight may finish; the next one drops it
    EXPECT_EQ(oc.blocks_used_at_end, 0);
  }
}

TEST(Engine, FinishReasonsAndLogprobs) {
  TestEngine e(config(4, 64, 8, 64, true));
  // max_tokens
  Output o = run_one(*e.engine, greedy(prompt_for(1), 5, true));
  EXPECT_EQ(o.finish, FinishReason::length);
  EXPECT_EQ(o.tokens.size(), 5u);
  EXPECT_EQ(o.n_events, 5);
  // End of generation: a large bias makes EOS the greedy choice.
  auto eos_req = greedy(prompt_for(2), 10, false);
  eos_req.sampling.logit_bias = {{kEos, 100.0f}};
  o = run_one(*e.engine, eos_req);
  EXPECT_EQ(o.finish, FinishReason::stop);
  EXPECT_EQ(o.tokens, std::vector<int32_t>{kEos});
  // ignore_eos masks it: generation runs to max_tokens.
  eos_req.sampling.ignore_eos = true;
  o = run_one(*e.engine, eos_req);
  EXPECT_EQ(o.finish, FinishReason::length);
  EXPECT_EQ(o.tokens.size(), 10u);
  for (int32_t t : o.tokens) EXPECT_NE(t, kEos);
  // max_tokens 0: one final event, nothing generated.
  o = run_one(*e.engine, greedy(prompt_for(3), 0, true));
  EXPECT_EQ(o.finish, FinishReason::length);
  EXPECT_TRUE(o.tokens.empty());
  EXPECT_EQ(o.n_events, 1);
  // Logprobs: greedy picks the top entry; log-probabilities of the raw logits.
  auto lp_req = greedy(prompt_for(4), 4, true);
  lp_req.n_top_logprobs = 3;
  o = run_one(*e.engine, lp_req);
  ASSERT_EQ(o.logprobs.size(), 4u);
  for (size_t i = 0; i < o.logprobs.size(); ++i) {
    ASSERT_TRUE(o.logprobs[i].has_value());
    EXPECT_EQ(o.logprobs[i]->chosen.id, o.tokens[i]);
    ASSERT_EQ(o.logprobs[i]->top.size(), 3u);
    EXPECT_EQ(o.logprobs[i]->top[0].id, o.tokens[i]);
    EXPECT_LE(o.logprobs[i]->chosen.logprob, 0.0f);
  }
  // Seeded sampling is reproducible through the engine, alone or batched.
  auto sampled = greedy(prompt_for(6), 12, true);
  sampled.sampling.temperature = 0.9f;
  sampled.sampling.top_k = 20;
  sampled.sampling.seed = 1234;
  const auto one = run_one(*e.engine, sampled);
  const auto many = run_together(*e.engine, std::vector<GenerationRequest>(4, sampled));
  for (const auto& m : many) EXPECT_EQ(m.tokens, one.tokens);
}

TEST(Engine, RefusesRequestsThatCanNeverFit) {
  EngineConfig cfg = config(2, 16, 4, 8, true);  // the pool holds 32 positions
  cfg.ctx_size = 64;
  TestEngine e(cfg);
  auto ch = std::make_shared<ResultChannel>();
  auto error_of = [&](GenerationRequest r) {
    Status st = e->submit(std::move(r), ch);
    return st.ok() ? std::string() : st.message();
  };
  std::string m = error_of(greedy(prompt_for(1, 60), 10, true));
  EXPECT_NE(m.find("--ctx-size"), std::string::npos) << m;
  EXPECT_NE(m.find("70"), std::string::npos) << m;
  m = error_of(greedy(prompt_for(1, 30), 10, true));
  EXPECT_NE(m.find("KV cache holds 32"), std::string::npos) << m;
  EXPECT_NE(error_of(greedy({}, 4, true)).find("empty"), std::string::npos);
  EXPECT_NE(error_of(greedy({3, 96}, 4, true)).find("outside the vocabulary"), std::string::npos);
  EXPECT_NE(error_of(greedy({3}, -1, true)).find("max_tokens"), std::string::npos);
  auto bad = greedy({3}, 4, true);
  bad.sampling.top_p = 2.0f;
  EXPECT_NE(error_of(bad).find("top_p"), std::string::npos);
  std::vector<TokenEvent> evs;
  EXPECT_EQ(ch->drain(evs), 0u);  // refused requests never touch the channel
  // Exactly at the limits is fine.
  EXPECT_EQ(error_of(greedy(prompt_for(1, 24), 8, true)), "");
  e->stop();
  EXPECT_NE(error_of(greedy({3}, 4, true)).find("shutting down"), std::string::npos);

  // Configurations that cannot work are refused at create().
  auto be = make_backend();
  auto r = Engine::create(*be, *lm().model, *lm().tok, config(8, 4, 4, 8, true));
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.message().find("--max-batch-tokens"), std::string::npos);
  EXPECT_FALSE(Engine::create(*be, *lm().model, *lm().tok, config(1, 4, 4, 0, true)).ok());
}

// A backend failure fails the requests of that step with FinishReason::error
// and the engine goes on serving. Provoked for real: the backend's KV pool is
// shrunk behind the engine's back, so a long prompt's block ids fall outside
// it and the backend's batch check refuses the batch.
TEST(Engine, BackendErrorFailsTheStepsRequestsAndServingGoesOn) {
  TestEngine e(config(2, 64, 4, 16, false));
  KvCacheConfig small = e.backend->kv_config();
  small.n_blocks = 2;
  ASSERT_TRUE(e.backend->init_kv_cache(small).ok());
  const Output bad = run_one(*e.engine, greedy(prompt_for(1, 20), 4, true));
  EXPECT_EQ(bad.finish, FinishReason::error);
  EXPECT_NE(bad.error.find("backend"), std::string::npos) << bad.error;
  EXPECT_NE(bad.error.find("outside the pool"), std::string::npos) << bad.error;
  EXPECT_EQ(bad.cached, 0);
  EXPECT_EQ(e->stats().kv_blocks_used.load(), 0);
  // Blocks 0 and 1 (the first the pool hands out again) still exist.
  const Output good = run_one(*e.engine, greedy(prompt_for(2, 3), 4, true));
  EXPECT_EQ(good.finish, FinishReason::length);
  EXPECT_EQ(good.tokens.size(), 4u);
}

TEST(Engine, StopCancelsWhatIsLeft) {
  TestEngine e(config(1, 16, 4, 64, true), /*start=*/false);
  Collector a, b;
  ASSERT_TRUE(e->submit(greedy(prompt_for(1), 4, true), a.channel()).ok());
  ASSERT_TRUE(e->submit(greedy(prompt_for(2), 4, true), b.channel()).ok());
  EXPECT_EQ(e->stats().waiting.load(), 2);
  e->stop();
  EXPECT_EQ(a.wait().finish, FinishReason::cancelled);
  EXPECT_EQ(b.wait().finish, FinishReason::cancelled);
}

// --- sampling on the backend's device ---------------------------------------------

// The CPU backend with the device-sampling half of the Backend interface, as
// a GPU backend fills it: each row's token from its parameters and the draw
// the engine passed, through the host sampler's choose() (the reference the
// CUDA kernel is held to, bit for bit, in tests/gpu/test_sample.cpp). Every
// third row is declined, as the GPU declines rows it cannot take, so the
// fallback runs too.
class DeviceSamplingCpu final : public test::DelegatingBackend {
 public:
  DeviceSamplingCpu() : DelegatingBackend(make_backend()) {}
  std::string name() const override { return "cpu+sampling"; }

  bool supports_sampling() const override { return true; }
  Status sample_rows(std::span<const DeviceSampleRow> rows) override {
    chosen_.assign(size_t(n_logits()), -1);
    for (const auto& r : rows) {
      EXPECT_TRUE(r.row >= 0 && r.row < n_logits());
      EXPECT_TRUE(r.u >= 0.0 && r.u < 1.0);
      if (++n_rows_ % 3 == 0) continue;
      SamplingParams p;
      p.temperature = r.temperature;
      p.top_k = r.top_k;
      p.top_p = r.top_p;
      p.min_p = r.min_p;
      chosen_[size_t(r.row)] = Sampler(p).choose(logits(r.row), lm().n_vocab(), r.u);
      ++n_chosen_;
    }
    return Status::success();
  }
  int32_t sampled(int32_t row) const override { return chosen_[size_t(row)]; }

  int64_t n_rows_ = 0, n_chosen_ = 0;

 private:
  std::vector<int32_t> chosen_;
};

// Sampled requests of every kind in one batch: those the device may take
// (temperature with top-k / top-p / min-p) get the tokens host sampling gives
// them, draw for draw (declined rows fall back with the same draw), and the
// rest (penalties, logprobs, greedy) never reach the device.
TEST(Engine, DeviceSamplingGivesTheHostSamplersTokens) {
  std::vector<GenerationRequest> reqs;
  for (int i = 0; i < 12; ++i) {
    GenerationRequest r;
    r.prompt = prompt_for(i);
    r.max_tokens = 12;
    r.sampling.ignore_eos = i % 4 == 3;  // banning EOS is host-only
    // The tiny random model is sharply peaked: only high temperatures make
    // the draw (and so a draw consumed wrongly) change the tokens.
    r.sampling.temperature = 4.0f + 4.0f * float(i % 4);
    r.sampling.seed = 1000 + uint64_t(i);
    if (i % 3 == 0) r.sampling.top_k = 5 + i;
    if (i % 3 == 1) r.sampling.top_p = 0.7f;
    if (i % 2 == 0) r.sampling.min_p = 0.05f;
    reqs.push_back(r);
  }
  reqs[5].sampling.presence_penalty = 0.5f;  // host only
  reqs[6].n_top_logprobs = 2;                // host only
  reqs[7].sampling.temperature = 0.0f;       // argmax
  const auto want = run_alone(reqs);

  DeviceSamplingCpu backend;
  auto e = Engine::create(backend, *lm().model, *lm().tok, config(12, 256, 16, 128, false));
  ASSERT_TRUE(e.ok()) << e.message();
  (*e)->start();
  const auto got = run_together(**e, reqs);
  expect_same(got, want);
  EXPECT_GT(backend.n_chosen_, 40);
  EXPECT_GT(backend.n_rows_, backend.n_chosen_);  // some were declined
  EXPECT_EQ((*e)->stats().device_sampled_tokens.load(), uint64_t(backend.n_chosen_));
  (*e)->stop();
}

// --- embeddings ----------------------------------------------------------------

// Mean of the final-normed hidden states, L2-normalized, computed straight
// from the backend in one batch.
std::vector<float> embed_directly(const std::vector<int32_t>& tokens) {
  auto be = make_backend();
  KvCacheConfig kv;
  kv.block_size = 16;
  kv.n_blocks = 4;
  EXPECT_TRUE(be->init_kv_cache(kv).ok());
  const std::vector<int32_t> blocks = {0, 1, 2, 3};
  Batch b;
  const int32_t s = b.add_seq(blocks);
  for (size_t i = 0; i < tokens.size(); ++i) b.add(tokens[i], int32_t(i), s, false, true);
  EXPECT_TRUE(be->forward(b).ok());
  EXPECT_EQ(be->n_hidden(), int32_t(tokens.size()));
  EXPECT_EQ(be->n_logits(), 0);
  std::vector<double> sum(64, 0.0);
  for (int32_t i = 0; i < be->n_hidden(); ++i)
    for (size_t e = 0; e < sum.size(); ++e) sum[e] += double(be->hidden(i)[e]);
  double n2 = 0;
  for (double v : sum) n2 += (v / double(tokens.size())) * (v / double(tokens.size()));
  std::vector<float> out;
  for (double v : sum) out.push_back(float(v * (1.0 / double(tokens.size())) / std::sqrt(n2)));
  return out;
}

TEST(Backend, HiddenStatesAreWhatTheOutputProjectionMultiplies) {
  auto be = make_backend(cpu::MatmulPath::reference);
  KvCacheConfig kv;
  kv.type = KvType::f32;
  kv.block_size = 16;
  kv.n_blocks = 2;
  ASSERT_TRUE(be->init_kv_cache(kv).ok());
  const std::vector<int32_t> blocks = {0, 1};
  const auto p = prompt_for(2, 12);
  Batch b;
  const int32_t s = b.add_seq(blocks);
  // Rows: logits only, hidden only, both, neither.
  for (size_t i = 0; i < p.size(); ++i)
    b.add(p[i], int32_t(i), s, i % 4 == 0 || i % 4 == 2, i % 4 >= 1 && i % 4 <= 2);
  ASSERT_TRUE(be->forward(b).ok());
  ASSERT_EQ(be->n_logits(), 6);
  ASSERT_EQ(be->n_hidden(), 6);
  // Row 2 (logits #1, hidden #1): logits = token_embd (tied) x hidden.
  const auto& emb = lm().tiny.at("token_embd.weight").values;  // [n_vocab, 64]
  const auto h = be->hidden(1);
  const auto l = be->logits(1);
  for (int32_t v = 0; v < lm().n_vocab(); ++v) {
    double dot = 0;
    for (int e = 0; e < 64; ++e) dot += double(emb[size_t(v) * 64 + size_t(e)]) * h[size_t(e)];
    EXPECT_NEAR(l[size_t(v)], dot, 1e-4 * (1 + std::abs(dot))) << "vocab " << v;
  }
  // Logit rows are unchanged by hidden rows next to them.
  Batch b2;
  const int32_t s2 = b2.add_seq(blocks);
  for (size_t i = 0; i < p.size(); ++i) b2.add(p[i], int32_t(i), s2, i % 4 == 0 || i % 4 == 2);
  const std::vector<float> before(l.begin(), l.end());
  ASSERT_TRUE(be->forward(b2).ok());
  const auto l2 = be->logits(1);
  EXPECT_EQ(std::vector<float>(l2.begin(), l2.end()), before);
  EXPECT_EQ(be->n_hidden(), 0);
}

TEST(Engine, EmbeddingsAreNormalizedMeansAndRunBesideGeneration) {
  const std::vector<std::vector<int32_t>> inputs = {prompt_for(1, 30), prompt_for(2, 7),
                                                    prompt_for(3, 45)};
  const auto reqs = request_set(6);
  const auto alone = run_alone(reqs);
  // A small token budget: the inputs run in chunks, beside generation.
  TestEngine e(config(4, 16, 8, 64, true));
  std::mutex mu;
  std::condition_variable cv;
  std::optional<Result<std::vector<std::vector<float>>>> got;
  ASSERT_TRUE(e->submit_embeddings(inputs, [&](Result<std::vector<std::vector<float>>> r) {
                 std::lock_guard<std::mutex> lock(mu);
                 got.emplace(std::move(r));
                 cv.notify_all();
               }).ok());
  const auto together = run_together(*e.engine, reqs);
  {
    std::unique_lock<std::mutex> lock(mu);
    ASSERT_TRUE(cv.wait_for(lock, std::chrono::seconds(60), [&] { return got.has_value(); }));
  }
  ASSERT_TRUE(got->ok()) << got->message();
  const auto& vecs = **got;
  ASSERT_EQ(vecs.size(), inputs.size());
  EXPECT_EQ(e->n_embd(), 64);
  for (size_t i = 0; i < inputs.size(); ++i) {
    ASSERT_EQ(vecs[i].size(), 64u);
    double n2 = 0;
    for (float v : vecs[i]) n2 += double(v) * v;
    EXPECT_NEAR(n2, 1.0, 1e-5);
    // Chunked and batched with other work, yet the same bits as in one batch.
    EXPECT_EQ(vecs[i], embed_directly(inputs[i])) << "input " << i;
  }
  expect_same(together, alone);
  EXPECT_EQ(e->stats().embedding_inputs.load(), 3u);
  EXPECT_EQ(e->stats().kv_blocks_used.load(), 0);
  // Bad inputs are refused up front.
  auto noop = [](Result<std::vector<std::vector<float>>>) {};
  EXPECT_FALSE(e->submit_embeddings({}, noop).ok());
  EXPECT_NE(e->submit_embeddings({{3, 4}, {}}, noop).message().find("input 1"), std::string::npos);
  EXPECT_FALSE(e->submit_embeddings({std::vector<int32_t>(600, 3)}, noop).ok());
}

TEST(Engine, KvBlocksForBytes) {
  const auto& hp = lm().model->hparams();
  const uint64_t per = kv_bytes_per_block(hp, KvType::f16, 16);
  // 2 layers x 1 KV head x (32 + 32) x 2 bytes x 16 positions
  EXPECT_EQ(per, 2u * 1 * 64 * 2 * 16);
  EXPECT_EQ(kv_blocks_for_bytes(hp, KvType::f16, 16, 10 * per + per / 2), 10);
  EXPECT_EQ(kv_blocks_for_bytes(hp, KvType::f16, 16, per - 1), 0);
  EXPECT_EQ(kv_blocks_for_bytes(hp, KvType::q8_0, 16, 10 * per), 10 * 64 / 34);
}

// Clearing a partial block's unwritten slots touches exactly those rows of
// every layer's K and V heads in the canonical layout.
TEST(Engine, ClearKvSlotsZeroesOnlyTheSlotsPastTheFirstOnes) {
  model::HParams hp = lm().model->hparams();
  hp.n_head_kv = 2;     // rows of several heads per layer
  hp.head_dim_v = 64;   // K and V rows of different sizes
  const int32_t bs = 4, first = 3;
  for (KvType t : {KvType::f16, KvType::q8_0}) {
    std::vector<uint8_t> block(kv_bytes_per_block(hp, t, bs), uint8_t(0xAB));
    clear_kv_slots(block, hp, t, bs, first);
    size_t at = 0, cleared = 0;
    for (int64_t l = 0; l < hp.n_layer; ++l)
      for (const size_t row : {kv_row_bytes(t, hp.head_dim_k), kv_row_bytes(t, hp.head_dim_v)})
        for (int64_t h = 0; h < hp.n_head_kv; ++h)
          for (int32_t slot = 0; slot < bs; ++slot, at += row)
            for (size_t i = 0; i < row; ++i) {
              ASSERT_EQ(block[at + i], slot < first ? 0xAB : 0) << kv_type_name(t) << " layer " << l << " slot " << slot;
              cleared += slot >= first;
            }
    EXPECT_EQ(at, block.size());
    EXPECT_EQ(cleared, block.size() / size_t(bs));  // one slot of four
  }
}

}  // namespace
