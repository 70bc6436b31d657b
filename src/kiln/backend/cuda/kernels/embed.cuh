// Token embedding lookup: one dequantized row of token_embd per batch row.
#pragma once

#include <cuda_runtime.h>

#include "kiln/backend/cuda/device_types.h"

namespace kiln::cuda {

// x[i][0..n_embd) = dequant(table row tokens[i]) for i < n_tokens (ld ldx).
void embed_rows(const DeviceMatrix& table, const int32_t* tokens, int64_t n_tokens, float* x,
                int64_t ldx, cudaStream_t stream);

}  // namespace kiln::cuda
