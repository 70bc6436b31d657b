// Every CUDA op against the CPU reference on fresh random inputs (uniform in
// [-1, 1], a new seed each run, printed), with NaN/Inf agreement. Thresholds
// (NMSE = sum (gpu - ref)^2 / sum ref^2):
//   1e-7  paths that compute in float32 from exactly dequantized weights
//         (RMSNorm, float-activation matvec of every weight type, RoPE, SwiGLU,
//         attention, embedding gather, K/V stored as f32);
//   5e-4  paths that round activations (8-bit blocks for the dp4a matvec,
//         f16 for the cuBLAS path) or store K/V in f16 / fp8 / q8_0 (one
//         rounding step can differ where the float inputs differ in the last ulp).
// Each op's measured NMSE is printed, so the test doubles as an accuracy log.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <string>

#include "gpu_test_util.h"
#include "kiln/backend/cpu/attention.h"
#include "kiln/backend/cpu/ffn.h"
#include "kiln/backend/cpu/kv_cache.h"
#include "kiln/backend/cpu/norm.h"
#include "kiln/backend/cpu/rope.h"
#include "kiln/backend/cuda/kernels/argmax.cuh"
#include "kiln/backend/cuda/kernels/attention.cuh"
#include "kiln/backend/cuda/kernels/attention_decode.cuh"
#include "kiln/backend/cuda/kernels/embed.cuh"
#include "kiln/backend/cuda/kernels/flash_attention.cuh"
#include "kiln/backend/cuda/kernels/gemm.cuh"
#include "kiln/backend/cuda/kernels/matvec.cuh"
#include "kiln/backend/cuda/kernels/mma.cuh"
#include "kiln/backend/cuda/kernels/norm.cuh"
#include "kiln/backend/cuda/kernels/repack.cuh"
#include "kiln/backend/cuda/kernels/rope_kv.cuh"
#include "kiln/backend/cuda/kernels/swiglu.cuh"
#include "kiln/core/fp16.h"
#include "kiln/core/threadpool.h"
#include "kiln/model/hparams.h"
#include "kiln/quant/quant.h"

namespace {

using namespace kiln;
using namespace kiln::test::gpu;
using kiln::cuda::ActQ8;
using kiln::cuda::DeviceMatrix;

constexpr double kF32 = 1e-7;
constexpr double kRounded = 5e-4;

const float kNaN = std::nanf("");
const float kInf = INFINITY;

// Device buffers of 8-bit activations (both planes) for rows x ld.
struct ActBuf {
  DevVec<int8_t> q, q2;
  DevVec<float> ds;
  int64_t ld;
  ActBuf(size_t rows, int64_t ld_) : q(rows * size_t(ld_)), q2(rows * size_t(ld_)), ds(rows * size_t(ld_ / 32) * 4), ld(ld_) {}
  ActQ8 act() const { return ActQ8{q.get(), q2.get(), ds.get(), ld}; }
  // Host copy, dequantized: d1 q1 + d2 q2 per element.
  std::vector<float> dequant(size_t rows, size_t n) const {
    const auto h1 = q.download(), h2 = q2.download();
    const auto hd = ds.download();
    std::vector<float> out(rows * n);
    for (size_t r = 0; r < rows; ++r)
      for (size_t i = 0; i < n; ++i) {
        const float* d = hd.data() + (r * size_t(ld / 32) + i / 32) * 4;
        out[r * n + i] = d[0] * float(h1[r * size_t(ld) + i]) + d[2] * float(h2[r * size_t(ld) + i]);
      }
    return out;
  }
};

// ---- greedy argmax -------------------------------------------------------------------

// The host sampler's rule, written plainly: the largest number, lowest index
// on ties; NaN below everything (all -inf: the first; all NaN: 0).
int32_t ref_argmax(const float* v, int64_t n) {
  int64_t best = -1;
  for (int64_t i = 0; i < n; ++i) {
    if (std::isnan(v[i])) continue;
    if (best < 0 || v[i] > v[best]) best = i;
  }
  return best < 0 ? 0 : int32_t(best);
}

TEST(CudaOps, ArgmaxRowsMatchesHostRules) {
  KILN_REQUIRE_GPU();
  for (int64_t n : {7, 1000, 128256}) {
    std::vector<std::vector<float>> rows;
    for (int k = 0; k < 4; ++k) rows.push_back(uniform(size_t(n), -30.0f, 30.0f));
    rows[1][size_t(n / 3)] = 100.0f;  // a tie: the lower index must win
    rows[1][size_t(n / 2)] = 100.0f;
    rows[2][0] = kNaN;  // NaN never wins
    rows[2][size_t(n - 1)] = kNaN;
    rows[3][size_t(n - 1)] = 99.0f;  // the very last element
    rows.push_back(std::vector<float>(size_t(n), -kInf));  // all -inf: index 0
    std::vector<float> mixed(size_t(n), kNaN);
    mixed[size_t(n - 1)] = -kInf;  // NaN and one -inf: the -inf
    rows.push_back(mixed);
    rows.push_back(std::vector<float>(size_t(n), kNaN));  // all NaN: 0
    std::vector<float> flat;
    for (const auto& r : rows) flat.insert(flat.end(), r.begin(), r.end());
    DevVec<float> d(flat);
    DevVec<int32_t> out(rows.size());
    DevVec<unsigned> done(rows.size());
    DevVec<uint8_t> part(cuda::argmax_partials_bytes(int64_t(rows.size()), n));
    ASSERT_EQ(cudaMemset(done.get(), 0, done.size() * sizeof(unsigned)), cudaSuccess);
    part.poison();
    // Several calls on one workspace, with different row counts: each call
    // must leave it ready for the next.
    for (size_t n_rows : {rows.size(), size_t(2), rows.size()}) {
      out.poison();
      cuda::argmax_rows(d.get(), int64_t(n_rows), n, out.get(), done.get(), part.get(), nullptr);
      const auto got = out.download();
      for (size_t r = 0; r < n_rows; ++r)
        EXPECT_EQ(got[r], ref_argmax(rows[r].data(), n)) << "n " << n << " row " << r << " of " << n_rows;
    }
  }
}

// ---- RMSNorm (+ fused 8-bit output) --------------------------------------------------

TEST(CudaOps, RmsNorm) {
  KILN_REQUIRE_GPU();
  const size_t rows = 7, n = 4096;
  auto x = uniform(rows * n);
  const auto w = uniform(n, 0.5f, 1.5f);
  x[2 * n + 5] = kNaN;  // row 2: NaN everywhere
  x[4 * n + 9] = kInf;  // row 4: inf scale -> 0 * x, NaN at the inf
  std::vector<float> ref(rows * n);
  for (size_t r = 0; r < rows; ++r) cpu::rms_norm(x.data() + r * n, w.data(), ref.data() + r * n, int64_t(n), 1e-5f);
  DevVec<float> dx(x), dw(w), dy(rows * n);
  ActBuf aq(rows, int64_t(n));
  dy.poison();
  cuda::rms_norm(dx.get(), n, dw.get(), dy.get(), n, aq.act(), rows, n, 1e-5f, nullptr);
  expect_close("rms_norm", "f32 out, 7x4096, NaN/Inf rows", compare(dy.download(), ref), kF32);
  // 8-bit output on the clean rows.
  const auto deq = aq.dequant(rows, n);
  std::vector<float> g, r;
  for (size_t row : {0, 1, 3, 5, 6}) {
    g.insert(g.end(), deq.begin() + long(row * n), deq.begin() + long((row + 1) * n));
    r.insert(r.end(), ref.begin() + long(row * n), ref.begin() + long((row + 1) * n));
  }
  expect_close("rms_norm", "q8 out (clean rows)", compare(g, r), kRounded);
}

// ---- matvec / GEMM, every weight type --------------------------------------------------

struct QuantMatrix {
  DType type;
  int64_t n_in, n_out;
  std::vector<uint8_t> raw;  // GGUF rows
  size_t row_bytes() const { return kiln::row_bytes(type, n_in); }
};

QuantMatrix random_matrix(DType t, int64_t n_in, int64_t n_out) {
  QuantMatrix m{t, n_in, n_out, {}};
  m.raw.resize(m.row_bytes() * size_t(n_out));
  for (int64_t r = 0; r < n_out; ++r) {
    const auto v = uniform(size_t(n_in));
    quant::quantize_row(t, v.data(), m.raw.data() + size_t(r) * m.row_bytes(), n_in);
  }
  return m;
}

// Reference y[j][r] = sum_i W[r][i] x_j[i] (+ bias[r]) (+ y0[j][r]), weights exact, double sums.
std::vector<float> ref_linear(const QuantMatrix& m, const std::vector<float>& x, size_t rows,
                              const std::vector<float>* bias, const std::vector<float>* y0) {
  std::vector<float> y(rows * size_t(m.n_out));
  for (size_t j = 0; j < rows; ++j)
    for (int64_t r = 0; r < m.n_out; ++r) {
      float v = quant::dot_row_ref(m.type, m.raw.data() + size_t(r) * m.row_bytes(), x.data() + j * size_t(m.n_in), m.n_in);
      if (bias) v += (*bias)[size_t(r)];
      if (y0) v += (*y0)[j * size_t(m.n_out) + size_t(r)];
      y[j * size_t(m.n_out) + size_t(r)] = v;
    }
  return y;
}

class CudaMatvec : public ::testing::TestWithParam<DType> {};

TEST_P(CudaMatvec, AllPathsMatchReference) {
  KILN_REQUIRE_GPU();
  const DType t = GetParam();
  const int64_t n_in = 512, n_out = 157;  // 157: a partial block of warps
  const size_t max_rows = 33;
  const QuantMatrix m = random_matrix(t, n_in, n_out);
  DevVec<uint8_t> raw(m.raw);
  DeviceMatrix dm{t, n_in, n_out, raw.get(), nullptr, m.row_bytes()};
  DevVec<uint8_t> rq(size_t(n_out) * size_t(n_in));
  DevVec<uint16_t> rs(size_t(n_out) * size_t(n_in / 32));
  DeviceMatrix dr = dm;
  const bool repack = cuda::repack_supported(t);
  if (repack) {
    cuda::repack_rows(t, raw.get(), n_in, n_out, rq.get(), rs.get(), nullptr);
    dr.data = rq.get();
    dr.scales = rs.get();
    dr.row_stride = size_t(t == DType::Q4_0 ? n_in / 2 : n_in);
  }
  const std::string tn(dtype_name(t));

  auto x = uniform(max_rows * size_t(n_in));
  const auto bias = uniform(size_t(n_out));
  const auto y0 = uniform(max_rows * size_t(n_out));
  DevVec<float> dx(x), dbias(bias), dy(max_rows * size_t(n_out));
  ActBuf abuf(max_rows, n_in);
  const ActQ8 aq = abuf.act();
  cuda::quantize_q8(dx.get(), n_in, aq, int64_t(max_rows), n_in, nullptr);

  auto run = [&](const char* op, const std::string& what, size_t rows, bool acc, double tol,
                 auto&& launch) {
    std::vector<float> init(max_rows * size_t(n_out));
    if (acc) init = y0;
    else std::fill(init.begin(), init.end(), kNaN);  // poison: every output must be written
    dy.upload(init);
    launch(rows, acc);
    auto got = dy.download();
    got.resize(rows * size_t(n_out));
    const auto ref = ref_linear(m, x, rows, acc ? &bias : nullptr, acc ? &y0 : nullptr);
    expect_close(op, tn + " " + what, compare(got, ref), tol);
  };

  for (const DeviceMatrix* w : {&dm, repack ? &dr : nullptr}) {
    if (!w) continue;
    const std::string layout = w->repacked() ? "repacked" : "raw";
    for (size_t rows : {1, 3, 8}) {
      run("matvec_f32", layout + " rows=" + std::to_string(rows), rows, false, kF32, [&](size_t n, bool) {
        cuda::matvec_f32(*w, dx.get(), n_in, int64_t(n), dy.get(), n_out, nullptr, false, nullptr);
      });
    }
    run("matvec_f32", layout + " rows=3 +bias +=", 3, true, kF32, [&](size_t n, bool) {
      cuda::matvec_f32(*w, dx.get(), n_in, int64_t(n), dy.get(), n_out, dbias.get(), true, nullptr);
    });
  }
  if (repack) {
    for (size_t rows : {1, 3, 8})
      run("matvec_q8", "rows=" + std::to_string(rows), rows, false, kRounded, [&](size_t n, bool) {
        cuda::matvec_q8(dr, aq, int64_t(n), dy.get(), n_out, nullptr, false, nullptr);
      });
    run("matvec_q8", "rows=3 +bias +=", 3, true, kRounded, [&](size_t n, bool) {
      cuda::matvec_q8(dr, aq, int64_t(n), dy.get(), n_out, dbias.get(), true, nullptr);
    });
    // RMSNorm deferred into the matvec: W rmsnorm(x) from unscaled 8-bit blocks.
    const auto wn = uniform(size_t(n_in), 0.5f, 1.5f);
    std::vector<float> xnorm(x.size());
    for (size_t j = 0; j < max_rows; ++j)
      cpu::rms_norm(x.data() + j * size_t(n_in), wn.data(), xnorm.data() + j * size_t(n_in), n_in, 1e-5f);
    DevVec<float> dwn(wn), ssq(max_rows * size_t(n_in / 32));
    ActBuf nq(max_rows, n_in);
    cuda::rms_norm_q8_deferred(dx.get(), n_in, dwn.get(), nq.act(), ssq.get(), n_in / 32, 8, n_in, nullptr);
    const cuda::RowScale rs{ssq.get(), n_in / 32, n_in / 32, n_in, 1e-5f};
    const auto x_saved = x;
    x = xnorm;
    for (size_t rows : {1, 8})
      run("norm+matvec_q8", "deferred scale rows=" + std::to_string(rows), rows, false, kRounded, [&](size_t n, bool) {
        cuda::matvec_q8(dr, nq.act(), rs, int64_t(n), dy.get(), n_out, nullptr, false, nullptr);
      });
    x = x_saved;
  }
  // cuBLAS path; a workspace of 64 weight rows forces several chunks.
  cublasHandle_t h;
  ASSERT_EQ(cublasCreate(&h), CUBLAS_STATUS_SUCCESS);
  DevVec<uint16_t> w16(size_t(64 * n_in)), x16(max_rows * size_t(n_in));
  const cuda::GemmWorkspace ws{w16.get(), w16.size(), x16.get(), x16.size()};
  for (const DeviceMatrix* w : {&dm, repack ? &dr : nullptr}) {
    if (!w) continue;
    for (size_t rows : {9, 33})
      run("gemm_f16", std::string(w->repacked() ? "repacked" : "raw") + " rows=" + std::to_string(rows), rows,
          rows == 33, kRounded, [&](size_t n, bool acc) {
            cuda::linear_gemm(h, *w, dx.get(), n_in, int64_t(n), dy.get(), n_out, acc ? dbias.get() : nullptr,
                              acc, ws, nullptr);
          });
  }

  // A NaN in one activation row makes that whole output row NaN on every path.
  auto xn = x;
  xn[size_t(n_in) + 7] = kNaN;
  dx.upload(xn);
  cuda::quantize_q8(dx.get(), n_in, aq, int64_t(max_rows), n_in, nullptr);
  const auto x_saved = x;
  x = xn;
  run("matvec_f32", "NaN in row 1", 3, false, kF32, [&](size_t n, bool) {
    cuda::matvec_f32(dm, dx.get(), n_in, int64_t(n), dy.get(), n_out, nullptr, false, nullptr);
  });
  if (repack)
    run("matvec_q8", "NaN in row 1", 3, false, kRounded, [&](size_t n, bool) {
      cuda::matvec_q8(dr, aq, int64_t(n), dy.get(), n_out, nullptr, false, nullptr);
    });
  run("gemm_f16", "NaN in row 1", 9, false, kRounded, [&](size_t n, bool) {
    cuda::linear_gemm(h, dm, dx.get(), n_in, int64_t(n), dy.get(), n_out, nullptr, false, ws, nullptr);
  });
  x = x_saved;
  cublasDestroy(h);
}

// ---- tensor-core path (q4_0 / q8_0, f16 activations) -------------------------------------

// Shapes cover: one and several batch tiles (n8 tiles 1/2/4/8, > 64 rows),
// output rows past the last full 128-row block, a K tail shorter than the
// q4_0 tile (384 = 256 + 128), and split-K (2048 inputs over a small grid),
// each with and without bias / accumulation.
TEST(CudaOps, MmaMatchesReference) {
  KILN_REQUIRE_GPU();
  int n_sms = 0;
  cudaDeviceGetAttribute(&n_sms, cudaDevAttrMultiProcessorCount, 0);
  for (DType t : {DType::Q4_0, DType::Q8_0}) {
    for (const auto& [n_in, n_out] : {std::pair<int64_t, int64_t>{384, 157}, {2048, 300}, {512, 1030}}) {
      const QuantMatrix m = random_matrix(t, n_in, n_out);
      DevVec<uint8_t> raw(m.raw), rq(size_t(n_out * n_in));
      DevVec<uint16_t> rs(size_t(n_out * n_in / 32));
      cuda::repack_rows(t, raw.get(), n_in, n_out, rq.get(), rs.get(), nullptr);
      const DeviceMatrix dr{t, n_in, n_out, rq.get(), rs.get(), size_t(t == DType::Q4_0 ? n_in / 2 : n_in)};
      ASSERT_TRUE(cuda::mma_supported(dr));
      const size_t max_rows = 130;
      auto x = uniform(max_rows * size_t(n_in));
      const auto bias = uniform(size_t(n_out));
      const auto y0 = uniform(max_rows * size_t(n_out));
      DevVec<float> dx(x), dbias(bias), dy(max_rows * size_t(n_out));
      DevVec<uint16_t> x16(max_rows * size_t(n_in));
      cuda::convert_f32_f16(dx.get(), n_in, int64_t(max_rows), n_in, x16.get(), nullptr);
      for (size_t rows : {1, 5, 9, 17, 33, 64, 70, 130}) {
        for (bool acc : {false, true}) {
          DevVec<float> part(std::max<size_t>(1, cuda::mma_partial_floats(dr, int64_t(rows), n_sms)));
          std::vector<float> init(max_rows * size_t(n_out), kNaN);  // poison: every output written
          if (acc) init = y0;
          dy.upload(init);
          cuda::linear_mma(dr, x16.get(), n_in, int64_t(rows), dy.get(), n_out, acc ? dbias.get() : nullptr, acc,
                           part.get(), n_sms, nullptr);
          auto got = dy.download();
          got.resize(rows * size_t(n_out));
          const auto ref = ref_linear(m, x, rows, acc ? &bias : nullptr, acc ? &y0 : nullptr);
          expect_close("mma_f16", std::string(dtype_name(t)) + " " + std::to_string(n_in) + "x" +
                                      std::to_string(n_out) + " rows=" + std::to_string(rows) +
                                      (acc ? " +bias +=" : ""),
                       compare(got, ref), kRounded);
        }
      }
      // A NaN in one activation row makes that output row NaN, the others stay finite.
      auto xn = x;
      xn[size_t(n_in) + 7] = kNaN;
      dx.upload(xn);
      cuda::convert_f32_f16(dx.get(), n_in, int64_t(max_rows), n_in, x16.get(), nullptr);
      DevVec<float> part(std::max<size_t>(1, cuda::mma_partial_floats(dr, 9, n_sms)));
      dy.poison();
      cuda::linear_mma(dr, x16.get(), n_in, 9, dy.get(), n_out, nullptr, false, part.get(), n_sms, nullptr);
      auto got = dy.download();
      got.resize(9 * size_t(n_out));
      const auto ref = ref_linear(m, xn, 9, nullptr, nullptr);
      expect_close("mma_f16", std::string(dtype_name(t)) + " NaN in row 1", compare(got, ref), kRounded);
    }
  }
}

// ---- embedding gather ------------------------------------------------------------------

TEST_P(CudaMatvec, EmbeddingGather) {
  KILN_REQUIRE_GPU();
  const DType t = GetParam();
  const int64_t n_embd = 512, n_vocab = 37;
  const QuantMatrix m = random_matrix(t, n_embd, n_vocab);
  DevVec<uint8_t> raw(m.raw);
  DeviceMatrix dm{t, n_embd, n_vocab, raw.get(), nullptr, m.row_bytes()};
  std::vector<int32_t> tokens = {3, 0, 36, 3, 17, 9};
  DevVec<int32_t> dt(tokens);
  DevVec<float> dx(tokens.size() * size_t(n_embd));
  std::vector<float> ref(dx.size());
  for (size_t i = 0; i < tokens.size(); ++i)
    quant::dequantize_row(t, m.raw.data() + size_t(tokens[i]) * m.row_bytes(), ref.data() + i * size_t(n_embd), n_embd);
  dx.poison();
  cuda::embed_rows(dm, dt.get(), int64_t(tokens.size()), dx.get(), n_embd, nullptr);
  expect_close("embed", std::string(dtype_name(t)) + " raw", compare(dx.download(), ref), kF32);
  if (cuda::repack_supported(t)) {
    DevVec<uint8_t> rq(size_t(n_vocab * n_embd));
    DevVec<uint16_t> rs(size_t(n_vocab * n_embd / 32));
    cuda::repack_rows(t, raw.get(), n_embd, n_vocab, rq.get(), rs.get(), nullptr);
    DeviceMatrix dr{t, n_embd, n_vocab, rq.get(), rs.get(), size_t(t == DType::Q4_0 ? n_embd / 2 : n_embd)};
    dx.poison();
    cuda::embed_rows(dr, dt.get(), int64_t(tokens.size()), dx.get(), n_embd, nullptr);
    expect_close("embed", std::string(dtype_name(t)) + " repacked", compare(dx.download(), ref), kF32);
  }
}

INSTANTIATE_TEST_SUITE_P(AllTypes, CudaMatvec,
                         ::testing::Values(DType::F32, DType::F16, DType::BF16, DType::Q4_0, DType::Q4_1,
                                           DType::Q5_0, DType::Q5_1, DType::Q8_0, DType::Q4_K,
                                           DType::Q5_K, DType::Q6_K),
                         [](const auto& info) { return std::string(dtype_name(info.param)); });

// ---- SwiGLU --------------------------------------------------------------------------------

TEST(CudaOps, SwiGLU) {
  KILN_REQUIRE_GPU();
  const size_t rows = 5, n_ff = 1024;
  auto gu = uniform(rows * 2 * n_ff, -4.0f, 4.0f);
  gu[3 * 2 * n_ff + 11] = kNaN;
  gu[4 * 2 * n_ff + n_ff + 12] = kInf;
  std::vector<float> ref(rows * n_ff);
  for (size_t r = 0; r < rows; ++r) {
    std::copy_n(gu.begin() + long(r * 2 * n_ff), n_ff, ref.begin() + long(r * n_ff));
    cpu::swiglu(ref.data() + r * n_ff, gu.data() + r * 2 * n_ff + n_ff, int64_t(n_ff));
  }
  DevVec<float> dg(gu), da(rows * n_ff);
  ActBuf aq(rows, int64_t(n_ff));
  da.poison();
  cuda::swiglu(dg.get(), 2 * n_ff, rows, n_ff, da.get(), aq.act(), nullptr);
  expect_close("swiglu", "f32 out, NaN/Inf planted", compare(da.download(), ref), kF32);
  const auto deq = aq.dequant(rows, n_ff);
  expect_close("swiglu", "q8 out (rows 0-2)", compare(deq.data(), ref.data(), 3 * n_ff), kRounded);
}

// ---- RoPE + per-head norm + K/V store ------------------------------------------------------

struct RopeCase {
  const char* label;
  bool neox;
  int64_t head_dim, n_rot;
  bool qk_norm, rope_freqs;
  KvType kv;
};

model::HParams attn_hparams(int64_t n_head, int64_t n_kv, int64_t hd) {
  model::HParams hp;
  hp.arch = "llama";
  hp.n_head = n_head;
  hp.n_head_kv = n_kv;
  hp.head_dim_k = hp.head_dim_v = hd;
  hp.n_rot = hd;
  hp.n_embd = n_head * hd;
  hp.n_layer = 2;
  hp.n_ff = 64;
  hp.n_vocab = 16;
  hp.rope_freq_base = 500000.0;
  return hp;
}

cuda::KvLayout gpu_layout(const cpu::KvCache& kv, const model::HParams& hp, uint8_t* base) {
  cuda::KvLayout k;
  const KvCacheConfig& c = kv.config();
  k.base = base;
  k.type = c.type;
  k.block_size = c.block_size;
  k.n_blocks = c.n_blocks;
  k.k_row = kv.k_row_bytes();
  k.v_row = kv.v_row_bytes();
  k.k_head_stride = k.k_row * size_t(c.block_size);
  k.v_head_stride = k.v_row * size_t(c.block_size);
  k.k_block_stride = k.k_head_stride * size_t(hp.n_head_kv);
  k.v_block_stride = k.v_head_stride * size_t(hp.n_head_kv);
  k.v_offset = k.k_block_stride * size_t(c.n_blocks);
  k.layer_stride = k.v_offset + k.v_block_stride * size_t(c.n_blocks);
  // The CPU cache must have the same layout (cpu/kv_cache.h).
  EXPECT_EQ(size_t(kv.v_head(1, 0, 0) - kv.k_head(0, 0, 0)), k.layer_stride + k.v_offset);
  EXPECT_EQ(uint64_t(k.layer_stride) * uint64_t(hp.n_layer), kv.bytes());
  return k;
}

// Batch metadata for the GPU from a kiln::Batch.
struct DevBatch {
  DevVec<int32_t> tokens, pos, seq, bt_off, bt, new0;
  cuda::BatchMeta meta;
  explicit DevBatch(const Batch& b) {
    std::vector<int32_t> t, p, s, off, table;
    for (const auto& x : b.tokens) t.push_back(x.token), p.push_back(x.pos), s.push_back(x.seq);
    for (const auto& q : b.seqs) {
      off.push_back(int32_t(table.size()));
      table.insert(table.end(), q.block_table.begin(), q.block_table.end());
    }
    tokens.resize(t.size()), tokens.upload(t);
    pos.resize(p.size()), pos.upload(p);
    seq.resize(s.size()), seq.upload(s);
    bt_off.resize(off.size()), bt_off.upload(off);
    bt.resize(table.size()), bt.upload(table);
    std::vector<int32_t> first(b.seqs.size(), std::numeric_limits<int32_t>::max());
    for (const auto& x : b.tokens) first[size_t(x.seq)] = std::min(first[size_t(x.seq)], x.pos);
    new0.resize(first.size()), new0.upload(first);
    meta = {tokens.get(), pos.get(), seq.get(), bt_off.get(), bt.get(), int32_t(t.size()), new0.get()};
  }
};

class CudaRopeKv : public ::testing::TestWithParam<RopeCase> {};

TEST_P(CudaRopeKv, MatchesCpu) {
  KILN_REQUIRE_GPU();
  const RopeCase& c = GetParam();
  model::HParams hp = attn_hparams(8, 2, c.head_dim);
  hp.n_rot = c.n_rot;
  hp.rope_style = c.neox ? model::RopeStyle::neox : model::RopeStyle::adjacent_pairs;
  const int64_t n_q = hp.n_q(), n_k = hp.n_k(), n_v = hp.n_v(), ld = n_q + n_k + n_v;
  const int64_t hd = c.head_dim;
  const int32_t bs = 16;
  KvCacheConfig cfg{c.kv, bs, 8};
  cpu::KvCache kv;
  ASSERT_TRUE(kv.init(hp, cfg).ok());
  std::memset(kv.k_head(0, 0, 0), 0, kv.bytes());

  // Two sequences: one at positions 0..9, one at 100..104 (blocks scattered).
  std::vector<int32_t> ta = {5, 2}, tb = {1, 7, 0, 3, 6, 4, 7};
  Batch batch;
  const int32_t sa = batch.add_seq(ta), sb = batch.add_seq(tb);
  for (int32_t i = 0; i < 10; ++i) batch.add(0, i, sa, false);
  for (int32_t i = 100; i < 105; ++i) batch.add(0, i, sb, false);
  const size_t n = batch.tokens.size();

  auto qkv = uniform(n * size_t(ld), -2.0f, 2.0f);
  const auto freqs = uniform(size_t(hp.n_rot / 2), 1.0f, 8.0f);
  const auto qn = uniform(size_t(hd), 0.5f, 1.5f), kn = uniform(size_t(hd), 0.5f, 1.5f);
  cpu::Rope rope;
  rope.init(hp, c.rope_freqs ? freqs.data() : nullptr);
  std::vector<double> inv(size_t(hp.n_rot / 2));  // as CudaBackend::load_weights forms them
  for (size_t i = 0; i < inv.size(); ++i) {
    double f = std::pow(hp.rope_freq_base, -2.0 * double(i) / double(hp.n_rot));
    if (c.rope_freqs) f /= double(freqs[i]);
    inv[i] = f;
  }

  // CPU: norm, rope, store.
  auto ref = qkv;
  std::vector<float> cs(size_t(hp.n_rot));
  for (size_t i = 0; i < n; ++i) {
    float* q = ref.data() + i * size_t(ld);
    float* k = q + n_q;
    const float* v = k + n_k;
    if (c.qk_norm) {
      cpu::rms_norm_heads(q, qn.data(), hp.n_head, hd, 1e-6f);
      cpu::rms_norm_heads(k, kn.data(), hp.n_head_kv, hd, 1e-6f);
    }
    rope.angles(batch.tokens[i].pos, cs.data());
    rope.apply(q, hp.n_head, hd, cs.data());
    rope.apply(k, hp.n_head_kv, hd, cs.data());
    const auto& t = batch.tokens[i];
    const int32_t block = batch.seqs[size_t(t.seq)].block_table[size_t(t.pos / bs)];
    for (int64_t g = 0; g < hp.n_head_kv; ++g) {
      cpu::kv_store_row(c.kv, k + g * hd, kv.k_head(0, block, g) + size_t(t.pos % bs) * kv.k_row_bytes(), hd);
      cpu::kv_store_row(c.kv, v + g * hd, kv.v_head(0, block, g) + size_t(t.pos % bs) * kv.v_row_bytes(), hd);
    }
  }

  // GPU.
  DevBatch db(batch);
  DevVec<float> dqkv(qkv), dcs(n * size_t(hp.n_rot)), dqn(qn), dkn(kn);
  DevVec<double> dinv(inv);
  DevVec<uint8_t> dkv(kv.bytes());
  ASSERT_EQ(cudaMemset(dkv.get(), 0, kv.bytes()), cudaSuccess);
  cuda::rope_table(db.pos.get(), int64_t(n), dinv.get(), hp.n_rot / 2, dcs.get(), nullptr);
  cuda::RopeKvArgs a;
  a.qkv = dqkv.get();
  a.ld = ld;
  a.cs = dcs.get();
  a.q_norm = c.qk_norm ? dqn.get() : nullptr;
  a.k_norm = c.qk_norm ? dkn.get() : nullptr;
  a.eps = 1e-6f;
  a.n_head = int(hp.n_head), a.n_head_kv = int(hp.n_head_kv);
  a.head_dim_k = a.head_dim_v = int(hd);
  a.n_rot = int(hp.n_rot);
  a.neox = c.neox;
  a.kv = gpu_layout(kv, hp, dkv.get());
  a.layer = 0;
  a.meta = db.meta;
  cuda::rope_kv_store(a, nullptr);

  const auto got = dqkv.download();
  std::vector<float> gq, rq;
  for (size_t i = 0; i < n; ++i) {
    gq.insert(gq.end(), got.begin() + long(i * size_t(ld)), got.begin() + long(i * size_t(ld) + size_t(n_q)));
    rq.insert(rq.end(), ref.begin() + long(i * size_t(ld)), ref.begin() + long(i * size_t(ld) + size_t(n_q)));
  }
  expect_close("rope_kv", std::string(c.label) + " Q", compare(gq, rq), kF32);
  // Stored rows, decoded on the host from both caches.
  const auto gkv = dkv.download();
  std::vector<float> gk, rk, row(static_cast<size_t>(hd));
  for (size_t i = 0; i < n; ++i) {
    const auto& t = batch.tokens[i];
    const int32_t block = batch.seqs[size_t(t.seq)].block_table[size_t(t.pos / bs)];
    for (int64_t g = 0; g < hp.n_head_kv; ++g)
      for (int kvi = 0; kvi < 2; ++kvi) {
        const uint8_t* cpu_row = (kvi ? kv.v_head(0, block, g) : kv.k_head(0, block, g)) +
                                 size_t(t.pos % bs) * kv.k_row_bytes();
        const uint8_t* gpu_row = gkv.data() + (cpu_row - kv.k_head(0, 0, 0));
        cpu::kv_load_row(c.kv, gpu_row, row.data(), hd);
        gk.insert(gk.end(), row.begin(), row.end());
        cpu::kv_load_row(c.kv, cpu_row, row.data(), hd);
        rk.insert(rk.end(), row.begin(), row.end());
      }
  }
  expect_close("rope_kv", std::string(c.label) + " K/V rows", compare(gk, rk),
               c.kv == KvType::f32 ? kF32 : kRounded);
}

INSTANTIATE_TEST_SUITE_P(
    Styles, CudaRopeKv,
    ::testing::Values(RopeCase{"adjacent_f16", false, 128, 128, false, true, KvType::f16},
                      RopeCase{"neox_f32", true, 64, 64, false, false, KvType::f32},
                      RopeCase{"neox_partial_qknorm_q8_0", true, 64, 32, true, false, KvType::q8_0},
                      RopeCase{"adjacent_qknorm_fp8", false, 32, 32, true, true, KvType::fp8}),
    [](const auto& info) { return std::string(info.param.label); });

// ---- attention -------------------------------------------------------------------------------

// Query heads, KV heads and head size of an attention case (label: its name).
struct HeadShape {
  const char* label;
  int64_t n_head, n_kv, hd;
};

struct AttnCase : HeadShape {
  KvType kv;
};

class CudaAttention : public ::testing::TestWithParam<AttnCase> {};

TEST_P(CudaAttention, MatchesCpu) {
  KILN_REQUIRE_GPU();
  const AttnCase& c = GetParam();
  const model::HParams hp = attn_hparams(c.n_head, c.n_kv, c.hd);
  const int32_t bs = 16;
  // Sequence A: 700 cached positions, a decode row at 699 (long context:
  // split path). Sequence B: a 41-token prefill. Block ids interleaved.
  const int32_t na = 700, nb = 41;
  std::vector<int32_t> ta, tb;
  for (int32_t i = 0; i < (na + bs - 1) / bs; ++i) ta.push_back(2 * i);
  for (int32_t i = 0; i < (nb + bs - 1) / bs; ++i) tb.push_back(2 * i + 1);
  const int32_t n_blocks = 2 * int32_t(std::max(ta.size(), tb.size())) + 2;
  cpu::KvCache kv;
  ASSERT_TRUE(kv.init(hp, KvCacheConfig{c.kv, bs, n_blocks}).ok());
  std::memset(kv.k_head(0, 0, 0), 0, kv.bytes());
  auto fill = [&](const std::vector<int32_t>& table, int32_t n_pos) {
    for (int32_t p = 0; p < n_pos; ++p)
      for (int64_t l = 0; l < hp.n_layer; ++l)
        for (int64_t g = 0; g < hp.n_head_kv; ++g) {
          const auto k = uniform(size_t(c.hd), -2.0f, 2.0f), v = uniform(size_t(c.hd));
          cpu::kv_store_row(c.kv, k.data(), kv.k_head(l, table[size_t(p / bs)], g) + size_t(p % bs) * kv.k_row_bytes(), c.hd);
          cpu::kv_store_row(c.kv, v.data(), kv.v_head(l, table[size_t(p / bs)], g) + size_t(p % bs) * kv.v_row_bytes(), c.hd);
        }
  };
  fill(ta, na);
  fill(tb, nb);
  Batch batch;
  const int32_t sb = batch.add_seq(tb), sa = batch.add_seq(ta);
  for (int32_t i = 0; i < nb; ++i) {
    batch.add(0, i, sb, false);
    if (i == 20) batch.add(0, na - 1, sa, true);  // the decode row sits inside the prefill
  }
  const size_t n = batch.tokens.size();
  const auto q = uniform(n * size_t(hp.n_q()), -2.0f, 2.0f);

  ThreadPool pool(2);
  cpu::AttentionScratch scratch;
  scratch.reserve(pool.size(), na, hp);
  DevBatch db(batch);
  DevVec<float> dq(q), dout(n * size_t(hp.n_attn_out()));
  DevVec<uint8_t> dkv(kv.bytes());
  ASSERT_EQ(cudaMemcpy(dkv.get(), kv.k_head(0, 0, 0), kv.bytes(), cudaMemcpyHostToDevice), cudaSuccess);
  int n_sms = 0;
  cudaDeviceGetAttribute(&n_sms, cudaDevAttrMultiProcessorCount, 0);

  struct Subset {
    const char* what;
    std::vector<int32_t> rows;
  };
  std::vector<int32_t> all(n);
  for (size_t i = 0; i < n; ++i) all[i] = int32_t(i);
  for (const Subset& sub : {Subset{"all rows", all}, Subset{"decode row only", {21}}, Subset{"rows 3,21,40", {3, 21, 40}}}) {
    for (int64_t layer : {int64_t(0), int64_t(1)}) {
      std::vector<float> ref(sub.rows.size() * size_t(hp.n_attn_out()));
      cpu::AttentionArgs ca;
      ca.hp = &hp;
      ca.kv = &kv;
      ca.layer = layer;
      ca.batch = &batch;
      ca.q = q.data();
      ca.rows = sub.rows.data();
      ca.n_rows = int64_t(sub.rows.size());
      ca.out = ref.data();
      ca.reference = true;
      cpu::attention(ca, scratch, pool);

      DevVec<int32_t> drows(sub.rows);
      cuda::AttentionArgs ga;
      ga.q = dq.get();
      ga.ldq = hp.n_q();
      ga.rows = drows.get();
      ga.n_rows = int64_t(sub.rows.size());
      int32_t max_ctx = 0;
      for (int32_t r : sub.rows) max_ctx = std::max(max_ctx, batch.tokens[size_t(r)].pos + 1);
      ga.max_ctx = max_ctx;
      ga.out = dout.get();
      ga.kv = gpu_layout(kv, hp, dkv.get());
      ga.layer = layer;
      ga.meta = db.meta;
      ga.n_head = int(hp.n_head), ga.n_head_kv = int(hp.n_head_kv);
      ga.head_dim_k = ga.head_dim_v = int(hp.head_dim_k);
      DevVec<float> work(std::max<size_t>(cuda::attention_workspace_floats(ga, n_sms), 1));
      // attention(args) as if the GPU had `sms` multiprocessors (the split
      // plan depends on it), against the CPU.
      auto check = [&](const cuda::AttentionArgs& args, int sms, float* w, const std::string& what) {
        dout.poison();
        cuda::attention(args, w, sms, nullptr);
        auto got = dout.download();
        got.resize(ref.size());
        expect_close("attention", std::string(c.label) + " " + what + " L" + std::to_string(layer),
                     compare(got, ref), kF32);
      };
      check(ga, n_sms, work.get(), sub.what);
      // One decode row on the row-wise kernel: with this GPU's SMs its
      // blocks take fewer query heads than the group; as if there were 8
      // SMs, each block takes the whole group.
      if (sub.rows.size() == 1 && cuda::attention_decode_supported(ga, n_sms) && hp.n_head > hp.n_head_kv &&
          n_sms >= 64) {
        const int few = 8;
        const int group = int(hp.n_head / hp.n_head_kv);
        EXPECT_LT(cuda::attention_decode_plan(ga, n_sms).heads_per_block, group) << c.label;
        EXPECT_EQ(cuda::attention_decode_plan(ga, few).heads_per_block, group) << c.label;
        DevVec<float> work_few(std::max<size_t>(cuda::attention_workspace_floats(ga, few), 1));
        check(ga, few, work_few.get(), "whole group per block");
      }
      if (sub.rows.size() == n) {  // no row list: rows 0..n-1 in batch order
        cuda::AttentionArgs na = ga;
        na.rows = nullptr;
        check(na, n_sms, work.get(), "no row list");
      }
      // The output also as the 8-bit blocks of the output projection's
      // input (two planes: grid and residual), compared dequantized.
      {
        const int64_t ld = hp.n_attn_out();
        DevVec<int8_t> q1(sub.rows.size() * size_t(ld)), q2(sub.rows.size() * size_t(ld));
        DevVec<float> ds(sub.rows.size() * size_t(ld / 32) * 4);
        cuda::AttentionArgs qa = ga;
        qa.outq = cuda::ActQ8{q1.get(), q2.get(), ds.get(), ld};
        cuda::attention(qa, work.get(), n_sms, nullptr);
        const auto h1 = q1.download(), h2 = q2.download();
        const auto hd = ds.download();
        std::vector<float> deq(ref.size());
        for (size_t i = 0; i < deq.size(); ++i) {
          const size_t blk = i / 32;
          deq[i] = hd[4 * blk] * float(h1[i]) + hd[4 * blk + 2] * float(h2[i]);
        }
        expect_close("attention", std::string(c.label) + " " + sub.what + " 8-bit output L" + std::to_string(layer),
                     compare(deq, ref), kRounded);
      }
      // Tensor-core prefill kernel over every row (tiles of runs of one
      // sequence; the decode row of the other sequence is a tile of one),
      // Q and P rounded to f16: the f16 bound.
      if (sub.rows.size() == n && cuda::flash_supported(ga)) {
        std::vector<int32_t> seqs, poss;
        for (const auto& tk : batch.tokens) seqs.push_back(tk.seq), poss.push_back(tk.pos);
        for (int max_rows : {cuda::flash_rows_per_tile(ga), 3}) {
          const auto tiles = cuda::flash_tiles(seqs.data(), poss.data(), int64_t(n), max_rows);
          std::vector<int32_t> flat;
          for (const auto& tl : tiles) flat.push_back(tl.row0), flat.push_back(tl.n);
          DevVec<int32_t> dtiles(flat);
          DevVec<float> fwork(std::max<size_t>(cuda::flash_workspace_floats(ga, int(tiles.size()), n_sms), 1));
          DevVec<uint16_t> dout16(n * size_t(hp.n_attn_out()));
          cuda::AttentionArgs fa = ga;
          fa.out16 = dout16.get();
          dout.poison();
          cuda::attention_flash(fa, reinterpret_cast<const cuda::AttnTile*>(dtiles.get()), int(tiles.size()),
                                fwork.get(), n_sms, nullptr);
          auto fgot = dout.download();
          fgot.resize(ref.size());
          expect_close("flash_attention", std::string(c.label) + " tiles<=" + std::to_string(max_rows) + " L" +
                                              std::to_string(layer),
                       compare(fgot, ref), kRounded);
          const auto h16 = dout16.download();
          std::vector<float> f16v(ref.size());
          for (size_t i = 0; i < ref.size(); ++i) f16v[i] = fp16_to_f32(h16[i]);
          expect_close("flash_attention", std::string(c.label) + " f16 copy L" + std::to_string(layer),
                       compare(f16v, ref), kRounded);
        }
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, CudaAttention,
    ::testing::Values(AttnCase{{"g4_hd64_f16", 8, 2, 64}, KvType::f16},
                      AttnCase{{"g4_hd128_f32", 32, 8, 128}, KvType::f32},
                      AttnCase{{"g16_hd64_q8_0", 32, 2, 64}, KvType::q8_0},
                      AttnCase{{"g2_hd32_fp8", 4, 2, 32}, KvType::fp8},
                      AttnCase{{"g1_hd8_f16", 4, 4, 8}, KvType::f16},
                      // head size 128 with f16 K/V: the tensor-core prefill kernel as well
                      AttnCase{{"g4_hd128_f16", 32, 8, 128}, KvType::f16},
                      AttnCase{{"g8_hd128_f16", 16, 2, 128}, KvType::f16},
                      AttnCase{{"g1_hd128_f16", 4, 4, 128}, KvType::f16}),
    [](const auto& info) { return std::string(info.param.label); });

}  // namespace

// ---- RoPE and K/V store fused into decode attention -------------------------------------------

struct FusedCase : HeadShape {
  bool neox;
};

class CudaFusedRope : public ::testing::TestWithParam<FusedCase> {};

// A decode step's attention with RoPE and the K/V store inside
// (AttentionArgs::rope_cs) against rope_kv_store then attention, which the
// tests above check against the CPU: the same output and the same cache.
TEST_P(CudaFusedRope, MatchesRopeKvThenAttention) {
  KILN_REQUIRE_GPU();
  const FusedCase& c = GetParam();
  model::HParams hp = attn_hparams(c.n_head, c.n_kv, c.hd);
  hp.rope_style = c.neox ? model::RopeStyle::neox : model::RopeStyle::adjacent_pairs;
  const int64_t n_q = hp.n_q(), n_k = hp.n_k(), ld = n_q + n_k + hp.n_v();
  const int32_t bs = 16;
  // Three decode rows at positions 0, 299 and 1,499 (one, one and several
  // context splits), block ids interleaved across the sequences.
  const std::vector<int32_t> last = {0, 299, 1499};
  const int32_t n_seq = int32_t(last.size());
  std::vector<std::vector<int32_t>> tables(last.size());
  int32_t n_blocks = 0;
  for (int32_t s = 0; s < n_seq; ++s)
    for (int32_t b = 0; b <= last[size_t(s)] / bs; ++b) tables[size_t(s)].push_back(n_seq * b + s);
  for (const auto& tb : tables) n_blocks = std::max(n_blocks, n_seq * int32_t(tb.size()));
  cpu::KvCache kv;
  ASSERT_TRUE(kv.init(hp, KvCacheConfig{KvType::f16, bs, n_blocks}).ok());
  std::memset(kv.k_head(0, 0, 0), 0, kv.bytes());
  const int64_t layer = 1;
  for (int32_t s = 0; s < n_seq; ++s)
    for (int32_t p = 0; p < last[size_t(s)]; ++p)  // the cached positions
      for (int64_t g = 0; g < hp.n_head_kv; ++g) {
        const auto k = uniform(size_t(c.hd), -2.0f, 2.0f), v = uniform(size_t(c.hd));
        const int32_t b = tables[size_t(s)][size_t(p / bs)];
        cpu::kv_store_row(KvType::f16, k.data(), kv.k_head(layer, b, g) + size_t(p % bs) * kv.k_row_bytes(), c.hd);
        cpu::kv_store_row(KvType::f16, v.data(), kv.v_head(layer, b, g) + size_t(p % bs) * kv.v_row_bytes(), c.hd);
      }
  Batch batch;
  for (int32_t s = 0; s < n_seq; ++s) batch.add_seq(tables[size_t(s)]);
  for (int32_t s = n_seq - 1; s >= 0; --s) batch.add(0, last[size_t(s)], s, true);  // rows not in sequence order
  const size_t n = batch.tokens.size();
  const auto qkv = uniform(n * size_t(ld), -2.0f, 2.0f);
  std::vector<double> inv(size_t(hp.n_rot / 2));
  for (size_t i = 0; i < inv.size(); ++i) inv[i] = std::pow(hp.rope_freq_base, -2.0 * double(i) / double(hp.n_rot));

  DevBatch db(batch);
  DevVec<double> dinv(inv);
  DevVec<float> dcs(n * size_t(hp.n_rot));
  cuda::rope_table(db.pos.get(), int64_t(n), dinv.get(), hp.n_rot / 2, dcs.get(), nullptr);
  int n_sms = 0;
  cudaDeviceGetAttribute(&n_sms, cudaDevAttrMultiProcessorCount, 0);

  struct Run {
    std::vector<float> out;
    std::vector<uint8_t> cache;
  };
  // fused: RoPE inside the attention; prefetch: meta.new0 given (cached rows read before the wait).
  auto run = [&](bool fused, bool prefetch) {
    DevVec<float> dqkv(qkv), dout(n * size_t(hp.n_attn_out()));
    DevVec<uint8_t> dkv(kv.bytes());
    EXPECT_EQ(cudaMemcpy(dkv.get(), kv.k_head(0, 0, 0), kv.bytes(), cudaMemcpyHostToDevice), cudaSuccess);
    cuda::AttentionArgs ga;
    ga.q = dqkv.get();
    ga.ldq = ld;
    ga.n_rows = int64_t(n);
    ga.max_ctx = last.back() + 1;
    ga.out = dout.get();
    ga.kv = gpu_layout(kv, hp, dkv.get());
    ga.layer = layer;
    ga.meta = db.meta;
    if (!prefetch) ga.meta.new0 = nullptr;
    ga.n_head = int(hp.n_head), ga.n_head_kv = int(hp.n_head_kv);
    ga.head_dim_k = ga.head_dim_v = int(hp.head_dim_k);
    ga.decode_step = true;
    EXPECT_TRUE(cuda::attention_fuses_rope(ga, n_sms, int(hp.n_rot), false));
    EXPECT_FALSE(cuda::attention_fuses_rope(ga, n_sms, int(hp.n_rot), true));  // Q/K norms first: not fused
    EXPECT_FALSE(cuda::attention_fuses_rope(ga, n_sms, int(hp.n_rot) / 2, false));  // partial rotary: not fused
    ga.decode_step = false;
    EXPECT_FALSE(cuda::attention_fuses_rope(ga, n_sms, int(hp.n_rot), false));  // not a decode step: not fused
    ga.decode_step = fused;
    if (fused) {
      ga.rope_cs = dcs.get();
      ga.rope_neox = c.neox;
    } else {
      cuda::RopeKvArgs r;
      r.qkv = dqkv.get();
      r.ld = ld;
      r.cs = dcs.get();
      r.n_head = int(hp.n_head), r.n_head_kv = int(hp.n_head_kv);
      r.head_dim_k = r.head_dim_v = int(hp.head_dim_k);
      r.n_rot = int(hp.n_rot);
      r.neox = c.neox;
      r.kv = ga.kv;
      r.layer = layer;
      r.meta = db.meta;
      cuda::rope_kv_store(r, nullptr);
    }
    DevVec<float> work(std::max<size_t>(cuda::attention_workspace_floats(ga, n_sms), 1));
    dout.poison();
    cuda::attention(ga, work.get(), n_sms, nullptr);
    return Run{dout.download(), dkv.download()};
  };
  const Run plain = run(false, false), pre = run(false, true), fused = run(true, true);
  // Reading the cached rows before the wait changes no arithmetic.
  EXPECT_EQ(pre.out, plain.out) << c.label;
  EXPECT_EQ(pre.cache, plain.cache) << c.label;
  expect_close("attention+rope", std::string(c.label) + " output", compare(fused.out, plain.out), kF32);
  // Both caches decoded: the new rows went in (every other byte is untouched).
  std::vector<float> gk(kv.bytes() / 2), rk(kv.bytes() / 2);
  cpu::kv_load_row(KvType::f16, fused.cache.data(), gk.data(), int64_t(gk.size()));
  cpu::kv_load_row(KvType::f16, plain.cache.data(), rk.data(), int64_t(rk.size()));
  expect_close("attention+rope", std::string(c.label) + " K/V cache", compare(gk, rk), kRounded);
  std::vector<uint8_t> before(kv.bytes());
  std::memcpy(before.data(), kv.k_head(0, 0, 0), kv.bytes());
  size_t changed = 0;
  for (size_t i = 0; i < before.size(); i += 2)
    changed += std::memcmp(&before[i], &fused.cache[i], 2) != 0;
  // Each row's K and V heads, nearly every f16 element different from the zeros there before.
  EXPECT_GT(changed, size_t(0.9 * double(n * 2 * size_t(hp.n_head_kv * c.hd)))) << c.label;
  EXPECT_LE(changed, n * 2 * size_t(hp.n_head_kv * c.hd)) << c.label;
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, CudaFusedRope,
    ::testing::Values(FusedCase{{"g4_hd128_neox", 32, 8, 128}, true}, FusedCase{{"g4_hd128_adjacent", 32, 8, 128}, false},
                      FusedCase{{"g2_hd64_adjacent", 8, 4, 64}, false}, FusedCase{{"g8_hd64_neox", 16, 2, 64}, true},
                      FusedCase{{"g1_hd128_neox", 4, 4, 128}, true}),
    [](const auto& info) { return std::string(info.param.label); });

// ---- per-op timings at the reference model's decode shapes (printed, not asserted) ----------

namespace bench {

// Random bytes quickly (xorshift); f16 scales kept small and finite.
void fill_random(std::vector<uint8_t>& v, uint64_t seed) {
  uint64_t x = seed | 1;
  for (size_t i = 0; i + 8 <= v.size(); i += 8) {
    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    std::memcpy(v.data() + i, &x, 8);
  }
}

struct Q4Matrix {
  DevVec<uint8_t> qs;
  DevVec<uint16_t> sc;
  DeviceMatrix m;
  Q4Matrix(int64_t n_in, int64_t n_out, uint64_t seed) : qs(size_t(n_in * n_out / 2)), sc(size_t(n_in * n_out / 32)) {
    std::vector<uint8_t> h(qs.size());
    fill_random(h, seed);
    qs.upload(h);
    std::vector<uint16_t> s(sc.size());
    for (size_t i = 0; i < s.size(); ++i) s[i] = uint16_t(0x2000 | (h[i] & 0x3ff));  // ~0.008..0.016
    sc.upload(s);
    m = DeviceMatrix{DType::Q4_0, n_in, n_out, qs.get(), sc.get(), size_t(n_in / 2)};
  }
};

// Median microseconds of fn(i) over reps (i = repetition index), events on stream 0.
template <class F>
double time_us(int reps, F&& fn) {
  cudaEvent_t a, b;
  cudaEventCreate(&a);
  cudaEventCreate(&b);
  std::vector<double> t;
  for (int i = 0; i < reps + 3; ++i) {
    cudaEventRecord(a);
    fn(i);
    cudaEventRecord(b);
    const cudaError_t err = cudaEventSynchronize(b);  // a faulting kernel fails here, not later
    EXPECT_EQ(err, cudaSuccess) << cudaGetErrorString(err);
    if (err != cudaSuccess) std::abort();
    float ms = 0;
    cudaEventElapsedTime(&ms, a, b);
    if (i >= 3) t.push_back(double(ms) * 1e3);  // 3 warm-ups
  }
  cudaEventDestroy(a);
  cudaEventDestroy(b);
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

}  // namespace bench

// Batched linear layers of the 8B shapes: tensor-core kernel (mma) against
// dequantize + cuBLAS, rows 16..512; picks CudaOptions::mma_max_rows.
TEST(CudaOpsBench, BatchedShapesLlama3_8B) {
  KILN_REQUIRE_GPU();
  using namespace bench;
  int n_sms = 0;
  cudaDeviceGetAttribute(&n_sms, cudaDevAttrMultiProcessorCount, 0);
  const int64_t e = 4096, ff = 14336;
  struct Shape {
    const char* name;
    int64_t n_in, n_out;
  };
  const Shape shapes[] = {{"qkv 4096->6144", e, 6144}, {"wo 4096->4096", e, e},
                          {"gate|up 4096->28672", e, 2 * ff}, {"down 14336->4096", ff, e}};
  const int64_t max_rows = 512;
  DevVec<float> x(size_t(max_rows * ff)), y(size_t(max_rows * 2 * ff));
  x.upload(uniform(x.size()));
  DevVec<uint16_t> x16(size_t(max_rows * ff)), w16(size_t(64) << 20);
  cuda::convert_f32_f16(x.get(), ff, max_rows, ff, x16.get(), nullptr);
  cublasHandle_t h;
  ASSERT_EQ(cublasCreate(&h), CUBLAS_STATUS_SUCCESS);
  const cuda::GemmWorkspace ws{w16.get(), w16.size(), x16.get(), x16.size()};
  for (const Shape& s : shapes) {
    const size_t bytes = size_t(s.n_in * s.n_out) / 32 * 18;
    const int n_copies = int(std::max<size_t>(1, std::min<size_t>(4, (size_t(256) << 20) / bytes + 1)));
    std::vector<std::unique_ptr<Q4Matrix>> ms;
    for (int c = 0; c < n_copies; ++c) ms.push_back(std::make_unique<Q4Matrix>(s.n_in, s.n_out, 11 + c));
    for (int64_t rows : {1, 2, 4, 8, 16, 32, 64, 128, 256, 512}) {
      DevVec<float> part(std::max<size_t>(1, cuda::mma_partial_floats(ms[0]->m, rows, n_sms)));
      const double us_mma = time_us(10, [&](int i) {
        cuda::linear_mma(ms[size_t(i % n_copies)]->m, x16.get(), s.n_in, rows, y.get(), s.n_out, nullptr, false,
                         part.get(), n_sms, nullptr);
      });
      const double us_gemm = time_us(10, [&](int i) {
        cuda::linear_gemm(h, ms[size_t(i % n_copies)]->m, x.get(), s.n_in, rows, y.get(), s.n_out, nullptr,
                          false, ws, nullptr);
      });
      const double flop = 2.0 * double(rows) * double(s.n_in) * double(s.n_out);
      std::printf("[ bench          ] q4_0 %-20s rows=%3lld  mma %8.1f us (%5.0f GB/s, %4.0f TFLOP/s)  "
                  "dequant+cuBLAS %8.1f us\n",
                  s.name, (long long)rows, us_mma, double(bytes) / us_mma * 1e-3, flop / us_mma * 1e-6, us_gemm);
      // KILN_MMA_BENCH_SPLITS=1: the split-K plan against forced split counts.
      if (std::getenv("KILN_MMA_BENCH_SPLITS") && (rows == 8 || rows == 16 || rows == 64 || rows == 128)) {
        for (int splits : {1, 2, 4, 8}) {
          DevVec<float> fp(std::max<size_t>(1, cuda::mma_partial_floats(ms[0]->m, rows, n_sms, splits)));
          const double us = time_us(10, [&](int i) {
            cuda::linear_mma(ms[size_t(i % n_copies)]->m, x16.get(), s.n_in, rows, y.get(), s.n_out, nullptr,
                             false, fp.get(), n_sms, nullptr, splits);
          });
          std::printf("[ bench          ]   forced splits=%d  %8.1f us\n", splits, us);
        }
      }
    }
  }
  cublasDestroy(h);
}

TEST(CudaOpsBench, DecodeShapesLlama3_8B) {
  KILN_REQUIRE_GPU();
  using namespace bench;
  cudaDeviceProp prop{};
  cudaGetDeviceProperties(&prop, 0);
  std::printf("[ bench          ] device %s, %d SMs\n", prop.name, prop.multiProcessorCount);
  const int64_t e = 4096, ff = 14336, n_q = 4096, n_kv = 1024;
  struct Shape {
    const char* name;
    int64_t n_in, n_out;
  };
  const Shape shapes[] = {{"qkv 4096->6144", e, n_q + 2 * n_kv}, {"wo 4096->4096", n_q, e},
                          {"gate|up 4096->28672", e, 2 * ff}, {"down 14336->4096", ff, e},
                          {"output 4096->128256", e, 128256}};
  DevVec<float> x(8 * size_t(ff)), y(8 * size_t(128256));
  x.upload(uniform(x.size()));
  ActBuf aq(8, ff);
  cuda::quantize_q8(x.get(), ff, aq.act(), 8, ff, nullptr);
  for (const Shape& s : shapes) {
    // Copies that together exceed the L2 cache, used in turn.
    const size_t bytes = size_t(s.n_in * s.n_out) / 32 * 18;
    const int n_copies = int(std::max<size_t>(1, std::min<size_t>(8, (size_t(256) << 20) / bytes + 1)));
    std::vector<std::unique_ptr<Q4Matrix>> ms;
    for (int c = 0; c < n_copies; ++c) ms.push_back(std::make_unique<Q4Matrix>(s.n_in, s.n_out, 7 + c));
    for (int rows : {1, 4, 8}) {
      const double us = time_us(20, [&](int i) {
        cuda::matvec_q8(ms[size_t(i % n_copies)]->m, aq.act(), rows, y.get(), s.n_out, nullptr, false, nullptr);
      });
      std::printf("[ bench          ] matvec_q8 q4_0 %-22s rows=%d  %8.1f us  %7.0f GB/s\n", s.name, rows, us,
                  double(bytes) / us * 1e-3);
    }
  }
  // Small ops of one decode row.
  DevVec<float> w(static_cast<size_t>(e)), xn(static_cast<size_t>(e));
  w.upload(uniform(size_t(e)));
  std::printf("[ bench          ] rms_norm+q8 1x4096              %8.1f us\n", time_us(50, [&](int) {
                cuda::rms_norm(x.get(), e, w.get(), xn.get(), e, aq.act(), 1, e, 1e-5f, nullptr);
              }));
  DevVec<float> gu(static_cast<size_t>(2 * ff));
  gu.upload(uniform(gu.size()));
  std::printf("[ bench          ] swiglu+q8 1x14336               %8.1f us\n", time_us(50, [&](int) {
                cuda::swiglu(gu.get(), 2 * ff, 1, ff, nullptr, aq.act(), nullptr);
              }));
  std::printf("[ bench          ] quantize_q8 1x4096              %8.1f us\n", time_us(50, [&](int) {
                cuda::quantize_q8(x.get(), e, aq.act(), 1, e, nullptr);
              }));
}

// Attention of decode rows (one sequence each) over their cached positions
// (f16 K/V): one row at 512 / 4096, and batched decode at 64 / 128 streams.
TEST(CudaOpsBench, DecodeAttention) {
  KILN_REQUIRE_GPU();
  using namespace bench;
  cudaDeviceProp prop{};
  cudaGetDeviceProperties(&prop, 0);
  const model::HParams hp = attn_hparams(32, 8, 128);
  for (const auto& [n_seq, ctx] : {std::pair<int32_t, int32_t>{1, 512}, {1, 4096}, {64, 576}, {128, 576}}) {
    const int32_t bs = 16, per_seq = ctx / bs, nb = n_seq * per_seq;
    cpu::KvCache kv;
    ASSERT_TRUE(kv.init(hp, KvCacheConfig{KvType::f16, bs, nb}).ok());
    DevVec<uint8_t> dkv(kv.bytes());
    std::vector<uint8_t> hkv(kv.bytes());
    for (size_t i = 0; i < hkv.size(); i += 2) hkv[i] = uint8_t(i * 7), hkv[i + 1] = 0x30 | (i & 7);
    dkv.upload(hkv);
    Batch batch;
    std::vector<std::vector<int32_t>> tables(static_cast<size_t>(n_seq));  // the batch keeps spans of them
    for (int32_t q = 0; q < n_seq; ++q) {
      for (int32_t i = 0; i < per_seq; ++i) tables[size_t(q)].push_back(q * per_seq + i);
      batch.add(0, ctx - 1, batch.add_seq(tables[size_t(q)]), true);
    }
    DevBatch db(batch);
    DevVec<float> q(size_t(n_seq) * size_t(hp.n_q())), out(size_t(n_seq) * size_t(hp.n_attn_out()));
    q.upload(uniform(q.size()));
    std::vector<int32_t> row_ids(static_cast<size_t>(n_seq));
    for (int32_t i = 0; i < n_seq; ++i) row_ids[size_t(i)] = i;
    DevVec<int32_t> rows(row_ids);
    cuda::AttentionArgs ga;
    ga.q = q.get();
    ga.ldq = hp.n_q();
    ga.rows = rows.get();
    ga.n_rows = n_seq;
    ga.max_ctx = ctx;
    ga.out = out.get();
    ga.kv = gpu_layout(kv, hp, dkv.get());
    ga.meta = db.meta;
    ga.n_head = 32, ga.n_head_kv = 8, ga.head_dim_k = ga.head_dim_v = 128;
    DevVec<float> work(std::max<size_t>(cuda::attention_workspace_floats(ga, prop.multiProcessorCount), 1));
    const double us = time_us(20, [&](int) { cuda::attention(ga, work.get(), prop.multiProcessorCount, nullptr); });
    std::printf("[ bench          ] attention %3d rows ctx=%-5d f16 K/V  %8.1f us  %7.0f GB/s\n", n_seq, ctx, us,
                double(size_t(n_seq) * size_t(ctx) * 8 * 128 * 2 * 2) / us * 1e-3);
  }
}
