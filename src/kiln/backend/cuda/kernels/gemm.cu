// Dequantize-to-f16 + cuBLAS GEMM (see gemm.cuh). The weight is expanded in
// chunks of rows that fit the workspace; each chunk is one cublasGemmEx
// writing its slice of the output columns.
#include "kiln/backend/cuda/common.cuh"
#include "kiln/backend/cuda/cublas_dl.h"
#include "kiln/backend/cuda/kernels/gemm.cuh"
#include "kiln/core/assert.h"

namespace kiln::cuda {
namespace {

template <DType T>
__global__ void dequantize_rows_f16_kernel(DeviceMatrix w, int64_t row0, int64_t n_rows,
                                           uint16_t* __restrict__ out) {
  const int64_t nc = w.n_in / 32;
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n_rows * nc) return;
  const int64_t r = i / nc, c = i % nc;
  const int64_t row = row0 + r;
  float v[32];
  Dequant<T>::run(w.data + size_t(row) * w.row_stride, w.scales ? w.scales + row * nc : nullptr,
                  int(c), v);
  uint4* o = reinterpret_cast<uint4*>(out + r * w.n_in + 32 * c);
#pragma unroll
  for (int k = 0; k < 4; ++k) {
    uint32_t h[4];
#pragma unroll
    for (int e = 0; e < 4; ++e)
      h[e] = uint32_t(f2h(v[8 * k + 2 * e])) | (uint32_t(f2h(v[8 * k + 2 * e + 1])) << 16);
    o[k] = make_uint4(h[0], h[1], h[2], h[3]);
  }
}

__global__ void convert_f32_f16_kernel(const float* __restrict__ x, int64_t ldx, int64_t n,
                                       uint16_t* __restrict__ out) {
  const int64_t r = blockIdx.y;
  for (int64_t e = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; e < n;
       e += int64_t(gridDim.x) * blockDim.x)
    out[r * n + e] = f2h(x[r * ldx + e]);
}

__global__ void add_bias_kernel(float* __restrict__ y, int64_t ldy, const float* __restrict__ b,
                                int64_t n) {
  const int64_t r = blockIdx.y;
  const int64_t e = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (e < n) y[r * ldy + e] += b[e];
}

void check_cublas(cublasStatus_t st, const char* what) {
  if (st != CUBLAS_STATUS_SUCCESS) {
    std::fprintf(stderr, "kiln: cuBLAS error %d in %s\n", int(st), what);
    std::abort();
  }
}

}  // namespace

void dequantize_rows_f16(const DeviceMatrix& w, int64_t row0, int64_t n_rows, uint16_t* out,
                         cudaStream_t stream) {
  if (n_rows == 0) return;
  const int64_t n = n_rows * (w.n_in / 32);
  const bool ok = dispatch_weight_type(w.type, [&]<DType T>() {
    dequantize_rows_f16_kernel<T><<<ceil_div(n, 256), 256, 0, stream>>>(w, row0, n_rows, out);
  });
  KILN_ASSERT_MSG(ok, "dequantize_rows_f16: unsupported weight type");
  CUDA_CHECK_LAUNCH();
}

void convert_f32_f16(const float* x, int64_t ldx, int64_t n_rows, int64_t n, uint16_t* out,
                     cudaStream_t stream) {
  if (n_rows == 0) return;
  const dim3 grid(std::min<unsigned>(ceil_div(n, 256), 64u), unsigned(n_rows));
  convert_f32_f16_kernel<<<grid, 256, 0, stream>>>(x, ldx, n, out);
  CUDA_CHECK_LAUNCH();
}

void linear_gemm(cublasHandle_t handle, const DeviceMatrix& w, const float* x, int64_t ldx,
                 int64_t n_rows, float* y, int64_t ldy, const float* bias, bool accumulate,
                 const GemmWorkspace& ws, cudaStream_t stream) {
  if (n_rows == 0) return;
  KILN_ASSERT(size_t(n_rows * w.n_in) <= ws.x16_elems);
  check_cublas(blas::set_stream(handle, stream), "cublasSetStream");
  convert_f32_f16(x, ldx, n_rows, w.n_in, ws.x16, stream);
  const float alpha = 1.0f, beta = accumulate ? 1.0f : 0.0f;
  // f16 weights stored as plain rows are used in place.
  const bool direct = w.type == DType::F16 && !w.repacked() && w.row_stride == size_t(w.n_in) * 2;
  const int64_t chunk = direct ? w.n_out : std::min<int64_t>(w.n_out, int64_t(ws.w16_elems / size_t(w.n_in)));
  KILN_ASSERT(chunk >= 1);
  for (int64_t r0 = 0; r0 < w.n_out; r0 += chunk) {
    const int64_t m = std::min(chunk, w.n_out - r0);
    const void* a = w.data;
    if (!direct) {
      dequantize_rows_f16(w, r0, m, ws.w16, stream);
      a = ws.w16;
    }
    // Column-major view: C[m, n_rows] (ld ldy) = A^T[m, k] * B[k, n_rows], A = W rows.
    check_cublas(blas::gemm_ex(handle, CUBLAS_OP_T, CUBLAS_OP_N, int(m), int(n_rows), int(w.n_in),
                              &alpha, a, CUDA_R_16F, int(w.n_in), ws.x16, CUDA_R_16F,
                              int(w.n_in), &beta, y + r0, CUDA_R_32F, int(ldy),
                              CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
                 "cublasGemmEx");
  }
  if (bias) {
    const dim3 grid(ceil_div(w.n_out, 256), unsigned(n_rows));
    add_bias_kernel<<<grid, 256, 0, stream>>>(y, ldy, bias, w.n_out);
    CUDA_CHECK_LAUNCH();
  }
}

}  // namespace kiln::cuda
