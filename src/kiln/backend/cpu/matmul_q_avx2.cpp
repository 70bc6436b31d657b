// AVX2 kernels for the 32-element block types (q4_0 q4_1 q5_0 q5_1 q8_0) and
// the AVX2 activation quantizers: the transposed scheme of
// matmul_q_avx512.cpp on 2 weight rows per ymm (lanes [row j][block k]), with
// vpmaddubsw + vpmaddwd in place of vpdpbusd. Bit-identical to the other
// levels (matmul_kernels.h).
#include <immintrin.h>

#include <algorithm>
#include <cstring>
#include <limits>

#include "kiln/backend/cpu/matmul_kernels.h"
#include "kiln/core/fp16.h"

namespace kiln::cpu::detail {
namespace {

inline uint32_t ld32(const uint8_t* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}
inline uint16_t ld16(const uint8_t* p) {
  uint16_t v;
  std::memcpy(&v, p, 2);
  return v;
}
inline __m128i ldu128(const void* p) {
  return _mm_loadu_si128(static_cast<const __m128i*>(p));
}

// ---- activation quantization (bit-identical to quantize_act_scalar) -------

inline int32_t hsum8(__m256i v) {
  __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1));
  return _mm_cvtsi128_si32(s);
}

// Quantizes n (multiple of 32) floats; returns d; q sums per 16 go to s16.
float quant_block(const float* x, int n, int8_t* q, int32_t* s16) {
  const __m256i m = _mm256_set1_epi32(0x7fffffff);
  __m256i a = _mm256_setzero_si256();
  for (int i = 0; i < n; i += 8)
    a = _mm256_max_epu32(
        a, _mm256_and_si256(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(x + i)), m));
  __m128i h = _mm_max_epu32(_mm256_castsi256_si128(a), _mm256_extracti128_si256(a, 1));
  h = _mm_max_epu32(h, _mm_shuffle_epi32(h, 0x4e));
  h = _mm_max_epu32(h, _mm_shuffle_epi32(h, 0xb1));
  const uint32_t ab = uint32_t(_mm_cvtsi128_si32(h));
  if (ab >= 0x7f800000u || ab < f32_bits(1e-30f)) {
    std::memset(q, 0, size_t(n));
    for (int i = 0; i < n / 16; ++i) s16[i] = 0;
    return ab >= 0x7f800000u ? std::numeric_limits<float>::quiet_NaN() : 0.0f;
  }
  const float amax = bits_f32(ab);
  const __m256 id = _mm256_set1_ps(127.0f / amax);
  const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
  for (int i = 0; i < n; i += 32) {
    __m256i v[4];
    for (int k = 0; k < 4; ++k)
      v[k] = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + i + 8 * k), id));
    s16[i / 16] = hsum8(_mm256_add_epi32(v[0], v[1]));
    s16[i / 16 + 1] = hsum8(_mm256_add_epi32(v[2], v[3]));
    const __m256i p =
        _mm256_packs_epi16(_mm256_packs_epi32(v[0], v[1]), _mm256_packs_epi32(v[2], v[3]));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(q + i), _mm256_permutevar8x32_epi32(p, order));
  }
  return amax / 127.0f;
}

// ---- the 32-element block types -----------------------------------------

inline __m256i load2x128(const uint8_t* const p[2], size_t off) {
  return _mm256_inserti128_si256(_mm256_castsi128_si256(ldu128(p[0] + off)), ldu128(p[1] + off), 1);
}
inline __m256i bcast128(const void* p) {
  return _mm256_broadcastsi128_si256(ldu128(p));
}

// z[k]: [row j][dword u] of block k -> t[u]: [row j][block k] (4x4 per lane).
inline void transpose4(const __m256i z[4], __m256i t[4]) {
  const __m256i a = _mm256_unpacklo_epi32(z[0], z[1]), b = _mm256_unpackhi_epi32(z[0], z[1]);
  const __m256i c = _mm256_unpacklo_epi32(z[2], z[3]), d = _mm256_unpackhi_epi32(z[2], z[3]);
  t[0] = _mm256_unpacklo_epi64(a, c);
  t[1] = _mm256_unpackhi_epi64(a, c);
  t[2] = _mm256_unpacklo_epi64(b, d);
  t[3] = _mm256_unpackhi_epi64(b, d);
}

// w[v]: levels of elements 4v..4v+3, lanes [row j][block k] (u8; q8_0: |level|
// with the signed levels in sgn[v] as the sign source).
struct WStep {
  __m256i w[8];
  __m256i sgn[8];
  __m256 dw, mw;  // [row][slot]
};

inline void nibbles(const uint8_t* const p[2], int bytes, int off, WStep& s) {
  __m256i z[4], t[4];
  for (int k = 0; k < 4; ++k) z[k] = load2x128(p, size_t(k) * bytes + size_t(off));
  transpose4(z, t);
  const __m256i m4 = _mm256_set1_epi8(0x0f);
  for (int u = 0; u < 4; ++u) {
    s.w[u] = _mm256_and_si256(t[u], m4);
    s.w[u + 4] = _mm256_and_si256(_mm256_srli_epi16(t[u], 4), m4);
  }
}

// q5: adds 16 to the levels whose qh bit is set.
inline void add_qh(const uint8_t* const p[2], int bytes, int off, WStep& s) {
  alignas(32) uint32_t h[8];  // [row j][block k]
  for (int j = 0; j < 2; ++j)
    for (int k = 0; k < 4; ++k) h[4 * j + k] = ld32(p[j] + k * bytes + off);
  const __m256i qh = _mm256_load_si256(reinterpret_cast<const __m256i*>(h));
  const __m256i c16 = _mm256_set1_epi8(16);
  const __m256i bit_lo = _mm256_set1_epi32(0x08040201),
                bit_hi = _mm256_set1_epi32(int(0x80402010u));
  for (int v = 0; v < 8; ++v) {
    const char c = char(v / 2);
    const __m128i r = _mm_setr_epi8(c, c, c, c, char(4 + c), char(4 + c), char(4 + c), char(4 + c),
                                    char(8 + c), char(8 + c), char(8 + c), char(8 + c),
                                    char(12 + c), char(12 + c), char(12 + c), char(12 + c));
    const __m256i bit = v % 2 ? bit_hi : bit_lo;
    const __m256i b =
        _mm256_and_si256(_mm256_shuffle_epi8(qh, _mm256_broadcastsi128_si256(r)), bit);
    s.w[v] = _mm256_or_si256(s.w[v], _mm256_and_si256(_mm256_cmpeq_epi8(b, bit), c16));
  }
}

// f16 field at `off` of blocks 0..3 of rows p[0], p[1] -> [row][slot] floats.
template <int kBytes>
inline __m256 f16_fields(const uint8_t* const p[2], int off) {
  const __m128i h =
      _mm_setr_epi16(short(ld16(p[0] + off)), short(ld16(p[0] + kBytes + off)),
                     short(ld16(p[0] + 2 * kBytes + off)), short(ld16(p[0] + 3 * kBytes + off)),
                     short(ld16(p[1] + off)), short(ld16(p[1] + kBytes + off)),
                     short(ld16(p[1] + 2 * kBytes + off)), short(ld16(p[1] + 3 * kBytes + off)));
  return _mm256_cvtph_ps(h);
}

struct Q4_0 {
  static constexpr int kBytes = 18;
  static constexpr bool kCorr = true, kMin = false, kQ8 = false;
  static void load(const uint8_t* const p[2], WStep& s) {
    nibbles(p, kBytes, 2, s);
    s.dw = f16_fields<kBytes>(p, 0);
  }
};
struct Q4_1 {
  static constexpr int kBytes = 20;
  static constexpr bool kCorr = false, kMin = true, kQ8 = false;
  static void load(const uint8_t* const p[2], WStep& s) {
    nibbles(p, kBytes, 4, s);
    s.dw = f16_fields<kBytes>(p, 0);
    s.mw = f16_fields<kBytes>(p, 2);
  }
};
struct Q5_0 {
  static constexpr int kBytes = 22;
  static constexpr bool kCorr = true, kMin = false, kQ8 = false;
  static void load(const uint8_t* const p[2], WStep& s) {
    nibbles(p, kBytes, 6, s);
    add_qh(p, kBytes, 2, s);
    s.dw = f16_fields<kBytes>(p, 0);
  }
};
struct Q5_1 {
  static constexpr int kBytes = 24;
  static constexpr bool kCorr = false, kMin = true, kQ8 = false;
  static void load(const uint8_t* const p[2], WStep& s) {
    nibbles(p, kBytes, 8, s);
    add_qh(p, kBytes, 4, s);
    s.dw = f16_fields<kBytes>(p, 0);
    s.mw = f16_fields<kBytes>(p, 2);
  }
};
struct Q8_0 {
  // Signed x signed: vpmaddubsw(|w|, sign(a, w)); |pair sum| <= 2*128*127
  // fits int16. No offset, so the activation corr (for VNNI) is not used.
  static constexpr int kBytes = 34;
  static constexpr bool kCorr = false, kMin = false, kQ8 = true;
  static void load(const uint8_t* const p[2], WStep& s) {
    for (int h = 0; h < 2; ++h) {
      __m256i z[4], t[4];
      for (int k = 0; k < 4; ++k) z[k] = load2x128(p, size_t(k) * kBytes + 2 + 16 * h);
      transpose4(z, t);
      for (int u = 0; u < 4; ++u) {
        s.sgn[4 * h + u] = t[u];
        s.w[4 * h + u] = _mm256_abs_epi8(t[u]);
      }
    }
    s.dw = f16_fields<kBytes>(p, 0);
  }
};

template <class T, int B>
inline void step(const WStep& s, const ActQ8_32* a, int64_t g, bool full, __m256 live,
                 __m256 (&f)[B]) {
  const __m256i ones = _mm256_set1_epi16(1);
  for (int b = 0; b < B; ++b) {
    const int8_t* q = a[b].qs + 128 * g;
    __m256i acc = T::kCorr ? bcast128(a[b].corr + 4 * g) : _mm256_setzero_si256();
    if constexpr (T::kQ8) {
      for (int v = 0; v < 8; ++v) {
        const __m256i p =
            _mm256_maddubs_epi16(s.w[v], _mm256_sign_epi8(bcast128(q + 16 * v), s.sgn[v]));
        acc = _mm256_add_epi32(acc, _mm256_madd_epi16(p, ones));
      }
    } else {  // pair sums <= 2*31*127: two of them still fit int16
      for (int u = 0; u < 4; ++u) {
        const __m256i p =
            _mm256_add_epi16(_mm256_maddubs_epi16(s.w[u], bcast128(q + 16 * u)),
                             _mm256_maddubs_epi16(s.w[u + 4], bcast128(q + 16 * (u + 4))));
        acc = _mm256_add_epi32(acc, _mm256_madd_epi16(p, ones));
      }
    }
    const __m256 d =
        _mm256_mul_ps(s.dw, _mm256_broadcast_ps(reinterpret_cast<const __m128*>(a[b].d + 4 * g)));
    __m256 nf = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(acc), f[b]);
    if constexpr (T::kMin)
      nf = _mm256_fmadd_ps(
          s.mw, _mm256_broadcast_ps(reinterpret_cast<const __m128*>(a[b].s + 4 * g)), nf);
    f[b] = full ? nf : _mm256_blendv_ps(f[b], nf, live);
  }
}

// 2 rows (p, n_rows of them real) x B activation rows over all blocks.
template <class T, int B>
void micro(const uint8_t* const p[2], int n_rows, const ActQ8_32* a, int64_t nb, float* const* y) {
  __m256 f[B];
  for (int b = 0; b < B; ++b) f[b] = _mm256_setzero_ps();
  const int64_t ng = nb / 4;
  for (int64_t g = 0; g < ng; ++g) {
    const uint8_t* pg[2] = {p[0] + g * 4 * T::kBytes, p[1] + g * 4 * T::kBytes};
    WStep s;
    T::load(pg, s);
    step<T, B>(s, a, g, true, _mm256_setzero_ps(), f);
  }
  if (const int rem = int(nb % 4)) {
    alignas(32) uint8_t pad[2][4 * T::kBytes + 32] = {};
    for (int j = 0; j < 2; ++j)
      std::memcpy(pad[j], p[j] + ng * 4 * T::kBytes, size_t(rem) * T::kBytes);
    const uint8_t* pp[2] = {pad[0], pad[1]};
    const __m256i slot = _mm256_setr_epi32(0, 1, 2, 3, 0, 1, 2, 3);
    const __m256 live = _mm256_castsi256_ps(_mm256_cmpgt_epi32(_mm256_set1_epi32(rem), slot));
    WStep s;
    T::load(pp, s);
    step<T, B>(s, a, ng, false, live, f);
  }
  for (int b = 0; b < B; ++b) {
    const __m256 t = _mm256_add_ps(f[b], _mm256_permute_ps(f[b], 0xb1));
    const __m256 u = _mm256_add_ps(t, _mm256_permute_ps(t, 0x4e));
    y[b][0] = _mm256_cvtss_f32(u);
    if (n_rows > 1) y[b][1] = _mm_cvtss_f32(_mm256_extractf128_ps(u, 1));
  }
}

template <class T, int B>
void rows_pass(const TileArgs& t, int64_t b0) {
  ActQ8_32 a[B];
  for (int b = 0; b < B; ++b) a[b] = act_q8_32(t.act + size_t(b0 + b) * t.act_stride, t.act_layout);
  const int64_t nb = t.n_in / 32;
  for (int64_t r0 = 0; r0 < t.n_rows; r0 += 2) {
    const int n = int(std::min<int64_t>(2, t.n_rows - r0));
    const uint8_t* p[2] = {t.w + size_t(r0) * t.w_stride, t.w + size_t(r0 + n - 1) * t.w_stride};
    float* y[B];
    for (int b = 0; b < B; ++b) y[b] = t.y + (b0 + b) * t.ldy + r0;
    micro<T, B>(p, n, a, nb, y);
  }
}

template <class T>
void tile_q(const TileArgs& t) {
  int64_t b0 = 0;
  for (; b0 + 4 <= t.n_batch; b0 += 4) rows_pass<T, 4>(t, b0);
  if (b0 + 2 <= t.n_batch) rows_pass<T, 2>(t, b0), b0 += 2;
  if (b0 < t.n_batch) rows_pass<T, 1>(t, b0);
}

}  // namespace

void quantize_act_avx2(DType w_type, const float* x, uint8_t* dst, int64_t n_in) {
  const ActFormat f = act_format(w_type);
  const ActLayout l = act_layout(f, n_in);
  auto* qs = reinterpret_cast<int8_t*>(dst);
  auto* d = reinterpret_cast<float*>(dst + l.off_d);
  if (f == ActFormat::q8_32) {
    auto* corr = reinterpret_cast<int32_t*>(dst + l.off_corr);
    auto* s = reinterpret_cast<float*>(dst + l.off_s);
    const int64_t nb = n_in / 32, nb4 = round_up(nb, 4);
    const int shift = q8_32_corr_shift(w_type);
    for (int64_t g = 0; g < nb4 / 4; ++g) {
      alignas(32) int8_t q[128] = {};
      for (int k = 0; k < 4; ++k) {
        const int64_t i = 4 * g + k;
        int32_t s16[2] = {0, 0};
        d[i] = i < nb ? quant_block(x + 32 * i, 32, q + 32 * k, s16) : 0.0f;
        const int32_t sum = s16[0] + s16[1];
        corr[i] = shift >= 0 ? -(sum << shift) : 0;
        s[i] = d[i] * float(sum);
      }
      // z[k] = block k's dwords 0..7 -> out chunk v = [block 0..3 dword v]
      __m256i z[4], t[4];
      for (int k = 0; k < 4; ++k)
        z[k] = _mm256_load_si256(reinterpret_cast<const __m256i*>(q + 32 * k));
      transpose4(z, t);  // t[u] = [v=u: k0..3 | v=u+4: k0..3]
      for (int u = 0; u < 4; ++u) {
        _mm_storeu_si128(reinterpret_cast<__m128i*>(qs + 128 * g + 16 * u),
                         _mm256_castsi256_si128(t[u]));
        _mm_storeu_si128(reinterpret_cast<__m128i*>(qs + 128 * g + 16 * (u + 4)),
                         _mm256_extracti128_si256(t[u], 1));
      }
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

TileFn tile_q_avx2(DType t) {
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

const KernelSet& kernels_avx2() {
  static const KernelSet k{quantize_act_avx2, [](DType t) -> TileFn {
                             if (TileFn f = tile_q_avx2(t)) return f;
                             if (TileFn f = tile_k_avx2(t)) return f;
                             return tile_f_avx2(t);
                           }};
  return k;
}

}  // namespace kiln::cpu::detail
