// Greedy token choice on the device: the argmax of each logits row, so a
// decode step of many greedy sequences copies token ids, not rows of
// n_vocab floats, to the host.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>

#include <cstdint>

namespace kiln::cuda {

// out[r] = index of the largest of logits[r][0..n) for r < n_rows, with the
// host sampler's rules (engine/sampler.cpp argmax): lowest index on ties,
// NaN ranks below everything (so all -inf gives the first, all NaN gives 0).
// done: [n_rows] counters, zeroed once when allocated (each call leaves
// them zeroed again); partials: argmax_partials_bytes(n_rows, n) of scratch.
void argmax_rows(const float* logits, int64_t n_rows, int64_t n, int32_t* out, unsigned* done, void* partials,
                 cudaStream_t stream);
size_t argmax_partials_bytes(int64_t n_rows, int64_t n);

}  // namespace kiln::cuda
