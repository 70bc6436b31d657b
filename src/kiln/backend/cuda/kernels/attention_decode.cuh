// Attention of rows that each attend on their own over a paged f16 KV cache
// (decode steps, the last layer's logit rows, short prefill rows): latency
// rather than bandwidth bound at the contexts decode sees, so the kernel is
// built around few dependent memory round trips (see attention_decode.cu).
// Same arguments, output and split partials as attention() (attention.cuh),
// which calls it for the shapes it supports.
#pragma once

#include <cstddef>

#include "kiln/backend/cuda/kernels/attention.cuh"

namespace kiln::cuda {

// f16 cache, K and V heads of 64 or 128, 1, 2, 4 or 8 query heads per KV
// head, and fewer (row, KV head) pairs than 2 per multiprocessor.
bool attention_decode_supported(const AttentionArgs& a, int n_sms);

struct DecodePlan {
  int n_splits = 1;  // context splits per (row, KV head); > 1: merged by attention_merge_splits
  int chunk = 0;     // positions per split (a multiple of 64)
  int heads_per_block = 1;  // query heads of one KV head's group per block (divides the group)
};
DecodePlan attention_decode_plan(const AttentionArgs& a, int n_sms);

// work: the split partials when plan.n_splits > 1 (attention_workspace_floats).
void attention_decode(const AttentionArgs& a, const DecodePlan& plan, float* work, cudaStream_t stream);

// Loads its kernels now (CUDA loads a kernel lazily at its first launch).
void attention_decode_prime();

}  // namespace kiln::cuda
