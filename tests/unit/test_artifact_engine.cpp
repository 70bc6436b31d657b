// Baked artifacts with the engine on the CPU backend: weights.bin gives the
// very logits of its source GGUF; prefix blocks exported after warm prompts,
// stored in warm.bin and restored into another engine give prefix-cache hits
// (counters) and exactly the tokens and log-probabilities of computing the
// prefix (the CPU backend is batch- and chunk-invariant); baked blocks
// outlive ordinary cached blocks under eviction; misuse is refused.
#include <gtest/gtest.h>
#include <unistd.h>

#include <condition_variable>
#include <cstring>
#include <filesystem>
#include <mutex>

#include "common/delegating_backend.h"
#include "common/temp_dir.h"
#include "common/tiny_lm.h"
#include "kiln/artifact/warm_file.h"
#include "kiln/artifact/weights_file.h"
#include "kiln/backend/cpu/cpu_backend.h"
#include "kiln/core/threadpool.h"
#include "kiln/engine/engine.h"
#include "kiln/engine/prefix_cache.h"
#include "kiln/model/model.h"
#include "kiln/tokenizer/tokenizer.h"

namespace {

using namespace kiln;
using namespace kiln::engine;
namespace fs = std::filesystem;

// A fresh directory per test.
struct TempDir : test::TempDir {
  TempDir() : test::TempDir("kiln-test-artifact-engine") {}
};

std::unique_ptr<cpu::CpuBackend> cpu_backend(const model::Model& m) {
  cpu::CpuOptions o;
  o.n_threads = 1;
  o.read_env = false;
  auto be = std::make_unique<cpu::CpuBackend>(o);
  EXPECT_TRUE(be->load_weights(m).ok());
  return be;
}

struct Lm {
  std::unique_ptr<model::Model> model;
  std::unique_ptr<Tokenizer> tok;
  explicit Lm(const std::string& path) {
    auto m = model::Model::load(path);
    EXPECT_TRUE(m.ok()) << m.message();
    model = std::move(*m);
    auto t = Tokenizer::from_gguf(model->file());
    EXPECT_TRUE(t.ok()) << t.message();
    tok = std::make_unique<Tokenizer>(std::move(*t));
  }
};

struct Output {
  std::vector<int32_t> tokens;
  std::vector<Logprobs> logprobs;
  int32_t cached = -1;
  FinishReason finish = FinishReason::none;
};

Output run(Engine& e, std::vector<int32_t> prompt, int32_t max_tokens) {
  auto ch = std::make_shared<ResultChannel>();
  std::mutex mu;
  std::condition_variable cv;
  Output out;
  ch->set_notifier([&] {
    std::lock_guard<std::mutex> lock(mu);
    std::vector<TokenEvent> evs;
    ch->drain(evs);
    for (auto& ev : evs) {
      if (out.cached < 0) out.cached = ev.cached_prompt_tokens;
      if (ev.token >= 0) out.tokens.push_back(ev.token);
      if (ev.logprobs) out.logprobs.push_back(*ev.logprobs);
      if (ev.finish != FinishReason::none) out.finish = ev.finish;
    }
    cv.notify_all();
  });
  GenerationRequest r;
  r.prompt = std::move(prompt);
  r.sampling.temperature = 0.0f;
  r.sampling.ignore_eos = true;
  r.max_tokens = max_tokens;
  r.n_top_logprobs = 5;
  EXPECT_TRUE(e.submit(std::move(r), ch).ok());
  std::unique_lock<std::mutex> lock(mu);
  EXPECT_TRUE(cv.wait_for(lock, std::chrono::seconds(60),
                          [&] { return out.finish != FinishReason::none; }));
  lock.unlock();
  ch->set_notifier(nullptr);
  return out;
}

// BOS then n ids from `first` on.
std::vector<int32_t> ids(int32_t first, int32_t n) {
  std::vector<int32_t> v = {1};
  for (int32_t i = 0; i < n; ++i) v.push_back(first + i);
  return v;
}

// Writes exported blocks to a warm.bin and opens it again (the artifact
// round trip every restore goes through).
Result<std::unique_ptr<artifact::WarmFile>> through_warm_file(const std::string& path, KvType kv,
                                                              PrefixBlocks blocks) {
  artifact::WarmData wd;
  wd.fingerprint.kv_type = std::string(kv_type_name(kv));
  wd.prefixes = std::move(blocks);
  ThreadPool pool(1);
  KILN_TRY(artifact::write_warm_file(path, wd, pool));
  return artifact::WarmFile::open(path, pool);
}

EngineConfig config(KvType kv, int32_t block_size, int32_t n_blocks) {
  EngineConfig c;
  c.n_parallel = 2;
  c.max_batch_tokens = 64;
  c.ctx_size = 256;
  c.kv.type = kv;
  c.kv.block_size = block_size;
  c.kv.n_blocks = n_blocks;
  return c;
}

TEST(ArtifactEngine, BakedWeightsGiveTheSourceLogits) {
  TempDir d;
  const std::string src = d / "src.gguf";
  ASSERT_TRUE(test::tiny_lm_writer(DType::Q8_0).write(src).ok());
  ThreadPool pool(2);
  artifact::WeightsBakeOptions o;
  o.source = src;
  o.out = d / "weights.bin";
  o.target = "cpu";
  auto baked = artifact::bake_weights(o, pool);
  ASSERT_TRUE(baked.ok()) << baked.message();
  Lm a(src), b(o.out);
  auto ba = cpu_backend(*a.model), bb = cpu_backend(*b.model);
  const KvCacheConfig kv{KvType::f16, 4, 8};
  ASSERT_TRUE(ba->init_kv_cache(kv).ok());
  ASSERT_TRUE(bb->init_kv_cache(kv).ok());
  std::vector<int32_t> table = {0, 1, 2, 3};
  Batch batch;
  const int32_t s = batch.add_seq(table);
  const std::vector<int32_t> ids = {1, 3, 9, 27, 40, 5, 77, 12, 13};
  for (size_t i = 0; i < ids.size(); ++i) batch.add(ids[i], int32_t(i), s, true);
  ASSERT_TRUE(ba->forward(batch).ok() && ba->synchronize().ok());
  ASSERT_TRUE(bb->forward(batch).ok() && bb->synchronize().ok());
  ASSERT_EQ(ba->n_logits(), int32_t(ids.size()));
  for (int32_t i = 0; i < ba->n_logits(); ++i) {
    const auto x = ba->logits(i), y = bb->logits(i);
    ASSERT_EQ(x.size(), y.size());
    EXPECT_EQ(std::memcmp(x.data(), y.data(), x.size_bytes()), 0) << "row " << i;
  }
}

TEST(ArtifactEngine, KvBlockIoRoundTripsTheCanonicalBytes) {
  TempDir d;
  ASSERT_TRUE(test::tiny_lm_writer().write(d / "m.gguf").ok());
  Lm lm(d / "m.gguf");
  auto be = cpu_backend(*lm.model);
  ASSERT_TRUE(be->init_kv_cache({KvType::q8_0, 4, 3}).ok());
  const uint64_t n = kv_bytes_per_block(lm.model->hparams(), KvType::q8_0, 4);
  std::vector<uint8_t> in(n), out(n);
  for (size_t i = 0; i < n; ++i) in[i] = uint8_t(i * 13 + 1);
  ASSERT_TRUE(be->write_kv_block(2, in).ok());
  ASSERT_TRUE(be->read_kv_block(2, out).ok());
  EXPECT_EQ(in, out);
  EXPECT_FALSE(be->write_kv_block(3, in).ok());
  EXPECT_FALSE(be->read_kv_block(0, std::span<uint8_t>(out).first(n - 1)).ok());
}

// Warm prompt on engine A -> export -> warm.bin -> import into engine B: B's
// request with that prefix hits the baked blocks and equals a fresh engine C.
TEST(ArtifactEngine, RestoredPrefixHitsAndMatchesComputing) {
  TempDir d;
  ASSERT_TRUE(test::tiny_lm_writer().write(d / "m.gguf").ok());
  Lm lm(d / "m.gguf");
  for (KvType kv : {KvType::f16, KvType::fp8, KvType::q8_0}) {
    SCOPED_TRACE(std::string(kv_type_name(kv)));
    const std::vector<int32_t> warm = ids(3, 14);  // BOS + 14: 3 full blocks of 4, 3 over
    std::vector<int32_t> prompt = warm;
    for (int32_t t : {50, 51, 52, 53, 54}) prompt.push_back(t);
    // The same warm prefix with a different continuation in the middle of a
    // block: only the full blocks before it may hit.
    std::vector<int32_t> other(warm.begin(), warm.begin() + 10);
    other.push_back(60);

    // Engine A: the bake side.
    auto bea = cpu_backend(*lm.model);
    auto a = Engine::create(*bea, *lm.model, *lm.tok, config(kv, 4, 16));
    ASSERT_TRUE(a.ok()) << a.message();
    (*a)->start();
    run(**a, warm, 1);
    (*a)->stop();
    const std::vector<std::vector<int32_t>> prompts = {warm, other};
    auto exported = (*a)->export_prefix_blocks(prompts);
    ASSERT_TRUE(exported.ok()) << exported.message();
    ASSERT_EQ(exported->blocks.size(), 3u);  // `other` adds nothing: its blocks are shared
    EXPECT_EQ(exported->blocks[0].parent, -1);
    EXPECT_EQ(exported->blocks[2].parent, 1);

    auto wf = through_warm_file(d / "warm.bin", kv, std::move(*exported));
    ASSERT_TRUE(wf.ok()) << wf.message();

    // Engine B: the serve side, restored before start.
    auto beb = cpu_backend(*lm.model);
    auto b = Engine::create(*beb, *lm.model, *lm.tok, config(kv, 4, 16));
    ASSERT_TRUE(b.ok());
    auto rep = (*b)->import_prefix_blocks((*wf)->data().prefixes);
    ASSERT_TRUE(rep.ok()) << rep.message();
    EXPECT_EQ(rep->restored, 3);
    EXPECT_EQ(rep->skipped, 0);
    EXPECT_EQ((*b)->stats().kv_blocks_cached.load(), 3);
    auto again = (*b)->import_prefix_blocks((*wf)->data().prefixes);  // idempotent
    ASSERT_TRUE(again.ok());
    EXPECT_EQ(again->duplicates, 3);
    (*b)->start();
    EXPECT_FALSE((*b)->import_prefix_blocks((*wf)->data().prefixes).ok());  // running
    const Output hit = run(**b, prompt, 6);
    const Output hit2 = run(**b, other, 3);
    EXPECT_EQ((*b)->stats().prompt_tokens_computed.load(),
              uint64_t(prompt.size() - 12 + other.size() - 8));
    (*b)->stop();
    EXPECT_EQ(hit.cached, 12);
    EXPECT_EQ(hit2.cached, 8);

    // Engine C: computes everything.
    auto bec = cpu_backend(*lm.model);
    auto c = Engine::create(*bec, *lm.model, *lm.tok, config(kv, 4, 16));
    ASSERT_TRUE(c.ok());
    (*c)->start();
    const Output fresh = run(**c, prompt, 6);
    const Output fresh2 = run(**c, other, 3);
    (*c)->stop();
    EXPECT_EQ(fresh.cached, 0);
    EXPECT_EQ(hit.tokens, fresh.tokens);
    EXPECT_EQ(hit2.tokens, fresh2.tokens);
    ASSERT_EQ(hit.logprobs.size(), fresh.logprobs.size());
    for (size_t i = 0; i < hit.logprobs.size(); ++i) {
      EXPECT_EQ(hit.logprobs[i].chosen.logprob, fresh.logprobs[i].chosen.logprob) << i;
      ASSERT_EQ(hit.logprobs[i].top.size(), fresh.logprobs[i].top.size());
      for (size_t k = 0; k < hit.logprobs[i].top.size(); ++k) {
        EXPECT_EQ(hit.logprobs[i].top[k].id, fresh.logprobs[i].top[k].id);
        EXPECT_EQ(hit.logprobs[i].top[k].logprob, fresh.logprobs[i].top[k].logprob);
      }
    }
  }
}

// A warm prompt that ends inside a block: its partial last block is baked
// as a tail, so a request starting with the whole prompt computes only its
// own tokens (the GPU's first-request cost of a baked preamble), with the
// logits of computing everything; a prompt that leaves the warm one inside
// that block still hits only the full blocks.
TEST(ArtifactEngine, BakedPromptTailIsReusedExactly) {
  TempDir d;
  ASSERT_TRUE(test::tiny_lm_writer().write(d / "m.gguf").ok());
  Lm lm(d / "m.gguf");
  const std::vector<int32_t> warm = ids(3, 14);  // 15 tokens: 3 full blocks of 4, a tail of 3
  std::vector<int32_t> prompt = warm;
  for (int32_t t : {50, 51, 52, 53, 54}) prompt.push_back(t);
  std::vector<int32_t> prompt2 = warm;  // another continuation of the same warm prompt
  for (int32_t t : {70, 71, 72}) prompt2.push_back(t);
  std::vector<int32_t> diverges(warm.begin(), warm.begin() + 13);  // 1 token into the tail
  diverges.push_back(61);
  diverges.push_back(62);

  auto bea = cpu_backend(*lm.model);
  EngineConfig ca = config(KvType::f16, 4, 16);
  ca.cache_prompt_tails = true;
  auto a = Engine::create(*bea, *lm.model, *lm.tok, ca);
  ASSERT_TRUE(a.ok()) << a.message();
  (*a)->start();
  run(**a, warm, 3);  // generated tokens land in the tail's block: the kept copy has the prompt's
  (*a)->stop();
  const std::vector<std::vector<int32_t>> prompts = {warm};
  auto exported = (*a)->export_prefix_blocks(prompts);
  ASSERT_TRUE(exported.ok()) << exported.message();
  ASSERT_EQ(exported->blocks.size(), 4u);
  EXPECT_EQ(exported->blocks[3].parent, 2);
  EXPECT_EQ(exported->blocks[3].tokens, std::vector<int32_t>(warm.begin() + 12, warm.end()));
  {  // the tail's 4th slot (a generated token's in the live block) goes out as zeros
    std::vector<uint8_t> tail(exported->blocks[3].kv.begin(), exported->blocks[3].kv.end());
    const std::vector<uint8_t> as_exported = tail;
    clear_kv_slots(tail, lm.model->hparams(), KvType::f16, 4, 3);
    EXPECT_EQ(tail, as_exported);
  }

  auto wf = through_warm_file(d / "warm.bin", KvType::f16, std::move(*exported));
  ASSERT_TRUE(wf.ok()) << wf.message();

  auto beb = cpu_backend(*lm.model);
  auto b = Engine::create(*beb, *lm.model, *lm.tok, config(KvType::f16, 4, 16));
  ASSERT_TRUE(b.ok());
  auto rep = (*b)->import_prefix_blocks((*wf)->data().prefixes);
  ASSERT_TRUE(rep.ok()) << rep.message();
  EXPECT_EQ(rep->restored, 4);
  auto again = (*b)->import_prefix_blocks((*wf)->data().prefixes);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->duplicates, 4);
  (*b)->start();
  const Output hit = run(**b, prompt, 6);
  // The tail is still cached after the copy (prompt's own 4th block, now
  // cached in full, does not match prompt2's).
  const Output hit_again = run(**b, prompt2, 6);
  const Output partial = run(**b, diverges, 4);
  const Output exact = run(**b, warm, 2);  // the last token is always computed: tail of 2 only
  (*b)->stop();
  EXPECT_EQ(hit.cached, 15);
  EXPECT_EQ(hit_again.cached, 15);
  EXPECT_EQ(partial.cached, 12);
  EXPECT_EQ(exact.cached, 12);

  auto bec = cpu_backend(*lm.model);
  auto c = Engine::create(*bec, *lm.model, *lm.tok, config(KvType::f16, 4, 16));
  ASSERT_TRUE(c.ok());
  (*c)->start();
  const Output fresh = run(**c, prompt, 6);
  const Output fresh2 = run(**c, prompt2, 6);
  const Output fresh_partial = run(**c, diverges, 4);
  const Output fresh_exact = run(**c, warm, 2);
  (*c)->stop();
  for (const auto& [got, want] : {std::pair{&hit, &fresh}, std::pair{&hit_again, &fresh2}}) {
    EXPECT_EQ(got->tokens, want->tokens);
    ASSERT_EQ(got->logprobs.size(), want->logprobs.size());
    for (size_t i = 0; i < want->logprobs.size(); ++i)
      EXPECT_EQ(got->logprobs[i].chosen.logprob, want->logprobs[i].chosen.logprob) << i;
  }
  EXPECT_EQ(partial.tokens, fresh_partial.tokens);
  EXPECT_EQ(exact.tokens, fresh_exact.tokens);

  // A tail that names a tail as its parent is refused.
  engine::PrefixBlocks bad = (*wf)->data().prefixes;
  engine::PrefixBlock child = bad.blocks[3];
  child.parent = 3;
  bad.blocks.push_back(child);
  auto bed = cpu_backend(*lm.model);
  auto e = Engine::create(*bed, *lm.model, *lm.tok, config(KvType::f16, 4, 16));
  ASSERT_TRUE(e.ok());
  EXPECT_FALSE((*e)->import_prefix_blocks(bad).ok());
}

// The prefix blocks an engine (blocks of 4, 16 of them) exports after
// running `warm` once.
Result<engine::PrefixBlocks> export_after_running(const Lm& lm, const std::vector<int32_t>& warm) {
  auto be = cpu_backend(*lm.model);
  auto a = Engine::create(*be, *lm.model, *lm.tok, config(KvType::f16, 4, 16));
  if (!a) return a.error();
  (*a)->start();
  run(**a, warm, 1);
  (*a)->stop();
  return (*a)->export_prefix_blocks(std::vector<std::vector<int32_t>>{warm});
}

TEST(ArtifactEngine, RestoreRefusesOtherBlockShapesAndFillsOnlyFreeBlocks) {
  TempDir d;
  ASSERT_TRUE(test::tiny_lm_writer().write(d / "m.gguf").ok());
  Lm lm(d / "m.gguf");
  auto ex = export_after_running(lm, ids(3, 20));
  ASSERT_TRUE(ex.ok()) << ex.message();
  ASSERT_EQ(ex->blocks.size(), 5u);

  auto be2 = cpu_backend(*lm.model);
  auto other = Engine::create(*be2, *lm.model, *lm.tok, config(KvType::f16, 8, 16));
  ASSERT_TRUE(other.ok());
  auto st = (*other)->import_prefix_blocks(*ex);
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.message().find("--kv-block-size"), std::string::npos) << st.message();

  auto be3 = cpu_backend(*lm.model);
  auto small = Engine::create(*be3, *lm.model, *lm.tok, config(KvType::f16, 4, 3));
  ASSERT_TRUE(small.ok());
  auto rep = (*small)->import_prefix_blocks(*ex);
  ASSERT_TRUE(rep.ok()) << rep.message();
  EXPECT_EQ(rep->restored, 3);
  EXPECT_EQ(rep->skipped, 2);
  // The pool is all baked blocks now, yet a request still runs: they are
  // reclaimable when nothing else is.
  (*small)->start();
  const Output o = run(**small, ids(40, 6), 3);
  EXPECT_EQ(o.tokens.size(), 3u);
  (*small)->stop();
}

// A CPU backend whose KV block writes fail: a restore that cannot write its
// blocks must leave none of them in the prefix cache.
class FailingKvWrites final : public test::DelegatingBackend {
 public:
  using DelegatingBackend::DelegatingBackend;
  Status write_kv_blocks(std::span<const KvBlockWrite> writes) override {
    ++calls;
    return make_error("device lost while writing " + std::to_string(writes.size()) + " blocks");
  }
  int calls = 0;
};

TEST(ArtifactEngine, ARestoreThatCannotWriteLeavesNothingCached) {
  TempDir d;
  ASSERT_TRUE(test::tiny_lm_writer().write(d / "m.gguf").ok());
  Lm lm(d / "m.gguf");
  const auto warm = ids(3, 20);
  auto ex = export_after_running(lm, warm);
  ASSERT_TRUE(ex.ok()) << ex.message();

  FailingKvWrites failing(cpu_backend(*lm.model));
  auto b = Engine::create(failing, *lm.model, *lm.tok, config(KvType::f16, 4, 16));
  ASSERT_TRUE(b.ok());
  auto rep = (*b)->import_prefix_blocks(*ex);
  ASSERT_FALSE(rep.ok());
  EXPECT_NE(rep.message().find("device lost"), std::string::npos) << rep.message();
  EXPECT_EQ(failing.calls, 1);  // one batch for all the blocks
  EXPECT_EQ((*b)->stats().kv_blocks_cached.load(), 0);
  // Nothing stale is matched: the warm prompt is computed in full.
  (*b)->start();
  const Output o = run(**b, warm, 1);
  (*b)->stop();
  EXPECT_EQ(o.cached, 0);
}

TEST(ArtifactEngine, BakedBlocksOutliveOrdinaryOnesUnderEviction) {
  KvBlockPool pool(8);
  PrefixCache cache(pool, 2);
  // A baked chain of two blocks.
  PrefixChain chain;
  std::vector<int32_t> got;
  ASSERT_TRUE(pool.grow(got, 4, 2));
  const std::vector<int32_t> baked_tokens = {5, 6, 7, 8};
  EXPECT_TRUE(cache.adopt(std::span(baked_tokens).first(2), got[0], chain));
  EXPECT_TRUE(cache.adopt(std::span(baked_tokens).subspan(2, 2), got[1], chain));
  EXPECT_EQ(cache.n_baked(), 2);
  // An ordinary sequence registers two blocks, then ends.
  std::vector<int32_t> table;
  ASSERT_TRUE(pool.grow(table, 4, 2));
  const std::vector<int32_t> toks = {9, 10, 11, 12};
  PrefixChain c2;
  cache.insert(toks, table, 2, c2);
  cache.release_all(table);
  EXPECT_EQ(cache.n_evictable(), 4);
  EXPECT_EQ(cache.evict(2), 2);  // the ordinary blocks go first
  EXPECT_EQ(cache.n_baked(), 2);
  std::vector<int32_t> t2;
  PrefixChain c3;
  EXPECT_EQ(cache.match(baked_tokens, 2, t2, c3), 2);
  cache.release_all(t2);
  EXPECT_EQ(cache.evict(8), 2);  // then the baked ones, when nothing else is left
  EXPECT_EQ(cache.n_baked(), 0);
  EXPECT_EQ(pool.n_free(), 8);
}

}  // namespace
