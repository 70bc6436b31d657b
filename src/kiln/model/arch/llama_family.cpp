// Tensor binding shared by llama / qwen2 / qwen3 (tensor names as written by
// llama.cpp's converter).
#include "kiln/model/arch/llama_family.h"

#include <fmt/format.h>

#include "kiln/model/binder.h"

namespace kiln::model::arch {
namespace {

Vector vec(WeightBinder& b, Presence p, const std::string& name, int64_t n) {
  switch (p) {
    case Presence::required:
      return b.vector(name, n);
    case Presence::optional:
      return b.optional_vector(name, n);
    case Presence::absent:
      return {};
  }
  return {};
}

}  // namespace

void bind_llama_family(WeightBinder& b, const HParams& hp, ModelWeights& w,
                       const LlamaFamilyOptions& opt) {
  const int64_t e = hp.n_embd;
  w.tok_embd = b.matrix("token_embd.weight", e, hp.n_vocab);
  w.output_norm = b.vector("output_norm.weight", e);
  // No output.weight: the output projection is the token embedding (tied).
  w.output = b.optional_matrix("output.weight", e, hp.n_vocab);
  if (!w.output && !b.has("output.weight")) {
    w.output = w.tok_embd;
    w.output_tied = true;
  }
  if (opt.rope_freqs) w.rope_freqs = b.optional_vector("rope_freqs.weight", hp.n_rot / 2);

  w.layers.resize(size_t(hp.n_layer));
  for (int64_t i = 0; i < hp.n_layer; ++i) {
    LayerWeights& l = w.layers[size_t(i)];
    auto name = [i](const char* t) { return fmt::format("blk.{}.{}", i, t); };
    l.attn_norm = b.vector(name("attn_norm.weight"), e);
    l.wq = b.matrix(name("attn_q.weight"), e, hp.n_q());
    l.wk = b.matrix(name("attn_k.weight"), e, hp.n_k());
    l.wv = b.matrix(name("attn_v.weight"), e, hp.n_v());
    l.wo = b.matrix(name("attn_output.weight"), hp.n_attn_out(), e);
    l.bq = vec(b, opt.qkv_bias, name("attn_q.bias"), hp.n_q());
    l.bk = vec(b, opt.qkv_bias, name("attn_k.bias"), hp.n_k());
    l.bv = vec(b, opt.qkv_bias, name("attn_v.bias"), hp.n_v());
    l.bo = vec(b, opt.out_bias, name("attn_output.bias"), e);
    l.q_norm = vec(b, opt.qk_norm, name("attn_q_norm.weight"), hp.head_dim_k);
    l.k_norm = vec(b, opt.qk_norm, name("attn_k_norm.weight"), hp.head_dim_k);
    l.ffn_norm = b.vector(name("ffn_norm.weight"), e);
    l.w_gate = b.matrix(name("ffn_gate.weight"), e, hp.n_ff);
    l.w_up = b.matrix(name("ffn_up.weight"), e, hp.n_ff);
    l.w_down = b.matrix(name("ffn_down.weight"), hp.n_ff, e);
    // Precomputed rotary tables some old converters wrote; RoPE is computed here.
    b.ignore(name("attn_rot_embd"));
  }
  b.check_all_used(hp.arch);
}

}  // namespace kiln::model::arch
