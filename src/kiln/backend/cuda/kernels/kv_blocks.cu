// KV block staging copies (see kv_blocks.cuh).
#include "kiln/backend/cuda/common.cuh"
#include "kiln/backend/cuda/kernels/kv_blocks.cuh"

namespace kiln::cuda {
namespace {

// blockIdx.y: segment 2*l (layer l's K) or 2*l+1 (its V). Segments are
// copied in 4-byte words when every size and offset allows, else bytes.
template <class Word>
__global__ void kv_block_copy_kernel(KvLayout kv, int32_t block, uint8_t* stage, bool to_pool) {
  const int64_t seg = blockIdx.y, l = seg / 2;
  const bool is_v = seg % 2;
  const size_t kb = kv.k_block_stride, vb = kv.v_block_stride;
  uint8_t* pool = is_v ? kv.v_layer(l) + size_t(block) * vb : kv.k_layer(l) + size_t(block) * kb;
  uint8_t* st = stage + size_t(l) * (kb + vb) + (is_v ? kb : 0);
  const size_t n = (is_v ? vb : kb) / sizeof(Word);
  Word* dst = reinterpret_cast<Word*>(to_pool ? pool : st);
  const Word* src = reinterpret_cast<const Word*>(to_pool ? st : pool);
  for (size_t i = size_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x)
    dst[i] = src[i];
}

void launch(const KvLayout& kv, int64_t n_layer, int32_t block, uint8_t* stage, bool to_pool,
            cudaStream_t stream) {
  const dim3 grid(16, unsigned(2 * n_layer));
  const bool words = kv.k_block_stride % 4 == 0 && kv.v_block_stride % 4 == 0;
  if (words)
    kv_block_copy_kernel<uint32_t><<<grid, 256, 0, stream>>>(kv, block, stage, to_pool);
  else
    kv_block_copy_kernel<uint8_t><<<grid, 256, 0, stream>>>(kv, block, stage, to_pool);
  CUDA_CHECK_LAUNCH();
}

}  // namespace

void kv_block_scatter(const KvLayout& kv, int64_t n_layer, int32_t block, const uint8_t* stage,
                      cudaStream_t stream) {
  launch(kv, n_layer, block, const_cast<uint8_t*>(stage), true, stream);
}

void kv_block_gather(const KvLayout& kv, int64_t n_layer, int32_t block, uint8_t* stage,
                     cudaStream_t stream) {
  launch(kv, n_layer, block, stage, false, stream);
}

}  // namespace kiln::cuda
