// Random-weight Llama-architecture GGUF models with a real tokenizer
// (`kiln synth`): the shapes of a named preset, every weight matrix in one
// type (or a q4_k_m / q5_k_m mix), norms in f32. Performance does not depend
// on the weight values, so these stand in for real models in benchmarks.
#pragma once

#include <cstdint>
#include <functional>
#include <string>

#include "kiln/core/status.h"

namespace kiln::model {

// Weights are drawn with this standard deviation (that of trained Llama
// matrices, roughly), so activations stay in a realistic range.
constexpr float kSynthWeightStd = 0.02f;

struct SynthOptions {
  std::string preset;      // a name from model_presets()
  std::string vocab_path;  // a GGUF with tokenizer.* metadata (e.g. ggml-vocab-llama-bpe.gguf)
  std::string type;        // f32 f16 bf16 q8_0 q4_0 q4_1 q5_0 q5_1 q4_k q5_k q6_k, q4_k_m q5_k_m
  std::string out_path;
  uint64_t seed = 0;  // same seed, preset, type and vocab: the same file, byte for byte
  int n_threads = 0;  // <= 0: all hardware threads
  // Called with one line per tensor group (embeddings, each layer, output,
  // writing); may be empty.
  std::function<void(const std::string&)> progress;
};

struct SynthSummary {
  int64_t n_vocab = 0;
  uint64_t n_params = 0;
  uint64_t file_bytes = 0;
  double generate_s = 0;  // filling the weights
  double write_s = 0;     // writing (and syncing) the file
};

// Writes opts.out_path atomically. Errors name the bad option and the
// accepted values (unknown preset or type, a vocab file without a tokenizer).
Result<SynthSummary> synth_model(const SynthOptions& opts);

}  // namespace kiln::model
