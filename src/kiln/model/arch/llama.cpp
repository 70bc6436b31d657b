// `llama`: Llama 2, Llama 3/3.1/3.2, Mistral (and other models converted as llama).
// Q/K rows are stored permuted by the converter so RoPE rotates adjacent pairs;
// Llama 3.1+ scales rotation frequencies through rope_freqs.weight.
#include "kiln/model/arch/archs.h"
#include "kiln/model/arch/llama_family.h"

namespace kiln::model::arch {
namespace {

Status finish(const gguf::File&, HParams& hp) {
  hp.rope_style = RopeStyle::adjacent_pairs;
  return Status::success();
}

void bind(WeightBinder& b, const HParams& hp, ModelWeights& w) {
  bind_llama_family(b, hp, w,
                    {.qkv_bias = Presence::optional,
                     .out_bias = Presence::optional,
                     .qk_norm = Presence::absent,
                     .rope_freqs = true});
}

}  // namespace

const ArchSpec llama{"llama", "Llama 2/3/3.1/3.2, Mistral", &finish, &bind};

}  // namespace kiln::model::arch
