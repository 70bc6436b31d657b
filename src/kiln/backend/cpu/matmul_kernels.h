// Internal interface between matmul.cpp (dispatch, threading) and the per-ISA
// fast kernels (matmul_scalar.cpp, *_avx2.cpp, *_avx512.cpp); tests use it to
// run one ISA level explicitly. Not for other callers.
//
// Batch invariance and ISA identity rest on one rule: every kernel computes
// exact integer dot products per block, then combines them in float in the
// CANONICAL ORDER below, with the same IEEE operations (fma where written).
// All three ISA levels therefore give bit-identical results, and so do all
// tilings of rows and activation rows.
//
// Activation quantization (all levels, bit-identical): per block of 32 (q8_32)
// or 256 (q8_256) elements, amax = max |x| (found on the integer bits, so NaN
// ordering cannot matter); d = amax / 127, q = round_nearest_even(x * (127 /
// amax)), |q| <= 127. A block holding NaN/Inf gets d = NaN, q = 0 (its outputs
// become NaN: non-finite in, non-finite out); a block with amax < 1e-30 is all
// zero (127 / amax would overflow, and its contribution is < 1e-30 * sum|w|).
//
// Canonical order for output y[b, r] (w = weight row r, a = activation row b):
//  * 32-element block types (q4_0 q4_1 q5_0 q5_1 q8_0), blocks i = 0..nb-1:
//      isum_i = sum_e level(w)_e * q(a)_e                      (exact int32)
//      k = i % 4
//      acc[k] = fma(dw_i * da_i, float(isum_i), acc[k])
//      q4_1/q5_1 only: acc[k] = fma(mw_i, s_i, acc[k]),  s_i = da_i * float(sum_e q(a)_e)
//      y = (acc[0] + acc[1]) + (acc[2] + acc[3])
//    level(w) is the signed level: nibble - 8 (q4_0), 5-bit - 16 (q5_0), the
//    int8 (q8_0), the unsigned nibble / 5-bit value for q4_1 / q5_1.
//  * k-quants (q4_k q5_k q6_k), super-blocks i = 0..nsb-1 in order, 4 slots c:
//      q4_k/q5_k: sub-blocks 2c, 2c+1 (both from qs bytes 32c..32c+31) share slot c:
//        I_c = sc_2c * dot_2c + sc_2c+1 * dot_2c+1     dot_j = sum_{e in j} q_e a_e
//        M_c = m_2c * bs_2c + m_2c+1 * bs_2c+1         bs_j = sum_{e in j} a_e
//        acc[c] = fma(d_i * da_i, float(I_c), acc[c])
//        acc[c] = fma(-(dmin_i * da_i), float(M_c), acc[c])
//      q6_k: for half h = 0, 1, quarter c (elements 128h + 32c .. +31, sub-blocks
//        g = 8h + 2c, 8h + 2c + 1 of 16):
//        I = sc_g * dot_g + sc_g+1 * dot_g+1            dot_g = sum_{e in g} (q_e - 32) a_e
//        acc[c] = fma(d_i * da_i, float(I), acc[c])
//      y = (acc[0] + acc[1]) + (acc[2] + acc[3])
//    |I| < 2^24 for all three types (q5_k: 2*63*32*31*127 = 15.9M; q6_k:
//    2*128*16*32*127 = 16.6M), so SIMD kernels may form I in float from the
//    two exact products and still get float(I) exactly.
//  * f32 / f16 / bf16 (activations stay float32): 16 lane accumulators,
//      acc[e % 16] = fma(float(w_e), x_e, acc[e % 16]) for e = 0..n_in-1 in order
//      (lanes past n_in are left untouched), then
//      s8[l] = acc[l] + acc[l+8]; s4[l] = s8[l] + s8[l+4]; s2[l] = s4[l] + s4[l+2];
//      y = s2[0] + s2[1]
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>

#include "kiln/backend/cpu/matmul.h"
#include "kiln/core/dtype.h"

namespace kiln::cpu::detail {

enum class Isa : int { scalar = 0, avx2 = 1, avx512vnni = 2 };

const char* isa_name(Isa isa);
Isa detect_isa();  // the best level this CPU (and OS) supports
Isa active_isa();  // detect_isa() capped by KILN_CPU_ISA (read on each call)

// Runs the fast path at a given level (<= detect_isa()): tests compare levels.
void matmul_fast_at(Isa isa, const MatmulArgs& args, ThreadPool* pool);

// ---- quantized activation rows ---------------------------------------------
enum class ActFormat { f32, q8_32, q8_256 };
ActFormat act_format(DType w_type);

constexpr int64_t round_up(int64_t v, int64_t m) {
  return (v + m - 1) / m * m;
}

// One activation row of n_in elements, quantized; regions 64-byte aligned,
// q8_32 padded to whole groups of 4 blocks so a SIMD step never reads past one.
//   q8_32:  qs [nb4 * 32] int8 (group-transposed, below) | d [nb4] f32 |
//           corr [nb4] i32 | s [nb4] f32          (nb4 = nb rounded up to 4)
//   q8_256: qs [n_in] int8 (per-type order, below) | d [nsb] f32 | ext [nsb][16] i32
// q8_32 qs: blocks in groups of 4; in group G, 16-byte chunk v (0..7) holds
// elements 4v..4v+3 of blocks 4G+0..3 (4 bytes each). Against weights
// transposed the same way, each 32-bit lane of a vpdpbusd / vpmaddwd
// accumulator collects one block's whole dot product: no horizontal sums.
// Missing blocks of the last group are zero. corr = -(sum(q) << shift): the
// integer correction for weights stored with an unsigned offset (q4_0: 8 =
// 1 << 3, q5_0: 16, q8_0 on VNNI: 128), so a kernel starts its block sum from
// it; s = d * float(sum(q)) for the min term of q4_1 / q5_1.
// q8_256 qs: per super-block, 32-element chunk J (elements 32J..32J+31) goes
// to half X, slot Y (q4_k/q5_k: X = J % 2, Y = J / 2, so slot c holds
// sub-blocks 2c and 2c+1; q6_k: X = J / 4, Y = J % 4); its element 4v + b
// lands at X*128 + 16v + 4Y + b: the same chunk-transposed idea as q8_32.
// ext: q4_k/q5_k: ext[c] = bs_2c | bs_2c+1 << 16 (int16 sums of sub-blocks of
// 32: pairs for vpmaddwd against the mins); q6_k: ext[8h + 4a + c] =
// -32 * (sum of the 16 q of sub-block 8h + 2c + a), the +32 level offset.
struct ActLayout {
  size_t off_d = 0, off_corr = 0, off_s = 0, off_ext = 0;
  size_t row_bytes = 0;  // multiple of 64
};
inline ActLayout act_layout(ActFormat f, int64_t n_in) {
  ActLayout l;
  if (f == ActFormat::q8_32) {
    const int64_t nb4 = round_up(n_in / 32, 4), reg = round_up(4 * nb4, 64) + 64;
    l.off_d = size_t(round_up(nb4 * 32, 64) + 64);
    l.off_corr = l.off_d + size_t(reg);
    l.off_s = l.off_corr + size_t(reg);
    l.row_bytes = l.off_s + size_t(reg);
  } else if (f == ActFormat::q8_256) {
    const int64_t nsb = n_in / 256;
    l.off_d = size_t(round_up(n_in, 64) + 64);
    l.off_ext = l.off_d + size_t(round_up(4 * nsb, 64) + 64);
    l.row_bytes = l.off_ext + size_t(64 * nsb + 64);
  } else {
    l.row_bytes = size_t(n_in) * 4;
  }
  return l;
}
// Byte offset of element e (0..31) of block i in a q8_32 qs region.
constexpr size_t q8_32_offset(int64_t i, int e) {
  return size_t(i / 4) * 128 + size_t(e / 4) * 16 + size_t(i % 4) * 4 + size_t(e % 4);
}
// The corr shift for a 32-element weight type (-1: no correction).
constexpr int q8_32_corr_shift(DType w_type) {
  return w_type == DType::Q4_0 ? 3 : w_type == DType::Q5_0 ? 4 : w_type == DType::Q8_0 ? 7 : -1;
}

struct ActQ8_32 {
  const int8_t* qs;     // [nb4 * 32], group-transposed
  const float* d;       // [nb4]
  const int32_t* corr;  // [nb4]
  const float* s;       // [nb4]
};
inline ActQ8_32 act_q8_32(const uint8_t* row, const ActLayout& l) {
  return {reinterpret_cast<const int8_t*>(row), reinterpret_cast<const float*>(row + l.off_d),
          reinterpret_cast<const int32_t*>(row + l.off_corr),
          reinterpret_cast<const float*>(row + l.off_s)};
}
struct ActQ8_256 {
  const int8_t* qs;    // [n_in], per-type order
  const float* d;      // [nsb]
  const int32_t* ext;  // [nsb * 16]
};
inline ActQ8_256 act_q8_256(const uint8_t* row, const ActLayout& l) {
  return {reinterpret_cast<const int8_t*>(row), reinterpret_cast<const float*>(row + l.off_d),
          reinterpret_cast<const int32_t*>(row + l.off_ext)};
}
// Byte offset of element e (0..255) in a super-block of the q8_256 qs layout.
constexpr size_t q8_256_offset(DType w_type, int e) {
  const int j = e / 32, l = e % 32;
  const int x = w_type == DType::Q6_K ? j / 4 : j % 2, y = w_type == DType::Q6_K ? j % 4 : j / 2;
  return size_t(x * 128 + (l / 4) * 16 + y * 4 + l % 4);
}
// Stores one quantized super-block q [256] (element order) in the layout,
// with its ext words. Shared by every ISA's quantizer (bit-identical rows).
inline void q8_256_pack(DType w_type, const int8_t* q, int8_t* qs, int32_t* ext) {
  for (int e = 0; e < 256; e += 4) {
    const size_t o = q8_256_offset(w_type, e);
    for (int b = 0; b < 4; ++b) qs[o + size_t(b)] = q[e + b];
  }
  int32_t bs16[16];
  for (int g = 0; g < 16; ++g) {
    int32_t s = 0;
    for (int e = 0; e < 16; ++e) s += q[16 * g + e];
    bs16[g] = s;
  }
  for (int i = 0; i < 16; ++i) ext[i] = 0;
  if (w_type == DType::Q6_K) {
    for (int h = 0; h < 2; ++h)
      for (int a = 0; a < 2; ++a)
        for (int c = 0; c < 4; ++c) ext[8 * h + 4 * a + c] = -32 * bs16[8 * h + 2 * c + a];
  } else {
    for (int c = 0; c < 4; ++c) {
      const int32_t lo = bs16[4 * c] + bs16[4 * c + 1], hi = bs16[4 * c + 2] + bs16[4 * c + 3];
      ext[c] = int32_t(uint32_t(lo & 0xffff) | (uint32_t(hi) << 16));
    }
  }
}

// Quantizes one row x [n_in] for weights of type w_type into dst
// (act_layout(act_format(w_type), n_in).row_bytes bytes).
using QuantizeFn = void (*)(DType w_type, const float* x, uint8_t* dst, int64_t n_in);

// Decode streams short weight rows (a 2048-wide q4_0 row is 18 cache lines),
// too short for the hardware prefetchers to ramp up: a kernel working on one
// row tile prefetches the next tile's bytes [p, p + bytes), slice i of n per
// step, so the memory system never idles between tiles.
inline void prefetch_slice(const uint8_t* p, size_t bytes, int64_t i, int64_t n) {
  if (!p || n <= 0) return;
  const size_t lines = (bytes + 63) / 64, per = (lines + size_t(n) - 1) / size_t(n);
  const size_t end = std::min(lines, size_t(i + 1) * per);
  for (size_t l = size_t(i) * per; l < end; ++l) __builtin_prefetch(p + 64 * l, 0, 3);
}

// One work unit: weight rows [0, n_rows) of the chunk times all activation rows.
struct TileArgs {
  const uint8_t* w = nullptr;  // first weight row of the chunk; rows w_stride bytes apart
  size_t w_stride = 0;
  int64_t n_rows = 0;
  const uint8_t* act = nullptr;  // activation row 0 (quantized, or float x); act_stride apart
  size_t act_stride = 0;
  ActLayout act_layout;
  int64_t n_batch = 0;
  int64_t n_in = 0;
  float* y = nullptr;  // y[b * ldy + r] for chunk row r
  int64_t ldy = 0;
};
using TileFn = void (*)(const TileArgs& t);

struct KernelSet {
  QuantizeFn quantize = nullptr;
  TileFn (*tile)(DType t) = nullptr;  // nullptr for types this level lacks
};
const KernelSet& kernels_scalar();
const KernelSet& kernels_avx2();
const KernelSet& kernels_avx512();

// Per-family tile lookups each ISA file provides (nullptr: not this family).
TileFn tile_scalar(DType t);
TileFn tile_q_avx2(DType t);
TileFn tile_k_avx2(DType t);
TileFn tile_f_avx2(DType t);
TileFn tile_q_avx512(DType t);
TileFn tile_k_avx512(DType t);
TileFn tile_f_avx512(DType t);
void quantize_act_scalar(DType w_type, const float* x, uint8_t* dst, int64_t n_in);
void quantize_act_avx2(DType w_type, const float* x, uint8_t* dst, int64_t n_in);
void quantize_act_avx512(DType w_type, const float* x, uint8_t* dst, int64_t n_in);

}  // namespace kiln::cpu::detail
