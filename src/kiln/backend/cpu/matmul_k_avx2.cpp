// AVX2 kernels for the k-quants (q4_k q5_k q6_k): the scheme of
// matmul_k_avx512.cpp on 2 weight rows per ymm (lanes [row j][slot c]), with
// vpmaddubsw + vpmaddwd in place of vpdpbusd. Bit-identical to the other levels.
#include <immintrin.h>

#include <algorithm>
#include <cstring>

#include "kiln/backend/cpu/matmul_kernels.h"

namespace kiln::cpu::detail {
namespace {

inline uint32_t ld32(const uint8_t* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}
inline __m256i ldu256(const void* p) {
  return _mm256_loadu_si256(static_cast<const __m256i*>(p));
}
inline __m256i bcast128(const void* p) {
  return _mm256_broadcastsi128_si256(_mm_loadu_si128(static_cast<const __m128i*>(p)));
}

// z[k] (8 dwords each) -> t[u]: lane 0 = [z0[u] z1[u] z2[u] z3[u]], lane 1 = same for u + 4.
inline void transpose4(const __m256i z[4], __m256i t[4]) {
  const __m256i a = _mm256_unpacklo_epi32(z[0], z[1]), b = _mm256_unpackhi_epi32(z[0], z[1]);
  const __m256i c = _mm256_unpacklo_epi32(z[2], z[3]), d = _mm256_unpackhi_epi32(z[2], z[3]);
  t[0] = _mm256_unpacklo_epi64(a, c);
  t[1] = _mm256_unpackhi_epi64(a, c);
  t[2] = _mm256_unpacklo_epi64(b, d);
  t[3] = _mm256_unpackhi_epi64(b, d);
}
// r0[u], r1[u] (lane 0: v = u, lane 1: v = u + 4) -> tv[v] = [row 0 | row 1].
inline void pair_rows(const __m256i r0[4], const __m256i r1[4], __m256i tv[8]) {
  for (int u = 0; u < 4; ++u) {
    tv[u] = _mm256_permute2x128_si256(r0[u], r1[u], 0x20);
    tv[u + 4] = _mm256_permute2x128_si256(r0[u], r1[u], 0x31);
  }
}
// lane [j][c] = dword v of row j's 8-dword h[j]
inline __m256i spread_dword(__m256i h0, __m256i h1, int v) {
  const __m256i idx = _mm256_set1_epi32(v);
  return _mm256_blend_epi32(_mm256_permutevar8x32_epi32(h0, idx),
                            _mm256_permutevar8x32_epi32(h1, idx), 0xf0);
}

struct KTile {
  __m256i w[2][8];
  __m256 sc[2][2];
  __m256i mp;
  __m256 d, dmin;
};

// Scales and mins of 2 rows as int16 pairs per lane [row j][slot c] (see
// matmul_k_avx512.cpp), and the two rows' f16 (d, dmin) via F16C.
inline void pairs_k4(const uint8_t* const blk[2], __m256i& sc, __m256i& m) {
  const __m128i r0 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(blk[0] + 4));
  const __m128i r1 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(blk[1] + 4));
  const __m128i t0 = _mm_unpacklo_epi32(r0, r1);  // a0 a1 b0 b1
  const __m128i a = t0, b = _mm_unpackhi_epi64(t0, t0), c = _mm_unpackhi_epi32(r0, r1);
  const __m128i m3f = _mm_set1_epi8(0x3f), m0f = _mm_set1_epi8(0x0f), m30 = _mm_set1_epi8(0x30);
  const __m128i sl = _mm_and_si128(a, m3f), ml = _mm_and_si128(b, m3f);
  const __m128i sh = _mm_or_si128(_mm_and_si128(c, m0f), _mm_and_si128(_mm_srli_epi32(a, 2), m30));
  const __m128i mh = _mm_or_si128(_mm_and_si128(_mm_srli_epi32(c, 4), m0f),
                                  _mm_and_si128(_mm_srli_epi32(b, 2), m30));
  sc = _mm256_cvtepu8_epi16(_mm_unpacklo_epi32(sl, sh));
  m = _mm256_cvtepu8_epi16(_mm_unpacklo_epi32(ml, mh));
}
inline void f16_per_row(const uint8_t* const blk[2], int off, __m256& d, __m256& d2) {
  const __m128 f =
      _mm_cvtph_ps(_mm_setr_epi32(int(ld32(blk[0] + off)), int(ld32(blk[1] + off)), 0, 0));
  d = _mm256_set_m128(_mm_permute_ps(f, 0xaa), _mm_permute_ps(f, 0x00));   // d1 | d0
  d2 = _mm256_set_m128(_mm_permute_ps(f, 0xff), _mm_permute_ps(f, 0x55));  // e1 | e0
}

// Sums of 4-byte dot products over v in [v0, v0 + 4): two vpmaddubsw results
// are added in int16 first (pair sums <= 2*63*127, two of them < 2^15).
inline __m256i dot4(const __m256i* w, const int8_t* q, __m256i acc) {
  const __m256i ones = _mm256_set1_epi16(1);
  for (int u = 0; u < 4; u += 2) {
    const __m256i p = _mm256_add_epi16(_mm256_maddubs_epi16(w[u], bcast128(q + 16 * u)),
                                       _mm256_maddubs_epi16(w[u + 1], bcast128(q + 16 * (u + 1))));
    acc = _mm256_add_epi32(acc, _mm256_madd_epi16(p, ones));
  }
  return acc;
}

template <bool kQh>
struct Q45K {
  static constexpr int kBytes = kQh ? 176 : 144;
  static void load(const uint8_t* const blk[2], KTile& t) {
    __m256i r[2][4], tv[8];
    for (int j = 0; j < 2; ++j) {
      const uint8_t* qs = blk[j] + (kQh ? 48 : 16);
      __m256i z[4];
      for (int c = 0; c < 4; ++c) z[c] = ldu256(qs + 32 * c);
      transpose4(z, r[j]);
    }
    pair_rows(r[0], r[1], tv);
    const __m256i m4 = _mm256_set1_epi8(0x0f);
    for (int v = 0; v < 8; ++v) {
      t.w[0][v] = _mm256_and_si256(tv[v], m4);
      t.w[1][v] = _mm256_and_si256(_mm256_srli_epi16(tv[v], 4), m4);
    }
    if constexpr (kQh) {
      const __m256i h0 = ldu256(blk[0] + 16), h1 = ldu256(blk[1] + 16);
      const __m256i c16 = _mm256_set1_epi8(16);
      for (int v = 0; v < 8; ++v) {
        const __m256i h = spread_dword(h0, h1, v);
        for (int p = 0; p < 2; ++p) {
          const int b = 0x01010101 << p;
          const __m256i bit =
              _mm256_setr_epi32(b, b << 2, b << 4, b << 6, b, b << 2, b << 4, b << 6);
          const __m256i set = _mm256_cmpeq_epi8(_mm256_and_si256(h, bit), bit);
          t.w[p][v] = _mm256_or_si256(t.w[p][v], _mm256_and_si256(set, c16));
        }
      }
    }
    __m256i sp;
    pairs_k4(blk, sp, t.mp);
    t.sc[0][0] = _mm256_cvtepi32_ps(_mm256_and_si256(sp, _mm256_set1_epi32(0xffff)));
    t.sc[0][1] = _mm256_cvtepi32_ps(_mm256_srli_epi32(sp, 16));
    f16_per_row(blk, 0, t.d, t.dmin);
  }
  static __m256 dot(const KTile& t, const int8_t* q, const int32_t* ext, float da, __m256 f) {
    __m256i acc[2];
    for (int p = 0; p < 2; ++p)
      acc[p] =
          dot4(t.w[p] + 4, q + 128 * p + 64, dot4(t.w[p], q + 128 * p, _mm256_setzero_si256()));
    const __m256 i = _mm256_fmadd_ps(_mm256_cvtepi32_ps(acc[1]), t.sc[0][1],
                                     _mm256_mul_ps(_mm256_cvtepi32_ps(acc[0]), t.sc[0][0]));
    const __m256 m = _mm256_cvtepi32_ps(_mm256_madd_epi16(t.mp, bcast128(ext)));
    const __m256 dav = _mm256_set1_ps(da);
    f = _mm256_fmadd_ps(_mm256_mul_ps(t.d, dav), i, f);
    return _mm256_fnmadd_ps(_mm256_mul_ps(t.dmin, dav), m, f);
  }
};

struct Q6K {
  static constexpr int kBytes = 210;
  static void load(const uint8_t* const blk[2], KTile& t) {
    const __m256i nib_shift = _mm256_setr_epi32(0, 0, 4, 4, 0, 0, 4, 4);
    const __m256i top_l = _mm256_setr_epi32(4, 2, 0, 32, 4, 2, 0, 32);  // shifts >= 32 give 0
    const __m256i top_r = _mm256_setr_epi32(32, 32, 32, 2, 32, 32, 32, 2);
    const __m256i m4 = _mm256_set1_epi8(0x0f), m30 = _mm256_set1_epi8(0x30);
    __m256i s16[2];
    for (int j = 0; j < 2; ++j)
      s16[j] =
          _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(blk[j] + 192)));
    for (int h = 0; h < 2; ++h) {
      // quarter c, chunk v: ql dword 16h + 8(c & 1) + v -> per row [L0[v] L1[v] L0[v] L1[v]]
      __m256i r[2][4], tv[8];
      for (int j = 0; j < 2; ++j) {
        const __m256i l0 = ldu256(blk[j] + 64 * h), l1 = ldu256(blk[j] + 64 * h + 32);
        const __m256i lo = _mm256_unpacklo_epi32(l0, l1), hi = _mm256_unpackhi_epi32(l0, l1);
        r[j][0] = _mm256_shuffle_epi32(lo, 0x44);
        r[j][1] = _mm256_shuffle_epi32(lo, 0xee);
        r[j][2] = _mm256_shuffle_epi32(hi, 0x44);
        r[j][3] = _mm256_shuffle_epi32(hi, 0xee);
      }
      pair_rows(r[0], r[1], tv);
      const __m256i h0 = ldu256(blk[0] + 128 + 32 * h), h1 = ldu256(blk[1] + 128 + 32 * h);
      for (int v = 0; v < 8; ++v) {
        const __m256i lo = _mm256_and_si256(_mm256_srlv_epi32(tv[v], nib_shift), m4);
        const __m256i hq = spread_dword(h0, h1, v);
        const __m256i top =
            _mm256_or_si256(_mm256_sllv_epi32(hq, top_l), _mm256_srlv_epi32(hq, top_r));
        t.w[h][v] = _mm256_or_si256(lo, _mm256_and_si256(top, m30));
      }
      const __m256i sp = h == 0 ? _mm256_permute2x128_si256(s16[0], s16[1], 0x20)
                                : _mm256_permute2x128_si256(s16[0], s16[1], 0x31);
      t.sc[h][0] = _mm256_cvtepi32_ps(_mm256_srai_epi32(_mm256_slli_epi32(sp, 16), 16));
      t.sc[h][1] = _mm256_cvtepi32_ps(_mm256_srai_epi32(sp, 16));
    }
    __m256 unused;
    f16_per_row(blk, 206, unused, t.d);  // d: high half of the dword at 206
  }
  static __m256 dot(const KTile& t, const int8_t* q, const int32_t* ext, float da, __m256 f) {
    const __m256 dd = _mm256_mul_ps(t.d, _mm256_set1_ps(da));
    for (int h = 0; h < 2; ++h) {
      const __m256i a0 = dot4(t.w[h], q + 128 * h, bcast128(ext + 8 * h));
      const __m256i a1 = dot4(t.w[h] + 4, q + 128 * h + 64, bcast128(ext + 8 * h + 4));
      const __m256 i = _mm256_fmadd_ps(_mm256_cvtepi32_ps(a1), t.sc[h][1],
                                       _mm256_mul_ps(_mm256_cvtepi32_ps(a0), t.sc[h][0]));
      f = _mm256_fmadd_ps(dd, i, f);
    }
    return f;
  }
};

// 2 rows (p, n_rows of them real) x B activation rows over all super-blocks.
template <class K, int B>
void micro(const uint8_t* const p[2], int n_rows, const ActQ8_256* a, int64_t nsb, float* const* y,
           const uint8_t* pf, size_t pf_bytes) {
  __m256 f[B];
  for (int b = 0; b < B; ++b) f[b] = _mm256_setzero_ps();
  for (int64_t i = 0; i < nsb; ++i) {
    prefetch_slice(pf, pf_bytes, i, nsb);
    const uint8_t* blk[2] = {p[0] + i * K::kBytes, p[1] + i * K::kBytes};
    KTile t;
    K::load(blk, t);
    for (int b = 0; b < B; ++b)
      f[b] = K::dot(t, a[b].qs + 256 * i, a[b].ext + 16 * i, a[b].d[i], f[b]);
  }
  for (int b = 0; b < B; ++b) {
    const __m256 t = _mm256_add_ps(f[b], _mm256_permute_ps(f[b], 0xb1));
    const __m256 u = _mm256_add_ps(t, _mm256_permute_ps(t, 0x4e));
    y[b][0] = _mm256_cvtss_f32(u);
    if (n_rows > 1) y[b][1] = _mm_cvtss_f32(_mm256_extractf128_ps(u, 1));
  }
}

template <class K, int B>
void rows_pass(const TileArgs& t, int64_t b0) {
  ActQ8_256 a[B];
  for (int b = 0; b < B; ++b)
    a[b] = act_q8_256(t.act + size_t(b0 + b) * t.act_stride, t.act_layout);
  const int64_t nsb = t.n_in / 256;
  for (int64_t r0 = 0; r0 < t.n_rows; r0 += 2) {
    const int n = int(std::min<int64_t>(2, t.n_rows - r0));
    const uint8_t* p[2] = {t.w + size_t(r0) * t.w_stride, t.w + size_t(r0 + n - 1) * t.w_stride};
    float* y[B];
    for (int b = 0; b < B; ++b) y[b] = t.y + (b0 + b) * t.ldy + r0;
    const int64_t next = std::min<int64_t>(2, std::max<int64_t>(0, t.n_rows - r0 - 2));
    micro<K, B>(p, n, a, nsb, y, t.w + size_t(r0 + 2) * t.w_stride, size_t(next) * t.w_stride);
  }
}

template <class K>
void tile_k(const TileArgs& t) {
  int64_t b0 = 0;
  for (; b0 + 4 <= t.n_batch; b0 += 4) rows_pass<K, 4>(t, b0);
  if (b0 + 2 <= t.n_batch) rows_pass<K, 2>(t, b0), b0 += 2;
  if (b0 < t.n_batch) rows_pass<K, 1>(t, b0);
}

}  // namespace

TileFn tile_k_avx2(DType t) {
  switch (t) {
    case DType::Q4_K:
      return tile_k<Q45K<false>>;
    case DType::Q5_K:
      return tile_k<Q45K<true>>;
    case DType::Q6_K:
      return tile_k<Q6K>;
    default:
      return nullptr;
  }
}

}  // namespace kiln::cpu::detail
