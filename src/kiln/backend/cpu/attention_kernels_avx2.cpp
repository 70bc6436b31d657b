// AVX2 + FMA + F16C attention inner loops, bit-identical to the portable ones
// (canonical order in attention_kernels.h): lanes 0-7 and 8-15 of the 16
// accumulators are two __m256 registers.
#include <immintrin.h>

#include "kiln/backend/cpu/attention_kernels.h"

namespace kiln::cpu {
namespace {

inline __m256 load8_f32(const float* p, int64_t n) {  // n < 8: zero-padded
  if (n >= 8) return _mm256_loadu_ps(p);
  alignas(32) float t[8] = {};
  for (int64_t i = 0; i < n; ++i) t[i] = p[i];
  return _mm256_load_ps(t);
}
inline __m256 load8_f16(const uint16_t* p, int64_t n) {
  if (n >= 8) return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  alignas(16) uint16_t t[8] = {};
  for (int64_t i = 0; i < n; ++i) t[i] = p[i];
  return _mm256_cvtph_ps(_mm_load_si128(reinterpret_cast<const __m128i*>(t)));
}

inline float reduce(__m256 acc0, __m256 acc1) {
  const __m256 s8 = _mm256_add_ps(acc0, acc1);  // s8[l] = acc[l] + acc[l+8]
  const __m128 s4 = _mm_add_ps(_mm256_castps256_ps128(s8), _mm256_extractf128_ps(s8, 1));
  const __m128 s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));  // s2[l] = s4[l] + s4[l+2]
  return _mm_cvtss_f32(_mm_add_ss(s2, _mm_shuffle_ps(s2, s2, 1)));
}

template <class Load, class T>
inline float dot(const float* q, const T* k, int64_t n, const Load& load) {
  __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(q + i), load(k + i, 8), acc0);
    acc1 = _mm256_fmadd_ps(_mm256_loadu_ps(q + i + 8), load(k + i + 8, 8), acc1);
  }
  if (i < n) {  // zero-padded last group: fma(0, 0, acc) as the canonical order says
    const int64_t r = n - i;
    acc0 = _mm256_fmadd_ps(load8_f32(q + i, r), load(k + i, r), acc0);
    const int64_t r1 = r > 8 ? r - 8 : 0;
    acc1 = _mm256_fmadd_ps(load8_f32(q + i + 8, r1), load(k + i + 8, r1), acc1);
  }
  return reduce(acc0, acc1);
}

float dot_f32(const float* q, const float* k, int64_t n) {
  return dot(q, k, n, [](const float* p, int64_t m) { return load8_f32(p, m); });
}
float dot_f16(const float* q, const uint16_t* k, int64_t n) {
  return dot(q, k, n, [](const uint16_t* p, int64_t m) { return load8_f16(p, m); });
}

void axpy_f32(float* out, float w, const float* v, int64_t n) {
  const __m256 wv = _mm256_set1_ps(w);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    _mm256_storeu_ps(out + i,
                     _mm256_fmadd_ps(wv, _mm256_loadu_ps(v + i), _mm256_loadu_ps(out + i)));
  for (; i < n; ++i)
    out[i] = _mm_cvtss_f32(_mm_fmadd_ss(_mm_set_ss(w), _mm_set_ss(v[i]), _mm_set_ss(out[i])));
}

void axpy_f16(float* out, float w, const uint16_t* v, int64_t n) {
  const __m256 wv = _mm256_set1_ps(w);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    _mm256_storeu_ps(out + i, _mm256_fmadd_ps(wv, load8_f16(v + i, 8), _mm256_loadu_ps(out + i)));
  if (i < n) {
    alignas(32) float t[8];
    _mm256_store_ps(t, load8_f16(v + i, n - i));
    for (int64_t j = 0; i + j < n; ++j)
      out[i + j] =
          _mm_cvtss_f32(_mm_fmadd_ss(_mm_set_ss(w), _mm_set_ss(t[j]), _mm_set_ss(out[i + j])));
  }
}

const AttentionKernels kAvx2{&dot_f32, &dot_f16, &axpy_f32, &axpy_f16, "avx2"};

}  // namespace

// Only called after attention_kernels() checked the CPU (this file is built
// with AVX2 code generation, so it must not run the check itself).
const AttentionKernels& attention_kernels_avx2_set() {
  return kAvx2;
}

}  // namespace kiln::cpu
