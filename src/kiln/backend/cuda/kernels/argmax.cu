// Row argmax (see argmax.cuh).
#include <algorithm>
#include <climits>

#include "kiln/backend/cuda/common.cuh"
#include "kiln/backend/cuda/kernels/argmax.cuh"

namespace kiln::cuda {
namespace {

constexpr int kThreads = 512;
constexpr int64_t kChunk = 16 * kThreads;  // logits per block

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

// The best (value, index) of the block, in every thread of warp 0.
__device__ __forceinline__ void block_best(float& bv, int& bi) {
  __shared__ float sv[kThreads / 32];
  __shared__ int si[kThreads / 32];
  warp_best(bv, bi);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (lane == 0) sv[warp] = bv, si[warp] = bi;
  __syncthreads();
  if (warp == 0) {
    bv = lane < kThreads / 32 ? sv[lane] : __int_as_float(0x7fc00000);
    bi = lane < kThreads / 32 ? si[lane] : INT_MAX;
    warp_best(bv, bi);
  }
  __syncthreads();  // sv / si may be reused
}

// Block (chunk c, row r) takes logits[r][c * kChunk, (c + 1) * kChunk) and
// leaves its best in the row's partials; the row's last block to finish
// (counted in `done`, which it sets back to 0) reduces them. One block per
// row took 37 us for a 128k vocabulary on an H100, 1.6 % of a decode step.
__global__ void __launch_bounds__(kThreads)
    argmax_kernel(const float* __restrict__ logits, int64_t n, int32_t* __restrict__ out, float* part_v,
                  int* part_i, unsigned* done) {
  pdl_trigger();
  pdl_wait();
  const int r = blockIdx.y, c = blockIdx.x, nc = gridDim.x;
  const float* row = logits + int64_t(r) * n;
  float bv = __int_as_float(0x7fc00000);  // NaN: loses to everything but a lower-index NaN
  int bi = INT_MAX;
  const int64_t end = min(n, int64_t(c + 1) * kChunk);
#pragma unroll 4
  for (int64_t i = int64_t(c) * kChunk + threadIdx.x; i < end; i += kThreads) {
    const float v = row[i];
    if (better(v, int(i), bv, bi)) bv = v, bi = int(i);
  }
  block_best(bv, bi);
  __shared__ bool last;
  if (threadIdx.x == 0) {
    part_v[r * nc + c] = bv, part_i[r * nc + c] = bi;
    __threadfence();  // the partial is visible before the count says so
    last = atomicAdd(&done[r], 1u) == unsigned(nc - 1);
  }
  __syncthreads();
  if (!last) return;
  __threadfence();
  bv = __int_as_float(0x7fc00000), bi = INT_MAX;
  for (int k = threadIdx.x; k < nc; k += kThreads) {
    const float v = __ldcg(part_v + r * nc + k);
    const int i = __ldcg(part_i + r * nc + k);
    if (better(v, i, bv, bi)) bv = v, bi = i;
  }
  block_best(bv, bi);
  if (threadIdx.x == 0) {
    out[r] = bi == INT_MAX ? 0 : bi;
    done[r] = 0;
  }
}

int n_chunks(int64_t n) { return int((std::max<int64_t>(n, 1) + kChunk - 1) / kChunk); }

}  // namespace

size_t argmax_partials_bytes(int64_t n_rows, int64_t n) { return size_t(n_rows) * 8 * size_t(n_chunks(n)); }

void argmax_rows(const float* logits, int64_t n_rows, int64_t n, int32_t* out, unsigned* done, void* partials,
                 cudaStream_t stream) {
  if (n_rows == 0) return;
  const int nc = n_chunks(n);
  float* part_v = static_cast<float*>(partials);
  int* part_i = reinterpret_cast<int*>(part_v + n_rows * nc);
  CUDA_CHECK(compat::launch_pdl(argmax_kernel, dim3(unsigned(nc), unsigned(n_rows)), dim3(kThreads), 0, stream,
                                logits, n, out, part_v, part_i, done));
  CUDA_CHECK_LAUNCH();
}

}  // namespace kiln::cuda
