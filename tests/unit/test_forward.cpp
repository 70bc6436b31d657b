// CPU forward pass: agreement with the independent reference log-probabilities
// (testdata/reference, both numeric paths), with a dense float64 forward of
// tiny synthetic models (qwen3's per-head norms, GQA, biases, rope_freqs), and
// batch invariance (bit-identical logits whatever the batch or the chunking).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>

#include "common/paths.h"
#include "common/tiny_model.h"
#include "kiln/backend/cpu/cpu_backend.h"
#include "kiln/engine/kv_block_pool.h"
#include "kiln/gguf/gguf.h"
#include "kiln/model/model.h"

using kiln::Batch;
using kiln::KvCacheConfig;
using kiln::KvType;
using kiln::cpu::CpuBackend;
using kiln::cpu::CpuOptions;
using kiln::cpu::MatmulPath;
using kiln::model::Model;

namespace {

constexpr int kThreads = 2;

std::unique_ptr<CpuBackend> make_backend(const Model& m, MatmulPath path, KvType kv_type,
                                         int32_t block_size, int32_t n_blocks,
                                         kiln::cpu::ActQuant act = kiln::cpu::ActQuant::q8x2) {
  CpuOptions o;
  o.n_threads = kThreads;
  o.path = path;
  o.act = act;
  o.read_env = false;
  auto be = std::make_unique<CpuBackend>(o);
  EXPECT_TRUE(be->load_weights(m).ok());
  KvCacheConfig kv;
  kv.type = kv_type;
  kv.block_size = block_size;
  kv.n_blocks = n_blocks;
  auto st = be->init_kv_cache(kv);
  EXPECT_TRUE(st.ok()) << st.message();
  return be;
}

// Logits of every row of one sequence fed as one batch. [n_tokens][n_vocab]
std::vector<std::vector<float>> run_whole(CpuBackend& be, const std::vector<int32_t>& tokens,
                                          const std::vector<int32_t>& blocks) {
  Batch b;
  const int32_t s = b.add_seq(blocks);
  for (size_t i = 0; i < tokens.size(); ++i) b.add(tokens[i], int32_t(i), s, true);
  auto st = be.forward(b);
  EXPECT_TRUE(st.ok()) << st.message();
  EXPECT_TRUE(be.synchronize().ok());
  std::vector<std::vector<float>> out;
  for (int32_t i = 0; i < be.n_logits(); ++i) {
    auto l = be.logits(i);
    out.emplace_back(l.begin(), l.end());
  }
  return out;
}

std::vector<double> log_softmax(const std::vector<float>& logits) {
  double m = -INFINITY;
  for (float v : logits) m = std::max(m, double(v));
  double sum = 0.0;
  for (float v : logits) sum += std::exp(double(v) - m);
  const double lse = m + std::log(sum);
  std::vector<double> out(logits.size());
  for (size_t i = 0; i < logits.size(); ++i) out[i] = double(logits[i]) - lse;
  return out;
}

int32_t argmax(const std::vector<float>& v) {
  return int32_t(std::max_element(v.begin(), v.end()) - v.begin());
}

std::vector<int32_t> iota_blocks(int32_t n, int32_t first = 0) {
  std::vector<int32_t> b(static_cast<size_t>(n));
  for (int32_t i = 0; i < n; ++i) b[size_t(i)] = first + i;
  return b;
}

// --- agreement with testdata/reference ---------------------------------------

struct Agreement {
  double max_err = 0.0;  // max |Δ logprob| over the compared entries
  int argmax_agree = 0;
  int n_positions = 0;
};

// Ours vs exact_top: all 10 exact entries at every position.
Agreement compare_to_exact(const nlohmann::json& ref,
                           const std::vector<std::vector<float>>& logits) {
  Agreement a;
  for (const auto& p : ref["positions"]) {
    const int n_tokens = p["n_tokens"].get<int>();
    const auto& row = logits[size_t(n_tokens - 1)];
    const auto lp = log_softmax(row);
    for (const auto& e : p["exact_top"])
      a.max_err = std::max(a.max_err, std::abs(lp[e[0].get<size_t>()] - e[1].get<double>()));
    a.argmax_agree += argmax(row) == p["exact_top"][0][0].get<int32_t>() ? 1 : 0;
    ++a.n_positions;
  }
  return a;
}

// llama.cpp's `top` vs exact_top: entries whose id is in both lists.
Agreement llama_cpp_vs_exact(const nlohmann::json& ref) {
  Agreement a;
  for (const auto& p : ref["positions"]) {
    std::map<int64_t, double> top;
    for (const auto& e : p["top"]) top[e[0].get<int64_t>()] = e[1].get<double>();
    for (const auto& e : p["exact_top"]) {
      auto it = top.find(e[0].get<int64_t>());
      if (it != top.end())
        a.max_err = std::max(a.max_err, std::abs(it->second - e[1].get<double>()));
    }
    a.argmax_agree += p["top"][0][0] == p["exact_top"][0][0] ? 1 : 0;
    ++a.n_positions;
  }
  return a;
}

std::vector<std::string> reference_models() {
  std::vector<std::string> names;
  for (const auto& e : std::filesystem::directory_iterator(kiln::test::testdata("reference")))
    if (e.path().extension() == ".gguf") names.push_back(e.path().stem().string());
  std::sort(names.begin(), names.end());
  return names;
}

class ReferenceModel : public ::testing::TestWithParam<std::string> {};

TEST_P(ReferenceModel, MatchesExactAndLlamaCpp) {
  const std::string name = GetParam();
  const auto json_text =
      kiln::test::read_file(kiln::test::testdata("reference/" + name + ".logprobs.json"));
  const auto ref = nlohmann::json::parse(json_text);
  const auto tokens = ref["tokens"].get<std::vector<int32_t>>();
  auto model = Model::load(kiln::test::testdata("reference/" + name + ".gguf"));
  ASSERT_TRUE(model.ok()) << model.message();

  const int32_t bs = 16, n_blocks = int32_t(tokens.size()) / bs + 1;
  auto ref_be = make_backend(**model, MatmulPath::reference, KvType::f32, bs, n_blocks);
  const auto ref_logits = run_whole(*ref_be, tokens, iota_blocks(n_blocks));
  const KvType fast_kv = kiln::cpu::default_kv_type(MatmulPath::fast);
  auto fast_be = make_backend(**model, MatmulPath::fast, fast_kv, bs, n_blocks);
  const auto fast_logits = run_whole(*fast_be, tokens, iota_blocks(n_blocks));
  auto q8_be =
      make_backend(**model, MatmulPath::fast, fast_kv, bs, n_blocks, kiln::cpu::ActQuant::q8);
  const auto q8_logits = run_whole(*q8_be, tokens, iota_blocks(n_blocks));
  ASSERT_EQ(ref_logits.size(), tokens.size());
  ASSERT_EQ(fast_logits.size(), tokens.size());

  const Agreement r = compare_to_exact(ref, ref_logits);
  const Agreement f = compare_to_exact(ref, fast_logits);
  const Agreement q = compare_to_exact(ref, q8_logits);
  const Agreement l = llama_cpp_vs_exact(ref);

  // Max |Δ logprob| against the reference over the reference's own top-10 at
  // every position, and how often the argmax agrees with the reference's.
  auto vs_reference = [&](const std::vector<std::vector<float>>& logits, int& agree) {
    double err = 0.0;
    agree = 0;
    for (const auto& p : ref["positions"]) {
      const size_t row = size_t(p["n_tokens"].get<int>() - 1);
      const auto a = log_softmax(ref_logits[row]), b = log_softmax(logits[row]);
      std::vector<size_t> idx(a.size());
      for (size_t i = 0; i < idx.size(); ++i) idx[i] = i;
      std::partial_sort(idx.begin(), idx.begin() + 10, idx.end(),
                        [&](size_t x, size_t y) { return a[x] > a[y]; });
      for (int k = 0; k < 10; ++k)
        err = std::max(err, std::abs(a[idx[size_t(k)]] - b[idx[size_t(k)]]));
      agree += argmax(ref_logits[row]) == argmax(logits[row]) ? 1 : 0;
    }
    return err;
  };
  int fast_agree = 0, q8_agree = 0;
  const double fast_vs_ref = vs_reference(fast_logits, fast_agree);
  const double q8_vs_ref = vs_reference(q8_logits, q8_agree);

  std::printf(
      "[ %-18s ] exact vs: reference %.1e %d/%d | fast %.4f %d/%d | fast q8 %.4f %d/%d | "
      "llama.cpp %.4f %d/%d || vs reference: fast %.4f, q8 %.4f (%s)\n",
      name.c_str(), r.max_err, r.argmax_agree, r.n_positions, f.max_err, f.argmax_agree,
      f.n_positions, q.max_err, q.argmax_agree, q.n_positions, l.max_err, l.argmax_agree,
      l.n_positions, fast_vs_ref, q8_vs_ref, kiln::cpu::fast_isa());

  // Reference path: float32 activations, exact weights -> the float64 answer.
  EXPECT_LE(r.max_err, 1e-3);
  EXPECT_EQ(r.argmax_agree, r.n_positions);
  // Fast path (default q8x2 activations, f16 KV): no worse than llama.cpp's
  // CPU path on the same file.
  EXPECT_LE(f.max_err, l.max_err);
  EXPECT_GE(f.argmax_agree, l.argmax_agree);
  // Fast vs reference. The fast path's error sources are bounded: ~16-bit
  // activations (q8x2), f16 K/V (relative rounding 2^-11 on |q.k| terms that
  // reach ~10 here), f16/bf16 weights exact. Observed 0.004-0.015; the bound
  // 0.03 leaves 2x margin yet is 10x below what 8-bit activations give.
  EXPECT_LE(fast_vs_ref, 0.03);
  EXPECT_EQ(fast_agree, r.n_positions);
  // q8 (llama.cpp's scheme): the same rounding as llama.cpp, different
  // instances of it, so its deviation is of llama.cpp's size: within 2x of
  // llama.cpp's own deviation from the exact answer (observed <= 1.45x);
  // argmax may flip where the top two tokens are closer than that noise.
  EXPECT_LE(q8_vs_ref, 2.0 * l.max_err + 1e-3);
  EXPECT_GE(q8_agree, r.n_positions - 8);
}

INSTANTIATE_TEST_SUITE_P(Reference, ReferenceModel, ::testing::ValuesIn(reference_models()),
                         [](const auto& info) {
                           std::string s = info.param;
                           for (auto& c : s)
                             if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
                           return s;
                         });

// --- agreement with tests/data/hf (Hugging Face transformers, float64) -----------

class HfModel : public ::testing::TestWithParam<std::string> {};

TEST_P(HfModel, MatchesTransformersLogits) {
  const std::string dir = kiln::test::source_dir() + "/tests/data/hf/";
  const auto ref = nlohmann::json::parse(kiln::test::read_file(dir + GetParam() + ".logits.json"));
  const auto tokens = ref["tokens"].get<std::vector<int32_t>>();
  const auto want = ref["logits"].get<std::vector<std::vector<double>>>();
  auto model = Model::load(dir + GetParam() + ".gguf");
  ASSERT_TRUE(model.ok()) << model.message();
  const int32_t bs = 16, n_blocks = int32_t(tokens.size()) / bs + 1;
  for (MatmulPath path : {MatmulPath::reference, MatmulPath::fast}) {
    auto be = make_backend(**model, path, kiln::cpu::default_kv_type(path), bs, n_blocks);
    const auto got = run_whole(*be, tokens, iota_blocks(n_blocks));
    ASSERT_EQ(got.size(), want.size());
    double max_err = 0.0;
    int agree = 0;
    for (size_t t = 0; t < got.size(); ++t) {
      ASSERT_EQ(got[t].size(), want[t].size());
      size_t best = 0;
      for (size_t i = 0; i < got[t].size(); ++i) {
        max_err = std::max(max_err, std::abs(double(got[t][i]) - want[t][i]));
        if (want[t][i] > want[t][best]) best = i;
      }
      agree += size_t(argmax(got[t])) == best ? 1 : 0;
    }
    const bool ref_path = path == MatmulPath::reference;
    std::printf("[ %-20s %-9s ] max |logit - transformers| = %.2e, argmax %d/%zu\n",
                GetParam().c_str(), ref_path ? "reference" : "fast", max_err, agree, got.size());
    // README: a float32 pass lands within ~1e-5; 1e-4 still catches a wrong
    // rope pairing, an ignored rope_freqs or F16 weights misread (>= 4.8e-3).
    // Fast: these files are F32/F16 (float activations) and the KV cache is
    // f16: relative 2^-11 on K/V, observed 1.4e-3 to 4.6e-3 on logits of
    // magnitude <= 9; the bound is 2x the worst.
    EXPECT_LE(max_err, ref_path ? 1e-4 : 1e-2);
    EXPECT_EQ(agree, int(got.size()));
  }
}

INSTANTIATE_TEST_SUITE_P(Hf, HfModel,
                         ::testing::Values("llama-gqa", "llama-gqa-f16", "llama31-rope-scaled",
                                           "qwen2-bias", "qwen3-qknorm"),
                         [](const auto& info) {
                           std::string s = info.param;
                           for (auto& c : s)
                             if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
                           return s;
                         });

// --- batch invariance ---------------------------------------------------------

void expect_same_bits(const std::vector<float>& a, std::span<const float> b, const char* what,
                      size_t row) {
  ASSERT_EQ(a.size(), b.size());
  EXPECT_EQ(std::memcmp(a.data(), b.data(), a.size() * sizeof(float)), 0)
      << what << ": logits of row " << row << " differ";
}

struct InvarianceCase {
  std::string model;
  MatmulPath path;
  KvType kv;
};

class BatchInvariance : public ::testing::TestWithParam<InvarianceCase> {};

TEST_P(BatchInvariance, BitIdenticalLogits) {
  const InvarianceCase& c = GetParam();
  const auto ref = nlohmann::json::parse(
      kiln::test::read_file(kiln::test::testdata("reference/" + c.model + ".logprobs.json")));
  const auto a_tokens = ref["tokens"].get<std::vector<int32_t>>();
  std::vector<int32_t> b_tokens(a_tokens.rbegin(), a_tokens.rend());  // a different sequence
  b_tokens.resize(b_tokens.size() - 5);
  auto model = Model::load(kiln::test::testdata("reference/" + c.model + ".gguf"));
  ASSERT_TRUE(model.ok()) << model.message();

  // Small blocks so sequences span several; block ids deliberately scattered.
  const int32_t bs = 4;
  const int32_t na = (int32_t(a_tokens.size()) + bs - 1) / bs;
  const int32_t nb = (int32_t(b_tokens.size()) + bs - 1) / bs;
  std::vector<int32_t> a_blocks, b_blocks;
  for (int32_t i = 0; i < na; ++i) a_blocks.push_back(2 * i + 1);         // odd ids, increasing
  for (int32_t i = 0; i < nb; ++i) b_blocks.push_back(2 * (nb - 1 - i));  // even ids, decreasing
  const int32_t n_blocks = 2 * std::max(na, nb) + 1;
  auto be = make_backend(**model, c.path, c.kv, bs, n_blocks);

  // Each sequence alone, whole prompt in one batch.
  const auto a_alone = run_whole(*be, a_tokens, a_blocks);
  const auto b_alone = run_whole(*be, b_tokens, b_blocks);

  // Both sequences interleaved row by row in one batch.
  {
    Batch batch;
    const int32_t sa = batch.add_seq(a_blocks), sb = batch.add_seq(b_blocks);
    std::vector<std::pair<int32_t, size_t>> order;  // (seq, position) per logits row
    for (size_t i = 0; i < std::max(a_tokens.size(), b_tokens.size()); ++i) {
      if (i < b_tokens.size()) {
        batch.add(b_tokens[i], int32_t(i), sb, true);
        order.push_back({sb, i});
      }
      if (i < a_tokens.size()) {
        batch.add(a_tokens[i], int32_t(i), sa, true);
        order.push_back({sa, i});
      }
    }
    ASSERT_TRUE(be->forward(batch).ok());
    ASSERT_EQ(size_t(be->n_logits()), order.size());
    for (size_t r = 0; r < order.size(); ++r) {
      const auto& [seq, pos] = order[r];
      expect_same_bits(seq == sa ? a_alone[pos] : b_alone[pos], be->logits(int32_t(r)),
                       "interleaved", r);
    }
  }

  // Prefill in chunks of 1, 3 and 7 tokens, every row wanting logits.
  for (int chunk : {1, 3, 7}) {
    for (size_t start = 0; start < a_tokens.size(); start += size_t(chunk)) {
      Batch batch;
      const int32_t s = batch.add_seq(a_blocks);
      const size_t end = std::min(a_tokens.size(), start + size_t(chunk));
      for (size_t i = start; i < end; ++i) batch.add(a_tokens[i], int32_t(i), s, true);
      ASSERT_TRUE(be->forward(batch).ok());
      for (size_t i = start; i < end; ++i)
        expect_same_bits(a_alone[i], be->logits(int32_t(i - start)), "chunked", i);
    }
  }

  // A scheduler's mixed step: decode tokens of A next to prefill chunks of B,
  // logits only for the last row of each B chunk.
  {
    const size_t a_prefix = 6;
    Batch batch;
    const int32_t s0 = batch.add_seq(a_blocks);
    for (size_t i = 0; i < a_prefix; ++i) batch.add(a_tokens[i], int32_t(i), s0, false);
    ASSERT_TRUE(be->forward(batch).ok());
    size_t a_next = a_prefix, b_next = 0;
    while (a_next < a_tokens.size() || b_next < b_tokens.size()) {
      batch.clear();
      std::vector<std::pair<char, size_t>> want;
      const int32_t sb = batch.add_seq(b_blocks);
      const int32_t sa = batch.add_seq(a_blocks);
      const size_t b_end = std::min(b_tokens.size(), b_next + 5);
      for (size_t i = b_next; i < b_end; ++i) {
        const bool last = i + 1 == b_end;
        batch.add(b_tokens[i], int32_t(i), sb, last);
        if (last) want.push_back({'b', i});
      }
      if (a_next < a_tokens.size()) {
        batch.add(a_tokens[a_next], int32_t(a_next), sa, true);
        want.push_back({'a', a_next});
        ++a_next;
      }
      b_next = b_end;
      ASSERT_TRUE(be->forward(batch).ok());
      ASSERT_EQ(size_t(be->n_logits()), want.size());
      for (size_t r = 0; r < want.size(); ++r)
        expect_same_bits(want[r].first == 'a' ? a_alone[want[r].second] : b_alone[want[r].second],
                         be->logits(int32_t(r)), "mixed", want[r].second);
    }
  }
}

INSTANTIATE_TEST_SUITE_P(
    Cpu, BatchInvariance,
    ::testing::Values(InvarianceCase{"spm-llama-q4_k_m", MatmulPath::fast, KvType::f16},
                      InvarianceCase{"spm-llama-q5_k_m", MatmulPath::fast, KvType::q8_0},
                      InvarianceCase{"spm-llama-q8_0", MatmulPath::fast, KvType::fp8},
                      InvarianceCase{"qwen2-f16", MatmulPath::fast, KvType::f16},
                      InvarianceCase{"llama3-f16", MatmulPath::reference, KvType::f32},
                      InvarianceCase{"spm-llama-q4_0", MatmulPath::reference, KvType::f16}),
    [](const auto& info) {
      std::string s = info.param.model + "_" +
                      (info.param.path == MatmulPath::fast ? "fast" : "reference") + "_" +
                      std::string(kiln::kv_type_name(info.param.kv));
      for (auto& ch : s)
        if (!std::isalnum(static_cast<unsigned char>(ch))) ch = '_';
      return s;
    });

// --- dense float64 oracle for synthetic models ----------------------------------

// A plain float64 forward over the tiny model's exact weight values: no paging,
// no batching, whole sequence at once.
std::vector<std::vector<double>> oracle_forward(const kiln::test::TinyModel& m,
                                                const std::vector<int32_t>& tokens) {
  const auto& s = m.spec;
  const int64_t e = s.n_embd, hd = m.head_dim(), n_rot = m.n_rot(), T = int64_t(tokens.size());
  const bool neox = s.arch != "llama";
  auto W = [&](const std::string& n) -> const std::vector<float>& { return m.at(n).values; };
  auto matvec = [](const std::vector<float>& w, const std::vector<double>& x, int64_t n_out) {
    const int64_t n_in = int64_t(x.size());
    std::vector<double> y(static_cast<size_t>(n_out), 0.0);
    for (int64_t r = 0; r < n_out; ++r)
      for (int64_t c = 0; c < n_in; ++c)
        y[size_t(r)] += double(w[size_t(r * n_in + c)]) * x[size_t(c)];
    return y;
  };
  auto rmsnorm = [](const double* x, const std::vector<float>& w, int64_t n, double* y) {
    double ss = 0.0;
    for (int64_t i = 0; i < n; ++i) ss += x[i] * x[i];
    const double sc = 1.0 / std::sqrt(ss / double(n) + 1e-5);
    for (int64_t i = 0; i < n; ++i) y[i] = x[i] * sc * double(w[size_t(i)]);
  };
  auto rope = [&](double* v, int64_t pos) {
    for (int64_t i = 0; i < n_rot / 2; ++i) {
      double f = std::pow(double(s.rope_base), -2.0 * double(i) / double(n_rot));
      if (s.rope_freqs) f /= double(W("rope_freqs.weight")[size_t(i)]);
      const double a = double(pos) * f, c = std::cos(a), sn = std::sin(a);
      double* p0 = neox ? v + i : v + 2 * i;
      double* p1 = neox ? v + i + n_rot / 2 : v + 2 * i + 1;
      const double x0 = *p0, x1 = *p1;
      *p0 = x0 * c - x1 * sn;
      *p1 = x0 * sn + x1 * c;
    }
  };

  std::vector<std::vector<double>> x(static_cast<size_t>(T),
                                     std::vector<double>(static_cast<size_t>(e)));
  for (int64_t t = 0; t < T; ++t)
    for (int64_t i = 0; i < e; ++i)
      x[size_t(t)][size_t(i)] = W("token_embd.weight")[size_t(tokens[size_t(t)] * e + i)];
  for (int64_t l = 0; l < s.n_layer; ++l) {
    const std::string p = "blk." + std::to_string(l) + ".";
    std::vector<std::vector<double>> q(static_cast<size_t>(T)), k(static_cast<size_t>(T)),
        v(static_cast<size_t>(T));
    for (int64_t t = 0; t < T; ++t) {
      std::vector<double> xn(static_cast<size_t>(e));
      rmsnorm(x[size_t(t)].data(), W(p + "attn_norm.weight"), e, xn.data());
      q[size_t(t)] = matvec(W(p + "attn_q.weight"), xn, s.n_head * hd);
      k[size_t(t)] = matvec(W(p + "attn_k.weight"), xn, s.n_head_kv * hd);
      v[size_t(t)] = matvec(W(p + "attn_v.weight"), xn, s.n_head_kv * hd);
      if (s.qkv_bias) {
        for (size_t i = 0; i < q[size_t(t)].size(); ++i) q[size_t(t)][i] += W(p + "attn_q.bias")[i];
        for (size_t i = 0; i < k[size_t(t)].size(); ++i) k[size_t(t)][i] += W(p + "attn_k.bias")[i];
        for (size_t i = 0; i < v[size_t(t)].size(); ++i) v[size_t(t)][i] += W(p + "attn_v.bias")[i];
      }
      for (int64_t h = 0; h < s.n_head; ++h) {
        double* qh = q[size_t(t)].data() + h * hd;
        if (s.qk_norm) rmsnorm(qh, W(p + "attn_q_norm.weight"), hd, qh);
        rope(qh, t);
      }
      for (int64_t h = 0; h < s.n_head_kv; ++h) {
        double* kh = k[size_t(t)].data() + h * hd;
        if (s.qk_norm) rmsnorm(kh, W(p + "attn_k_norm.weight"), hd, kh);
        rope(kh, t);
      }
    }
    for (int64_t t = 0; t < T; ++t) {
      std::vector<double> att(static_cast<size_t>(s.n_head * hd), 0.0);
      for (int64_t h = 0; h < s.n_head; ++h) {
        const int64_t g = h / (s.n_head / s.n_head_kv);
        std::vector<double> sc(static_cast<size_t>(t + 1));
        double mx = -INFINITY;
        for (int64_t j = 0; j <= t; ++j) {
          double d = 0.0;
          for (int64_t i = 0; i < hd; ++i)
            d += q[size_t(t)][size_t(h * hd + i)] * k[size_t(j)][size_t(g * hd + i)];
          sc[size_t(j)] = d / std::sqrt(double(hd));
          mx = std::max(mx, sc[size_t(j)]);
        }
        double sum = 0.0;
        for (auto& z : sc) sum += (z = std::exp(z - mx));
        for (int64_t j = 0; j <= t; ++j)
          for (int64_t i = 0; i < hd; ++i)
            att[size_t(h * hd + i)] += sc[size_t(j)] / sum * v[size_t(j)][size_t(g * hd + i)];
      }
      const auto o = matvec(W(p + "attn_output.weight"), att, e);
      for (int64_t i = 0; i < e; ++i) x[size_t(t)][size_t(i)] += o[size_t(i)];
      std::vector<double> xn(static_cast<size_t>(e));
      rmsnorm(x[size_t(t)].data(), W(p + "ffn_norm.weight"), e, xn.data());
      auto gate = matvec(W(p + "ffn_gate.weight"), xn, s.n_ff);
      const auto up = matvec(W(p + "ffn_up.weight"), xn, s.n_ff);
      for (size_t i = 0; i < gate.size(); ++i)
        gate[i] = gate[i] / (1.0 + std::exp(-gate[i])) * up[i];
      const auto d = matvec(W(p + "ffn_down.weight"), gate, e);
      for (int64_t i = 0; i < e; ++i) x[size_t(t)][size_t(i)] += d[size_t(i)];
    }
  }
  std::vector<std::vector<double>> logits;
  for (int64_t t = 0; t < T; ++t) {
    std::vector<double> xn(static_cast<size_t>(e));
    rmsnorm(x[size_t(t)].data(), W("output_norm.weight"), e, xn.data());
    logits.push_back(matvec(W(s.tied ? "token_embd.weight" : "output.weight"), xn, s.n_vocab));
  }
  return logits;
}

struct SyntheticCase {
  const char* label;
  kiln::test::TinySpec spec;
};

class SyntheticModel : public ::testing::TestWithParam<SyntheticCase> {};

TEST_P(SyntheticModel, ReferencePathMatchesFloat64Oracle) {
  const kiln::test::TinyModel tiny = kiln::test::make_tiny_model(GetParam().spec);
  auto loaded = kiln::test::load_tiny_model(tiny);
  ASSERT_TRUE(loaded.ok()) << loaded.message();
  auto* model = &loaded->model;

  std::vector<int32_t> tokens;
  for (int i = 0; i < 23; ++i) tokens.push_back(int32_t((i * 37 + 11) % tiny.spec.n_vocab));
  const auto want = oracle_forward(tiny, tokens);
  for (MatmulPath path : {MatmulPath::reference, MatmulPath::fast}) {
    auto be = make_backend(**model, path, kiln::cpu::default_kv_type(path), 8, 4);
    const auto got = run_whole(*be, tokens, iota_blocks(3));
    ASSERT_EQ(got.size(), want.size());
    double max_err = 0.0, max_abs = 0.0;
    for (size_t t = 0; t < got.size(); ++t)
      for (size_t i = 0; i < got[t].size(); ++i) {
        max_err = std::max(max_err, std::abs(double(got[t][i]) - want[t][i]));
        max_abs = std::max(max_abs, std::abs(want[t][i]));
      }
    std::printf("[ %-12s %-9s ] max |logit - oracle| = %.3g (max |logit| %.3g)\n", GetParam().label,
                path == MatmulPath::fast ? "fast" : "reference", max_err, max_abs);
    // float32 activations over a 2-layer model: ~1e-6 relative; the fast path
    // rounds activations to 8 bits (~0.4% per element) and K/V to f16.
    EXPECT_LE(max_err, path == MatmulPath::reference ? 1e-4 * max_abs : 0.05 * max_abs);
  }
}

kiln::test::TinySpec spec(const char* arch, bool bias, bool qk_norm, int64_t head_dim,
                          bool rope_freqs, bool tied) {
  kiln::test::TinySpec s;
  s.arch = arch;
  s.qkv_bias = bias;
  s.qk_norm = qk_norm;
  s.head_dim = head_dim;
  s.rope_freqs = rope_freqs;
  s.tied = tied;
  s.n_embd = 64;
  s.n_ff = 96;
  s.n_head = 8;
  s.n_head_kv = 2;
  return s;
}

INSTANTIATE_TEST_SUITE_P(
    Cpu, SyntheticModel,
    ::testing::Values(SyntheticCase{"llama", spec("llama", false, false, 0, true, false)},
                      SyntheticCase{"qwen2", spec("qwen2", true, false, 0, false, true)},
                      SyntheticCase{"qwen3", spec("qwen3", false, true, 32, false, false)}),
    [](const auto& info) { return std::string(info.param.label); });

// --- batch validation and the block pool ---------------------------------------

TEST(Forward, RejectsMalformedBatches) {
  const kiln::test::TinyModel tiny = kiln::test::make_tiny_model({});
  auto loaded = kiln::test::load_tiny_model(tiny);
  ASSERT_TRUE(loaded.ok()) << loaded.message();
  auto* model = &loaded->model;
  auto be = make_backend(**model, MatmulPath::fast, KvType::f16, 4, 3);
  const std::vector<int32_t> blocks = {2, 0};  // positions 0..7
  auto error_of = [&](auto build) {
    Batch b;
    build(b);
    auto st = be->forward(b);
    return st.ok() ? std::string() : st.message();
  };
  EXPECT_NE(error_of([&](Batch& b) { b.add(64, 0, b.add_seq(blocks), true); }).find("vocabulary"),
            std::string::npos);
  EXPECT_NE(error_of([&](Batch& b) { b.add(1, 0, 3, true); }).find("sequence index"),
            std::string::npos);
  EXPECT_NE(error_of([&](Batch& b) { b.add(1, 8, b.add_seq(blocks), true); }).find("block"),
            std::string::npos);
  EXPECT_NE(error_of([&](Batch& b) {
              const int32_t s = b.add_seq(blocks);
              b.add(1, 3, s, false);
              b.add(2, 3, s, true);
            }).find("does not follow"),
            std::string::npos);
  const std::vector<int32_t> bad_blocks = {7};
  EXPECT_NE(error_of([&](Batch& b) {
              b.add(1, 0, b.add_seq(bad_blocks), true);
            }).find("outside the pool"),
            std::string::npos);
  EXPECT_EQ(error_of([&](Batch& b) { b.add(1, 5, b.add_seq(blocks), true); }), "");
}

TEST(KvBlockPool, AllocatesSharesAndFrees) {
  kiln::engine::KvBlockPool pool(4);
  std::vector<int32_t> a, b;
  ASSERT_TRUE(pool.grow(a, 17, 16));  // 2 blocks
  EXPECT_EQ(a.size(), 2u);
  EXPECT_EQ(pool.n_free(), 2);
  EXPECT_TRUE(pool.grow(a, 32, 16));  // already covered
  EXPECT_EQ(a.size(), 2u);
  EXPECT_FALSE(pool.grow(b, 16 * 3, 16));  // needs 3, 2 free: nothing taken
  EXPECT_TRUE(b.empty());
  EXPECT_EQ(pool.n_free(), 2);
  b.push_back(a[0]);  // share a's first (full) block
  pool.retain(a[0]);
  EXPECT_EQ(pool.ref_count(a[0]), 2);
  ASSERT_TRUE(pool.grow(b, 20, 16));
  EXPECT_EQ(b.size(), 2u);
  pool.release_all(a);
  EXPECT_EQ(pool.ref_count(b[0]), 1);  // still used by b
  EXPECT_EQ(pool.n_free(), 2);
  pool.release_all(b);
  EXPECT_EQ(pool.n_free(), 4);
}

TEST(Forward, EnvironmentForcesReferencePath) {
  CpuOptions o;
  o.n_threads = 1;
  ::setenv("KILN_CPU_REFERENCE", "1", 1);
  EXPECT_EQ(CpuBackend(o).path(), MatmulPath::reference);
  o.read_env = false;  // an explicit choice wins when the caller asks
  EXPECT_EQ(CpuBackend(o).path(), MatmulPath::fast);
  ::setenv("KILN_CPU_REFERENCE", "0", 1);
  o.read_env = true;
  EXPECT_EQ(CpuBackend(o).path(), MatmulPath::fast);
  ::unsetenv("KILN_CPU_REFERENCE");
}

}  // namespace
