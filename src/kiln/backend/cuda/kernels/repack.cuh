// Converts GGUF q4_0 / q8_0 rows (already on the device) into the split
// quants + scales layout the matvec kernels read (see device_types.h).
#pragma once

#include <cuda_runtime.h>

#include "kiln/backend/cuda/device_types.h"

namespace kiln::cuda {

inline bool repack_supported(DType t) { return t == DType::Q4_0 || t == DType::Q8_0; }

// raw: [n_out] GGUF rows of n_in elements of type t; qs/scales: the repacked
// destination (q4_0: n_in/2 bytes per row, q8_0: n_in bytes; scales n_in/32).
void repack_rows(DType t, const uint8_t* raw, int64_t n_in, int64_t n_out, uint8_t* qs,
                 uint16_t* scales, cudaStream_t stream);

}  // namespace kiln::cuda
