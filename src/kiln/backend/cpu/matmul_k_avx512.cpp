// AVX-512 VNNI kernels for the k-quants (q4_k q5_k q6_k) against q8_K-style
// activations (256-element blocks, one f32 scale; layout in matmul_kernels.h).
//
// Same idea as the 32-element kernels: a zmm's 16 dword lanes are [row j]
// [slot c] for 4 weight rows, the weights of a super-block are permuted once
// so that zmm v holds 4 levels per lane, and the activations are stored
// permuted the same way (one 16-byte chunk per v, broadcast to the 4 rows).
// Eight vpdpbusd give each lane the exact dot product of one sub-block (two
// passes: sub-blocks 2c and 2c+1 for q4_k/q5_k, the two 16-element halves of
// quarter c for q6_k); the scale products are formed in float, exactly
// (|I| < 2^24), so the canonical float step needs no horizontal sums at all.
// The weight unpacking is shared by all B activation rows of a tile.
#include <immintrin.h>

#include <algorithm>
#include <cstring>

#include "kiln/backend/cpu/matmul_kernels.h"

// GCC 12 warns about the deliberately undefined upper halves inside its own
// AVX-512 intrinsics (_mm512_undefined_*): a known false positive.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"

namespace kiln::cpu::detail {
namespace {

inline uint32_t ld32(const uint8_t* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}
inline __m512i bcast128(const void* p) {
  return _mm512_broadcast_i32x4(_mm_loadu_si128(static_cast<const __m128i*>(p)));
}
inline __m512i ins4(const __m128i v[4]) {
  __m512i z = _mm512_castsi128_si512(v[0]);
  z = _mm512_inserti32x4(z, v[1], 1);
  z = _mm512_inserti32x4(z, v[2], 2);
  return _mm512_inserti32x4(z, v[3], 3);
}
// r[j] holds 4 groups g; t[g] = [r0 g | r1 g | r2 g | r3 g].
inline void transpose_groups(const __m512i r[4], __m512i t[4]) {
  const __m512i x0 = _mm512_shuffle_i32x4(r[0], r[1], 0x44),
                x1 = _mm512_shuffle_i32x4(r[0], r[1], 0xee);
  const __m512i x2 = _mm512_shuffle_i32x4(r[2], r[3], 0x44),
                x3 = _mm512_shuffle_i32x4(r[2], r[3], 0xee);
  t[0] = _mm512_shuffle_i32x4(x0, x2, 0x88);
  t[1] = _mm512_shuffle_i32x4(x0, x2, 0xdd);
  t[2] = _mm512_shuffle_i32x4(x1, x3, 0x88);
  t[3] = _mm512_shuffle_i32x4(x1, x3, 0xdd);
}
// [dword v of 4 rows' 8-dword ymm h[j]] broadcast over each row's group: lane [j][c] = h[j][v].
inline __m512i spread_dword(const __m512i& h01, const __m512i& h23, int v) {
  const __m512i idx = _mm512_setr_epi32(v, v, v, v, 8 + v, 8 + v, 8 + v, 8 + v, 16 + v, 16 + v,
                                        16 + v, 16 + v, 24 + v, 24 + v, 24 + v, 24 + v);
  return _mm512_permutex2var_epi32(h01, idx, h23);
}
inline __m512i pair_rows(const uint8_t* a, const uint8_t* b) {
  return _mm512_inserti64x4(
      _mm512_castsi256_si512(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(a))),
      _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b)), 1);
}

// One super-block of 4 rows, unpacked: w[pass][v] u8 levels, lanes [row][slot].
struct KTile {
  __m512i w[2][8];
  __m512 sc[2][2];  // q4_k/q5_k: [0][0] scale of sub-block 2c, [0][1] of 2c+1; q6_k: [half][a]
  __m512i mp;       // q4_k/q5_k: (m_2c | m_2c+1 << 16) per lane
  __m512 d, dmin;   // per row
};

// q4_k / q5_k scales and mins of 4 rows as int16 pairs per lane [row j][slot
// c]: dword = sc_2c | sc_2c+1 << 16 (and the same for the mins), decoded for
// the 4 rows at once (GGUF's 12-byte packing: a = bytes 0-3, b = 4-7, c = 8-11).
inline void pairs_k4(const uint8_t* const blk[4], __m512i& sc, __m512i& m) {
  __m128i r[4];
  for (int j = 0; j < 4; ++j) r[j] = _mm_loadu_si128(reinterpret_cast<const __m128i*>(blk[j] + 4));
  const __m128i t0 = _mm_unpacklo_epi32(r[0], r[1]), t1 = _mm_unpacklo_epi32(r[2], r[3]);
  const __m128i t2 = _mm_unpackhi_epi32(r[0], r[1]), t3 = _mm_unpackhi_epi32(r[2], r[3]);
  const __m128i a = _mm_unpacklo_epi64(t0, t1), b = _mm_unpackhi_epi64(t0, t1),
                c = _mm_unpacklo_epi64(t2, t3);
  const __m128i m3f = _mm_set1_epi8(0x3f), m0f = _mm_set1_epi8(0x0f), m30 = _mm_set1_epi8(0x30);
  const __m128i sl = _mm_and_si128(a, m3f), ml = _mm_and_si128(b, m3f);
  const __m128i sh = _mm_or_si128(_mm_and_si128(c, m0f), _mm_and_si128(_mm_srli_epi32(a, 2), m30));
  const __m128i mh = _mm_or_si128(_mm_and_si128(_mm_srli_epi32(c, 4), m0f),
                                  _mm_and_si128(_mm_srli_epi32(b, 2), m30));
  // per row: 8 bytes sc0..sc7 -> 8 int16 = 4 pair dwords
  sc = _mm512_cvtepu8_epi16(
      _mm256_set_m128i(_mm_unpackhi_epi32(sl, sh), _mm_unpacklo_epi32(sl, sh)));
  m = _mm512_cvtepu8_epi16(
      _mm256_set_m128i(_mm_unpackhi_epi32(ml, mh), _mm_unpacklo_epi32(ml, mh)));
}

// f16 fields at `off` (and off + 2) of 4 rows -> lanes [row j][*] (F16C).
inline void f16_per_row(const uint8_t* const blk[4], int off, __m512& d, __m512& d2) {
  const __m128i h = _mm_setr_epi32(int(ld32(blk[0] + off)), int(ld32(blk[1] + off)),
                                   int(ld32(blk[2] + off)), int(ld32(blk[3] + off)));
  const __m512 f = _mm512_castps256_ps512(_mm256_cvtph_ps(h));  // [d0 e0 d1 e1 d2 e2 d3 e3]
  d = _mm512_permutexvar_ps(_mm512_setr_epi32(0, 0, 0, 0, 2, 2, 2, 2, 4, 4, 4, 4, 6, 6, 6, 6), f);
  d2 = _mm512_permutexvar_ps(_mm512_setr_epi32(1, 1, 1, 1, 3, 3, 3, 3, 5, 5, 5, 5, 7, 7, 7, 7), f);
}

template <bool kQh>
struct Q45K {
  static constexpr int kBytes = kQh ? 176 : 144;
  static void load(const uint8_t* const blk[4], KTile& t) {
    // qs dword 8c + v (c: 32-byte chunk) -> lane [j][c] of vector v
    const __m512i ia = _mm512_setr_epi32(0, 8, 16, 24, 1, 9, 17, 25, 2, 10, 18, 26, 3, 11, 19, 27);
    const __m512i ib = _mm512_add_epi32(ia, _mm512_set1_epi32(4));
    __m512i ra[4], rb[4], tv[8];
    for (int j = 0; j < 4; ++j) {
      const uint8_t* qs = blk[j] + (kQh ? 48 : 16);
      const __m512i q0 = _mm512_loadu_si512(qs), q1 = _mm512_loadu_si512(qs + 64);
      ra[j] = _mm512_permutex2var_epi32(q0, ia, q1);
      rb[j] = _mm512_permutex2var_epi32(q0, ib, q1);
    }
    transpose_groups(ra, tv);
    transpose_groups(rb, tv + 4);
    const __m512i m4 = _mm512_set1_epi8(0x0f);
    for (int v = 0; v < 8; ++v) {
      t.w[0][v] = _mm512_and_si512(tv[v], m4);
      t.w[1][v] = _mm512_and_si512(_mm512_srli_epi16(tv[v], 4), m4);
    }
    if constexpr (kQh) {
      // element 4v + b of sub-block 2c + p: bit 2c + p of qh byte 4v + b
      const __m512i h01 = pair_rows(blk[0] + 16, blk[1] + 16),
                    h23 = pair_rows(blk[2] + 16, blk[3] + 16);
      const __m512i c16 = _mm512_set1_epi8(16);
      for (int v = 0; v < 8; ++v) {
        const __m512i h = spread_dword(h01, h23, v);
        for (int p = 0; p < 2; ++p) {
          const int b = 0x01010101 << p;
          const __m512i bit =
              _mm512_setr_epi32(b, b << 2, b << 4, b << 6, b, b << 2, b << 4, b << 6, b, b << 2,
                                b << 4, b << 6, b, b << 2, b << 4, b << 6);
          t.w[p][v] =
              _mm512_mask_add_epi8(t.w[p][v], _mm512_test_epi8_mask(h, bit), t.w[p][v], c16);
        }
      }
    }
    __m512i sp;
    pairs_k4(blk, sp, t.mp);
    t.sc[0][0] = _mm512_cvtepi32_ps(_mm512_and_si512(sp, _mm512_set1_epi32(0xffff)));
    t.sc[0][1] = _mm512_cvtepi32_ps(_mm512_srli_epi32(sp, 16));
    f16_per_row(blk, 0, t.d, t.dmin);
  }
  static __m512 dot(const KTile& t, const int8_t* q, const int32_t* ext, float da, __m512 f) {
    __m512i acc[2];
    for (int p = 0; p < 2; ++p) {
      acc[p] = _mm512_setzero_si512();
      for (int v = 0; v < 8; ++v)
        acc[p] = _mm512_dpbusd_epi32(acc[p], t.w[p][v], bcast128(q + 128 * p + 16 * v));
    }
    // I = sc_2c * dot_2c + sc_2c+1 * dot_2c+1, exact in float
    const __m512 i = _mm512_fmadd_ps(_mm512_cvtepi32_ps(acc[1]), t.sc[0][1],
                                     _mm512_mul_ps(_mm512_cvtepi32_ps(acc[0]), t.sc[0][0]));
    const __m512 m = _mm512_cvtepi32_ps(_mm512_madd_epi16(t.mp, bcast128(ext)));
    const __m512 dav = _mm512_set1_ps(da);
    f = _mm512_fmadd_ps(_mm512_mul_ps(t.d, dav), i, f);
    return _mm512_fnmadd_ps(_mm512_mul_ps(t.dmin, dav), m, f);
  }
};

struct Q6K {
  static constexpr int kBytes = 210;
  static void load(const uint8_t* const blk[4], KTile& t) {
    // half h, quarter c, chunk v: ql dword 16h + 8(c & 1) + v, nibble c >> 1
    const __m512i ia = _mm512_setr_epi32(0, 8, 0, 8, 1, 9, 1, 9, 2, 10, 2, 10, 3, 11, 3, 11);
    const __m512i ib = _mm512_add_epi32(ia, _mm512_set1_epi32(4));
    const __m512i nib_shift = _mm512_setr_epi32(0, 0, 4, 4, 0, 0, 4, 4, 0, 0, 4, 4, 0, 0, 4, 4);
    const __m512i top_rot = _mm512_setr_epi32(4, 2, 0, 30, 4, 2, 0, 30, 4, 2, 0, 30, 4, 2, 0, 30);
    const __m512i m4 = _mm512_set1_epi8(0x0f), m30 = _mm512_set1_epi8(0x30);
    __m128i scp[2][4];
    for (int j = 0; j < 4; ++j) {
      const __m256i s16 =
          _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(blk[j] + 192)));
      scp[0][j] = _mm256_castsi256_si128(s16);
      scp[1][j] = _mm256_extracti128_si256(s16, 1);
    }
    for (int h = 0; h < 2; ++h) {
      __m512i ra[4], rb[4], tv[8];
      for (int j = 0; j < 4; ++j) {
        const __m512i l = _mm512_loadu_si512(blk[j] + 64 * h);
        ra[j] = _mm512_permutexvar_epi32(ia, l);
        rb[j] = _mm512_permutexvar_epi32(ib, l);
      }
      transpose_groups(ra, tv);
      transpose_groups(rb, tv + 4);
      const __m512i h01 = pair_rows(blk[0] + 128 + 32 * h, blk[1] + 128 + 32 * h);
      const __m512i h23 = pair_rows(blk[2] + 128 + 32 * h, blk[3] + 128 + 32 * h);
      for (int v = 0; v < 8; ++v) {
        const __m512i lo = _mm512_and_si512(_mm512_srlv_epi32(tv[v], nib_shift), m4);
        const __m512i top =
            _mm512_and_si512(_mm512_rolv_epi32(spread_dword(h01, h23, v), top_rot), m30);
        t.w[h][v] = _mm512_or_si512(lo, top);
      }
      const __m512i sp = ins4(scp[h]);  // dword c = sc_8h+2c | sc_8h+2c+1 << 16 (signed)
      t.sc[h][0] = _mm512_cvtepi32_ps(_mm512_srai_epi32(_mm512_slli_epi32(sp, 16), 16));
      t.sc[h][1] = _mm512_cvtepi32_ps(_mm512_srai_epi32(sp, 16));
    }
    // d is the last field of the block: read it as the high half of a dword
    // ending at byte 210 (f16_per_row's second output).
    __m512 unused;
    f16_per_row(blk, 206, unused, t.d);
  }
  static __m512 dot(const KTile& t, const int8_t* q, const int32_t* ext, float da, __m512 f) {
    const __m512 dd = _mm512_mul_ps(t.d, _mm512_set1_ps(da));
    for (int h = 0; h < 2; ++h) {
      __m512i acc[2];
      for (int a = 0; a < 2; ++a) {
        acc[a] = bcast128(ext + 8 * h + 4 * a);  // -32 * sum of the 16 activations
        for (int v = 4 * a; v < 4 * a + 4; ++v)
          acc[a] = _mm512_dpbusd_epi32(acc[a], t.w[h][v], bcast128(q + 128 * h + 16 * v));
      }
      const __m512 i = _mm512_fmadd_ps(_mm512_cvtepi32_ps(acc[1]), t.sc[h][1],
                                       _mm512_mul_ps(_mm512_cvtepi32_ps(acc[0]), t.sc[h][0]));
      f = _mm512_fmadd_ps(dd, i, f);
    }
    return f;
  }
};

// 4 rows (p, n_rows of them real) x B activation rows over all super-blocks.
template <class K, int B>
void micro(const uint8_t* const p[4], int n_rows, const ActQ8_256* a, int64_t nsb, float* const* y,
           const uint8_t* pf, size_t pf_bytes) {
  __m512 f[B];
  for (int b = 0; b < B; ++b) f[b] = _mm512_setzero_ps();
  for (int64_t i = 0; i < nsb; ++i) {
    prefetch_slice(pf, pf_bytes, i, nsb);
    const uint8_t* blk[4];
    for (int j = 0; j < 4; ++j) blk[j] = p[j] + i * K::kBytes;
    KTile t;
    K::load(blk, t);
    for (int b = 0; b < B; ++b)
      f[b] = K::dot(t, a[b].qs + 256 * i, a[b].ext + 16 * i, a[b].d[i], f[b]);
  }
  const __m512i pick = _mm512_setr_epi32(0, 4, 8, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0);
  for (int b = 0; b < B; ++b) {
    const __m512 t =
        _mm512_add_ps(f[b], _mm512_permute_ps(f[b], 0xb1));  // (acc0 + acc1), (acc2 + acc3)
    const __m512 u = _mm512_add_ps(t, _mm512_permute_ps(t, 0x4e));
    _mm_mask_storeu_ps(y[b], __mmask8((1u << n_rows) - 1),
                       _mm512_castps512_ps128(_mm512_permutexvar_ps(pick, u)));
  }
}

template <class K, int B>
void rows_pass(const TileArgs& t, int64_t b0) {
  ActQ8_256 a[B];
  for (int b = 0; b < B; ++b)
    a[b] = act_q8_256(t.act + size_t(b0 + b) * t.act_stride, t.act_layout);
  const int64_t nsb = t.n_in / 256;
  for (int64_t r0 = 0; r0 < t.n_rows; r0 += 4) {
    const int n = int(std::min<int64_t>(4, t.n_rows - r0));
    const uint8_t* p[4];
    for (int j = 0; j < 4; ++j) p[j] = t.w + size_t(r0 + std::min(j, n - 1)) * t.w_stride;
    float* y[B];
    for (int b = 0; b < B; ++b) y[b] = t.y + (b0 + b) * t.ldy + r0;
    const int64_t next = std::min<int64_t>(4, std::max<int64_t>(0, t.n_rows - r0 - 4));
    micro<K, B>(p, n, a, nsb, y, t.w + size_t(r0 + 4) * t.w_stride, size_t(next) * t.w_stride);
  }
}

// Activation rows in tiles of 16, the remainder as 8 + 4 + 2 + 1 (see
// matmul_q_avx512.cpp).
template <class K>
void tile_k(const TileArgs& t) {
  int64_t b0 = 0;
  for (; b0 + 16 <= t.n_batch; b0 += 16) rows_pass<K, 16>(t, b0);
  for (; b0 + 8 <= t.n_batch; b0 += 8) rows_pass<K, 8>(t, b0);
  if (b0 + 4 <= t.n_batch) rows_pass<K, 4>(t, b0), b0 += 4;
  if (b0 + 2 <= t.n_batch) rows_pass<K, 2>(t, b0), b0 += 2;
  if (b0 < t.n_batch) rows_pass<K, 1>(t, b0);
}

}  // namespace

TileFn tile_k_avx512(DType t) {
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
