// SwiGLU (see swiglu.cuh): a thread per element; each warp's 32 consecutive
// outputs form one q8 block when quantized output is asked for.
#include "kiln/backend/cuda/common.cuh"
#include "kiln/backend/cuda/kernels/swiglu.cuh"

namespace kiln::cuda {
namespace {

__global__ void swiglu_kernel(const float* __restrict__ gu, int64_t ldg, int n_ff,
                              float* __restrict__ act, ActQ8 actq, uint16_t* __restrict__ act16) {
  pdl_trigger();
  pdl_wait();
  const int64_t r = blockIdx.y;
  const int e = blockIdx.x * blockDim.x + threadIdx.x;
  if (e - int(threadIdx.x % kWarp) >= n_ff) return;  // whole warps leave together
  float v = 0.0f;
  if (e < n_ff) {
    const float g = gu[r * ldg + e], u = gu[r * ldg + n_ff + e];
    v = g / (1.0f + expf(-g)) * u;  // the CPU's expression
    if (act) act[r * n_ff + e] = v;
    if (act16) act16[r * n_ff + e] = f2h(v);
  }
  if (actq.q)  // n_ff % 32 == 0: every lane of a live warp has an element
    quantize_block_warp(v, actq, r, e);
}

}  // namespace

void swiglu(const float* gu, int64_t ldg, int64_t n_rows, int64_t n_ff, float* act, ActQ8 actq,
            cudaStream_t stream, uint16_t* act16) {
  if (n_rows == 0) return;
  const dim3 grid(ceil_div(n_ff, 256), unsigned(n_rows));
  CUDA_CHECK(compat::launch_pdl(swiglu_kernel, grid, dim3(256), 0, stream, gu, ldg, int(n_ff), act, actq, act16));
  CUDA_CHECK_LAUNCH();
}

}  // namespace kiln::cuda
