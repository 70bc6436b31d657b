// Reference quantizers: exact decoding of hand-built blocks, round-trip error
// bounds, f16/bf16 conversions, the q4_k_m/q5_k_m mix rules, and the reference
// GGUF models (decoded against the F16/BF16 files they were quantized from).
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <map>
#include <random>
#include <vector>

#include "common/paths.h"
#include "kiln/core/fp16.h"
#include "kiln/gguf/gguf.h"
#include "kiln/quant/blocks.h"
#include "kiln/quant/mix.h"
#include "kiln/quant/quant.h"

namespace kiln::quant {
namespace {

constexpr DType kAllTypes[] = {DType::F32,  DType::F16,  DType::BF16, DType::Q8_0,
                               DType::Q4_0, DType::Q4_1, DType::Q5_0, DType::Q5_1,
                               DType::Q4_K, DType::Q5_K, DType::Q6_K};

uint16_t h(float f) {
  return f32_to_fp16(f);
}

std::vector<float> dequant(DType t, const void* p, int64_t n) {
  std::vector<float> out(size_t(n), std::nanf(""));
  dequantize_row(t, p, out.data(), n);
  return out;
}

std::vector<uint8_t> quant(DType t, const std::vector<float>& x) {
  std::vector<uint8_t> out(row_bytes(t, int64_t(x.size())));
  quantize_row(t, x.data(), out.data(), int64_t(x.size()));
  return out;
}

// Normalized mean squared error: sum (a-b)^2 / sum b^2.
double nmse(const float* a, const float* ref, size_t n) {
  double num = 0, den = 0;
  for (size_t i = 0; i < n; ++i) {
    num += (double(a[i]) - ref[i]) * (double(a[i]) - ref[i]);
    den += double(ref[i]) * ref[i];
  }
  return den > 0 ? num / den : num;
}
double nmse(const std::vector<float>& a, const std::vector<float>& ref) {
  return nmse(a.data(), ref.data(), ref.size());
}

std::vector<float> gaussian(size_t n, uint32_t seed, float sigma = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.0f, sigma);
  std::vector<float> v(n);
  for (auto& x : v) x = dist(rng);
  return v;
}

// ---- f16 / bf16 conversions -------------------------------------------------

TEST(Fp16, ExactValuesAndSpecials) {
  EXPECT_EQ(f32_to_fp16(1.0f), 0x3c00);
  EXPECT_EQ(f32_to_fp16(-2.0f), 0xc000);
  EXPECT_EQ(f32_to_fp16(65504.0f), 0x7bff);
  EXPECT_EQ(f32_to_fp16(0.0f), 0x0000);
  EXPECT_EQ(f32_to_fp16(-0.0f), 0x8000);
  EXPECT_EQ(f32_to_fp16(std::numeric_limits<float>::infinity()), 0x7c00);
  EXPECT_EQ(f32_to_fp16(-std::numeric_limits<float>::infinity()), 0xfc00);
  const uint16_t qnan = f32_to_fp16(std::nanf(""));
  EXPECT_EQ(qnan & 0x7c00, 0x7c00);
  EXPECT_NE(qnan & 0x03ff, 0);
  EXPECT_TRUE(std::isnan(fp16_to_f32(0x7e00)));
  EXPECT_TRUE(std::isnan(fp16_to_f32(0x7c01)));  // signalling payloads stay NaN
  EXPECT_EQ(fp16_to_f32(0x7c00), std::numeric_limits<float>::infinity());
  EXPECT_EQ(fp16_to_f32(0x3555), 0.333251953125f);
  // Every half value survives f16 -> f32 -> f16.
  for (uint32_t b = 0; b < 0x10000; ++b) {
    if ((b & 0x7c00) == 0x7c00 && (b & 0x3ff)) continue;  // NaNs checked above
    ASSERT_EQ(f32_to_fp16(fp16_to_f32(uint16_t(b))), b) << std::hex << b;
  }
}

TEST(Fp16, RoundingTiesAndOverflow) {
  // 1 + 2^-11 is halfway between 1 and 1 + 2^-10: ties to even -> 1.
  EXPECT_EQ(f32_to_fp16(1.0f + 0x1p-11f), 0x3c00);
  // 1 + 3 * 2^-11 is halfway between 1+2^-10 (odd) and 1+2^-9 (even).
  EXPECT_EQ(f32_to_fp16(1.0f + 3 * 0x1p-11f), 0x3c02);
  EXPECT_EQ(f32_to_fp16(1.0f + 0x1p-11f + 0x1p-20f), 0x3c01);  // above the tie
  EXPECT_EQ(f32_to_fp16(65519.0f), 0x7bff);                    // below the tie -> max
  EXPECT_EQ(f32_to_fp16(65520.0f), 0x7c00);                    // tie -> even = inf
  EXPECT_EQ(f32_to_fp16(1e10f), 0x7c00);
  // Rounding that carries into the exponent: largest value below 2 -> 2.
  EXPECT_EQ(f32_to_fp16(std::nextafter(2.0f, 0.0f)), 0x4000);
}

TEST(Fp16, Subnormals) {
  EXPECT_EQ(fp16_to_f32(0x0001), 0x1p-24f);
  EXPECT_EQ(fp16_to_f32(0x03ff), 1023 * 0x1p-24f);
  EXPECT_EQ(fp16_to_f32(0x8200), -0x1p-15f);
  EXPECT_EQ(f32_to_fp16(0x1p-24f), 0x0001);
  EXPECT_EQ(f32_to_fp16(0x1p-25f), 0x0000);  // tie -> even (0)
  EXPECT_EQ(f32_to_fp16(-0x1p-25f), 0x8000);
  EXPECT_EQ(f32_to_fp16(0x1p-25f * 1.0001f), 0x0001);  // above the tie
  EXPECT_EQ(f32_to_fp16(3 * 0x1p-25f), 0x0002);        // 1.5 ulp: tie -> 2
  EXPECT_EQ(f32_to_fp16(5 * 0x1p-25f), 0x0002);        // 2.5 ulp: tie -> 2
  EXPECT_EQ(f32_to_fp16(1023.5f * 0x1p-24f), 0x0400);  // rounds up into normals
  EXPECT_EQ(f32_to_fp16(0x1p-14f), 0x0400);            // smallest normal
  EXPECT_EQ(f32_to_fp16(1e-30f), 0x0000);
  EXPECT_EQ(f32_to_fp16(std::numeric_limits<float>::denorm_min()), 0x0000);
}

TEST(Bf16, RoundingAndSpecials) {
  EXPECT_EQ(f32_to_bf16(1.0f), 0x3f80);
  EXPECT_EQ(bf16_to_f32(0x3f80), 1.0f);
  EXPECT_EQ(bf16_to_f32(0xc040), -3.0f);
  // 1 + 2^-8 is halfway between 1 (even) and 1 + 2^-7 -> 1.
  EXPECT_EQ(f32_to_bf16(1.0f + 0x1p-8f), 0x3f80);
  // 1 + 3 * 2^-8 is halfway between 1+2^-7 (odd) and 1+2^-6 (even).
  EXPECT_EQ(f32_to_bf16(1.0f + 3 * 0x1p-8f), 0x3f82);
  EXPECT_EQ(f32_to_bf16(1.0f + 0x1p-8f + 0x1p-20f), 0x3f81);
  EXPECT_EQ(f32_to_bf16(std::numeric_limits<float>::max()), 0x7f80);  // rounds to inf
  EXPECT_EQ(f32_to_bf16(std::numeric_limits<float>::infinity()), 0x7f80);
  EXPECT_EQ(f32_to_bf16(-std::numeric_limits<float>::infinity()), 0xff80);
  EXPECT_TRUE(std::isnan(bf16_to_f32(f32_to_bf16(std::nanf("")))));
  // A NaN whose payload sits only in the low 16 bits must not become inf.
  EXPECT_TRUE(std::isnan(bf16_to_f32(f32_to_bf16(bits_f32(0x7f800001u)))));
  EXPECT_EQ(f32_to_bf16(bits_f32(0x00010000u)), 0x0001);  // f32 subnormal kept
  EXPECT_EQ(bf16_to_f32(0x0001), bits_f32(0x00010000u));
}

// ---- hand-built blocks decode exactly ---------------------------------------

TEST(Dequant, PlainTypes) {
  const float f[3] = {1.5f, -0.0f, 3e-40f};
  auto out = dequant(DType::F32, f, 3);
  EXPECT_EQ(std::memcmp(out.data(), f, sizeof f), 0);
  const uint16_t hf[4] = {0x3c00, 0xc000, 0x0001, 0x7bff};
  EXPECT_EQ(dequant(DType::F16, hf, 4), (std::vector<float>{1.0f, -2.0f, 0x1p-24f, 65504.0f}));
  const uint16_t hb[3] = {0x3f80, 0xc040, 0x4120};
  EXPECT_EQ(dequant(DType::BF16, hb, 3), (std::vector<float>{1.0f, -3.0f, 10.0f}));
}

TEST(Dequant, Q4_0) {
  block_q4_0 b{};
  b.d = h(0.5f);
  for (int j = 0; j < 16; ++j) b.qs[j] = uint8_t(j | ((15 - j) << 4));
  const auto y = dequant(DType::Q4_0, &b, 32);
  for (int j = 0; j < 16; ++j) {
    EXPECT_EQ(y[j], (j - 8) * 0.5f) << j;
    EXPECT_EQ(y[j + 16], (7 - j) * 0.5f) << j;
  }
}

TEST(Dequant, Q4_1) {
  block_q4_1 b{};
  b.d = h(0.25f);
  b.m = h(-1.0f);
  for (int j = 0; j < 16; ++j) b.qs[j] = uint8_t(j | ((15 - j) << 4));
  const auto y = dequant(DType::Q4_1, &b, 32);
  for (int j = 0; j < 16; ++j) {
    EXPECT_EQ(y[j], j * 0.25f - 1.0f) << j;
    EXPECT_EQ(y[j + 16], (15 - j) * 0.25f - 1.0f) << j;
  }
}

// q5 high bits: bit j of the little-endian uint32 qh is bit 4 of element j.
constexpr uint8_t kQh[4] = {0x55, 0x55, 0xAA, 0xAA};  // elements 0,2,..,14 and 17,19,..,31
int q5_level(int j) {
  const int lo = j < 16 ? (j & 0xF) : ((31 - j) & 0xF);  // qs[j%16] = j | (15-j) << 4
  const int bit = (kQh[j / 8] >> (j % 8)) & 1;
  return lo | (bit << 4);
}

TEST(Dequant, Q5_0) {
  block_q5_0 b{};
  b.d = h(2.0f);
  std::memcpy(b.qh, kQh, 4);
  for (int j = 0; j < 16; ++j) b.qs[j] = uint8_t(j | ((15 - j) << 4));
  const auto y = dequant(DType::Q5_0, &b, 32);
  for (int j = 0; j < 32; ++j) EXPECT_EQ(y[j], (q5_level(j) - 16) * 2.0f) << j;
  EXPECT_EQ(y[0], 0.0f);    // nibble 0, qh bit 0 set: level 16
  EXPECT_EQ(y[1], -30.0f);  // nibble 1, qh bit 1 clear: level 1
}

TEST(Dequant, Q5_1) {
  block_q5_1 b{};
  b.d = h(0.5f);
  b.m = h(-4.0f);
  std::memcpy(b.qh, kQh, 4);
  for (int j = 0; j < 16; ++j) b.qs[j] = uint8_t(j | ((15 - j) << 4));
  const auto y = dequant(DType::Q5_1, &b, 32);
  for (int j = 0; j < 32; ++j) EXPECT_EQ(y[j], q5_level(j) * 0.5f - 4.0f) << j;
  EXPECT_EQ(y[1], 1 * 0.5f - 4.0f);          // bit 1 of qh is 0
  EXPECT_EQ(y[31], (0 | 16) * 0.5f - 4.0f);  // qs[15] high nibble 0, qh bit 31 set
}

TEST(Dequant, Q8_0) {
  block_q8_0 b{};
  b.d = h(0.125f);
  for (int j = 0; j < 32; ++j) b.qs[j] = int8_t(j * 8 - 128);
  const auto y = dequant(DType::Q8_0, &b, 32);
  for (int j = 0; j < 32; ++j) EXPECT_EQ(y[j], (j * 8 - 128) * 0.125f) << j;
}

// The 12 scale bytes below, decoded by hand from the packing rule:
// sub-block j<4: scale = b[j] & 63, min = b[j+4] & 63; j>=4: scale =
// (b[j+4] & 15) | (b[j-4] >> 6) << 4, min = (b[j+4] >> 4) | (b[j] >> 6) << 4.
constexpr uint8_t kScales[12] = {0xC1, 0x42, 0x03, 0x04, 0x85, 0x06,
                                 0x47, 0xC8, 0x9A, 0xBC, 0x0D, 0xEF};
constexpr int kSc[8] = {1, 2, 3, 4, 58, 28, 13, 15};
constexpr int kMn[8] = {5, 6, 7, 8, 41, 11, 16, 62};

TEST(Dequant, Q4_K) {
  block_q4_K b{};
  b.d = h(1.0f);
  b.dmin = h(0.5f);
  std::memcpy(b.scales, kScales, 12);
  for (int i = 0; i < 128; ++i) b.qs[i] = uint8_t(i * 37 + 11);
  const auto y = dequant(DType::Q4_K, &b, 256);
  for (int e = 0; e < 256; ++e) {
    const int c = e / 64, l = e % 32, upper = (e % 64) / 32;
    const uint8_t byte = b.qs[32 * c + l];
    const int q = upper ? byte >> 4 : byte & 0xF;
    const int j = 2 * c + upper;  // sub-block = e / 32
    ASSERT_EQ(j, e / 32);
    EXPECT_EQ(y[e], float(kSc[j]) * q - 0.5f * float(kMn[j])) << e;
  }
}

TEST(Dequant, Q5_K) {
  block_q5_K b{};
  b.d = h(0.25f);
  b.dmin = h(1.0f);
  std::memcpy(b.scales, kScales, 12);
  for (int i = 0; i < 128; ++i) b.qs[i] = uint8_t(i * 53 + 7);
  for (int i = 0; i < 32; ++i) b.qh[i] = uint8_t(i * 29 + 3);
  const auto y = dequant(DType::Q5_K, &b, 256);
  for (int e = 0; e < 256; ++e) {
    const int c = e / 64, l = e % 32, upper = (e % 64) / 32;
    const uint8_t byte = b.qs[32 * c + l];
    const int q = (upper ? byte >> 4 : byte & 0xF) | (((b.qh[l] >> (2 * c + upper)) & 1) << 4);
    const int j = e / 32;
    EXPECT_EQ(y[e], 0.25f * float(kSc[j]) * q - float(kMn[j])) << e;
  }
}

TEST(Dequant, Q6_K) {
  block_q6_K b{};
  b.d = h(0.5f);
  for (int i = 0; i < 128; ++i) b.ql[i] = uint8_t(i * 7 + 1);
  for (int i = 0; i < 64; ++i) b.qh[i] = uint8_t(i * 13 + 5);
  for (int i = 0; i < 16; ++i) b.scales[i] = int8_t(i * 17 - 128);
  const auto y = dequant(DType::Q6_K, &b, 256);
  for (int e = 0; e < 256; ++e) {
    // Element e: half n = e/128; within it, quarter k = (e%128)/32 and l = e%32.
    // Low nibble: k=0 ql[l] low, k=1 ql[l+32] low, k=2 ql[l] high, k=3 ql[l+32] high.
    // High bits: qh[l] bits 2k..2k+1. Sub-block of 16 = e/16.
    const int n = e / 128, k = (e % 128) / 32, l = e % 32;
    const uint8_t lq = b.ql[64 * n + l + (k & 1) * 32];
    const int lo = k < 2 ? lq & 0xF : lq >> 4;
    const int hi = (b.qh[32 * n + l] >> (2 * k)) & 3;
    const int q = (lo | (hi << 4)) - 32;
    EXPECT_EQ(y[e], 0.5f * float(b.scales[e / 16]) * float(q)) << e;
  }
}

// ---- quantize: exactness, round trips, determinism --------------------------

TEST(Quantize, RepresentableRowsAreExact) {
  // q8_0: values d*q with |q| <= 127 and one element at 127 (d a power of two,
  // exact in f16) come back exactly.
  std::vector<float> x(64);
  for (int i = 0; i < 64; ++i) x[i] = float((i * 37) % 255 - 127) * 0x1p-6f;
  x[5] = 127 * 0x1p-6f;
  x[40] = -127 * 0x1p-6f;
  EXPECT_EQ(dequant(DType::Q8_0, quant(DType::Q8_0, x).data(), 64), x);
  // q4_0: levels -8..7 with the block's largest magnitude at -8.
  for (int i = 0; i < 64; ++i) x[i] = float((i * 5) % 16 - 8) * 0.25f;
  x[0] = -8 * 0.25f;
  x[32] = -8 * 0.25f;
  EXPECT_EQ(dequant(DType::Q4_0, quant(DType::Q4_0, x).data(), 64), x);
  // q5_0: levels -16..15, largest magnitude at -16.
  for (int i = 0; i < 64; ++i) x[i] = float((i * 7) % 32 - 16) * 0.5f;
  x[0] = -16 * 0.5f;
  x[32] = -16 * 0.5f;
  EXPECT_EQ(dequant(DType::Q5_0, quant(DType::Q5_0, x).data(), 64), x);
  // f16 / bf16 rows of representable values.
  // (Bit patterns spread over the whole range, NaN exponents masked off.)
  for (int i = 0; i < 64; ++i) x[i] = fp16_to_f32(uint16_t((i * 997) & ~0x4000));
  EXPECT_EQ(dequant(DType::F16, quant(DType::F16, x).data(), 64), x);
  for (int i = 0; i < 64; ++i) x[i] = bf16_to_f32(uint16_t((i * 991 + 3) & ~0x4000));
  EXPECT_EQ(dequant(DType::BF16, quant(DType::BF16, x).data(), 64), x);
  // Zeros stay zeros in every type.
  std::vector<float> z(256, 0.0f);
  for (DType t : kAllTypes) EXPECT_EQ(dequant(t, quant(t, z).data(), 256), z) << dtype_name(t);
}

// NMSE bounds on N(0,1) data; measured values (in parentheses) leave headroom
// for the f16 scales. The theory floor for a uniform b-bit grid over the
// ~+-2.1 sigma range of 32 Gaussian samples is about (4.2/(2^b-1))^2/12.
struct Bound {
  DType t;
  double max_nmse;
};
constexpr Bound kBounds[] = {
    {DType::F32, 0.0},     {DType::F16, 2e-7},    {DType::BF16, 1e-5},   {DType::Q8_0, 5e-5},
    {DType::Q4_0, 1.3e-2}, {DType::Q4_1, 9e-3},   {DType::Q5_0, 3.2e-3}, {DType::Q5_1, 2.2e-3},
    {DType::Q4_K, 6e-3},   {DType::Q5_K, 1.5e-3}, {DType::Q6_K, 4e-4},
};

TEST(Quantize, RoundTripErrorOnGaussianData) {
  const auto x = gaussian(16 * 256, 1234);
  for (const auto& b : kBounds) {
    const auto q = quant(b.t, x);
    const auto y = dequant(b.t, q.data(), int64_t(x.size()));
    const double e = nmse(y, x);
    EXPECT_LE(e, b.max_nmse) << dtype_name(b.t);
    RecordProperty(std::string("nmse_") + std::string(dtype_name(b.t)), std::to_string(e));
    std::printf("  %-5s nmse %.3g (bound %.3g)\n", std::string(dtype_name(b.t)).c_str(), e,
                b.max_nmse);
  }
}

TEST(Quantize, HandlesOffsetScaledAndOutlierRows) {
  // Non-centred data (the *_1 and k types carry a min), tiny and huge scales,
  // and a row with one outlier: errors stay bounded relative to the signal.
  std::vector<float> x = gaussian(1024, 77, 0.02f);
  for (auto& v : x) v += 0.05f;
  std::vector<float> tiny = gaussian(1024, 78, 1e-4f);
  std::vector<float> outlier = gaussian(1024, 79, 1.0f);
  outlier[300] = 40.0f;
  for (DType t : kAllTypes) {
    for (const auto* row : {&x, &tiny, &outlier}) {
      const auto y = dequant(t, quant(t, *row).data(), 1024);
      for (float v : y) ASSERT_TRUE(std::isfinite(v)) << dtype_name(t);
      EXPECT_LE(nmse(y, *row), 2e-2) << dtype_name(t);
    }
  }
}

TEST(Quantize, DeterministicAndRowIndependent) {
  const auto x = gaussian(4 * 256, 99);
  for (DType t : kAllTypes) {
    const auto a = quant(t, x);
    const auto b = quant(t, x);
    EXPECT_EQ(a, b) << dtype_name(t);
    // Quantizing the halves separately gives the same bytes (blocks are independent).
    std::vector<float> h1(x.begin(), x.begin() + 512), h2(x.begin() + 512, x.end());
    auto q1 = quant(t, h1), q2 = quant(t, h2);
    q1.insert(q1.end(), q2.begin(), q2.end());
    EXPECT_EQ(a, q1) << dtype_name(t);
  }
}

TEST(Quantize, RequantizingDecodedRowIsStable) {
  // Quantizing what a block decodes to should reproduce (nearly) the same
  // values: the encoder finds the grid it came from.
  const auto x = gaussian(8 * 256, 5);
  for (DType t : kAllTypes) {
    const auto y1 = dequant(t, quant(t, x).data(), int64_t(x.size()));
    const auto y2 = dequant(t, quant(t, y1).data(), int64_t(x.size()));
    EXPECT_LE(nmse(y2, y1), 2e-3) << dtype_name(t);
  }
}

TEST(DotRowRef, MatchesDequantizedDoubleSum) {
  const auto w = gaussian(3 * 256, 11);
  const auto x = gaussian(3 * 256, 12);
  for (DType t : kAllTypes) {
    const auto q = quant(t, w);
    const auto y = dequant(t, q.data(), int64_t(w.size()));
    double ref = 0;
    for (size_t i = 0; i < w.size(); ++i) ref += double(y[i]) * x[i];
    EXPECT_EQ(dot_row_ref(t, q.data(), x.data(), int64_t(w.size())), float(ref)) << dtype_name(t);
  }
}

// ---- mix rules --------------------------------------------------------------

TEST(Mix, PresetsAndFileTypes) {
  EXPECT_EQ(quant_preset_from_name("Q4_K_M")->file_type, 15u);
  EXPECT_EQ(quant_preset_from_name("q5_k_m")->file_type, 17u);
  EXPECT_EQ(quant_preset_from_name("q8_0")->file_type, 7u);
  EXPECT_EQ(quant_preset_from_name("q5_0")->file_type, 8u);
  EXPECT_EQ(quant_preset_from_name("bf16")->file_type, 32u);
  EXPECT_EQ(quant_preset_from_name("q6_k")->file_type, 18u);
  EXPECT_FALSE(quant_preset_from_name("q3_k_m"));
  EXPECT_NE(quant_preset_names().find("q4_k_m"), std::string::npos);
}

TEST(Mix, QuantizableTensors) {
  const std::vector<int64_t> mat{256, 512}, vec{256}, col{256, 1};
  EXPECT_TRUE(is_quantizable("blk.0.attn_q.weight", mat));
  EXPECT_TRUE(is_quantizable("token_embd.weight", mat));
  EXPECT_FALSE(is_quantizable("blk.0.attn_norm.weight", vec));
  EXPECT_FALSE(is_quantizable("blk.0.attn_q.bias", vec));
  EXPECT_FALSE(is_quantizable("blk.0.attn_q.weight", col));  // 1-D to ggml
  EXPECT_FALSE(is_quantizable("blk.0.ffn_gate_inp.weight", mat));
  EXPECT_FALSE(is_quantizable("position_embd.weight", mat));
  EXPECT_FALSE(is_quantizable("rope_freqs.weight", vec));
  EXPECT_EQ(layer_index("blk.17.ffn_down.weight"), 17);
  EXPECT_EQ(layer_index("output.weight"), std::nullopt);
  EXPECT_EQ(layer_index("blk.x.attn_v.weight"), std::nullopt);
}

TEST(Mix, Q4KMOn32Layers) {
  const auto p = *quant_preset_from_name("q4_k_m");
  MixModel m;
  m.arch = "llama";
  m.n_layers = 32;
  const std::vector<int64_t> sq{4096, 4096}, kv{4096, 1024}, down{14336, 4096};
  std::vector<int> more;
  for (int i = 0; i < 32; ++i) {
    const auto pre = "blk." + std::to_string(i) + ".";
    const DType v = tensor_type(p, m, pre + "attn_v.weight", kv);
    EXPECT_EQ(tensor_type(p, m, pre + "ffn_down.weight", down), v) << i;
    EXPECT_EQ(tensor_type(p, m, pre + "attn_q.weight", sq), DType::Q4_K);
    EXPECT_EQ(tensor_type(p, m, pre + "attn_output.weight", sq), DType::Q4_K);
    if (v == DType::Q6_K)
      more.push_back(i);
    else
      EXPECT_EQ(v, DType::Q4_K);
  }
  EXPECT_EQ(more, (std::vector<int>{0, 1, 2, 3, 6, 9, 12, 15, 18, 21, 24, 27, 28, 29, 30, 31}));
  EXPECT_EQ(tensor_type(p, m, "output.weight", std::vector<int64_t>{4096, 128256}), DType::Q6_K);
  EXPECT_EQ(tensor_type(p, m, "token_embd.weight", std::vector<int64_t>{4096, 128256}),
            DType::Q4_K);
  m.has_output = false;  // tied: the embedding is the output projection
  EXPECT_EQ(tensor_type(p, m, "token_embd.weight", std::vector<int64_t>{4096, 128256}),
            DType::Q6_K);
  // Rows that 256 does not divide fall back.
  EXPECT_EQ(tensor_type(p, m, "blk.4.attn_q.weight", std::vector<int64_t>{896, 896}), DType::Q5_0);
  EXPECT_EQ(tensor_type(p, m, "blk.0.attn_v.weight", std::vector<int64_t>{896, 128}), DType::Q8_0);
  EXPECT_EQ(tensor_type(p, m, "output.weight", std::vector<int64_t>{896, 1000}), DType::Q8_0);
  EXPECT_EQ(tensor_type(p, m, "blk.4.attn_q.weight", std::vector<int64_t>{40, 40}), DType::F16);
  const auto p5 = *quant_preset_from_name("q5_k_m");
  EXPECT_EQ(tensor_type(p5, m, "blk.4.attn_q.weight", std::vector<int64_t>{896, 896}), DType::Q5_1);
  EXPECT_EQ(tensor_type(p5, m, "blk.4.attn_q.weight", sq), DType::Q5_K);
  EXPECT_EQ(tensor_type(p5, m, "blk.31.ffn_down.weight", down), DType::Q6_K);
  // pure: one type everywhere (fallback still applies).
  EXPECT_EQ(tensor_type(p, m, "blk.0.attn_v.weight", kv, true), DType::Q4_K);
  EXPECT_EQ(tensor_type(p, m, "output.weight", std::vector<int64_t>{4096, 128256}, true),
            DType::Q4_K);
}

TEST(Mix, LegacyPresets) {
  MixModel m;
  m.arch = "llama";
  m.n_layers = 2;
  m.has_output = false;
  const auto q40 = *quant_preset_from_name("q4_0");
  EXPECT_EQ(tensor_type(q40, m, "token_embd.weight", std::vector<int64_t>{256, 32000}),
            DType::Q6_K);
  EXPECT_EQ(tensor_type(q40, m, "token_embd.weight", std::vector<int64_t>{64, 32000}), DType::Q8_0);
  EXPECT_EQ(tensor_type(q40, m, "blk.1.attn_v.weight", std::vector<int64_t>{64, 32}), DType::Q4_0);
  const auto q80 = *quant_preset_from_name("q8_0");
  EXPECT_EQ(tensor_type(q80, m, "token_embd.weight", std::vector<int64_t>{256, 32000}),
            DType::Q8_0);
  const auto f16 = *quant_preset_from_name("f16");
  EXPECT_EQ(tensor_type(f16, m, "token_embd.weight", std::vector<int64_t>{256, 32000}), DType::F16);
}

// ---- reference models -------------------------------------------------------

struct Model {
  std::unique_ptr<gguf::File> file;
  const gguf::TensorInfo* tensor(const std::string& name) const {
    const auto* t = file->tensor(name);
    EXPECT_NE(t, nullptr) << name;
    return t;
  }
};

Model open_ref(const std::string& name) {
  auto f = gguf::File::open(test::testdata("reference/" + name));
  if (!f) {
    ADD_FAILURE() << f.message();
    return {};
  }
  return Model{std::move(*f)};
}

std::vector<float> decode(const gguf::TensorInfo& t, int64_t max_rows = -1) {
  const int64_t rows = max_rows < 0 ? t.n_rows() : std::min(max_rows, t.n_rows());
  std::vector<float> out(size_t(rows * t.ne[0]));
  dequantize_row(t.type, t.data, out.data(), rows * t.ne[0]);
  return out;
}

constexpr const char* kRefModels[] = {
    "spm-llama-f16.gguf",    "spm-llama-q8_0.gguf", "spm-llama-q4_0.gguf", "spm-llama-q4_k_m.gguf",
    "spm-llama-q5_k_m.gguf", "spm-small-bf16.gguf", "spm-small-q4_1.gguf", "spm-small-q5_0.gguf",
    "spm-small-q5_1.gguf",   "llama3-f16.gguf",     "qwen2-f16.gguf",
};

TEST(ReferenceModels, EveryTensorDecodesToFinitePlausibleValues) {
  for (const char* name : kRefModels) {
    auto m = open_ref(name);
    if (!m.file) continue;
    for (const auto& t : m.file->tensors()) {
      ASSERT_TRUE(dtype_info(t.type).supported) << name << " " << t.name;
      const auto y = decode(t);
      double sum = 0, sum2 = 0;
      for (float v : y) {
        ASSERT_TRUE(std::isfinite(v)) << name << " " << t.name;
        sum += v;
        sum2 += double(v) * v;
      }
      const double mean = sum / double(y.size());
      const double sd = std::sqrt(std::max(0.0, sum2 / double(y.size()) - mean * mean));
      // Random weights of std ~0.02..1 and norms near 1: a layout error shows up
      // as zeros, huge values or a collapsed spread.
      const double rms = std::sqrt(sum2 / double(y.size()));
      EXPECT_GT(rms, 1e-3) << name << " " << t.name;
      EXPECT_LT(rms, 10.0) << name << " " << t.name;
      if (t.ne.size() >= 2) EXPECT_GT(sd, 1e-3) << name << " " << t.name;
    }
  }
}

// The quantized reference files were made by llama.cpp from the same weights
// as the F16/BF16 ones, so decoding them must land near the originals; a
// wrong nibble or scale layout gives an NMSE of order 1.
TEST(ReferenceModels, QuantizedFilesDecodeCloseToTheirSource) {
  const std::map<DType, double> bound = {
      {DType::Q8_0, 1e-4}, {DType::Q6_K, 1e-3}, {DType::Q5_K, 3e-3},   {DType::Q4_K, 1e-2},
      {DType::Q5_0, 4e-3}, {DType::Q5_1, 3e-3}, {DType::Q4_0, 1.5e-2}, {DType::Q4_1, 1e-2}};
  const std::pair<const char*, const char*> pairs[] = {
      {"spm-llama-q8_0.gguf", "spm-llama-f16.gguf"},
      {"spm-llama-q4_0.gguf", "spm-llama-f16.gguf"},
      {"spm-llama-q4_k_m.gguf", "spm-llama-f16.gguf"},
      {"spm-llama-q5_k_m.gguf", "spm-llama-f16.gguf"},
      {"spm-small-q4_1.gguf", "spm-small-bf16.gguf"},
      {"spm-small-q5_0.gguf", "spm-small-bf16.gguf"},
      {"spm-small-q5_1.gguf", "spm-small-bf16.gguf"},
  };
  std::map<DType, int> seen;
  for (const auto& [qname, srcname] : pairs) {
    auto q = open_ref(qname), src = open_ref(srcname);
    if (!q.file || !src.file) continue;
    for (const auto& t : q.file->tensors()) {
      if (t.type == DType::F32) continue;
      const auto* s = src.tensor(t.name);
      if (!s) continue;
      const int64_t rows = 512;  // enough rows of token_embd to judge, fast
      const auto a = decode(t, rows), b = decode(*s, rows);
      ASSERT_EQ(a.size(), b.size());
      const double e = nmse(a, b);
      EXPECT_LE(e, bound.at(t.type)) << qname << " " << t.name << " " << dtype_name(t.type);
      seen[t.type]++;
    }
  }
  EXPECT_EQ(seen.size(), bound.size()) << "every quantized type appears in the reference files";
}

// kiln's legacy encoders follow ggml's reference ones, so requantizing the
// F16 weights reproduces llama.cpp's blocks byte for byte (the spm-small files
// were not made from the BF16 file, whose rounding differs, so only their
// error is compared); k-quant encoders are kiln's own, so they are held to
// llama.cpp's error on the same weights instead.
TEST(ReferenceModels, RequantizingMatchesLlamaCpp) {
  struct Pair {
    const char* quantized;
    const char* source;
    bool exact;
  };
  const Pair pairs[] = {
      {"spm-llama-q8_0.gguf", "spm-llama-f16.gguf", true},
      {"spm-llama-q4_0.gguf", "spm-llama-f16.gguf", true},
      {"spm-llama-q4_k_m.gguf", "spm-llama-f16.gguf", false},
      {"spm-llama-q5_k_m.gguf", "spm-llama-f16.gguf", false},
      {"spm-small-q4_1.gguf", "spm-small-bf16.gguf", false},
      {"spm-small-q5_0.gguf", "spm-small-bf16.gguf", false},
      {"spm-small-q5_1.gguf", "spm-small-bf16.gguf", false},
  };
  for (const auto& [qname, srcname, exact] : pairs) {
    auto q = open_ref(qname), src = open_ref(srcname);
    if (!q.file || !src.file) continue;
    double err_kiln = 0, err_ref = 0, signal = 0;  // squared-error sums over all tensors
    for (const auto& t : q.file->tensors()) {
      if (t.type == DType::F32) continue;
      const auto* s = src.tensor(t.name);
      if (!s) continue;
      const int64_t rows = std::min<int64_t>(t.n_rows(), 256);
      const auto x = decode(*s, rows);
      std::vector<uint8_t> mine(row_bytes(t.type, t.ne[0]) * size_t(rows));
      quantize_row(t.type, x.data(), mine.data(), int64_t(x.size()));
      const bool legacy = dtype_info(t.type).block_elems == 32;
      if (exact && legacy) {
        EXPECT_EQ(std::memcmp(mine.data(), t.data, mine.size()), 0)
            << qname << " " << t.name << " " << dtype_name(t.type);
      }
      const auto ours = dequant(t.type, mine.data(), int64_t(x.size()));
      const auto theirs = decode(t, rows);
      for (size_t i = 0; i < x.size(); ++i) {
        err_kiln += (double(ours[i]) - x[i]) * (double(ours[i]) - x[i]);
        err_ref += (double(theirs[i]) - x[i]) * (double(theirs[i]) - x[i]);
        signal += double(x[i]) * x[i];
      }
    }
    std::printf("  %-24s NMSE vs source: kiln %.4g, llama.cpp %.4g\n", qname, err_kiln / signal,
                err_ref / signal);
    EXPECT_LE(err_kiln, err_ref * 1.05) << qname;
  }
}

TEST(ReferenceModels, RequantizeF16ToQ8_0) {
  auto m = open_ref("llama3-f16.gguf");
  if (!m.file) return;
  for (const auto& t : m.file->tensors()) {
    if (t.type != DType::F16) continue;
    const auto x = decode(t, 1024);
    const auto y = dequant(DType::Q8_0, quant(DType::Q8_0, x).data(), int64_t(x.size()));
    EXPECT_LE(nmse(y, x), 5e-5) << t.name;
  }
}

TEST(ReferenceModels, MixRulesMatchLlamaCppFiles) {
  // The types llama.cpp chose for the reference files, recomputed by kiln's
  // rules from the source file's names and shapes.
  const std::pair<const char*, const char*> pairs[] = {
      {"spm-llama-q4_k_m.gguf", "q4_k_m"}, {"spm-llama-q5_k_m.gguf", "q5_k_m"},
      {"spm-llama-q4_0.gguf", "q4_0"},     {"spm-llama-q8_0.gguf", "q8_0"},
      {"spm-small-q4_1.gguf", "q4_1"},     {"spm-small-q5_0.gguf", "q5_0"},
      {"spm-small-q5_1.gguf", "q5_1"},
  };
  for (const auto& [file, preset_name] : pairs) {
    auto q = open_ref(file);
    if (!q.file) continue;
    const auto preset = *quant_preset_from_name(preset_name);
    EXPECT_EQ(q.file->get_int("general.file_type"), int64_t(preset.file_type)) << file;
    MixModel mm;
    mm.arch = q.file->get_string("general.architecture").value_or("");
    mm.n_layers = int(q.file->get_int(mm.arch + ".block_count").value_or(0));
    mm.has_output = q.file->tensor("output.weight") != nullptr;
    for (const auto& t : q.file->tensors()) {
      const DType want =
          is_quantizable(t.name, t.ne) ? tensor_type(preset, mm, t.name, t.ne) : DType::F32;
      EXPECT_EQ(dtype_name(want), dtype_name(t.type)) << file << " " << t.name;
    }
  }
}

// ---- `kiln quantize` end to end ---------------------------------------------

namespace cli_test {

struct RunResult {
  int status = -1;
  std::string output;  // stdout + stderr
};

RunResult run_kiln(const std::string& args) {
  RunResult r;
  FILE* p = popen((test::kiln_binary() + " " + args + " 2>&1").c_str(), "r");
  if (!p) return r;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) r.output.append(buf, n);
  const int st = pclose(p);
  r.status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  return r;
}

bool have_kiln() {
  FILE* f = std::fopen(test::kiln_binary().c_str(), "rb");
  if (f) std::fclose(f);
  return f != nullptr;
}

std::string temp_path(const std::string& name) {
  return testing::TempDir() + "kiln_test_quant_" + std::to_string(getpid()) + "_" + name;
}

}  // namespace cli_test

TEST(QuantizeCli, Q8_0ReproducesLlamaCppFile) {
  if (!cli_test::have_kiln()) GTEST_SKIP() << "kiln binary not built: " << test::kiln_binary();
  const std::string out = cli_test::temp_path("q8_0.gguf");
  const auto r = cli_test::run_kiln("quantize " + test::testdata("reference/spm-llama-f16.gguf") +
                                    " " + out + " q8_0 -t 2");
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("token_embd.weight"), std::string::npos) << "per-tensor progress";
  auto mine = gguf::File::open(out);
  ASSERT_TRUE(mine) << mine.message();
  auto ref = open_ref("spm-llama-q8_0.gguf");
  ASSERT_TRUE(ref.file);
  EXPECT_EQ((*mine)->get_int("general.file_type"), 7);
  EXPECT_EQ((*mine)->get_int("general.quantization_version"), 2);
  EXPECT_EQ((*mine)->metadata().size(), ref.file->metadata().size());
  ASSERT_EQ((*mine)->tensors().size(), ref.file->tensors().size());
  for (const auto& t : ref.file->tensors()) {
    const auto* m = (*mine)->tensor(t.name);
    ASSERT_NE(m, nullptr) << t.name;
    EXPECT_EQ(m->type, t.type) << t.name;
    EXPECT_EQ(m->ne, t.ne) << t.name;
    ASSERT_EQ(m->n_bytes, t.n_bytes) << t.name;
    EXPECT_EQ(std::memcmp(m->data, t.data, t.n_bytes), 0) << t.name;
  }
  std::remove(out.c_str());
}

TEST(QuantizeCli, MixWithFallbacksAndErrors) {
  if (!cli_test::have_kiln()) GTEST_SKIP() << "kiln binary not built: " << test::kiln_binary();
  // spm-small has 64-wide rows: no k-quant fits, so q4_k_m falls back to
  // q5_0 (q4_k) and q8_0 (q6_k: the tied embedding and the "more bits" layer).
  const std::string src = test::testdata("reference/spm-small-bf16.gguf");
  const std::string out = cli_test::temp_path("q4_k_m.gguf");
  const auto r = cli_test::run_kiln("quantize " + src + " " + out + " q4_k_m -t 2");
  ASSERT_EQ(r.status, 0) << r.output;
  auto f = gguf::File::open(out);
  ASSERT_TRUE(f) << f.message();
  EXPECT_EQ((*f)->get_int("general.file_type"), 15);
  const std::map<std::string, DType> want = {
      {"token_embd.weight", DType::Q8_0},   {"blk.0.attn_v.weight", DType::Q5_0},
      {"blk.1.attn_v.weight", DType::Q8_0}, {"blk.1.ffn_down.weight", DType::Q8_0},
      {"blk.0.attn_q.weight", DType::Q5_0}, {"blk.0.attn_norm.weight", DType::F32},
      {"output_norm.weight", DType::F32}};
  for (const auto& [name, type] : want) {
    const auto* t = (*f)->tensor(name);
    ASSERT_NE(t, nullptr) << name;
    EXPECT_EQ(dtype_name(t->type), dtype_name(type)) << name;
  }
  std::remove(out.c_str());

  auto bad = cli_test::run_kiln("quantize " + src + " " + out + " q3_k_s");
  EXPECT_NE(bad.status, 0);
  EXPECT_NE(bad.output.find("q4_k_m"), std::string::npos)
      << "lists the valid types: " << bad.output;
  bad = cli_test::run_kiln("quantize /nonexistent/model.gguf " + out + " q8_0");
  EXPECT_NE(bad.status, 0);
  EXPECT_NE(bad.output.find("/nonexistent/model.gguf"), std::string::npos) << bad.output;
  FILE* left = std::fopen(out.c_str(), "rb");
  EXPECT_EQ(left, nullptr) << "no output after a failure";
  if (left) std::fclose(left);
}

}  // namespace
}  // namespace kiln::quant
