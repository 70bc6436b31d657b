// RoPE angle table, and the fused per-head step after the QKV projection:
// optional per-head RMSNorm of Q and K (qwen3), rotary embedding of Q and K
// (adjacent-pair or NeoX style), then K and V stored into the paged cache in
// its element type (f32 / f16 / fp8 e4m3 / q8_0).
#pragma once

#include <cuda_runtime.h>

#include "kiln/backend/cuda/device_types.h"

namespace kiln::cuda {

// cs[i][0..n_pairs) = cos(pos[i] * inv_freq), cs[i][n_pairs..2 n_pairs) = sin,
// angles formed in double as the CPU does. inv_freq: [n_pairs] doubles.
void rope_table(const int32_t* pos, int64_t n_tokens, const double* inv_freq, int64_t n_pairs,
                float* cs, cudaStream_t stream);

struct RopeKvArgs {
  float* qkv = nullptr;  // [n_tokens][ld]: Q at column 0, K at n_q, V at n_q + n_k
  int64_t ld = 0;
  const float* cs = nullptr;      // [n_tokens][n_rot] from rope_table
  const float* q_norm = nullptr;  // optional [head_dim_k]
  const float* k_norm = nullptr;  // optional [head_dim_k]
  float eps = 1e-6f;
  int n_head = 0, n_head_kv = 0, head_dim_k = 0, head_dim_v = 0, n_rot = 0;
  bool neox = false;
  KvLayout kv;
  int64_t layer = 0;
  BatchMeta meta;
};

// Q is rotated in place in qkv; K and V go to the cache only. head dims <= 256.
void rope_kv_store(const RopeKvArgs& args, cudaStream_t stream);

}  // namespace kiln::cuda
