// Row gathers: compacting the residual stream to the rows that want logits.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace kiln::cuda {

// dst[i][0..n) = src[rows[i]][0..n) for i < n_rows (both ld n). dst != src.
void gather_rows(const float* src, const int32_t* rows, int64_t n_rows, int64_t n, float* dst,
                 cudaStream_t stream);

}  // namespace kiln::cuda
