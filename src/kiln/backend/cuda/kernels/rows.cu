// Row gather (see rows.cuh).
#include "kiln/backend/cuda/common.cuh"
#include "kiln/backend/cuda/kernels/rows.cuh"

namespace kiln::cuda {
namespace {

__global__ void gather_rows_kernel(const float* __restrict__ src, const int32_t* __restrict__ rows,
                                   int64_t n, float* __restrict__ dst) {
  pdl_trigger();
  pdl_wait();
  const int64_t i = blockIdx.x;
  const float* s = src + int64_t(rows[i]) * n;
  for (int64_t e = threadIdx.x; e < n; e += blockDim.x) dst[i * n + e] = s[e];
}

}  // namespace

void gather_rows(const float* src, const int32_t* rows, int64_t n_rows, int64_t n, float* dst,
                 cudaStream_t stream) {
  if (n_rows == 0) return;
  CUDA_CHECK(compat::launch_pdl(gather_rows_kernel, dim3(unsigned(n_rows)), dim3(256), 0, stream, src, rows, n, dst));
  CUDA_CHECK_LAUNCH();
}

}  // namespace kiln::cuda
