// Tensor binding shared by the Llama-shaped architectures (pre-norm RMSNorm,
// GQA attention with RoPE, SwiGLU FFN): llama, qwen2, qwen3 differ only in
// optional pieces chosen by these options.
#pragma once

#include "kiln/model/arch.h"

namespace kiln::model::arch {

enum class Presence { absent, optional, required };

struct LlamaFamilyOptions {
  Presence qkv_bias = Presence::absent;  // blk.N.attn_{q,k,v}.bias
  Presence out_bias = Presence::absent;  // blk.N.attn_output.bias
  Presence qk_norm = Presence::absent;   // blk.N.attn_{q,k}_norm.weight, per head
  bool rope_freqs = false;               // rope_freqs.weight may be present
};

void bind_llama_family(WeightBinder& b, const HParams& hp, ModelWeights& w,
                       const LlamaFamilyOptions& opt);

}  // namespace kiln::model::arch
