// The preset table. Shapes follow the published configs of the models they
// are named after (Llama 3.2 1B, Llama 3 8B), except that every preset keeps a
// separate output matrix (Llama 3.2 1B ties it to the embedding), as the
// reference benchmark models in docs/ do.
#include "kiln/model/presets.h"

#include <array>

namespace kiln::model {
namespace {

constexpr std::array kPresets = {
    // A few MB with a 128k vocabulary: the two [64, n_vocab] matrices dominate.
    // Rows of 64 do not fit the k-quants' 256-element blocks: those tensors
    // fall back (q4_k -> q5_0, q5_k -> q5_1, q6_k -> q8_0).
    ModelPreset{"tiny", "dim 64, 2 layers, 4 heads (2 KV), FFN 128: a few MB, for tests", 64, 2, 4,
                2, 128, 2048, 10000.0f, 1e-5f},
    // The smallest shape whose every row fits 256-element blocks, so the
    // k-quants are exercised without fallbacks.
    ModelPreset{"tiny-k", "dim 256, 2 layers, 4 heads (2 KV), FFN 512: rows fit k-quant blocks",
                256, 2, 4, 2, 512, 2048, 10000.0f, 1e-5f},
    ModelPreset{"llama3.2-1b",
                "Llama 3.2 1B shapes, untied output: dim 2048, 16 layers, 32 heads (8 KV), "
                "FFN 8192",
                2048, 16, 32, 8, 8192, 131072, 500000.0f, 1e-5f},
    ModelPreset{"llama3-8b",
                "Llama 3 8B shapes: dim 4096, 32 layers, 32 heads (8 KV), FFN 14336 "
                "(the reference benchmark model)",
                4096, 32, 32, 8, 14336, 8192, 500000.0f, 1e-5f},
};

}  // namespace

std::span<const ModelPreset> model_presets() {
  return kPresets;
}

const ModelPreset* find_model_preset(std::string_view name) {
  for (const auto& p : kPresets)
    if (p.name == name) return &p;
  return nullptr;
}

std::string model_preset_names() {
  std::string s;
  for (const auto& p : kPresets) {
    if (!s.empty()) s += ", ";
    s += p.name;
  }
  return s;
}

}  // namespace kiln::model
