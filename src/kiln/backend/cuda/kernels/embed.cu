// Embedding gather (see embed.cuh): a block per token, a thread per 32 elements.
#include "kiln/backend/cuda/common.cuh"
#include "kiln/backend/cuda/kernels/embed.cuh"
#include "kiln/core/assert.h"

namespace kiln::cuda {
namespace {

template <DType T>
__global__ void embed_kernel(DeviceMatrix w, const int32_t* __restrict__ tokens,
                             float* __restrict__ x, int64_t ldx) {
  pdl_trigger();
  pdl_wait();
  const int64_t i = blockIdx.x;
  const int64_t row = tokens[i];
  const int nc = int(w.n_in / 32);
  const uint8_t* wr = w.data + size_t(row) * w.row_stride;
  const uint16_t* sr = w.scales ? w.scales + row * nc : nullptr;
  for (int c = threadIdx.x; c < nc; c += blockDim.x) {
    float v[32];
    Dequant<T>::run(wr, sr, c, v);
    float4* o = reinterpret_cast<float4*>(x + i * ldx + 32 * c);
#pragma unroll
    for (int k = 0; k < 8; ++k) o[k] = make_float4(v[4 * k], v[4 * k + 1], v[4 * k + 2], v[4 * k + 3]);
  }
}

}  // namespace

void embed_rows(const DeviceMatrix& table, const int32_t* tokens, int64_t n_tokens, float* x,
                int64_t ldx, cudaStream_t stream) {
  if (n_tokens == 0) return;
  KILN_ASSERT(table.n_in % 32 == 0 && ldx % 4 == 0);
  const bool ok = dispatch_weight_type(table.type, [&]<DType T>() {
    CUDA_CHECK(compat::launch_pdl(embed_kernel<T>, dim3(unsigned(n_tokens)), dim3(128), 0, stream, table, tokens, x, ldx));
  });
  KILN_ASSERT_MSG(ok, "embed_rows: unsupported weight type");
  CUDA_CHECK_LAUNCH();
}

}  // namespace kiln::cuda
