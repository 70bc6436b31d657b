// Causal self-attention over the paged KV cache on the CPU.
//
// One task per (batch row, KV head): it scores the row's query heads of that
// group against every cached position [0, pos] of the row's sequence, takes a
// max-subtracted softmax and sums the V rows. Each task reads only its own
// row's query and its sequence's cache, in position order, so results do not
// depend on the rest of the batch or on threading (batch invariance).
#pragma once

#include <cstdint>
#include <vector>

#include "kiln/backend/backend.h"

namespace kiln {
class ThreadPool;
}

namespace kiln::cpu {

class KvCache;

// Per-thread work buffers, sized once for the largest context (no allocation
// per step).
struct AttentionScratch {
  struct PerThread {
    std::vector<float> scores;    // [n_group, max_ctx]
    std::vector<float> k_row;     // [head_dim_k] converted K row (non-f32 caches)
    std::vector<float> v_row;     // [head_dim_v]
    std::vector<double> acc;      // [n_group, head_dim_v] (reference path)
    std::vector<double> inv_sum;  // [n_group] softmax normalizers
  };
  std::vector<PerThread> threads;
  int64_t max_ctx = 0;
  void reserve(int n_threads, int64_t max_ctx, const model::HParams& hp);
  uint64_t bytes() const;
};

struct AttentionArgs {
  const model::HParams* hp = nullptr;
  const KvCache* kv = nullptr;
  int64_t layer = 0;
  const Batch* batch = nullptr;
  const float* q = nullptr;       // [n_tokens, n_q]: roped queries of every batch row
  const int32_t* rows = nullptr;  // [n_rows]: batch rows to compute
  int64_t n_rows = 0;
  float* out = nullptr;    // [n_rows, n_attn_out]
  bool reference = false;  // double accumulation (oracle) vs float kernels
  const struct AttentionKernels* kernels = nullptr;  // fast path's inner loops
};

void attention(const AttentionArgs& args, AttentionScratch& scratch, ThreadPool& pool);

}  // namespace kiln::cpu
