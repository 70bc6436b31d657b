// SwiGLU: act = silu(gate) * up, optionally quantized to 8-bit blocks.
#pragma once

#include <cuda_runtime.h>

#include "kiln/backend/cuda/device_types.h"

namespace kiln::cuda {

// gu: [n_rows][ldg] with gate at columns [0, n_ff) and up at [n_ff, 2 n_ff).
// act: [n_rows][n_ff] float (optional); actq: 8-bit blocks (optional; n_ff % 32 == 0);
// act16: [n_rows][n_ff] f16 (optional; the tensor-core path's input).
void swiglu(const float* gu, int64_t ldg, int64_t n_rows, int64_t n_ff, float* act, ActQ8 actq,
            cudaStream_t stream, uint16_t* act16 = nullptr);

}  // namespace kiln::cuda
