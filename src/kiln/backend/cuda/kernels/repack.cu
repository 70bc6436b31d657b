// q4_0 / q8_0 repacking (see repack.cuh): one thread per 32-element block.
#include "kiln/backend/cuda/common.cuh"
#include "kiln/backend/cuda/kernels/repack.cuh"
#include "kiln/core/assert.h"

namespace kiln::cuda {
namespace {

// GGUF blocks are 18 / 34 bytes (2-byte aligned): read them as uint16.
template <int kQuantBytes>
__global__ void repack_kernel(const uint8_t* __restrict__ raw, int64_t n_blocks,
                              uint8_t* __restrict__ qs, uint16_t* __restrict__ scales) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n_blocks) return;
  const uint16_t* src = reinterpret_cast<const uint16_t*>(raw + i * (2 + kQuantBytes));
  scales[i] = src[0];
  uint16_t* dst = reinterpret_cast<uint16_t*>(qs + i * kQuantBytes);
#pragma unroll
  for (int k = 0; k < kQuantBytes / 2; ++k) dst[k] = src[1 + k];
}

}  // namespace

void repack_rows(DType t, const uint8_t* raw, int64_t n_in, int64_t n_out, uint8_t* qs,
                 uint16_t* scales, cudaStream_t stream) {
  KILN_ASSERT(repack_supported(t) && n_in % 32 == 0);
  // Rows are whole blocks, so the matrix is one run of blocks in both layouts.
  const int64_t n_blocks = n_out * (n_in / 32);
  if (n_blocks == 0) return;
  if (t == DType::Q4_0)
    repack_kernel<16><<<ceil_div(n_blocks, 256), 256, 0, stream>>>(raw, n_blocks, qs, scales);
  else
    repack_kernel<32><<<ceil_div(n_blocks, 256), 256, 0, stream>>>(raw, n_blocks, qs, scales);
  CUDA_CHECK_LAUNCH();
}

}  // namespace kiln::cuda
