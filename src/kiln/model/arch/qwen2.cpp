// `qwen2`: Qwen2 / Qwen2.5. Llama-shaped with Q/K/V biases; RoPE rotates
// (i, i + n_rot/2) pairs (checkpoints are stored unpermuted).
#include "kiln/model/arch/archs.h"
#include "kiln/model/arch/llama_family.h"

namespace kiln::model::arch {
namespace {

Status finish(const gguf::File&, HParams& hp) {
  hp.rope_style = RopeStyle::neox;
  return Status::success();
}

void bind(WeightBinder& b, const HParams& hp, ModelWeights& w) {
  bind_llama_family(b, hp, w, {.qkv_bias = Presence::required});
}

}  // namespace

const ArchSpec qwen2{"qwen2", "Qwen2, Qwen2.5", &finish, &bind};

}  // namespace kiln::model::arch
