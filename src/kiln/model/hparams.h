// Hyperparameters of a decoder-only transformer, read from a GGUF file's
// `<arch>.*` metadata and checked for consistency before any weight is bound.
#pragma once

#include <cstdint>
#include <string>

#include "kiln/core/status.h"

namespace kiln::gguf {
class File;
}

namespace kiln::model {

// Which element pairs RoPE rotates within a head. GGUF `llama` files store Q/K
// rows permuted so that adjacent pairs (x0,x1),(x2,x3)... rotate together;
// Qwen2/Qwen3 files are stored as trained and rotate (i, i + n_rot/2) ("NeoX").
enum class RopeStyle { adjacent_pairs, neox };

enum class RopeScaling { none, linear };

struct HParams {
  std::string arch;     // general.architecture, e.g. "llama"
  int64_t n_vocab = 0;  // rows of token_embd
  int64_t n_embd = 0;   // residual stream width
  int64_t n_layer = 0;
  int64_t n_head = 0;       // query heads
  int64_t n_head_kv = 0;    // key/value heads (GQA: n_head / n_head_kv queries share one)
  int64_t n_ff = 0;         // FFN hidden width
  int64_t n_ctx_train = 0;  // context length the model was trained for
  int64_t head_dim_k = 0;   // per-head width of Q and K (key_length)
  int64_t head_dim_v = 0;   // per-head width of V (value_length)
  int64_t n_rot = 0;        // leading dims of each head that RoPE rotates (even, <= head_dim_k)
  double rope_freq_base = 10000.0;
  RopeScaling rope_scaling = RopeScaling::none;
  double rope_scale_factor = 1.0;  // linear: positions are divided by it
  float rms_eps = 1e-5f;
  RopeStyle rope_style = RopeStyle::adjacent_pairs;  // set by the arch

  int64_t n_q() const { return n_head * head_dim_k; }     // width of Q
  int64_t n_k() const { return n_head_kv * head_dim_k; }  // width of K
  int64_t n_v() const { return n_head_kv * head_dim_v; }  // width of V
  int64_t n_attn_out() const { return n_head * head_dim_v; }
  int64_t n_group() const { return n_head / n_head_kv; }  // queries per KV head
};

// Reads the common llama-family keys `<arch>.embedding_length`, `.block_count`,
// `.attention.head_count[_kv]`, `.feed_forward_length`, `.context_length`,
// `.rope.freq_base`, `.attention.layer_norm_rms_epsilon`,
// `.rope.dimension_count`, `.attention.key_length/value_length`, `.vocab_size`
// (else the length of tokenizer.ggml.tokens), `.rope.scaling.*`. Errors name
// the key and the file.
Result<HParams> read_hparams(const gguf::File& f, const std::string& arch);

// The arch-independent consistency checks (head counts divide, rope dims fit);
// run again after an arch adjusted the values.
Status validate_hparams(const HParams& hp, const std::string& file_name);

std::string describe(const HParams& hp);  // one line for logs / `kiln generate`

}  // namespace kiln::model
