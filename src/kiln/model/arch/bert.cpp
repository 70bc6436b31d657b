// `bert`: BERT-family sentence-embedding encoders (bge, MiniLM, e5, ...), with
// the keys and tensor names llama.cpp's converter writes for them: learned
// absolute positions (position_embd), token types (token_types, row 0 used),
// an embedding LayerNorm (token_embd_norm), post-LayerNorm blocks
// (attn_output_norm after the attention residual, layer_output_norm after
// the FFN residual), biases on every linear layer, GELU FFN, no causal mask.
#include <fmt/format.h>

#include "kiln/gguf/gguf.h"
#include "kiln/model/arch/encoder_archs.h"
#include "kiln/model/binder.h"

namespace kiln::model::arch {
namespace {

// `<arch>.<suffix>` as a positive integer; `fallback` when absent (nullopt: required).
Result<int64_t> count(const gguf::File& f, const std::string& arch, const char* suffix,
                      std::optional<int64_t> fallback = std::nullopt) {
  const std::string key = arch + "." + suffix;
  const gguf::Value* v = f.find(key);
  if (!v) {
    if (fallback) return *fallback;
    return make_error(
        fmt::format("{}: required metadata key '{}' is missing (re-convert the "
                    "model with llama.cpp's convert_hf_to_gguf.py)",
                    f.path(), key));
  }
  const auto i = v->as_int();
  if (!i || *i <= 0)
    return make_error(fmt::format("{}: '{}' must be a positive integer", f.path(), key));
  return *i;
}

Status read_hparams(const gguf::File& f, EncoderHParams& hp) {
  const std::string& a = hp.arch;
#define KILN_COUNT(field, ...)          \
  do {                                  \
    auto r_ = count(f, a, __VA_ARGS__); \
    if (!r_.ok()) return r_.error();    \
    hp.field = *r_;                     \
  } while (0)
  KILN_COUNT(n_embd, "embedding_length");
  KILN_COUNT(n_layer, "block_count");
  KILN_COUNT(n_head, "attention.head_count");
  KILN_COUNT(n_ff, "feed_forward_length");
  KILN_COUNT(n_ctx_train, "context_length");
  int64_t n_head_kv = 0;
  {
    auto r = count(f, a, "attention.head_count_kv", hp.n_head);
    if (!r.ok()) return r.error();
    n_head_kv = *r;
  }
#undef KILN_COUNT
  if (n_head_kv != hp.n_head)
    return make_error(
        fmt::format("{}: {}.attention.head_count_kv ({}) differs from head_count "
                    "({}); BERT encoders have plain multi-head attention",
                    f.path(), a, n_head_kv, hp.n_head));
  if (hp.n_embd % hp.n_head != 0)
    return make_error(
        fmt::format("{}: {}.embedding_length ({}) is not a multiple of "
                    "{}.attention.head_count ({})",
                    f.path(), a, hp.n_embd, a, hp.n_head));
  hp.head_dim = hp.n_embd / hp.n_head;

  const auto eps = f.get_float(a + ".attention.layer_norm_epsilon");
  if (!eps || !(*eps > 0))
    return make_error(
        fmt::format("{}: '{}.attention.layer_norm_epsilon' is missing or not a "
                    "positive number",
                    f.path(), a));
  hp.norm_eps = float(*eps);

  // The converter writes causal = false for BERT; a causal file is a
  // different model that kiln's bidirectional encoder would run wrongly.
  if (f.get_bool(a + ".attention.causal").value_or(false))
    return make_error(
        fmt::format("{}: {}.attention.causal is true; kiln's {} encoder attends "
                    "in both directions",
                    f.path(), a, a));

  // pooling_type is written from the sentence-transformers Pooling config;
  // when absent, mean pooling (sentence-transformers' default) is assumed.
  if (const gguf::Value* v = f.find(a + ".pooling_type")) {
    const auto p = v->as_int();
    if (!p || (*p != 1 && *p != 2 && *p != 3))
      return make_error(fmt::format(
          "{}: {}.pooling_type = {} is not supported: kiln's embeddings need one vector per "
          "input, pooled by mean (1), CLS (2) or last token (3) (0 = none and 4 = rank are "
          "per-token outputs and rerankers)",
          f.path(), a, v->to_display()));
    hp.pooling = Pooling(*p);
    hp.pooling_in_file = true;
  }

  if (const gguf::Array* toks = f.get_array("tokenizer.ggml.tokens"))
    hp.n_vocab = int64_t(toks->items.size());
  // Token types: the tensor's rows, checked against the tokenizer's count when given.
  if (const gguf::TensorInfo* tt = f.tensor("token_types.weight"); tt && tt->ne.size() == 2)
    hp.n_token_types = tt->ne[1];
  if (auto n = f.get_int("tokenizer.ggml.token_type_count");
      n && hp.n_token_types != 0 && *n != hp.n_token_types)
    return make_error(
        fmt::format("{}: tokenizer.ggml.token_type_count = {} but token_types.weight "
                    "has {} rows",
                    f.path(), *n, hp.n_token_types));
  return Status::success();
}

void bind(WeightBinder& b, const EncoderHParams& hp, EncoderWeights& w) {
  const int64_t e = hp.n_embd;
  w.tok_embd = b.matrix("token_embd.weight", e, hp.n_vocab);
  if (hp.n_token_types > 0) w.type_embd = b.matrix("token_types.weight", e, hp.n_token_types);
  w.pos_embd = b.matrix("position_embd.weight", e, hp.n_ctx_train);
  w.embd_norm = b.vector("token_embd_norm.weight", e);
  w.embd_norm_b = b.vector("token_embd_norm.bias", e);
  // Classifier heads of rerankers (pooling "rank"), not used for embeddings.
  for (const char* t : {"cls.weight", "cls.bias", "cls.output.weight", "cls.output.bias"})
    b.ignore(t);

  w.layers.resize(size_t(hp.n_layer));
  for (int64_t i = 0; i < hp.n_layer; ++i) {
    EncoderLayerWeights& l = w.layers[size_t(i)];
    auto name = [i](const char* t) { return fmt::format("blk.{}.{}", i, t); };
    l.wq = b.matrix(name("attn_q.weight"), e, e);
    l.wk = b.matrix(name("attn_k.weight"), e, e);
    l.wv = b.matrix(name("attn_v.weight"), e, e);
    l.bq = b.optional_vector(name("attn_q.bias"), e);
    l.bk = b.optional_vector(name("attn_k.bias"), e);
    l.bv = b.optional_vector(name("attn_v.bias"), e);
    l.wo = b.matrix(name("attn_output.weight"), e, e);
    l.bo = b.optional_vector(name("attn_output.bias"), e);
    l.attn_norm = b.vector(name("attn_output_norm.weight"), e);
    l.attn_norm_b = b.vector(name("attn_output_norm.bias"), e);
    l.w_up = b.matrix(name("ffn_up.weight"), e, hp.n_ff);
    l.b_up = b.optional_vector(name("ffn_up.bias"), hp.n_ff);
    l.w_down = b.matrix(name("ffn_down.weight"), hp.n_ff, e);
    l.b_down = b.optional_vector(name("ffn_down.bias"), e);
    l.out_norm = b.vector(name("layer_output_norm.weight"), e);
    l.out_norm_b = b.vector(name("layer_output_norm.bias"), e);
  }
  b.check_all_used(hp.arch);
}

}  // namespace

const EncoderArchSpec bert{"bert", "BERT sentence encoders: bge, MiniLM, e5", &read_hparams, &bind};

}  // namespace kiln::model::arch
