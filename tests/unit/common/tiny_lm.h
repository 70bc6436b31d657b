// A tiny random llama with a made-up SentencePiece vocabulary (<unk>, <s>,
// </s> = EOS, then pieces "▁w3", "▁w4", ...), as a GGUF writer: for tests
// that need a whole model file on disk (kiln bake reads files). Header-only,
// like tiny_model.h.
#pragma once

#include <fstream>
#include <string>
#include <vector>

#include "common/tiny_model.h"

namespace kiln::test {

// The made-up SentencePiece vocabulary above, for a model of n_vocab tokens.
inline void add_tiny_sp_vocab(gguf::Writer& w, int64_t n_vocab) {
  gguf::Array toks{gguf::ValueType::STRING, {}}, scores{gguf::ValueType::F32, {}},
      types{gguf::ValueType::I32, {}};
  for (int i = 0; i < n_vocab; ++i) {
    const std::string text = i == 0   ? "<unk>"
                             : i == 1 ? "<s>"
                             : i == 2 ? "</s>"
                                      : "\xE2\x96\x81w" + std::to_string(i);
    toks.items.push_back(gguf::Value{text});
    scores.items.push_back(gguf::Value{-float(i)});
    types.items.push_back(gguf::Value{int32_t(i == 0 ? 2 : i <= 2 ? 3 : 1)});
  }
  w.set_string("tokenizer.ggml.model", "llama");
  w.set("tokenizer.ggml.tokens", gguf::Value{toks});
  w.set("tokenizer.ggml.scores", gguf::Value{scores});
  w.set("tokenizer.ggml.token_type", gguf::Value{types});
  w.set_u32("tokenizer.ggml.bos_token_id", 1);
  w.set_u32("tokenizer.ggml.eos_token_id", 2);
  w.set_u32("tokenizer.ggml.unknown_token_id", 0);
}

inline gguf::Writer tiny_lm_writer(DType wtype = DType::F32, uint64_t seed = 7,
                                   int64_t n_vocab = 96) {
  TinySpec spec;
  spec.n_vocab = n_vocab;
  spec.n_embd = 64;
  spec.n_head = 2;
  spec.n_head_kv = 1;  // head size 32: q8_0 KV works
  spec.n_ff = 128;
  spec.n_layer = 2;
  spec.seed = seed;
  spec.wtype = wtype;
  spec.tied = false;
  gguf::Writer w = make_tiny_model(spec).writer();
  add_tiny_sp_vocab(w, spec.n_vocab);
  return w;
}

}  // namespace kiln::test
