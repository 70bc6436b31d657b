// Reading and checking the `<arch>.*` hyperparameter keys of a GGUF file.
#include "kiln/model/hparams.h"

#include <fmt/format.h>

#include <cmath>

#include "kiln/gguf/gguf.h"

namespace kiln::model {
namespace {

// Reads `<arch>.<suffix>` as a positive integer. Arrays (per-layer values, as
// some architectures store head counts) are rejected explicitly rather than
// misread.
Result<int64_t> read_count(const gguf::File& f, const std::string& arch, const char* suffix,
                           std::optional<int64_t> fallback) {
  const std::string key = arch + "." + suffix;
  const gguf::Value* v = f.find(key);
  if (!v) {
    if (fallback) return *fallback;
    return make_error(
        fmt::format("{}: required metadata key '{}' is missing (it says how the "
                    "model is shaped; re-convert the model with a current converter)",
                    f.path(), key));
  }
  if (v->as_array())
    return make_error(
        fmt::format("{}: '{}' is an array (per-layer values); kiln supports one "
                    "value for all layers",
                    f.path(), key));
  const auto i = v->as_int();
  if (!i)
    return make_error(fmt::format("{}: '{}' must be an integer, found {}", f.path(), key,
                                  gguf::value_type_name(v->type())));
  if (*i <= 0) return make_error(fmt::format("{}: '{}' = {} must be positive", f.path(), key, *i));
  return *i;
}

Result<double> read_real(const gguf::File& f, const std::string& key,
                         std::optional<double> fallback) {
  const gguf::Value* v = f.find(key);
  if (!v) {
    if (fallback) return *fallback;
    return make_error(fmt::format("{}: required metadata key '{}' is missing", f.path(), key));
  }
  const auto d = v->as_float();
  if (!d || !std::isfinite(*d))
    return make_error(fmt::format("{}: '{}' must be a finite number", f.path(), key));
  return *d;
}

}  // namespace

Result<HParams> read_hparams(const gguf::File& f, const std::string& arch) {
  HParams hp;
  hp.arch = arch;
#define KILN_READ(field, suffix, fallback)           \
  do {                                               \
    auto r_ = read_count(f, arch, suffix, fallback); \
    if (!r_.ok()) return r_.error();                 \
    hp.field = *r_;                                  \
  } while (0)
  KILN_READ(n_embd, "embedding_length", std::nullopt);
  KILN_READ(n_layer, "block_count", std::nullopt);
  KILN_READ(n_head, "attention.head_count", std::nullopt);
  KILN_READ(n_head_kv, "attention.head_count_kv", hp.n_head);  // absent: plain multi-head
  KILN_READ(n_ff, "feed_forward_length", std::nullopt);
  KILN_READ(n_ctx_train, "context_length", std::nullopt);
  if (hp.n_embd % hp.n_head != 0 && !f.find(arch + ".attention.key_length"))
    return make_error(fmt::format(
        "{}: {}.embedding_length ({}) is not a multiple of {}.attention.head_count ({}) and "
        "{}.attention.key_length is missing, so the head size is unknown",
        f.path(), arch, hp.n_embd, arch, hp.n_head, arch));
  KILN_READ(head_dim_k, "attention.key_length", hp.n_embd / hp.n_head);
  KILN_READ(head_dim_v, "attention.value_length", hp.head_dim_k);
  KILN_READ(n_rot, "rope.dimension_count", hp.head_dim_k);

  // Vocabulary size: the arch key, else the tokenizer's token list.
  if (f.find(arch + ".vocab_size")) {
    KILN_READ(n_vocab, "vocab_size", std::nullopt);
  } else if (const gguf::Array* toks = f.get_array("tokenizer.ggml.tokens")) {
    hp.n_vocab = int64_t(toks->items.size());
  } else {
    hp.n_vocab = 0;  // taken from token_embd when the weights are bound
  }
#undef KILN_READ

  auto base = read_real(f, arch + ".rope.freq_base", 10000.0);
  if (!base.ok()) return base.error();
  hp.rope_freq_base = *base;
  auto eps = read_real(f, arch + ".attention.layer_norm_rms_epsilon", std::nullopt);
  if (!eps.ok()) return eps.error();
  hp.rms_eps = float(*eps);

  // RoPE scaling: `rope.scaling.type` + `rope.scaling.factor`, or the older
  // `rope.scale_linear`. Llama 3.1's frequency scaling is not here: it is baked
  // into the rope_freqs.weight tensor.
  const std::string type_key = arch + ".rope.scaling.type";
  std::string scaling = f.get_string(type_key).value_or("");
  auto factor = read_real(f, arch + ".rope.scaling.factor", 0.0);
  if (!factor.ok()) return factor.error();
  double scale = *factor;
  if (scaling.empty() && f.find(arch + ".rope.scale_linear")) {
    auto lin = read_real(f, arch + ".rope.scale_linear", 1.0);
    if (!lin.ok()) return lin.error();
    scaling = "linear";
    scale = *lin;
  }
  if (scaling.empty() || scaling == "none" ||
      (scaling == "linear" && (scale == 0.0 || scale == 1.0))) {
    hp.rope_scaling = RopeScaling::none;
  } else if (scaling == "linear") {
    hp.rope_scaling = RopeScaling::linear;
    hp.rope_scale_factor = scale;
  } else {
    return make_error(
        fmt::format("{}: '{}' = '{}' is not supported (kiln supports 'none' and "
                    "'linear' RoPE scaling)",
                    f.path(), type_key, scaling));
  }
  return hp;
}

Status validate_hparams(const HParams& hp, const std::string& file) {
  auto fail = [&](std::string msg) { return Status(make_error(file + ": " + msg)); };
  if (hp.n_head_kv > hp.n_head || hp.n_head % hp.n_head_kv != 0)
    return fail(
        fmt::format("{}.attention.head_count ({}) must be a multiple of "
                    "{}.attention.head_count_kv ({})",
                    hp.arch, hp.n_head, hp.arch, hp.n_head_kv));
  if (hp.n_rot % 2 != 0 || hp.n_rot > hp.head_dim_k)
    return fail(
        fmt::format("{}.rope.dimension_count ({}) must be even and at most the head "
                    "size ({})",
                    hp.arch, hp.n_rot, hp.head_dim_k));
  if (!(hp.rope_freq_base > 0))
    return fail(fmt::format("{}.rope.freq_base ({}) must be positive", hp.arch, hp.rope_freq_base));
  if (!(hp.rms_eps > 0) || !std::isfinite(hp.rms_eps))
    return fail(fmt::format("{}.attention.layer_norm_rms_epsilon ({}) must be positive", hp.arch,
                            hp.rms_eps));
  if (hp.rope_scaling == RopeScaling::linear && !(hp.rope_scale_factor > 0))
    return fail(
        fmt::format("{}.rope.scaling.factor ({}) must be positive", hp.arch, hp.rope_scale_factor));
  if (hp.n_vocab <= 0)
    return fail(
        fmt::format("the vocabulary size is unknown (no {}.vocab_size, "
                    "tokenizer.ggml.tokens or token_embd.weight)",
                    hp.arch));
  return Status::success();
}

std::string describe(const HParams& hp) {
  return fmt::format(
      "{}: vocab {}, embd {}, layers {}, heads {}/{} (kv), head dim {}/{}, ffn {}, rope {} "
      "base {} over {} dims{}, ctx {}",
      hp.arch, hp.n_vocab, hp.n_embd, hp.n_layer, hp.n_head, hp.n_head_kv, hp.head_dim_k,
      hp.head_dim_v, hp.n_ff, hp.rope_style == RopeStyle::neox ? "neox" : "adjacent",
      hp.rope_freq_base, hp.n_rot,
      hp.rope_scaling == RopeScaling::linear ? fmt::format(" (linear x{})", hp.rope_scale_factor)
                                             : "",
      hp.n_ctx_train);
}

}  // namespace kiln::model
