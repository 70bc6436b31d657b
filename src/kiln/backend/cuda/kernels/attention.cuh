// Causal attention over the paged KV cache for a mixed batch (prefill rows
// and decode rows together), GQA, split over the context for long sequences.
#pragma once

#include <cuda_runtime.h>

#include "kiln/backend/cuda/device_types.h"

namespace kiln::cuda {

struct AttentionArgs {
  const float* q = nullptr;        // roped queries: batch row t at q + t * ldq, heads contiguous
  int64_t ldq = 0;
  const int32_t* rows = nullptr;   // [n_rows] batch rows to compute; nullptr: rows 0..n_rows-1
  int64_t n_rows = 0;
  int32_t max_ctx = 0;             // max over those rows of pos + 1 (host-side)
  float* out = nullptr;            // [n_rows][n_head * head_dim_v]
  ActQ8 outq;                      // optional: the output also as 8-bit blocks (ld >= n_head * head_dim_v)
  uint16_t* out16 = nullptr;       // optional: the output also as f16, [n_rows][n_head * head_dim_v]
  KvLayout kv;
  int64_t layer = 0;
  BatchMeta meta;
  int n_head = 0, n_head_kv = 0, head_dim_k = 0, head_dim_v = 0;
  // Every row is the only row of its sequence in the step (a decode step):
  // the one position of a row's context written in this step is its own.
  bool decode_step = false;
  // RoPE fused (attention_fuses_rope): q then holds the unroped Q|K|V rows
  // (ldq wide, K at column n_head * head_dim_k, V after the n_head_kv K
  // heads), the kernel rotates Q and the row's own K and stores its K/V in
  // the cache, and rope_kv_store is skipped. rope_cs as rope_table writes
  // it: [n_tokens][head_dim_k], cos then sin.
  const float* rope_cs = nullptr;
  bool rope_neox = false;
};

// Loads the attention kernels for KV type t and the split merge (CUDA loads
// kernels lazily at first launch); safe on any thread.
void attention_prime(KvType t);

// Merges split partials part[((i * n_head + h) * n_splits + s) * (head_dim_v + 2)]
// (acc relative to m, then m, l) into a.out (and a.out16 / a.outq) for the
// a.n_rows output rows.
void attention_merge_splits(const float* part, int n_splits, const AttentionArgs& a, cudaStream_t stream);

// Floats of workspace attention() needs for these arguments (split partials).
size_t attention_workspace_floats(const AttentionArgs& a, int n_sms);

// Whether attention(a) can take RoPE and the K/V store of a decode step
// (a.rope_cs): f16 cache, rows on attention_decode.cu's kernel, RoPE over
// whole heads (n_rot == head_dim_k) and no per-head Q/K norm before it.
bool attention_fuses_rope(const AttentionArgs& a, int n_sms, int n_rot, bool qk_norm);

// out = softmax(q k^T / sqrt(head_dim_k)) v over positions [0, pos] of each
// row's sequence. `work` holds attention_workspace_floats() floats.
void attention(const AttentionArgs& a, float* work, int n_sms, cudaStream_t stream);

}  // namespace kiln::cuda
