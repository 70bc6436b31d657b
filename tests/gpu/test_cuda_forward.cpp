// End-to-end: the CUDA backend's forward pass against the CPU scalar
// reference path (float32 activations, exact weights, f32 KV) and the
// independent references in testdata/reference (float64 `exact_top`,
// llama.cpp `top`) and tests/data/hf (float64 transformers logits).
//
// Metric: max |delta log-probability| over the reference's 10 most likely
// tokens at every position, and top-1 (argmax) agreement. Tolerances:
//  * vs the float64 answers: no further than llama.cpp's CPU build sits from
//    them (its max |delta| on the same file, + 0.01), argmax agreement at least
//    llama.cpp's minus one position — the bar the CPU fast path meets;
//  * vs the CPU scalar path: 0.05 for the whole-prompt (cuBLAS, f16
//    activations) and token-by-token (dp4a, 8-bit activations) paths with f16
//    K/V; the same 0.05 between batch shapes (mixed, chunked) — CUDA is not
//    batch-invariant, so shapes are compared by tolerance, not bits.
// Every comparison is printed so the figures land in the test log.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>

#include "common/paths.h"
#include "common/tiny_model.h"
#include "gpu_test_util.h"
#include "kiln/backend/cpu/cpu_backend.h"
#include "kiln/backend/cuda/cuda_backend.h"
#include "kiln/gguf/gguf.h"
#include "kiln/model/model.h"

namespace {

using namespace kiln;
using Logits = std::vector<std::vector<float>>;  // [position][n_vocab]

std::unique_ptr<Backend> cpu_reference(const model::Model& m, int32_t n_blocks, int32_t bs,
                                       KvType kv = KvType::f32) {
  cpu::CpuOptions o;
  o.n_threads = 8;
  o.path = cpu::MatmulPath::reference;
  o.read_env = false;
  auto be = std::make_unique<cpu::CpuBackend>(o);
  EXPECT_TRUE(be->load_weights(m).ok());
  EXPECT_TRUE(be->init_kv_cache({kv, bs, n_blocks}).ok());
  return be;
}

std::unique_ptr<Backend> cuda_backend(const model::Model& m, KvType kv, int32_t n_blocks, int32_t bs,
                                      int matvec_max_rows = 8, int mma_max_rows = 256) {
  cuda::CudaOptions o;
  o.matvec_max_rows = matvec_max_rows;
  o.mma_max_rows = mma_max_rows;
  auto be = cuda::CudaBackend::create(o);
  EXPECT_TRUE(be.ok()) << be.message();
  if (!be.ok()) return nullptr;
  auto st = (*be)->load_weights(m);
  EXPECT_TRUE(st.ok()) << st.message();
  st = (*be)->init_kv_cache({kv, bs, n_blocks});
  EXPECT_TRUE(st.ok()) << st.message();
  return std::move(be.value());
}

// Feeds `tokens` in chunks of `chunk` rows (0: all at once); logits of every
// position, or with last_only of each chunk's last position (a prefill: the
// CUDA backend then takes its tensor-core attention for the rows).
Logits run(Backend& be, const std::vector<int32_t>& tokens, const std::vector<int32_t>& blocks, size_t chunk,
           bool last_only = false) {
  Logits out;
  if (chunk == 0) chunk = tokens.size();
  for (size_t s = 0; s < tokens.size(); s += chunk) {
    Batch b;
    const int32_t q = b.add_seq(blocks);
    const size_t e = std::min(tokens.size(), s + chunk);
    for (size_t i = s; i < e; ++i) b.add(tokens[i], int32_t(i), q, !last_only || i + 1 == e);
    auto st = be.forward(b);
    EXPECT_TRUE(st.ok()) << st.message();
    EXPECT_TRUE(be.synchronize().ok());
    // A backend's own argmax (the GPU's greedy path) must be the host's
    // choice over the same row: first largest, as the sampler picks.
    std::vector<int32_t> am(size_t(be.n_logits()));
    for (int32_t i = 0; i < be.n_logits(); ++i) am[size_t(i)] = be.argmax(i);  // before any row is read
    for (int32_t i = 0; i < be.n_logits(); ++i) {
      auto l = be.logits(i);
      out.emplace_back(l.begin(), l.end());
      if (am[size_t(i)] >= 0)
        EXPECT_EQ(am[size_t(i)], int32_t(std::max_element(l.begin(), l.end()) - l.begin())) << "row " << i;
    }
  }
  return out;
}

std::vector<double> log_softmax(const std::vector<float>& l) {
  double m = -INFINITY;
  for (float v : l) m = std::max(m, double(v));
  double s = 0.0;
  for (float v : l) s += std::exp(double(v) - m);
  const double lse = m + std::log(s);
  std::vector<double> o(l.size());
  for (size_t i = 0; i < l.size(); ++i) o[i] = double(l[i]) - lse;
  return o;
}

int32_t argmax(const std::vector<float>& v) { return int32_t(std::max_element(v.begin(), v.end()) - v.begin()); }

struct Agreement {
  double max_err = 0.0;
  int argmax_agree = 0, n = 0;
};

// got vs ref (both logits): top-10 of ref at every position.
Agreement compare_logits(const Logits& got, const Logits& ref) {
  Agreement a;
  EXPECT_EQ(got.size(), ref.size());
  for (size_t p = 0; p < std::min(got.size(), ref.size()); ++p) {
    const auto lg = log_softmax(got[p]), lr = log_softmax(ref[p]);
    std::vector<size_t> idx(lr.size());
    for (size_t i = 0; i < idx.size(); ++i) idx[i] = i;
    std::partial_sort(idx.begin(), idx.begin() + 10, idx.end(), [&](size_t x, size_t y) { return lr[x] > lr[y]; });
    for (int k = 0; k < 10; ++k) {
      const double d = std::abs(lg[idx[size_t(k)]] - lr[idx[size_t(k)]]);
      a.max_err = std::max(a.max_err, std::isfinite(d) ? d : INFINITY);
    }
    a.argmax_agree += argmax(got[p]) == argmax(ref[p]) ? 1 : 0;
    ++a.n;
  }
  return a;
}

void print(const char* what, const std::string& model, const Agreement& a) {
  std::printf("[ %-22s ] %-26s max|d logprob| %.4f  argmax %d/%d\n", what, model.c_str(), a.max_err,
              a.argmax_agree, a.n);
}

std::vector<int32_t> iota_blocks(int32_t n) {
  std::vector<int32_t> b(static_cast<size_t>(n));
  for (int32_t i = 0; i < n; ++i) b[size_t(i)] = i;
  return b;
}

constexpr double kVsCpu = 0.05;

// ---- testdata/reference --------------------------------------------------------------------

std::vector<std::string> reference_models() {
  std::vector<std::string> names;
  const auto dir = kiln::test::testdata("reference");
  if (!std::filesystem::exists(dir)) return names;
  for (const auto& e : std::filesystem::directory_iterator(dir))
    if (e.path().extension() == ".gguf") names.push_back(e.path().stem().string());
  std::sort(names.begin(), names.end());
  return names;
}

class CudaReference : public ::testing::TestWithParam<std::string> {};

TEST_P(CudaReference, AgreesWithCpuAndExact) {
  KILN_REQUIRE_GPU();
  const std::string name = GetParam();
  const auto ref = nlohmann::json::parse(kiln::test::read_file(kiln::test::testdata("reference/" + name + ".logprobs.json")));
  const auto tokens = ref["tokens"].get<std::vector<int32_t>>();
  auto model = model::Model::load(kiln::test::testdata("reference/" + name + ".gguf"));
  ASSERT_TRUE(model.ok()) << model.message();
  const int32_t bs = 16, n_blocks = int32_t(tokens.size()) / bs + 1;
  const auto blocks = iota_blocks(n_blocks);

  auto cpu = cpu_reference(**model, n_blocks, bs);
  const Logits cpu_l = run(*cpu, tokens, blocks, 0);
  auto gpu = cuda_backend(**model, KvType::f16, n_blocks, bs);
  ASSERT_TRUE(gpu);
  const Logits whole = run(*gpu, tokens, blocks, 0);  // tensor-core path (q4_0 / q8_0), else cuBLAS
  const Logits steps = run(*gpu, tokens, blocks, 1);  // matvec path
  const Logits chunks = run(*gpu, tokens, blocks, 5);  // both mixed
  auto gpu_blas = cuda_backend(**model, KvType::f16, n_blocks, bs, 8, 0);
  ASSERT_TRUE(gpu_blas);
  const Logits blas = run(*gpu_blas, tokens, blocks, 0);  // dequantize + cuBLAS for every weight
  // Prefill chunks of 24 rows wanting only their last logits (tensor-core
  // attention where the shapes allow) against the CPU at those positions.
  const Logits pre = run(*gpu, tokens, blocks, 24, /*last_only=*/true);
  Logits cpu_at;
  for (size_t e = 24; e <= tokens.size() + 23; e += 24) cpu_at.push_back(cpu_l[std::min(e, tokens.size()) - 1]);
  {
    ASSERT_EQ(pre.size(), cpu_at.size());
    const Agreement a = compare_logits(pre, cpu_at);
    print("cuda prefill24 vs cpu-ref", name, a);
    EXPECT_LE(a.max_err, kVsCpu) << "prefill chunks";
  }

  // vs float64 exact_top and llama.cpp's distance to it.
  auto vs_exact = [&](const Logits& l) {
    Agreement a;
    for (const auto& p : ref["positions"]) {
      const auto& row = l[size_t(p["n_tokens"].get<int>() - 1)];
      const auto lp = log_softmax(row);
      for (const auto& e : p["exact_top"]) a.max_err = std::max(a.max_err, std::abs(lp[e[0].get<size_t>()] - e[1].get<double>()));
      a.argmax_agree += argmax(row) == p["exact_top"][0][0].get<int32_t>() ? 1 : 0;
      ++a.n;
    }
    return a;
  };
  Agreement llama;
  for (const auto& p : ref["positions"]) {
    std::map<int64_t, double> top;
    for (const auto& e : p["top"]) top[e[0].get<int64_t>()] = e[1].get<double>();
    for (const auto& e : p["exact_top"])
      if (auto it = top.find(e[0].get<int64_t>()); it != top.end())
        llama.max_err = std::max(llama.max_err, std::abs(it->second - e[1].get<double>()));
    llama.argmax_agree += p["top"][0][0] == p["exact_top"][0][0] ? 1 : 0;
    ++llama.n;
  }
  print("llama.cpp vs exact", name, llama);
  for (const auto& [what, l] : {std::pair{"cuda whole vs exact", &whole}, std::pair{"cuda steps vs exact", &steps},
                                std::pair{"cuda chunk5 vs exact", &chunks}, std::pair{"cuda cuBLAS vs exact", &blas}}) {
    const Agreement a = vs_exact(*l);
    print(what, name, a);
    EXPECT_LE(a.max_err, llama.max_err + 0.01) << what;
    EXPECT_GE(a.argmax_agree, llama.argmax_agree - 1) << what;
  }
  for (const auto& [what, l] : {std::pair{"cuda whole vs cpu-ref", &whole}, std::pair{"cuda steps vs cpu-ref", &steps},
                                std::pair{"cuda chunk5 vs cpu-ref", &chunks}, std::pair{"cuda cuBLAS vs cpu-ref", &blas}}) {
    const Agreement a = compare_logits(*l, cpu_l);
    print(what, name, a);
    EXPECT_LE(a.max_err, kVsCpu) << what;
  }
}

INSTANTIATE_TEST_SUITE_P(Reference, CudaReference, ::testing::ValuesIn(reference_models()), [](const auto& info) {
  std::string s = info.param;
  for (auto& c : s)
    if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
  return s;
});
GTEST_ALLOW_UNINSTANTIATED_PARAMETERIZED_TEST(CudaReference);

// ---- tests/data/hf (transformers, float64 logits) ---------------------------------------------

class CudaHf : public ::testing::TestWithParam<std::string> {};

TEST_P(CudaHf, AgreesWithTransformers) {
  KILN_REQUIRE_GPU();
  const std::string dir = kiln::test::source_dir() + "/tests/data/hf/";
  const auto ref = nlohmann::json::parse(kiln::test::read_file(dir + GetParam() + ".logits.json"));
  const auto tokens = ref["tokens"].get<std::vector<int32_t>>();
  Logits want;
  for (const auto& row : ref["logits"]) want.push_back(row.get<std::vector<float>>());
  auto model = model::Model::load(dir + GetParam() + ".gguf");
  ASSERT_TRUE(model.ok()) << model.message();
  const int32_t bs = 8, n_blocks = int32_t(tokens.size()) / bs + 1;
  const auto blocks = iota_blocks(n_blocks);
  auto cpu = cpu_reference(**model, n_blocks, bs);
  const Agreement c = compare_logits(run(*cpu, tokens, blocks, 0), want);
  print("cpu-ref vs transformers", GetParam(), c);
  for (KvType kv : {KvType::f16, KvType::f32}) {
    auto gpu = cuda_backend(**model, kv, n_blocks, bs);
    ASSERT_TRUE(gpu);
    for (size_t chunk : {size_t(0), size_t(1)}) {
      const Agreement a = compare_logits(run(*gpu, tokens, blocks, chunk), want);
      print(chunk ? "cuda steps vs hf" : "cuda whole vs hf", GetParam() + " kv " + std::string(kv_type_name(kv)), a);
      EXPECT_LE(a.max_err, 0.02);
      EXPECT_EQ(a.argmax_agree, a.n);
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Hf, CudaHf,
                         ::testing::Values("llama-gqa", "llama-gqa-f16", "llama31-rope-scaled", "qwen2-bias",
                                           "qwen3-qknorm"),
                         [](const auto& info) {
                           std::string s = info.param;
                           for (auto& ch : s)
                             if (!std::isalnum(static_cast<unsigned char>(ch))) ch = '_';
                           return s;
                         });

// ---- synthetic models: q4_0 / q8_0 weights through the dp4a path, every arch ----------------

struct TinyCase {
  const char* label;
  const char* arch;
  DType wtype;
  bool bias, qk_norm, rope_freqs, tied;
  KvType kv;
};

class CudaTiny : public ::testing::TestWithParam<TinyCase> {};

TEST_P(CudaTiny, MatchesCpuReference) {
  KILN_REQUIRE_GPU();
  const TinyCase& c = GetParam();
  kiln::test::TinySpec s;
  s.arch = c.arch;
  s.wtype = c.wtype;
  s.qkv_bias = c.bias;
  s.qk_norm = c.qk_norm;
  s.rope_freqs = c.rope_freqs;
  s.tied = c.tied;
  s.n_embd = 128;
  s.n_ff = 256;
  s.n_head = 8;
  s.n_head_kv = 2;
  s.n_vocab = 96;
  s.head_dim = (c.qk_norm || c.kv == KvType::q8_0) ? 32 : 0;  // q8_0 K/V: head size % 32
  const auto tiny = kiln::test::make_tiny_model(s);
  auto loaded = kiln::test::load_tiny_model(tiny);
  ASSERT_TRUE(loaded.ok()) << loaded.message();
  auto* model = &loaded->model;
  std::vector<int32_t> tokens;
  for (int i = 0; i < 40; ++i) tokens.push_back(int32_t((i * 37 + 11) % s.n_vocab));
  const int32_t bs = 16, n_blocks = 4;
  const auto blocks = iota_blocks(n_blocks);
  // Same K/V element type on both sides: what remains is arithmetic.
  auto cpu = cpu_reference(**model, n_blocks, bs, c.kv);
  const Logits ref = run(*cpu, tokens, blocks, 0);
  auto gpu = cuda_backend(**model, c.kv, n_blocks, bs);
  ASSERT_TRUE(gpu);
  for (size_t chunk : {size_t(0), size_t(1), size_t(7)}) {
    const Agreement a = compare_logits(run(*gpu, tokens, blocks, chunk), ref);
    print(chunk == 0 ? "tiny whole vs cpu-ref" : chunk == 1 ? "tiny steps vs cpu-ref" : "tiny chunk7 vs cpu-ref", c.label, a);
    EXPECT_LE(a.max_err, kVsCpu);
  }
}

INSTANTIATE_TEST_SUITE_P(
    Archs, CudaTiny,
    ::testing::Values(TinyCase{"llama_q4_0_f16", "llama", DType::Q4_0, false, false, true, false, KvType::f16},
                      TinyCase{"qwen2_q8_0_q8kv", "qwen2", DType::Q8_0, true, false, false, true, KvType::q8_0},
                      TinyCase{"qwen3_q4_0_fp8", "qwen3", DType::Q4_0, false, true, false, false, KvType::fp8},
                      TinyCase{"llama_f16_f32kv", "llama", DType::F16, false, false, false, true, KvType::f32}),
    [](const auto& info) { return std::string(info.param.label); });

// ---- batch shapes: a scheduler's mixed steps vs each sequence alone ---------------------------

TEST(CudaForward, MixedBatchesAgreeWithSingleSequences) {
  KILN_REQUIRE_GPU();
  kiln::test::TinySpec s;
  s.wtype = DType::Q4_0;
  s.n_embd = 128;
  s.n_ff = 256;
  s.n_head = 8;
  s.n_head_kv = 2;
  s.n_vocab = 96;
  const auto tiny = kiln::test::make_tiny_model(s);
  auto loaded = kiln::test::load_tiny_model(tiny);
  ASSERT_TRUE(loaded.ok()) << loaded.message();
  auto* model = &loaded->model;
  std::vector<int32_t> a_tok, b_tok;
  for (int i = 0; i < 45; ++i) a_tok.push_back(int32_t((i * 13 + 5) % 96));
  for (int i = 0; i < 30; ++i) b_tok.push_back(int32_t((i * 29 + 3) % 96));
  const int32_t bs = 4;
  std::vector<int32_t> a_blocks, b_blocks;  // scattered ids
  for (int32_t i = 0; i < 12; ++i) a_blocks.push_back(2 * i + 1);
  for (int32_t i = 0; i < 8; ++i) b_blocks.push_back(2 * (7 - i));
  auto gpu = cuda_backend(**model, KvType::f16, 26, bs);
  ASSERT_TRUE(gpu);
  const Logits a_alone = run(*gpu, a_tok, a_blocks, 0);
  const Logits b_alone = run(*gpu, b_tok, b_blocks, 0);

  // Steps: A decodes one token per step while B prefills 4-token chunks (logits
  // on the chunk's last row only), after A's first 6 tokens in one batch.
  Agreement agg;
  Batch batch;
  const int32_t s0 = batch.add_seq(a_blocks);
  for (int32_t i = 0; i < 6; ++i) batch.add(a_tok[size_t(i)], i, s0, false);
  ASSERT_TRUE(gpu->forward(batch).ok());
  size_t a_next = 6, b_next = 0;
  while (a_next < a_tok.size() || b_next < b_tok.size()) {
    batch.clear();
    std::vector<std::pair<char, size_t>> want;
    const int32_t sb = batch.add_seq(b_blocks), sa = batch.add_seq(a_blocks);
    const size_t b_end = std::min(b_tok.size(), b_next + 4);
    for (size_t i = b_next; i < b_end; ++i) {
      const bool last = i + 1 == b_end;
      batch.add(b_tok[i], int32_t(i), sb, last);
      if (last) want.push_back({'b', i});
    }
    if (a_next < a_tok.size()) {
      batch.add(a_tok[a_next], int32_t(a_next), sa, true);
      want.push_back({'a', a_next++});
    }
    b_next = b_end;
    ASSERT_TRUE(gpu->forward(batch).ok());
    ASSERT_TRUE(gpu->synchronize().ok());
    ASSERT_EQ(size_t(gpu->n_logits()), want.size());
    for (size_t r = 0; r < want.size(); ++r) {
      auto l = gpu->logits(int32_t(r));
      const Logits got{std::vector<float>(l.begin(), l.end())};
      const Logits exp{want[r].first == 'a' ? a_alone[want[r].second] : b_alone[want[r].second]};
      const Agreement a = compare_logits(got, exp);
      agg.max_err = std::max(agg.max_err, a.max_err);
      agg.argmax_agree += a.argmax_agree;
      agg.n += a.n;
    }
  }
  print("mixed vs alone", "tiny llama q4_0", agg);
  EXPECT_LE(agg.max_err, kVsCpu);
}

}  // namespace

// ---- KV block I/O (baked prefixes) ----------------------------------------------------------

// Block I/O round-trips exactly, and K/V computed by the CPU backend, written
// into the GPU pool in the canonical format, continue on the GPU with the
// logits the CPU gets for the same positions: what serving a CPU-baked
// artifact's prefix blocks on the GPU relies on.
TEST(CudaKvBlocks, RoundTripAndCpuComputedPrefixContinuesOnGpu) {
  KILN_REQUIRE_GPU();
  const std::string dir = kiln::test::source_dir() + "/tests/data/hf/";
  const auto ref = nlohmann::json::parse(kiln::test::read_file(dir + "llama-gqa.logits.json"));
  const auto tokens = ref["tokens"].get<std::vector<int32_t>>();
  auto model = model::Model::load(dir + "llama-gqa.gguf");
  ASSERT_TRUE(model.ok()) << model.message();
  const int32_t bs = 4, n_blocks = int32_t(tokens.size()) / bs + 2;
  ASSERT_GE(tokens.size(), size_t(3 * bs));
  const auto blocks = iota_blocks(n_blocks);
  for (KvType kv : {KvType::f16, KvType::q8_0, KvType::fp8}) {
    // q8_0 K/V rows need head sizes that are multiples of 32.
    if (kv == KvType::q8_0 && (*model)->hparams().head_dim_k % 32 != 0) continue;
    auto cpu = cpu_reference(**model, n_blocks, bs, kv);
    auto gpu = cuda_backend(**model, kv, n_blocks, bs);
    ASSERT_TRUE(gpu);
    const size_t bytes = kv_bytes_per_block((*model)->hparams(), kv, bs);
    // Exact round trip of arbitrary bytes through the last block.
    std::vector<uint8_t> in(bytes), out(bytes);
    for (size_t i = 0; i < bytes; ++i) in[i] = uint8_t(i * 131 + 7);
    ASSERT_TRUE(gpu->write_kv_block(n_blocks - 1, in).ok());
    ASSERT_TRUE(gpu->read_kv_block(n_blocks - 1, out).ok());
    EXPECT_EQ(in, out) << kv_type_name(kv);
    // A block copy (a baked tail continued by a request) moves every layer's K and V.
    ASSERT_TRUE(gpu->copy_kv_block(n_blocks - 1, n_blocks - 2).ok());
    std::fill(out.begin(), out.end(), uint8_t(0));
    ASSERT_TRUE(gpu->read_kv_block(n_blocks - 2, out).ok());
    EXPECT_EQ(in, out) << "copy_kv_block " << kv_type_name(kv);
    EXPECT_FALSE(gpu->copy_kv_block(n_blocks, 0).ok());
    // (That block may hold the sequence's last positions below: zeros, not
    // arbitrary bytes, in the slots it does not write.)
    ASSERT_TRUE(gpu->write_kv_block(n_blocks - 2, std::vector<uint8_t>(bytes, 0)).ok());
    EXPECT_FALSE(gpu->read_kv_block(n_blocks, out).ok());
    EXPECT_FALSE(gpu->write_kv_block(0, std::span<const uint8_t>(in).first(bytes - 1)).ok());

    // The CPU computes every position; its first two blocks go to the GPU,
    // which computes only the rest.
    const Logits cpu_l = run(*cpu, tokens, blocks, 0);
    for (int32_t b = 0; b < 2; ++b) {
      ASSERT_TRUE(cpu->read_kv_block(b, out).ok());
      ASSERT_TRUE(gpu->write_kv_block(b, out).ok());
    }
    Batch batch;
    const int32_t q = batch.add_seq(blocks);
    for (size_t i = size_t(2 * bs); i < tokens.size(); ++i) batch.add(tokens[i], int32_t(i), q, true);
    ASSERT_TRUE(gpu->forward(batch).ok());
    ASSERT_TRUE(gpu->synchronize().ok());
    Logits got, want;
    for (int32_t i = 0; i < gpu->n_logits(); ++i) {
      auto l = gpu->logits(i);
      got.emplace_back(l.begin(), l.end());
      want.push_back(cpu_l[size_t(2 * bs) + size_t(i)]);
    }
    const Agreement a = compare_logits(got, want);
    print("cpu-baked prefix on cuda", std::string(kv_type_name(kv)), a);
    EXPECT_LT(a.max_err, 0.05) << kv_type_name(kv);
    EXPECT_EQ(a.argmax_agree, a.n) << kv_type_name(kv);
  }
}
