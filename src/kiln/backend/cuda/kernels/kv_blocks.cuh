// Moves one KV block between the paged pool and a contiguous staging buffer
// in the canonical block format (backend.h: per layer K then V), so block
// I/O is one host<->device copy plus one kernel instead of two copies per
// layer (restoring 159 baked blocks of an 8B model: 0.15 s -> a few ms).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "kiln/backend/cuda/device_types.h"

namespace kiln::cuda {

// stage -> pool block `block` (stage holds n_layer * (K + V) block bytes).
void kv_block_scatter(const KvLayout& kv, int64_t n_layer, int32_t block, const uint8_t* stage,
                      cudaStream_t stream);
// pool block `block` -> stage.
void kv_block_gather(const KvLayout& kv, int64_t n_layer, int32_t block, uint8_t* stage,
                     cudaStream_t stream);

}  // namespace kiln::cuda
