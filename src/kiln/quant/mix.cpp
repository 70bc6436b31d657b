// Per-tensor type rules of the quantization presets, as llama.cpp's
// llama-quantize applies them (described here in kiln's words; checked against
// the reference Q4_K_M / Q4_0 / Q5_0 files in shared/testdata/reference/).
//
// Which tensors are quantized: those whose name ends in "weight" with at least
// two non-trivial dimensions, except norms ("_norm.weight"), MoE routers
// ("ffn_gate_inp"), learned position and token-type embeddings, T5's relative
// position bias, and a few small architecture-specific matrices (Mamba/RWKV
// convolutions and mixing weights, Gemma 3n's altup/laurel, per-layer model
// projection). All other tensors (1-D norms, biases, rope_freqs) are copied.
//
// For f32/f16/bf16 targets every quantized tensor simply gets that type. For
// quantized presets the default is the preset's base type, adjusted by role:
//  * the output projection (output.weight, or token_embd.weight when the model
//    has no output.weight and ties the two) gets q6_k, because errors there hit
//    every logit directly; q8_0 presets keep q8_0; falcon, or a row length that
//    the base type's blocks do not divide, gets q8_0;
//  * q4_k_m and q5_k_m give q6_k to attn_v and ffn_down in the "more bits"
//    layers: the first eighth, the last eighth, and every third layer in
//    between (layer i with (i - n/8) % 3 == 2). For n = 32: 0-3, 6, 9, ..., 27
//    (every third), 28-31. Fused attn_qkv gets q5_k (q4_k_m) / q6_k (q5_k_m).
//    (Falcon's q4_k_m ffn_down instead: q6_k in the first sixteenth, q5_k in
//    the "more bits" layers.)
//  * q4_k (llama.cpp's Q4_K_S) gives q5_k to attn_v in layers 0-3 and to
//    ffn_down in the first eighth of the layers.
//  * 70B-class models (80 layers, grouped-query attention: 8x fewer V rows
//    than Q rows, so extra bits there are cheap) get q5_k instead of q4_k for
//    attn_v. llama.cpp recognizes these by model size; kiln uses the shape.
//  * 8-expert MoE models get q8_0 for attn_v and attn_k (shared by all
//    experts), and q5_k for attn_output under q4_k / q4_k_m.
// Finally, when the chosen type's blocks do not divide the row length, the
// tensor falls back: q4_k -> q5_0, q5_k -> q5_1, q6_k -> q8_0, and f16 when
// even those do not fit. (llama.cpp refuses such tensors for the 32-element
// types; kiln falls back to f16 instead.)
#include "kiln/quant/mix.h"

#include <array>
#include <cctype>

namespace kiln::quant {
namespace {

// llama.cpp's LLAMA_FTYPE_* numbers, stored as general.file_type.
enum FileType : uint32_t {
  kFtF32 = 0,
  kFtF16 = 1,
  kFtQ4_0 = 2,
  kFtQ4_1 = 3,
  kFtQ8_0 = 7,
  kFtQ5_0 = 8,
  kFtQ5_1 = 9,
  kFtQ4_K_S = 14,
  kFtQ4_K_M = 15,
  kFtQ5_K_S = 16,
  kFtQ5_K_M = 17,
  kFtQ6_K = 18,
  kFtBF16 = 32,
};

constexpr std::array kPresets = {
    QuantPreset{"f32", DType::F32, kFtF32},        QuantPreset{"f16", DType::F16, kFtF16},
    QuantPreset{"bf16", DType::BF16, kFtBF16},     QuantPreset{"q8_0", DType::Q8_0, kFtQ8_0},
    QuantPreset{"q4_0", DType::Q4_0, kFtQ4_0},     QuantPreset{"q4_1", DType::Q4_1, kFtQ4_1},
    QuantPreset{"q5_0", DType::Q5_0, kFtQ5_0},     QuantPreset{"q5_1", DType::Q5_1, kFtQ5_1},
    QuantPreset{"q4_k", DType::Q4_K, kFtQ4_K_S},   QuantPreset{"q5_k", DType::Q5_K, kFtQ5_K_S},
    QuantPreset{"q6_k", DType::Q6_K, kFtQ6_K},     QuantPreset{"q4_k_m", DType::Q4_K, kFtQ4_K_M},
    QuantPreset{"q5_k_m", DType::Q5_K, kFtQ5_K_M},
};

bool contains(std::string_view s, std::string_view part) {
  return s.find(part) != std::string_view::npos;
}

bool use_more_bits(int i, int n) {
  return i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2;
}

bool is_float_type(DType t) {
  return t == DType::F32 || t == DType::F16 || t == DType::BF16;
}

}  // namespace

std::span<const QuantPreset> quant_presets() {
  return kPresets;
}

std::optional<QuantPreset> quant_preset_from_name(std::string_view name) {
  for (const auto& p : kPresets) {
    if (p.name.size() != name.size()) continue;
    bool same = true;
    for (size_t i = 0; i < name.size() && same; ++i)
      same = std::tolower(static_cast<unsigned char>(name[i])) == p.name[i];
    if (same) return p;
  }
  return std::nullopt;
}

std::string quant_preset_names() {
  std::string out;
  for (const auto& p : kPresets) {
    if (!out.empty()) out += ' ';
    out += p.name;
  }
  return out;
}

bool is_quantizable(std::string_view name, std::span<const int64_t> ne) {
  if (name.size() < 6 || name.substr(name.size() - 6) != "weight") return false;
  // Dimensions as ggml counts them: trailing size-1 dimensions do not count.
  int n_dims = 1;
  for (size_t i = 0; i < ne.size(); ++i)
    if (ne[i] > 1) n_dims = int(i) + 1;
  if (n_dims < 2) return false;
  static constexpr std::string_view kKeep[] = {
      "_norm.weight",
      "ffn_gate_inp.weight",
      "altup",
      "laurel",
      "per_layer_model_proj",
      "ssm_conv1d.weight",
      "shortconv.conv.weight",
      "time_mix_first.weight",
      "time_mix_w0.weight",
      "time_mix_w1.weight",
      "time_mix_w2.weight",
      "time_mix_v0.weight",
      "time_mix_v1.weight",
      "time_mix_v2.weight",
      "time_mix_a0.weight",
      "time_mix_a1.weight",
      "time_mix_a2.weight",
      "time_mix_g1.weight",
      "time_mix_g2.weight",
      "time_mix_decay_w1.weight",
      "time_mix_decay_w2.weight",
      "time_mix_lerp_fused.weight",
      "attn_rel_b.weight",
  };
  for (auto k : kKeep)
    if (contains(name, k)) return false;
  if (name == "position_embd.weight" || name == "token_types.weight") return false;
  return true;
}

std::optional<int> layer_index(std::string_view name) {
  if (name.substr(0, 4) != "blk.") return std::nullopt;
  int v = 0;
  size_t i = 4;
  for (; i < name.size() && std::isdigit(static_cast<unsigned char>(name[i])); ++i) {
    v = v * 10 + (name[i] - '0');
    if (v > 1000000) return std::nullopt;
  }
  if (i == 4 || i >= name.size() || name[i] != '.') return std::nullopt;
  return v;
}

DType fallback_type(DType t, int64_t row_len) {
  auto fits = [&](DType u) { return row_len % int64_t(dtype_info(u).block_elems) == 0; };
  if (fits(t)) return t;
  DType f = DType::F16;
  switch (t) {
    case DType::Q4_K:
      f = DType::Q5_0;
      break;
    case DType::Q5_K:
      f = DType::Q5_1;
      break;
    case DType::Q6_K:
      f = DType::Q8_0;
      break;
    default:
      break;
  }
  return fits(f) ? f : DType::F16;
}

DType tensor_type(const QuantPreset& preset, const MixModel& model, std::string_view name,
                  std::span<const int64_t> ne, bool pure) {
  const int64_t row_len = ne.empty() ? 1 : ne[0];
  DType t = preset.base;
  if (is_float_type(t)) return t;
  if (pure) return fallback_type(t, row_len);

  const uint32_t ft = preset.file_type;
  const bool falcon = model.arch == "falcon";
  const int n = model.n_layers;
  const int layer = layer_index(name).value_or(0);

  if (name == "output.weight" || (!model.has_output && name == "token_embd.weight")) {
    if (falcon || row_len % int64_t(dtype_info(t).block_elems) != 0)
      t = DType::Q8_0;
    else if (t != DType::Q8_0)
      t = DType::Q6_K;
  } else if (name == "token_embd.weight") {
    // the base type
  } else if (contains(name, "attn_v.weight")) {
    if ((ft == kFtQ4_K_M || ft == kFtQ5_K_M) && use_more_bits(layer, n))
      t = DType::Q6_K;
    else if (ft == kFtQ4_K_S && layer < 4)
      t = DType::Q5_K;
    if (model.is_70b_class && t == DType::Q4_K) t = DType::Q5_K;
    if (model.n_experts == 8) t = DType::Q8_0;
  } else if (contains(name, "attn_k.weight")) {
    if (model.n_experts == 8) t = DType::Q8_0;
  } else if (contains(name, "ffn_down")) {
    if (ft == kFtQ4_K_M) {
      if (falcon)
        t = layer < n / 16 ? DType::Q6_K : use_more_bits(layer, n) ? DType::Q5_K : DType::Q4_K;
      else if (use_more_bits(layer, n))
        t = DType::Q6_K;
    } else if (ft == kFtQ5_K_M && use_more_bits(layer, n)) {
      t = DType::Q6_K;
    } else if (ft == kFtQ4_K_S && !falcon && layer < n / 8) {
      t = DType::Q5_K;
    }
  } else if (contains(name, "attn_output.weight")) {
    if (!falcon && model.n_experts == 8 && (ft == kFtQ4_K_S || ft == kFtQ4_K_M)) t = DType::Q5_K;
  } else if (contains(name, "attn_qkv.weight")) {
    if (ft == kFtQ4_K_M)
      t = DType::Q5_K;
    else if (ft == kFtQ5_K_M)
      t = DType::Q6_K;
  }
  return fallback_type(t, row_len);
}

}  // namespace kiln::quant
