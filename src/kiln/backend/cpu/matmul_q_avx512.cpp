// AVX-512 VNNI kernels for the 32-element block types (q4_0 q4_1 q5_0 q5_1
// q8_0) and the activation quantizers. Compiled with AVX-512 flags; called
// only when the CPU has them (matmul.cpp).
//
// Micro-kernel: 4 weight rows x B activation rows x 4 blocks per step. The
// 16 (row, block) pairs of a step sit in the 16 dword lanes of a zmm, lane
// [row j][block k]: the weights are loaded a block of 4 rows at a time and
// 4x4-dword transposed in-lane, so zmm v holds elements 4v..4v+3 of every
// (row, block); the activations are stored transposed the same way
// (matmul_kernels.h), one 16-byte chunk per v broadcast to the 4 row lanes.
// Eight vpdpbusd then leave each block's exact dot product in its own lane,
// already in the canonical acc[row][i % 4] layout: per activation row a step
// costs 8 vpdpbusd + cvt + mul + fma. Unpacking is done once per step and
// shared by all B activation rows.
#include <immintrin.h>

#include <algorithm>
#include <cstring>
#include <limits>

#include "kiln/backend/cpu/matmul_kernels.h"
#include "kiln/core/fp16.h"

// GCC 12 warns about the deliberately undefined upper halves inside its own
// AVX-512 intrinsics (_mm512_undefined_*): a known false positive.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"

namespace kiln::cpu::detail {
namespace {

// ---- activation quantization (bit-identical to quantize_act_scalar) -------

// max |x| over n (multiple of 16) floats, as integer bits.
inline uint32_t amax_bits(const float* x, int n) {
  const __m512i m = _mm512_set1_epi32(0x7fffffff);
  __m512i a = _mm512_setzero_si512();
  for (int i = 0; i < n; i += 16)
    a = _mm512_max_epu32(a, _mm512_and_si512(_mm512_loadu_si512(x + i), m));
  return _mm512_reduce_max_epu32(a);
}

// Quantizes n (multiple of 16) floats; returns d. q sums per 16 go to s16.
inline float quant_block(const float* x, int n, int8_t* q, int32_t* s16) {
  const uint32_t ab = amax_bits(x, n);
  if (ab >= 0x7f800000u || ab < f32_bits(1e-30f)) {
    std::memset(q, 0, size_t(n));
    for (int i = 0; i < n / 16; ++i) s16[i] = 0;
    return ab >= 0x7f800000u ? std::numeric_limits<float>::quiet_NaN() : 0.0f;
  }
  const float amax = bits_f32(ab);
  const __m512 id = _mm512_set1_ps(127.0f / amax);
  for (int i = 0; i < n; i += 16) {
    const __m512i v = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_loadu_ps(x + i), id));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(q + i), _mm512_cvtsepi32_epi8(v));
    s16[i / 16] = _mm512_reduce_add_epi32(v);
  }
  return amax / 127.0f;
}

// ---- the 32-element block types -----------------------------------------

// Gather offsets [row j][slot k] -> byte offset of block k's field `off` in
// row j, relative to p[0].
inline __m512i field_offsets(const uint8_t* const p[4], int bytes, int off) {
  const __m128i rows = _mm_setr_epi32(0, int(p[1] - p[0]), int(p[2] - p[0]), int(p[3] - p[0]));
  const __m512i spread =
      _mm512_permutexvar_epi32(_mm512_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3),
                               _mm512_castsi128_si512(rows));
  const __m512i k = _mm512_setr_epi32(0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3);
  return _mm512_add_epi32(spread, _mm512_add_epi32(_mm512_mullo_epi32(k, _mm512_set1_epi32(bytes)),
                                                   _mm512_set1_epi32(off)));
}

// 16 f16 fields [row j][slot k] -> floats.
inline __m512 gather_f16(const uint8_t* base, __m512i offs) {
  return _mm512_cvtph_ps(_mm512_cvtepi32_epi16(_mm512_i32gather_epi32(offs, base, 1)));
}

inline __m512i load4x128(const uint8_t* const p[4], size_t off) {
  __m512i v = _mm512_castsi128_si512(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p[0] + off)));
  v = _mm512_inserti32x4(v, _mm_loadu_si128(reinterpret_cast<const __m128i*>(p[1] + off)), 1);
  v = _mm512_inserti32x4(v, _mm_loadu_si128(reinterpret_cast<const __m128i*>(p[2] + off)), 2);
  return _mm512_inserti32x4(v, _mm_loadu_si128(reinterpret_cast<const __m128i*>(p[3] + off)), 3);
}

// z[k]: [row j][dword u] of block k -> t[u]: [row j][block k] (4x4 per lane).
inline void transpose4(const __m512i z[4], __m512i t[4]) {
  const __m512i a = _mm512_unpacklo_epi32(z[0], z[1]), b = _mm512_unpackhi_epi32(z[0], z[1]);
  const __m512i c = _mm512_unpacklo_epi32(z[2], z[3]), d = _mm512_unpackhi_epi32(z[2], z[3]);
  t[0] = _mm512_unpacklo_epi64(a, c);
  t[1] = _mm512_unpackhi_epi64(a, c);
  t[2] = _mm512_unpacklo_epi64(b, d);
  t[3] = _mm512_unpackhi_epi64(b, d);
}

// Unpacked weights of a 4-row x 4-block step: w[v] = u8 levels of elements
// 4v..4v+3, lane [row j][block k].
struct WStep {
  __m512i w[8];
  __m512 dw, mw;  // [row][slot] scales (and q4_1/q5_1 mins)
};

// 16 nibble bytes of each block at qs offset `off`: low nibbles are elements
// 0..15 (w[0..3]), high nibbles 16..31 (w[4..7]).
inline void nibbles(const uint8_t* const p[4], int bytes, int off, WStep& s) {
  __m512i z[4], t[4];
  for (int k = 0; k < 4; ++k) z[k] = load4x128(p, size_t(k) * bytes + size_t(off));
  transpose4(z, t);
  const __m512i m4 = _mm512_set1_epi8(0x0f);
  for (int u = 0; u < 4; ++u) {
    s.w[u] = _mm512_and_si512(t[u], m4);
    s.w[u + 4] = _mm512_and_si512(_mm512_srli_epi16(t[u], 4), m4);
  }
}

// q5: adds 16 to the levels whose qh bit is set (bit e of qh = element e).
inline void add_qh(const uint8_t* base, __m512i offs, WStep& s) {
  const __m512i qh = _mm512_i32gather_epi32(offs, base, 1);  // [row][block]
  const __m512i c16 = _mm512_set1_epi8(16);
  const __m512i bit_lo = _mm512_set1_epi32(0x08040201),
                bit_hi = _mm512_set1_epi32(int(0x80402010u));
  for (int v = 0; v < 8; ++v) {
    // bits 4v..4v+3 live in byte v/2 of the dword, nibble v%2
    const char c = char(v / 2);
    const __m512i rep = _mm512_broadcast_i32x4(_mm_setr_epi8(
        c, c, c, c, char(4 + c), char(4 + c), char(4 + c), char(4 + c), char(8 + c), char(8 + c),
        char(8 + c), char(8 + c), char(12 + c), char(12 + c), char(12 + c), char(12 + c)));
    const __mmask64 m =
        _mm512_test_epi8_mask(_mm512_shuffle_epi8(qh, rep), v % 2 ? bit_hi : bit_lo);
    s.w[v] = _mm512_mask_add_epi8(s.w[v], m, s.w[v], c16);
  }
}

// d (and m) of rows whose 4-block group fits in 64 bytes (q4_0: d at words
// 0,9,18,27 of a 72-byte group; q4_1: words 0,10,20,30 / +1 of 80 bytes):
// two word permutes instead of a gather.
template <int kStrideW, int kOffW>
inline __m512 f16_fields_perm(const uint8_t* const p[4]) {
  const __m512i z0 = _mm512_loadu_si512(p[0]), z1 = _mm512_loadu_si512(p[1]);
  const __m512i z2 = _mm512_loadu_si512(p[2]), z3 = _mm512_loadu_si512(p[3]);
  constexpr int s = kStrideW, o = kOffW;
  const __m512i i01 = _mm512_set_epi16(0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
                                       0, 0, 0, 0, 32 + 3 * s + o, 32 + 2 * s + o, 32 + s + o,
                                       32 + o, 3 * s + o, 2 * s + o, s + o, o);
  const __m512i i23 = _mm512_set_epi16(0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
                                       32 + 3 * s + o, 32 + 2 * s + o, 32 + s + o, 32 + o,
                                       3 * s + o, 2 * s + o, s + o, o, 0, 0, 0, 0, 0, 0, 0, 0);
  const __m512i h = _mm512_mask_blend_epi16(0x0000ff00u, _mm512_permutex2var_epi16(z0, i01, z1),
                                            _mm512_permutex2var_epi16(z2, i23, z3));
  return _mm512_cvtph_ps(_mm512_castsi512_si256(h));
}

struct Q4_0 {
  static constexpr int kBytes = 18;
  static constexpr bool kCorr = true, kMin = false;  // level = nibble - 8
  static void load(const uint8_t* const p[4], __m512i, WStep& s) {
    nibbles(p, kBytes, 2, s);
    s.dw = f16_fields_perm<9, 0>(p);
  }
};
struct Q4_1 {
  static constexpr int kBytes = 20;
  static constexpr bool kCorr = false, kMin = true;
  static void load(const uint8_t* const p[4], __m512i, WStep& s) {
    nibbles(p, kBytes, 4, s);
    s.dw = f16_fields_perm<10, 0>(p);
    s.mw = f16_fields_perm<10, 1>(p);
  }
};
struct Q5_0 {
  static constexpr int kBytes = 22;
  static constexpr bool kCorr = true, kMin = false;  // level = 5-bit - 16
  static void load(const uint8_t* const p[4], __m512i offs, WStep& s) {
    nibbles(p, kBytes, 6, s);
    add_qh(p[0] + 2, offs, s);
    s.dw = gather_f16(p[0], offs);
  }
};
struct Q5_1 {
  static constexpr int kBytes = 24;
  static constexpr bool kCorr = false, kMin = true;
  static void load(const uint8_t* const p[4], __m512i offs, WStep& s) {
    nibbles(p, kBytes, 8, s);
    add_qh(p[0] + 4, offs, s);
    s.dw = gather_f16(p[0], offs);
    s.mw = gather_f16(p[0] + 2, offs);
  }
};
struct Q8_0 {
  // vpdpbusd wants unsigned weights: level ^ 0x80 = level + 128, corrected by
  // corr = -128 * sum(a).
  static constexpr int kBytes = 34;
  static constexpr bool kCorr = true, kMin = false;
  static void load(const uint8_t* const p[4], __m512i offs, WStep& s) {
    const __m512i flip = _mm512_set1_epi8(-128);
    for (int h = 0; h < 2; ++h) {
      __m512i z[4], t[4];
      for (int k = 0; k < 4; ++k) z[k] = load4x128(p, size_t(k) * kBytes + 2 + 16 * h);
      transpose4(z, t);
      for (int u = 0; u < 4; ++u) s.w[4 * h + u] = _mm512_xor_si512(t[u], flip);
    }
    s.dw = gather_f16(p[0], offs);
  }
};

inline __m512i bcast128(const void* p) {
  return _mm512_broadcast_i32x4(_mm_loadu_si128(static_cast<const __m128i*>(p)));
}

// One 4-block step (group g) for B activation rows; `live` masks slots past
// the row's end.
template <class T, int B>
inline void step(const WStep& s, const ActQ8_32* a, int64_t g, __mmask16 live, __m512 (&f)[B]) {
  for (int b = 0; b < B; ++b) {
    const int8_t* q = a[b].qs + 128 * g;
    __m512i acc = T::kCorr ? bcast128(a[b].corr + 4 * g) : _mm512_setzero_si512();
    for (int v = 0; v < 8; ++v) acc = _mm512_dpbusd_epi32(acc, s.w[v], bcast128(q + 16 * v));
    const __m512 d = _mm512_mul_ps(s.dw, _mm512_broadcast_f32x4(_mm_loadu_ps(a[b].d + 4 * g)));
    f[b] = _mm512_mask3_fmadd_ps(d, _mm512_cvtepi32_ps(acc), f[b], live);
    if constexpr (T::kMin)
      f[b] = _mm512_mask3_fmadd_ps(s.mw, _mm512_broadcast_f32x4(_mm_loadu_ps(a[b].s + 4 * g)), f[b],
                                   live);
  }
}

// 4 rows (p, of which n_rows are real) x B activation rows over all blocks.
// [pf, pf + pf_bytes): the next tile's weights, prefetched along the way so
// that decode (B = 1) keeps the memory system busy across short rows.
template <class T, int B>
void micro(const uint8_t* const p[4], int n_rows, const ActQ8_32* a, int64_t nb, float* const* y,
           const uint8_t* pf, size_t pf_bytes) {
  __m512 f[B];
  for (int b = 0; b < B; ++b) f[b] = _mm512_setzero_ps();
  const __m512i offs = field_offsets(p, T::kBytes, 0);
  const int64_t ng = nb / 4;
  for (int64_t g = 0; g < ng; ++g) {
    prefetch_slice(pf, pf_bytes, g, ng);
    const uint8_t* pg[4];
    for (int j = 0; j < 4; ++j) pg[j] = p[j] + g * 4 * T::kBytes;
    WStep s;
    T::load(pg, offs, s);
    step<T, B>(s, a, g, 0xffff, f);
  }
  if (const int rem = int(nb % 4)) {
    // Tail: the last blocks copied into a zero-padded group, slots >= rem masked.
    alignas(64) uint8_t pad[4][4 * T::kBytes + 64] = {};
    const uint8_t* pp[4];
    for (int j = 0; j < 4; ++j) {
      std::memcpy(pad[j], p[j] + ng * 4 * T::kBytes, size_t(rem) * T::kBytes);
      pp[j] = pad[j];
    }
    WStep s;
    T::load(pp, field_offsets(pp, T::kBytes, 0), s);
    step<T, B>(s, a, ng, __mmask16(0x1111u * ((1u << rem) - 1)), f);
  }
  // y = (acc0 + acc1) + (acc2 + acc3) per row, rows at lanes 0, 4, 8, 12.
  const __m512i pick = _mm512_setr_epi32(0, 4, 8, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0);
  for (int b = 0; b < B; ++b) {
    const __m512 t = _mm512_add_ps(f[b], _mm512_permute_ps(f[b], 0xb1));  // lanes (1,0,3,2)
    const __m512 u = _mm512_add_ps(t, _mm512_permute_ps(t, 0x4e));        // lanes (2,3,0,1)
    _mm_mask_storeu_ps(y[b], __mmask8((1u << n_rows) - 1),
                       _mm512_castps512_ps128(_mm512_permutexvar_ps(pick, u)));
  }
}

template <class T, int B>
void rows_pass(const TileArgs& t, int64_t b0) {
  ActQ8_32 a[B];
  for (int b = 0; b < B; ++b) a[b] = act_q8_32(t.act + size_t(b0 + b) * t.act_stride, t.act_layout);
  const int64_t nb = t.n_in / 32;
  for (int64_t r0 = 0; r0 < t.n_rows; r0 += 4) {
    const int n = int(std::min<int64_t>(4, t.n_rows - r0));
    const uint8_t* p[4];
    for (int j = 0; j < 4; ++j) p[j] = t.w + size_t(r0 + std::min(j, n - 1)) * t.w_stride;
    float* y[B];
    for (int b = 0; b < B; ++b) y[b] = t.y + (b0 + b) * t.ldy + r0;
    const int64_t next = std::min<int64_t>(4, std::max<int64_t>(0, t.n_rows - r0 - 4));
    micro<T, B>(p, n, a, nb, y, t.w + size_t(r0 + 4) * t.w_stride, size_t(next) * t.w_stride);
  }
}

// Activation rows in tiles of 16 (B = 16 measured 10-40% faster than 8 on
// Zen 5: the weight unpacking is shared more widely), the remainder as
// 8 + 4 + 2 + 1: every output goes through the same per-(row, activation row)
// operations either way.
template <class T>
void tile_q(const TileArgs& t) {
  int64_t b0 = 0;
  for (; b0 + 16 <= t.n_batch; b0 += 16) rows_pass<T, 16>(t, b0);
  for (; b0 + 8 <= t.n_batch; b0 += 8) rows_pass<T, 8>(t, b0);
  if (b0 + 4 <= t.n_batch) rows_pass<T, 4>(t, b0), b0 += 4;
  if (b0 + 2 <= t.n_batch) rows_pass<T, 2>(t, b0), b0 += 2;
  if (b0 < t.n_batch) rows_pass<T, 1>(t, b0);
}

}  // namespace

void quantize_act_avx512(DType w_type, const float* x, uint8_t* dst, int64_t n_in) {
  const ActFormat f = act_format(w_type);
  const ActLayout l = act_layout(f, n_in);
  auto* qs = reinterpret_cast<int8_t*>(dst);
  auto* d = reinterpret_cast<float*>(dst + l.off_d);
  if (f == ActFormat::q8_32) {
    auto* corr = reinterpret_cast<int32_t*>(dst + l.off_corr);
    auto* s = reinterpret_cast<float*>(dst + l.off_s);
    const int64_t nb = n_in / 32, nb4 = round_up(nb, 4);
    const int shift = q8_32_corr_shift(w_type);
    // A group of 4 blocks quantized in element order, then transposed: out
    // dword 4v + k <- in dword 8k + v.
    const __m512i lo = _mm512_setr_epi32(0, 8, 16, 24, 1, 9, 17, 25, 2, 10, 18, 26, 3, 11, 19, 27);
    const __m512i hi = _mm512_add_epi32(lo, _mm512_set1_epi32(4));
    for (int64_t g = 0; g < nb4 / 4; ++g) {
      alignas(64) int8_t q[128] = {};
      for (int k = 0; k < 4; ++k) {
        const int64_t i = 4 * g + k;
        int32_t s16[2] = {0, 0};
        d[i] = i < nb ? quant_block(x + 32 * i, 32, q + 32 * k, s16) : 0.0f;
        const int32_t sum = s16[0] + s16[1];
        corr[i] = shift >= 0 ? -(sum << shift) : 0;
        s[i] = d[i] * float(sum);
      }
      const __m512i z0 = _mm512_load_si512(q), z1 = _mm512_load_si512(q + 64);
      _mm512_storeu_si512(qs + 128 * g, _mm512_permutex2var_epi32(z0, lo, z1));
      _mm512_storeu_si512(qs + 128 * g + 64, _mm512_permutex2var_epi32(z0, hi, z1));
    }
  } else {
    auto* ext = reinterpret_cast<int32_t*>(dst + l.off_ext);
    for (int64_t i = 0; i < n_in / 256; ++i) {
      alignas(64) int8_t q[256];
      int32_t s16[16];
      d[i] = quant_block(x + 256 * i, 256, q, s16);
      q8_256_pack(w_type, q, qs + 256 * i, ext + 16 * i);
    }
  }
}

TileFn tile_q_avx512(DType t) {
  switch (t) {
    case DType::Q4_0:
      return tile_q<Q4_0>;
    case DType::Q4_1:
      return tile_q<Q4_1>;
    case DType::Q5_0:
      return tile_q<Q5_0>;
    case DType::Q5_1:
      return tile_q<Q5_1>;
    case DType::Q8_0:
      return tile_q<Q8_0>;
    default:
      return nullptr;
  }
}

const KernelSet& kernels_avx512() {
  static const KernelSet k{quantize_act_avx512, [](DType t) -> TileFn {
                             if (TileFn f = tile_q_avx512(t)) return f;
                             if (TileFn f = tile_k_avx512(t)) return f;
                             return tile_f_avx512(t);
                           }};
  return k;
}

}  // namespace kiln::cpu::detail
