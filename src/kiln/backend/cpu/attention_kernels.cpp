// Portable attention inner loops (canonical order, see attention_kernels.h)
// and the run-time choice of the kernel set.
#include "kiln/backend/cpu/attention_kernels.h"

#include <cmath>
#include <cstdlib>
#include <cstring>

#include "kiln/core/fp16.h"

namespace kiln::cpu {
namespace {

template <class Load>
float dot_canonical(const float* q, int64_t n, const Load& k_at) {
  float acc[16] = {};
  for (int64_t i0 = 0; i0 < n; i0 += 16)
    for (int l = 0; l < 16; ++l) {
      const int64_t e = i0 + l;
      acc[l] = e < n ? std::fma(q[e], k_at(e), acc[l]) : std::fma(0.0f, 0.0f, acc[l]);
    }
  float s8[8], s4[4];
  for (int l = 0; l < 8; ++l) s8[l] = acc[l] + acc[l + 8];
  for (int l = 0; l < 4; ++l) s4[l] = s8[l] + s8[l + 4];
  const float s2_0 = s4[0] + s4[2], s2_1 = s4[1] + s4[3];
  return s2_0 + s2_1;
}

float dot_f32(const float* q, const float* k, int64_t n) {
  return dot_canonical(q, n, [k](int64_t e) { return k[e]; });
}
float dot_f16(const float* q, const uint16_t* k, int64_t n) {
  return dot_canonical(q, n, [k](int64_t e) { return fp16_to_f32(k[e]); });
}
void axpy_f32(float* out, float w, const float* v, int64_t n) {
  for (int64_t e = 0; e < n; ++e) out[e] = std::fma(w, v[e], out[e]);
}
void axpy_f16(float* out, float w, const uint16_t* v, int64_t n) {
  for (int64_t e = 0; e < n; ++e) out[e] = std::fma(w, fp16_to_f32(v[e]), out[e]);
}

const AttentionKernels kScalar{&dot_f32, &dot_f16, &axpy_f32, &axpy_f16, "scalar"};

}  // namespace

const AttentionKernels& attention_kernels_scalar() {
  return kScalar;
}

const AttentionKernels& attention_kernels() {
  const char* cap = std::getenv("KILN_CPU_ISA");
#if defined(__x86_64__) || defined(__i386__)
  static const bool avx2 = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
           __builtin_cpu_supports("f16c");
  }();
  if (avx2 && !(cap && std::strcmp(cap, "scalar") == 0)) return attention_kernels_avx2_set();
#endif
  return kScalar;
}

}  // namespace kiln::cpu
