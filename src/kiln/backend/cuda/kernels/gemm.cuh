// Large-batch linear layers (prefill, many streams): weights dequantized to
// f16 tiles in a workspace, activations converted to f16, product by cuBLAS
// with float accumulation and float output.
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include "kiln/backend/cuda/device_types.h"

namespace kiln::cuda {

struct GemmWorkspace {
  uint16_t* w16 = nullptr;  // dequantized weight rows (f16), w16_elems elements
  size_t w16_elems = 0;
  uint16_t* x16 = nullptr;  // activations (f16), x16_elems elements
  size_t x16_elems = 0;
};

// out[r - row0][0..n_in) = W[r] as f16, for rows [row0, row0 + n_rows).
void dequantize_rows_f16(const DeviceMatrix& w, int64_t row0, int64_t n_rows, uint16_t* out,
                         cudaStream_t stream);
// out[r][0..n) = x[r] as f16 (ld n).
void convert_f32_f16(const float* x, int64_t ldx, int64_t n_rows, int64_t n, uint16_t* out,
                     cudaStream_t stream);

// y[j] (= or +=) W x_j (+ bias) for j < n_rows. The workspace must hold
// n_rows * n_in activations and at least one weight row (more rows: fewer
// cuBLAS calls).
void linear_gemm(cublasHandle_t handle, const DeviceMatrix& w, const float* x, int64_t ldx,
                 int64_t n_rows, float* y, int64_t ldy, const float* bias, bool accumulate,
                 const GemmWorkspace& ws, cudaStream_t stream);

}  // namespace kiln::cuda
