// AVX-512 kernels for float weights (f32, f16 via F16C, bf16 by shifting)
// against float32 activations: 4 weight rows x up to 4 activation rows per
// pass, one zmm accumulator per pair whose 16 lanes are exactly the canonical
// acc[e % 16] of matmul_kernels.h, reduced by the canonical tree at the end.
#include <immintrin.h>

#include <algorithm>

#include "kiln/backend/cpu/matmul_kernels.h"

// GCC 12 warns about the deliberately undefined upper halves inside its own
// AVX-512 intrinsics (_mm512_undefined_*): a known false positive.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"

namespace kiln::cpu::detail {
namespace {

template <DType kT>
inline __m512 load_w(const uint8_t* w, int64_t e, __mmask16 m) {
  if constexpr (kT == DType::F32) {
    return _mm512_maskz_loadu_ps(m, w + 4 * e);
  } else {
    const __m256i h = _mm256_maskz_loadu_epi16(m, w + 2 * e);
    if constexpr (kT == DType::F16) return _mm512_cvtph_ps(h);
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
  }
}

// Canonical tree: s8 = lanes l + l+8, s4 = l + l+4, s2 = l + l+2, s2[0] + s2[1].
inline float reduce16(__m512 v) {
  const __m256 s8 = _mm256_add_ps(_mm512_castps512_ps256(v), _mm512_extractf32x8_ps(v, 1));
  const __m128 s4 = _mm_add_ps(_mm256_castps256_ps128(s8), _mm256_extractf128_ps(s8, 1));
  const __m128 s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
  return _mm_cvtss_f32(_mm_add_ss(s2, _mm_shuffle_ps(s2, s2, 1)));
}

template <DType kT, int R, int B>
void micro(const uint8_t* const* w, const float* const* x, int64_t n, float* const* y,
           const uint8_t* pf, size_t pf_bytes) {
  __m512 acc[R][B];
  for (int r = 0; r < R; ++r)
    for (int b = 0; b < B; ++b) acc[r][b] = _mm512_setzero_ps();
  int64_t e = 0;
  const int64_t steps = n / 16;
  for (; e + 16 <= n; e += 16) {
    if ((e & 63) == 0) prefetch_slice(pf, pf_bytes, e / 64, (steps + 3) / 4);
    __m512 xv[B];
    for (int b = 0; b < B; ++b) xv[b] = _mm512_loadu_ps(x[b] + e);
    for (int r = 0; r < R; ++r) {
      const __m512 wv = load_w<kT>(w[r], e, 0xffff);
      for (int b = 0; b < B; ++b) acc[r][b] = _mm512_fmadd_ps(wv, xv[b], acc[r][b]);
    }
  }
  if (e < n) {  // lanes past n keep their value (canonical: untouched)
    const __mmask16 m = __mmask16((1u << (n - e)) - 1);
    __m512 xv[B];
    for (int b = 0; b < B; ++b) xv[b] = _mm512_maskz_loadu_ps(m, x[b] + e);
    for (int r = 0; r < R; ++r) {
      const __m512 wv = load_w<kT>(w[r], e, m);
      for (int b = 0; b < B; ++b) acc[r][b] = _mm512_mask3_fmadd_ps(wv, xv[b], acc[r][b], m);
    }
  }
  for (int r = 0; r < R; ++r)
    for (int b = 0; b < B; ++b)
      if (y[r * B + b]) *y[r * B + b] = reduce16(acc[r][b]);
}

template <DType kT, int B>
void rows_pass(const TileArgs& t, int64_t b0) {
  const float* x[B];
  for (int b = 0; b < B; ++b)
    x[b] = reinterpret_cast<const float*>(t.act + size_t(b0 + b) * t.act_stride);
  for (int64_t r0 = 0; r0 < t.n_rows; r0 += 4) {
    const int n = int(std::min<int64_t>(4, t.n_rows - r0));
    const uint8_t* w[4];
    float* y[4 * B];
    for (int r = 0; r < 4; ++r) {
      w[r] = t.w + size_t(r0 + std::min(r, n - 1)) * t.w_stride;
      for (int b = 0; b < B; ++b) y[r * B + b] = r < n ? t.y + (b0 + b) * t.ldy + r0 + r : nullptr;
    }
    const int64_t next = std::min<int64_t>(4, std::max<int64_t>(0, t.n_rows - r0 - 4));
    micro<kT, 4, B>(w, x, t.n_in, y, t.w + size_t(r0 + 4) * t.w_stride, size_t(next) * t.w_stride);
  }
}

template <DType kT>
void tile_f(const TileArgs& t) {
  int64_t b0 = 0;
  for (; b0 + 4 <= t.n_batch; b0 += 4) rows_pass<kT, 4>(t, b0);
  for (; b0 < t.n_batch; ++b0) rows_pass<kT, 1>(t, b0);
}

}  // namespace

TileFn tile_f_avx512(DType t) {
  switch (t) {
    case DType::F32:
      return tile_f<DType::F32>;
    case DType::F16:
      return tile_f<DType::F16>;
    case DType::BF16:
      return tile_f<DType::BF16>;
    default:
      return nullptr;
  }
}

}  // namespace kiln::cpu::detail
