// Fused dequantize + matrix-vector products for small batches (decode): each
// weight byte is read once from memory and applied to every batch row.
#pragma once

#include <cuda_runtime.h>

#include "kiln/backend/cuda/device_types.h"

namespace kiln::cuda {

constexpr int kMatvecMaxRows = 8;

// True when w's matvec wants 8-bit activations (repacked q4_0 / q8_0: dp4a).
inline bool matvec_wants_q8(const DeviceMatrix& w) { return w.repacked(); }

// y[j][0..n_out) = W x_j (+ bias) for j < n_rows <= kMatvecMaxRows; with
// `accumulate` the result is added to y (residual connections). y has ld ldy.
// matvec_q8: x as 8-bit blocks (repacked q4_0/q8_0 only); matvec_f32: any type.
void matvec_q8(const DeviceMatrix& w, const ActQ8& x, int64_t n_rows, float* y, int64_t ldy,
               const float* bias, bool accumulate, cudaStream_t stream);

// A deferred RMSNorm scale (see rms_norm_q8_deferred): row j's dot products
// are multiplied by 1 / sqrt(sum(ssq[j][0..n_ssq)) / n + eps) before bias.
struct RowScale {
  const float* ssq = nullptr;  // [n_rows][ld]
  int64_t ld = 0;
  int64_t n_ssq = 0;
  int64_t n = 0;
  float eps = 0.0f;
};
void matvec_q8(const DeviceMatrix& w, const ActQ8& x, const RowScale& scale, int64_t n_rows,
               float* y, int64_t ldy, const float* bias, bool accumulate, cudaStream_t stream);
void matvec_f32(const DeviceMatrix& w, const float* x, int64_t ldx, int64_t n_rows, float* y,
                int64_t ldy, const float* bias, bool accumulate, cudaStream_t stream);

// Loads every instantiation of the 8-bit-activation kernel (1-8 rows) and
// the float-activation kernels of type t, which CUDA would otherwise load
// lazily at the first step of each shape (on a request's time).
void matvec_prime(DType t);

}  // namespace kiln::cuda
