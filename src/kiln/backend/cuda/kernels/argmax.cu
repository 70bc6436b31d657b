// Row argmax (see argmax.cuh).
#include <climits>

#include "kiln/backend/cuda/common.cuh"
#include "kiln/backend/cuda/kernels/argmax.cuh"

namespace kiln::cuda {
namespace {

constexpr int kThreads = 512;

// Whether (v, i) beats (bv, bi): larger value, then lower index; NaN loses
// to any number and to a lower-index NaN.
__device__ __forceinline__ bool better(float v, int i, float bv, int bi) {
  const bool vn = v != v, bn = bv != bv;
  if (vn || bn) return vn == bn ? i < bi : bn;
  return v > bv || (v == bv && i < bi);
}

// The best (value, index) of the warp, in every lane.
__device__ __forceinline__ void warp_best(float& bv, int& bi) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    const float ov = __shfl_xor_sync(0xffffffffu, bv, o);
    const int oi = __shfl_xor_sync(0xffffffffu, bi, o);
    if (better(ov, oi, bv, bi)) bv = ov, bi = oi;
  }
}

__global__ void __launch_bounds__(kThreads) argmax_kernel(const float* __restrict__ logits, int64_t n,
                                                          int32_t* __restrict__ out) {
  pdl_trigger();
  pdl_wait();
  const float* row = logits + int64_t(blockIdx.x) * n;
  float bv = __int_as_float(0x7fc00000);  // NaN: loses to everything but a lower-index NaN
  int bi = INT_MAX;
  for (int64_t i = threadIdx.x; i < n; i += kThreads) {
    const float v = row[i];
    if (better(v, int(i), bv, bi)) bv = v, bi = int(i);
  }
  warp_best(bv, bi);
  __shared__ float sv[kThreads / 32];
  __shared__ int si[kThreads / 32];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (lane == 0) sv[warp] = bv, si[warp] = bi;
  __syncthreads();
  if (warp == 0) {
    bv = lane < kThreads / 32 ? sv[lane] : __int_as_float(0x7fc00000);
    bi = lane < kThreads / 32 ? si[lane] : INT_MAX;
    warp_best(bv, bi);
    if (lane == 0) out[blockIdx.x] = bi == INT_MAX ? 0 : bi;
  }
}

}  // namespace

void argmax_rows(const float* logits, int64_t n_rows, int64_t n, int32_t* out, cudaStream_t stream) {
  if (n_rows == 0) return;
  CUDA_CHECK(compat::launch_pdl(argmax_kernel, dim3(unsigned(n_rows)), dim3(kThreads), 0, stream,
                                logits, n, out));
  CUDA_CHECK_LAUNCH();
}

}  // namespace kiln::cuda
