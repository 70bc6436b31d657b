// Named model shapes for `kiln synth` (random-weight models for benchmarks and
// tests): Llama-architecture hyperparameters; the vocabulary comes from a
// vocab GGUF at synth time, so it is not part of a preset.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>

namespace kiln::model {

struct ModelPreset {
  std::string_view name;
  std::string_view summary;  // one line for `kiln synth --help` and errors
  int64_t n_embd = 0;        // llama.embedding_length
  int64_t n_layer = 0;       // llama.block_count
  int64_t n_head = 0;        // llama.attention.head_count
  int64_t n_head_kv = 0;     // llama.attention.head_count_kv
  int64_t n_ff = 0;          // llama.feed_forward_length
  int64_t n_ctx_train = 0;   // llama.context_length
  float rope_freq_base = 0;  // llama.rope.freq_base
  float norm_eps = 0;        // llama.attention.layer_norm_rms_epsilon

  int64_t head_dim() const { return n_embd / n_head; }  // llama.rope.dimension_count
};

std::span<const ModelPreset> model_presets();
// Exact, case-sensitive name; nullptr when unknown.
const ModelPreset* find_model_preset(std::string_view name);
// "tiny, llama3.2-1b, llama3-8b" for error messages.
std::string model_preset_names();

}  // namespace kiln::model
