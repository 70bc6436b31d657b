// Inner loops of the fast attention path: q.k dot products and the weighted
// sum of V rows, over float32 or f16 cache rows. Chosen at run time (AVX2 +
// FMA + F16C, or portable scalar); both give bit-identical results because
// they follow one canonical order:
//   dot:  16 lane accumulators, acc[e % 16] = fma(q_e, k_e, acc[e % 16]) for
//         e = 0..n-1 in order, the last partial group of 16 zero-padded; then
//         s8[l] = acc[l] + acc[l+8]; s4[l] = s8[l] + s8[l+4];
//         s2[l] = s4[l] + s4[l+2]; result = s2[0] + s2[1].
//   axpy: out[e] = fma(w, v_e, out[e]).
// f16 values are widened exactly before use.
#pragma once

#include <cstdint>

namespace kiln::cpu {

struct AttentionKernels {
  float (*dot_f32)(const float* q, const float* k, int64_t n);
  float (*dot_f16)(const float* q, const uint16_t* k, int64_t n);
  void (*axpy_f32)(float* out, float w, const float* v, int64_t n);
  void (*axpy_f16)(float* out, float w, const uint16_t* v, int64_t n);
  const char* isa;
};

// The best set this CPU supports (KILN_CPU_ISA=scalar forces the portable one,
// as for cpu::matmul).
const AttentionKernels& attention_kernels();
const AttentionKernels& attention_kernels_scalar();
const AttentionKernels& attention_kernels_avx2_set();  // only where the CPU has AVX2+FMA+F16C

}  // namespace kiln::cpu
