// AVX2 kernels for float weights (f32, f16 via F16C, bf16) against float32
// activations: the canonical 16 lanes per pair are two ymm accumulators
// (lanes 0-7 and 8-15), reduced by the canonical tree of matmul_kernels.h.
#include <immintrin.h>

#include <algorithm>
#include <cstring>

#include "kiln/backend/cpu/matmul_kernels.h"
#include "kiln/core/fp16.h"

namespace kiln::cpu::detail {
namespace {

template <DType kT>
inline __m256 load8(const uint8_t* w, int64_t e) {
  if constexpr (kT == DType::F32) {
    return _mm256_loadu_ps(reinterpret_cast<const float*>(w) + e);
  } else {
    const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(w + 2 * e));
    if constexpr (kT == DType::F16) return _mm256_cvtph_ps(h);
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
  }
}

template <DType kT>
inline float scalar_w(const uint8_t* w, int64_t e) {
  if constexpr (kT == DType::F32) {
    float v;
    std::memcpy(&v, w + 4 * e, 4);
    return v;
  } else {
    uint16_t h;
    std::memcpy(&h, w + 2 * e, 2);
    return kT == DType::F16 ? fp16_to_f32(h) : bf16_to_f32(h);
  }
}

inline float reduce16(__m256 lo, __m256 hi) {
  const __m256 s8 = _mm256_add_ps(lo, hi);
  const __m128 s4 = _mm_add_ps(_mm256_castps256_ps128(s8), _mm256_extractf128_ps(s8, 1));
  const __m128 s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
  return _mm_cvtss_f32(_mm_add_ss(s2, _mm_shuffle_ps(s2, s2, 1)));
}

template <DType kT, int R, int B>
void micro(const uint8_t* const* w, const float* const* x, int64_t n, float* const* y) {
  __m256 lo[R][B], hi[R][B];
  for (int r = 0; r < R; ++r)
    for (int b = 0; b < B; ++b) lo[r][b] = hi[r][b] = _mm256_setzero_ps();
  int64_t e = 0;
  for (; e + 16 <= n; e += 16) {
    for (int r = 0; r < R; ++r) {
      const __m256 w0 = load8<kT>(w[r], e), w1 = load8<kT>(w[r], e + 8);
      for (int b = 0; b < B; ++b) {
        lo[r][b] = _mm256_fmadd_ps(w0, _mm256_loadu_ps(x[b] + e), lo[r][b]);
        hi[r][b] = _mm256_fmadd_ps(w1, _mm256_loadu_ps(x[b] + e + 8), hi[r][b]);
      }
    }
  }
  if (e < n) {
    // Tail through zero-padded copies; lanes past n keep their value.
    const int m = int(n - e);
    alignas(32) float xt[B][16] = {}, wt[16] = {};
    alignas(32) int32_t live[16] = {};
    for (int l = 0; l < m; ++l) live[l] = -1;
    const __m256 live0 = _mm256_load_ps(reinterpret_cast<const float*>(live));
    const __m256 live1 = _mm256_load_ps(reinterpret_cast<const float*>(live + 8));
    for (int b = 0; b < B; ++b) std::memcpy(xt[b], x[b] + e, size_t(m) * 4);
    for (int r = 0; r < R; ++r) {
      for (int l = 0; l < m; ++l) wt[l] = scalar_w<kT>(w[r], e + l);
      const __m256 w0 = _mm256_load_ps(wt), w1 = _mm256_load_ps(wt + 8);
      for (int b = 0; b < B; ++b) {
        lo[r][b] =
            _mm256_blendv_ps(lo[r][b], _mm256_fmadd_ps(w0, _mm256_load_ps(xt[b]), lo[r][b]), live0);
        hi[r][b] = _mm256_blendv_ps(
            hi[r][b], _mm256_fmadd_ps(w1, _mm256_load_ps(xt[b] + 8), hi[r][b]), live1);
      }
    }
  }
  for (int r = 0; r < R; ++r)
    for (int b = 0; b < B; ++b)
      if (y[r * B + b]) *y[r * B + b] = reduce16(lo[r][b], hi[r][b]);
}

template <DType kT, int R, int B>
void pass(const TileArgs& t, int64_t b0) {
  const float* x[B];
  for (int b = 0; b < B; ++b)
    x[b] = reinterpret_cast<const float*>(t.act + size_t(b0 + b) * t.act_stride);
  for (int64_t r0 = 0; r0 < t.n_rows; r0 += R) {
    const int n = int(std::min<int64_t>(R, t.n_rows - r0));
    const uint8_t* w[R];
    float* y[R * B];
    for (int r = 0; r < R; ++r) {
      w[r] = t.w + size_t(r0 + std::min(r, n - 1)) * t.w_stride;
      for (int b = 0; b < B; ++b) y[r * B + b] = r < n ? t.y + (b0 + b) * t.ldy + r0 + r : nullptr;
    }
    micro<kT, R, B>(w, x, t.n_in, y);
  }
}

template <DType kT>
void tile_f(const TileArgs& t) {
  int64_t b0 = 0;
  for (; b0 + 2 <= t.n_batch; b0 += 2) pass<kT, 2, 2>(t, b0);
  if (b0 < t.n_batch) pass<kT, 4, 1>(t, b0);
}

}  // namespace

TileFn tile_f_avx2(DType t) {
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
