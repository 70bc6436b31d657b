// RMSNorm and 8-bit activation quantization (see norm.cuh). One block per row;
// each warp covers 32 consecutive elements per step, which is exactly one q8
// block, so quantizing costs two warp reductions and no extra pass.
#include "kiln/backend/cuda/common.cuh"
#include "kiln/backend/cuda/kernels/norm.cuh"

namespace kiln::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kNormThreads = 1024;  // one block per row: the whole SM, few steps per warp

__global__ void __launch_bounds__(kNormThreads) rms_norm_kernel(const float* __restrict__ x, int64_t ldx,
                                const float* __restrict__ w, float* __restrict__ y, int64_t ldy,
                                ActQ8 yq, uint16_t* __restrict__ y16, int n, float eps) {
  __shared__ double sh[32];
  pdl_trigger();
  pdl_wait();
  const int64_t r = blockIdx.x;
  const float* xr = x + r * ldx;
  double ss = 0.0;
  for (int e = threadIdx.x; e < n; e += blockDim.x) ss += double(xr[e]) * double(xr[e]);
  ss = block_sum_d(ss, sh);
  const float scale = float(1.0 / sqrt(ss / double(n) + double(eps)));
  for (int e0 = 0; e0 < n; e0 += blockDim.x) {
    const int e = e0 + threadIdx.x;
    if (e0 + (threadIdx.x / kWarp) * kWarp >= n) break;  // warp-uniform (n % 32 == 0 with yq)
    const float v = e < n ? (xr[e] * scale) * w[e] : 0.0f;
    if (y && e < n) y[r * ldy + e] = v;
    if (y16 && e < n) y16[r * n + e] = f2h(v);
    if (yq.q) quantize_block_warp(v, yq, r, e);
  }
}

__global__ void quantize_q8_kernel(const float* __restrict__ x, int64_t ldx, ActQ8 yq, int n) {
  pdl_trigger();
  pdl_wait();
  const int64_t r = blockIdx.y;
  const int64_t e = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (e - threadIdx.x % kWarp >= n) return;  // whole warps (n % 32 == 0)
  quantize_block_warp(x[r * ldx + e], yq, r, e);
}

__global__ void rms_norm_q8_deferred_kernel(const float* __restrict__ x, int64_t ldx,
                                            const float* __restrict__ w, ActQ8 yq,
                                            float* __restrict__ ssq, int64_t ldss, int n) {
  pdl_trigger();
  pdl_wait();
  const int64_t r = blockIdx.y;
  const int64_t e = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (e - threadIdx.x % kWarp >= n) return;  // whole warps (n % 32 == 0)
  const float xv = x[r * ldx + e];
  const float ss = warp_sum(xv * xv);
  if (threadIdx.x % kWarp == 0) ssq[r * ldss + e / 32] = ss;
  quantize_block_warp(xv * w[e], yq, r, e);
}

}  // namespace

void rms_norm_q8_deferred(const float* x, int64_t ldx, const float* w, ActQ8 yq, float* ssq,
                          int64_t ldss, int64_t n_rows, int64_t n, cudaStream_t stream) {
  if (n_rows == 0) return;
  const dim3 grid(ceil_div(n, kThreads), unsigned(n_rows));
  CUDA_CHECK(compat::launch_pdl(rms_norm_q8_deferred_kernel, grid, dim3(kThreads), 0, stream, x, ldx, w, yq, ssq, ldss, int(n)));
  CUDA_CHECK_LAUNCH();
}

void rms_norm(const float* x, int64_t ldx, const float* w, float* y, int64_t ldy, ActQ8 yq,
              int64_t n_rows, int64_t n, float eps, cudaStream_t stream, uint16_t* y16) {
  if (n_rows == 0) return;
  CUDA_CHECK(compat::launch_pdl(rms_norm_kernel, dim3(unsigned(n_rows)), dim3(kNormThreads), 0, stream, x, ldx, w, y, ldy, yq, y16, int(n), eps));
  CUDA_CHECK_LAUNCH();
}

void quantize_q8(const float* x, int64_t ldx, ActQ8 yq, int64_t n_rows, int64_t n,
                 cudaStream_t stream) {
  if (n_rows == 0) return;
  const dim3 grid(ceil_div(n, kThreads), unsigned(n_rows));
  CUDA_CHECK(compat::launch_pdl(quantize_q8_kernel, grid, dim3(kThreads), 0, stream, x, ldx, yq, int(n)));
  CUDA_CHECK_LAUNCH();
}

}  // namespace kiln::cuda
