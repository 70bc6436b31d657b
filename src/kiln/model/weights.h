// The bound weights of a model: views of the GGUF file's tensors (host memory,
// usually the mmapped file), checked for shape and type when bound. Backends
// read these to upload or compute; nothing here owns the big tensors.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "kiln/core/dtype.h"

namespace kiln::model {

// A 2-D weight as GGUF stores it: n_out rows of n_in elements in `type`
// (GGUF ne = [n_in, n_out]); y = W x maps n_in -> n_out.
struct Matrix {
  std::string name;  // GGUF tensor name, for errors and logs
  DType type = DType::F32;
  const void* data = nullptr;  // [n_out, n_in] rows in `type`
  int64_t n_in = 0;
  int64_t n_out = 0;
  size_t n_bytes = 0;

  explicit operator bool() const { return data != nullptr; }
  size_t row_stride() const { return row_bytes(type, n_in); }
  const void* row(int64_t r) const {
    return static_cast<const uint8_t*>(data) + size_t(r) * row_stride();
  }
};

// A 1-D float vector (norm weights, biases, rope frequency factors). Points
// into the file when it is F32 there, else into Model-owned converted storage.
struct Vector {
  std::string name;
  const float* data = nullptr;  // [n]
  int64_t n = 0;
  explicit operator bool() const { return data != nullptr; }
};

struct LayerWeights {
  Vector attn_norm;   // [n_embd]
  Matrix wq;          // [n_head * head_dim_k, n_embd]
  Matrix wk;          // [n_head_kv * head_dim_k, n_embd]
  Matrix wv;          // [n_head_kv * head_dim_v, n_embd]
  Matrix wo;          // [n_embd, n_head * head_dim_v]
  Vector bq, bk, bv;  // optional biases (qwen2): [n_q], [n_k], [n_v]
  Vector bo;          // optional output-projection bias: [n_embd]
  Vector q_norm;      // optional per-head RMSNorm of Q (qwen3): [head_dim_k]
  Vector k_norm;      // optional per-head RMSNorm of K (qwen3): [head_dim_k]
  Vector ffn_norm;    // [n_embd]
  Matrix w_gate;      // [n_ff, n_embd]
  Matrix w_up;        // [n_ff, n_embd]
  Matrix w_down;      // [n_embd, n_ff]
};

struct ModelWeights {
  Matrix tok_embd;     // [n_vocab, n_embd]: row t is token t's embedding
  Vector output_norm;  // [n_embd]
  Matrix output;       // [n_vocab, n_embd]; the same tensor as tok_embd when tied
  bool output_tied = false;
  Vector rope_freqs;  // optional [n_rot / 2]: divides each rotation frequency (Llama 3.1+)
  std::vector<LayerWeights> layers;

  // Bytes of weights a decode step reads per token: every layer matrix and
  // vector, the output projection, the final norm and one embedding row.
  uint64_t bytes_read_per_token() const;
  uint64_t total_bytes() const;  // distinct tensor bytes (tied output counted once)
};

}  // namespace kiln::model
