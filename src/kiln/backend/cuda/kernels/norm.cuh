// RMSNorm of rows, optionally also writing the result quantized to 8-bit
// blocks for the dp4a matvec; and plain 8-bit quantization of rows.
#pragma once

#include <cuda_runtime.h>

#include "kiln/backend/cuda/device_types.h"

namespace kiln::cuda {

// y[r] = x[r] * (1 / sqrt(mean(x[r]^2) + eps)) * w   for n_rows rows of n.
// y (ld ldy), yq (n % 32 == 0) and y16 (f16, ld n: the tensor-core path's
// input, saving it a conversion pass) are each optional (nullptr / yq.q == nullptr).
void rms_norm(const float* x, int64_t ldx, const float* w, float* y, int64_t ldy, ActQ8 yq,
              int64_t n_rows, int64_t n, float eps, cudaStream_t stream, uint16_t* y16 = nullptr);

// RMSNorm with the scale deferred to the consumer: yq[r] = 8-bit blocks of
// x[r] * w (not yet scaled), ssq[r][b] = sum of x[r]^2 over block b (n / 32
// per row, ld ldss). Block quantization is scale-invariant, so a matvec that
// multiplies its dot products by 1/sqrt(sum(ssq[r]) / n + eps) (matvec_q8's
// row_scale) computes W rmsnorm(x[r]) without a whole-row reduction before it:
// this kernel is one fully parallel pass (a warp per block of 32).
void rms_norm_q8_deferred(const float* x, int64_t ldx, const float* w, ActQ8 yq, float* ssq,
                          int64_t ldss, int64_t n_rows, int64_t n, cudaStream_t stream);

// yq[r] = 8-bit blocks of x[r] (n % 32 == 0).
void quantize_q8(const float* x, int64_t ldx, ActQ8 yq, int64_t n_rows, int64_t n,
                 cudaStream_t stream);
}  // namespace kiln::cuda
