// Which type each tensor of a model gets when a whole file is quantized
// (`kiln quantize`): the presets users name (q8_0, q4_k_m, ...) and the
// per-tensor rules GGUF files in the wild were made with (llama.cpp's
// llama-quantize), so that kiln's q4_k_m file has the same types as theirs.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "kiln/core/dtype.h"

namespace kiln::quant {

// A target the user can name on the command line.
struct QuantPreset {
  std::string_view name;  // "q4_k_m", "q8_0", "f16", ...
  DType base;             // the type most weights get
  uint32_t file_type;     // general.file_type (llama.cpp's LLAMA_FTYPE_* number)
};

std::span<const QuantPreset> quant_presets();
// Case-insensitive; nullopt for unknown names.
std::optional<QuantPreset> quant_preset_from_name(std::string_view name);
// "f32 f16 bf16 q8_0 ..." for error messages.
std::string quant_preset_names();

// What the rules need to know about the model as a whole.
struct MixModel {
  std::string arch;           // general.architecture ("llama", "falcon", ...)
  int n_layers = 0;           // <arch>.block_count
  int n_experts = 0;          // <arch>.expert_count (0: dense)
  bool has_output = true;     // false: token_embd doubles as the output projection
  bool is_70b_class = false;  // 80 layers with grouped-query attention (see mix.cpp)
};

// Whether a tensor is a weight matrix that gets quantized at all: names ending
// in "weight" with two or more dimensions, except norms, expert routers,
// position / token-type embeddings and small special matrices. Everything else
// (1-D norms, biases, rope_freqs) is copied unchanged.
bool is_quantizable(std::string_view name, std::span<const int64_t> ne);

// The layer of "blk.N.…" names; nullopt for tensors outside the layers.
std::optional<int> layer_index(std::string_view name);

// The type of a quantizable tensor under a preset. `pure` gives every tensor
// the preset's base type (still falling back where rows do not fit blocks).
DType tensor_type(const QuantPreset& preset, const MixModel& model, std::string_view name,
                  std::span<const int64_t> ne, bool pure = false);

// A type whose blocks divide a row of row_len elements: t itself when they
// do, else q4_k -> q5_0, q5_k -> q5_1, q6_k -> q8_0, and f16 as last resort.
DType fallback_type(DType t, int64_t row_len);

}  // namespace kiln::quant
