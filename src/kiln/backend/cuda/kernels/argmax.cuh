// Greedy token choice on the device: the argmax of each logits row, so a
// decode step of many greedy sequences copies token ids, not rows of
// n_vocab floats, to the host.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace kiln::cuda {

// out[r] = index of the largest of logits[r][0..n) for r < n_rows, with the
// host sampler's rules (engine/sampler.cpp argmax): lowest index on ties,
// NaN ranks below everything (so all -inf gives the first, all NaN gives 0).
void argmax_rows(const float* logits, int64_t n_rows, int64_t n, int32_t* out, cudaStream_t stream);

}  // namespace kiln::cuda
