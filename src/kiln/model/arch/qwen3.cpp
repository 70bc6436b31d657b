// `qwen3`: Qwen3 dense models. Llama-shaped without biases, with an RMSNorm of
// each Q and K head (attn_q_norm / attn_k_norm, [head_dim]) before RoPE; NeoX
// RoPE; head size from attention.key_length (not n_embd / n_head).
#include "kiln/model/arch/archs.h"
#include "kiln/model/arch/llama_family.h"

namespace kiln::model::arch {
namespace {

Status finish(const gguf::File&, HParams& hp) {
  hp.rope_style = RopeStyle::neox;
  return Status::success();
}

void bind(WeightBinder& b, const HParams& hp, ModelWeights& w) {
  bind_llama_family(b, hp, w, {.qkv_bias = Presence::optional, .qk_norm = Presence::required});
}

}  // namespace

const ArchSpec qwen3{"qwen3", "Qwen3 dense", &finish, &bind};

}  // namespace kiln::model::arch
