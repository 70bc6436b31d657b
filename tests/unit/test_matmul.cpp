// CPU matmul: fast path vs the reference (NMSE per weight type), the ISA
// levels against each other (bitwise), batch and thread invariance (bitwise),
// odd shapes, NaN/Inf propagation, the KILN_CPU_ISA cap and kernel counters.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "kiln/backend/cpu/matmul.h"
#include "kiln/backend/cpu/matmul_kernels.h"
#include "kiln/core/fp16.h"
#include "kiln/core/threadpool.h"
#include "kiln/quant/quant.h"

namespace kiln::cpu {
namespace {

using detail::Isa;

constexpr DType kAllTypes[] = {DType::F32,  DType::F16,  DType::BF16, DType::Q8_0,
                               DType::Q4_0, DType::Q4_1, DType::Q5_0, DType::Q5_1,
                               DType::Q4_K, DType::Q5_K, DType::Q6_K};

bool is_float(DType t) {
  return t == DType::F32 || t == DType::F16 || t == DType::BF16;
}
int64_t block_of(DType t) {
  return dtype_info(t).block_elems;
}

// NMSE bound of fast vs reference. The reference uses the exact dequantized
// weights, so the only error of the quantized paths is the 8-bit activation
// rounding: per element uniform in +-d/2 with d = amax/127 (amax ~ 1 for
// uniform [-1, 1] inputs), variance d^2/12 ~ 5.2e-6 against var(x) = 1/3, so
// NMSE ~ 1.6e-5 for independent weights (the same for 32- and 256-blocks,
// whose amax is ~1 either way). 6e-5 leaves room for the spread over a few
// hundred outputs. Float weights differ from the double reference only by
// float32 rounding of the 16-lane sums: ~1e-13; bound 1e-10.
double nmse_bound(DType t) {
  return is_float(t) ? 1e-10 : 6e-5;
}

struct Problem {
  DType type;
  int64_t n_out, n_in, n_batch;
  std::vector<uint8_t> w;  // [n_out] rows of type
  std::vector<float> x;    // [n_batch, n_in]
};

Problem make_problem(DType t, int64_t n_out, int64_t n_in, int64_t n_batch, uint32_t seed) {
  Problem p{t, n_out, n_in, n_batch, {}, {}};
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  const size_t rb = row_bytes(t, n_in);
  p.w.resize(rb * size_t(n_out));
  std::vector<float> row(static_cast<size_t>(n_in));
  for (int64_t r = 0; r < n_out; ++r) {
    for (auto& v : row) v = u(rng);
    quant::quantize_row(t, row.data(), p.w.data() + rb * size_t(r), n_in);
  }
  p.x.resize(size_t(n_in * n_batch));
  for (auto& v : p.x) v = u(rng);
  return p;
}

MatmulArgs args_of(const Problem& p, std::vector<float>& y) {
  y.assign(size_t(p.n_out * p.n_batch), std::nanf("1"));
  MatmulArgs a;
  a.w_type = p.type;
  a.w = p.w.data();
  a.n_out = p.n_out;
  a.n_in = p.n_in;
  a.x = p.x.data();
  a.n_batch = p.n_batch;
  a.y = y.data();
  return a;
}

std::vector<float> run_ref(const Problem& p, ThreadPool* pool = nullptr) {
  std::vector<float> y;
  matmul(MatmulPath::reference, args_of(p, y), pool);
  return y;
}
std::vector<float> run_fast(const Problem& p, Isa isa, ThreadPool* pool = nullptr) {
  std::vector<float> y;
  detail::matmul_fast_at(isa, args_of(p, y), pool);
  return y;
}

double nmse(const std::vector<float>& got, const std::vector<float>& want) {
  double num = 0, den = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    num += (double(got[i]) - want[i]) * (double(got[i]) - want[i]);
    den += double(want[i]) * want[i];
  }
  return num / std::max(den, 1e-300);
}

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * 4) == 0;
}

std::vector<Isa> levels() {
  std::vector<Isa> v{Isa::scalar};
  if (detail::detect_isa() >= Isa::avx2) v.push_back(Isa::avx2);
  if (detail::detect_isa() >= Isa::avx512vnni) v.push_back(Isa::avx512vnni);
  return v;
}

// n_in with a tail for every kernel: 19 blocks of 32 (19 % 4 == 3), 3
// super-blocks, 613 floats (613 % 16 == 5).
int64_t odd_n_in(DType t) {
  return is_float(t) ? 613 : block_of(t) == 32 ? 608 : 768;
}

class PerType : public ::testing::TestWithParam<DType> {};

TEST_P(PerType, FastMatchesReferenceAtEveryLevel) {
  const DType t = GetParam();
  const Problem p = make_problem(t, 37, odd_n_in(t), 5, 1234 + uint32_t(t));
  const std::vector<float> ref = run_ref(p);
  for (Isa isa : levels()) {
    const std::vector<float> y = run_fast(p, isa);
    const double e = nmse(y, ref);
    std::printf("  %-5s %-10s nmse %.3g (bound %.3g)\n", std::string(dtype_name(t)).c_str(),
                detail::isa_name(isa), e, nmse_bound(t));
    EXPECT_LT(e, nmse_bound(t)) << dtype_name(t) << " at " << detail::isa_name(isa);
    if (!is_float(t)) EXPECT_GT(e, 0.0) << "activations were not quantized?";
  }
}

TEST_P(PerType, LevelsAreBitIdentical) {
  const DType t = GetParam();
  for (int64_t n_in : {block_of(t) == 256 ? int64_t(256) : int64_t(32), odd_n_in(t),
                       block_of(t) == 256 ? int64_t(2048) : int64_t(2048 + 96)}) {
    const Problem p = make_problem(t, 11, n_in, 6, 99 + uint32_t(n_in));
    const std::vector<float> want = run_fast(p, Isa::scalar);
    for (Isa isa : levels())
      EXPECT_TRUE(same_bits(run_fast(p, isa), want))
          << dtype_name(t) << " n_in=" << n_in << " " << detail::isa_name(isa) << " vs scalar";
  }
}

TEST_P(PerType, BatchAndThreadInvariant) {
  const DType t = GetParam();
  const Problem p = make_problem(t, 45, odd_n_in(t), 13, 7 + uint32_t(t));
  ThreadPool pool2(2), pool3(3);
  for (Isa isa : levels()) {
    const std::vector<float> all = run_fast(p, isa);
    // Each activation row alone (n_batch = 1) must give the same bits.
    for (int64_t b = 0; b < p.n_batch; ++b) {
      Problem one = p;
      one.n_batch = 1;
      one.x.assign(p.x.begin() + b * p.n_in, p.x.begin() + (b + 1) * p.n_in);
      const std::vector<float> y = run_fast(one, isa);
      EXPECT_EQ(std::memcmp(y.data(), all.data() + b * p.n_out, size_t(p.n_out) * 4), 0)
          << dtype_name(t) << " " << detail::isa_name(isa) << " row " << b;
    }
    EXPECT_TRUE(same_bits(run_fast(p, isa, &pool2), all)) << dtype_name(t) << " 2 threads";
    EXPECT_TRUE(same_bits(run_fast(p, isa, &pool3), all)) << dtype_name(t) << " 3 threads";
  }
  EXPECT_TRUE(same_bits(run_ref(p, &pool3), run_ref(p))) << "reference with threads";
}

TEST_P(PerType, OddShapes) {
  const DType t = GetParam();
  const Isa best = detail::detect_isa();
  // NMSE over the whole sweep: a single output's squared error is one
  // chi-square sample and says little on its own.
  std::vector<float> all_y, all_ref;
  for (int64_t n_out : {1, 2, 3, 5, 6, 7, 9}) {
    for (int64_t n_batch = 1; n_batch <= 17; ++n_batch) {
      const Problem p = make_problem(t, n_out,
                                     block_of(t) == 256 ? 512
                                     : is_float(t)      ? 70
                                                        : 96,
                                     n_batch, uint32_t(n_out * 100 + n_batch));
      const std::vector<float> y = run_fast(p, best), ref = run_ref(p);
      all_y.insert(all_y.end(), y.begin(), y.end());
      all_ref.insert(all_ref.end(), ref.begin(), ref.end());
      // Row by row: identical bits.
      Problem one = p;
      one.n_batch = 1;
      one.x.assign(p.x.end() - p.n_in, p.x.end());
      const std::vector<float> last = run_fast(one, best);
      EXPECT_EQ(std::memcmp(last.data(), y.data() + (n_batch - 1) * n_out, size_t(n_out) * 4), 0)
          << dtype_name(t) << " " << n_out << "x" << n_batch;
    }
  }
  EXPECT_LT(nmse(all_y, all_ref), nmse_bound(t)) << dtype_name(t);
}

TEST_P(PerType, NanAndInfPropagate) {
  const DType t = GetParam();
  Problem p = make_problem(t, 9, odd_n_in(t), 4, 555);
  const std::vector<float> clean = run_fast(p, Isa::scalar);
  p.x[size_t(1 * p.n_in + 7)] = std::numeric_limits<float>::quiet_NaN();
  p.x[size_t(2 * p.n_in + p.n_in - 1)] = std::numeric_limits<float>::infinity();
  const std::vector<float> ref = run_ref(p);
  for (Isa isa : levels()) {
    const std::vector<float> y = run_fast(p, isa);
    for (int64_t b = 0; b < p.n_batch; ++b) {
      for (int64_t r = 0; r < p.n_out; ++r) {
        const size_t i = size_t(b * p.n_out + r);
        const bool bad = b == 1 || b == 2;
        EXPECT_EQ(std::isfinite(ref[i]), !bad);
        EXPECT_EQ(std::isfinite(y[i]), !bad)
            << dtype_name(t) << " " << detail::isa_name(isa) << " b=" << b;
        if (!bad) EXPECT_EQ(f32_bits(y[i]), f32_bits(clean[i]));
      }
    }
  }
}

// Raw random block bytes (every level and scale code, q8_0's -128, q6_k's
// -128 scales) with some activation rows constant +-1 (all |q| = 127): the
// largest integer sums the kernels can meet. The ISA levels must still agree
// bit for bit (exactness of the int32 / float-integer steps) and match the
// reference.
TEST_P(PerType, ExtremeBlocks) {
  const DType t = GetParam();
  if (is_float(t)) GTEST_SKIP() << "no integer path";
  const int64_t n_in = block_of(t) == 256 ? 1024 : 512, n_out = 13, n_batch = 6;
  Problem p = make_problem(t, n_out, n_in, n_batch, 42);
  std::mt19937 rng(17);
  for (auto& byte : p.w) byte = uint8_t(rng());
  // Finite f16 scale fields: (offset in block, must be positive)
  std::vector<std::pair<int, bool>> fields = {{0, false}};
  if (t == DType::Q4_1 || t == DType::Q5_1) fields.push_back({2, false});
  if (t == DType::Q4_K || t == DType::Q5_K) fields = {{0, false}, {2, true}};
  if (t == DType::Q6_K) fields = {{208, false}};
  std::uniform_real_distribution<float> u(0.25f, 1.0f);
  const size_t bb = dtype_info(t).block_bytes;
  for (size_t blk = 0; blk < p.w.size() / bb; ++blk)
    for (auto [off, positive] : fields) {
      const float v = (positive || rng() % 2) ? u(rng) : -u(rng);
      const uint16_t h = f32_to_fp16(v);
      std::memcpy(p.w.data() + blk * bb + size_t(off), &h, 2);
    }
  // Row 0 at the proven worst case of the k-quants' |I| < 2^24: q4_k/q5_k all
  // levels and scales/mins at their maxima (bytes 0xff), q6_k all levels -32
  // with scales -128.
  for (size_t blk = 0; blk < size_t(n_in / block_of(t)); ++blk) {
    uint8_t* b = p.w.data() + blk * bb;
    if (t == DType::Q4_K || t == DType::Q5_K) std::memset(b + 4, 0xff, bb - 4);
    if (t == DType::Q6_K) {
      std::memset(b, 0, 192);
      std::memset(b + 192, 0x80, 16);
    }
  }
  for (int64_t i = 0; i < n_in; ++i) {
    p.x[size_t(0 * n_in + i)] = 1.0f;
    p.x[size_t(1 * n_in + i)] = -1.0f;
    p.x[size_t(2 * n_in + i)] = (i % 2) ? 1.0f : -1.0f;
  }
  const std::vector<float> want = run_fast(p, Isa::scalar);
  for (Isa isa : levels())
    EXPECT_TRUE(same_bits(run_fast(p, isa), want)) << dtype_name(t) << " " << detail::isa_name(isa);
  EXPECT_LT(nmse(want, run_ref(p)), nmse_bound(t)) << dtype_name(t);
}

INSTANTIATE_TEST_SUITE_P(AllTypes, PerType, ::testing::ValuesIn(kAllTypes),
                         [](const auto& info) { return std::string(dtype_name(info.param)); });

TEST(Matmul, CountersIncrement) {
  for (DType t : kAllTypes) {
    const Problem p = make_problem(t, 4, block_of(t) == 256 ? 256 : 64, 2, 3);
    auto& c = kernel_counters();
    const uint64_t f0 = c.fast_calls[size_t(t)].load(), r0 = c.ref_calls[size_t(t)].load();
    std::vector<float> y;
    matmul(MatmulPath::fast, args_of(p, y), nullptr);
    matmul(MatmulPath::fast, args_of(p, y), nullptr);
    matmul(MatmulPath::reference, args_of(p, y), nullptr);
    EXPECT_EQ(c.fast_calls[size_t(t)].load(), f0 + 2) << dtype_name(t);
    EXPECT_EQ(c.ref_calls[size_t(t)].load(), r0 + 1) << dtype_name(t);
  }
}

TEST(Matmul, ZeroActivationsGiveZero) {
  for (DType t : kAllTypes) {
    Problem p = make_problem(t, 5, block_of(t) == 256 ? 256 : 64, 3, 4);
    std::fill(p.x.begin(), p.x.end(), 0.0f);
    for (Isa isa : levels())
      for (float v : run_fast(p, isa)) EXPECT_EQ(v, 0.0f) << dtype_name(t);
  }
}

TEST(Matmul, IsaCapFromEnvironment) {
  const std::string best = detail::isa_name(detail::detect_isa());
  unsetenv("KILN_CPU_ISA");
  EXPECT_EQ(std::string(fast_isa()), best);
  setenv("KILN_CPU_ISA", "scalar", 1);
  EXPECT_EQ(std::string(fast_isa()), "scalar");
  // The public entry point honours the cap: scalar results, bit for bit.
  const Problem p = make_problem(DType::Q4_0, 8, 256, 3, 5);
  std::vector<float> y;
  matmul(MatmulPath::fast, args_of(p, y), nullptr);
  EXPECT_TRUE(same_bits(y, run_fast(p, Isa::scalar)));
  setenv("KILN_CPU_ISA", "avx2", 1);
  EXPECT_EQ(std::string(fast_isa()), detail::detect_isa() >= Isa::avx2 ? "avx2" : "scalar");
  unsetenv("KILN_CPU_ISA");
}

TEST(Matmul, LargeShapesMatchReference) {
  // Decode- and prefill-like shapes with many blocks per row (long
  // accumulation chains) on the best level with threads.
  ThreadPool pool(2);
  for (DType t : {DType::Q4_0, DType::Q8_0, DType::Q4_K, DType::Q6_K, DType::F16}) {
    for (int64_t n_batch : {1, 19}) {
      const Problem p = make_problem(t, 130, 4096, n_batch, 77);
      const std::vector<float> y = run_fast(p, detail::detect_isa(), &pool);
      EXPECT_LT(nmse(y, run_ref(p, &pool)), nmse_bound(t)) << dtype_name(t) << " batch " << n_batch;
    }
  }
}

}  // namespace
}  // namespace kiln::cpu
