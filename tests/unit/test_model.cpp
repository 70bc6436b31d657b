// Model loading: hyperparameters from metadata, the arch registry, weight
// binding, and the errors for missing/inconsistent keys and tensors.
#include <gtest/gtest.h>

#include "common/paths.h"
#include "common/tiny_model.h"
#include "kiln/gguf/gguf.h"
#include "kiln/model/model.h"

using kiln::DType;
using kiln::model::Model;
using kiln::test::make_tiny_model;
using kiln::test::TinyModel;
using kiln::test::TinySpec;

namespace {

// Loads a model from an in-memory image; the bytes must outlive the model.
kiln::Result<std::unique_ptr<Model>> load(const std::vector<uint8_t>& bytes) {
  auto f = kiln::gguf::File::parse(bytes, "tiny.gguf");
  if (!f.ok()) return f.error();
  return Model::from_file(std::move(f.value()));
}

std::string load_error(const TinyModel& m, std::vector<uint8_t>& keep) {
  keep = m.bytes();
  auto r = load(keep);
  EXPECT_FALSE(r.ok());
  return r.ok() ? std::string() : r.message();
}

#define EXPECT_CONTAINS(haystack, needle) \
  EXPECT_NE(std::string(haystack).find(needle), std::string::npos) << (haystack)

}  // namespace

TEST(Model, LoadsTinyLlama) {
  TinyModel m = make_tiny_model({});
  const auto bytes = m.bytes();
  auto r = load(bytes);
  ASSERT_TRUE(r.ok()) << r.message();
  const auto& hp = (*r)->hparams();
  EXPECT_EQ(hp.arch, "llama");
  EXPECT_EQ(hp.n_vocab, 64);
  EXPECT_EQ(hp.n_embd, 32);
  EXPECT_EQ(hp.n_layer, 2);
  EXPECT_EQ(hp.n_head, 4);
  EXPECT_EQ(hp.n_head_kv, 2);
  EXPECT_EQ(hp.head_dim_k, 8);
  EXPECT_EQ(hp.n_rot, 8);
  EXPECT_EQ(hp.rope_style, kiln::model::RopeStyle::adjacent_pairs);
  const auto& w = (*r)->weights();
  EXPECT_TRUE(w.output_tied);
  EXPECT_EQ(w.output.data, w.tok_embd.data);
  ASSERT_EQ(w.layers.size(), 2u);
  EXPECT_EQ(w.layers[1].wk.n_out, 16);
  EXPECT_EQ(w.layers[1].wk.n_in, 32);
  EXPECT_FALSE(w.layers[0].bq);
  EXPECT_FALSE(w.rope_freqs);
}

TEST(Model, UntiedOutputAndRopeFreqs) {
  TinySpec s;
  s.tied = false;
  s.rope_freqs = true;
  const auto bytes = make_tiny_model(s).bytes();
  auto r = load(bytes);
  ASSERT_TRUE(r.ok()) << r.message();
  const auto& w = (*r)->weights();
  EXPECT_FALSE(w.output_tied);
  EXPECT_NE(w.output.data, w.tok_embd.data);
  EXPECT_EQ(w.rope_freqs.n, 4);
}

TEST(Model, Qwen2AndQwen3Options) {
  TinySpec s;
  s.arch = "qwen2";
  s.qkv_bias = true;
  auto bytes = make_tiny_model(s).bytes();
  auto r = load(bytes);
  ASSERT_TRUE(r.ok()) << r.message();
  EXPECT_EQ((*r)->hparams().rope_style, kiln::model::RopeStyle::neox);
  EXPECT_TRUE((*r)->weights().layers[0].bv);

  s.arch = "qwen3";
  s.qkv_bias = false;
  s.qk_norm = true;
  s.head_dim = 16;  // qwen3: head size independent of n_embd / n_head
  auto bytes3 = make_tiny_model(s).bytes();
  auto r3 = load(bytes3);
  ASSERT_TRUE(r3.ok()) << r3.message();
  EXPECT_EQ((*r3)->hparams().head_dim_k, 16);
  EXPECT_EQ((*r3)->hparams().n_q(), 64);
  EXPECT_EQ((*r3)->weights().layers[1].q_norm.n, 16);
  EXPECT_EQ((*r3)->weights().layers[0].wo.n_in, 64);
}

TEST(Model, ReferenceFilesLoad) {
  for (const char* name : {"llama3-f16", "qwen2-f16", "spm-llama-q4_k_m", "spm-small-bf16"}) {
    auto r = Model::load(kiln::test::testdata(std::string("reference/") + name + ".gguf"));
    ASSERT_TRUE(r.ok()) << r.message();
  }
  auto r = Model::load(kiln::test::testdata("reference/llama3-f16.gguf"));
  ASSERT_TRUE(r.ok());
  EXPECT_EQ((*r)->hparams().n_vocab, 128256);
  EXPECT_EQ((*r)->hparams().rope_freq_base, 500000.0);
  EXPECT_TRUE((*r)->weights().rope_freqs);
}

TEST(ModelErrors, UnsupportedArchitectureListsSupported) {
  TinySpec s;
  s.arch = "mamba";
  std::vector<uint8_t> keep;
  const std::string e = load_error(make_tiny_model(s), keep);
  EXPECT_CONTAINS(e, "'mamba' is not supported");
  EXPECT_CONTAINS(e, "llama");
  EXPECT_CONTAINS(e, "qwen2");
  EXPECT_CONTAINS(e, "qwen3");
}

TEST(ModelErrors, MissingArchitectureKey) {
  TinyModel m = make_tiny_model({});
  m.drop_keys.insert("general.architecture");
  std::vector<uint8_t> keep;
  EXPECT_CONTAINS(load_error(m, keep), "general.architecture");
}

TEST(ModelErrors, MissingRequiredKey) {
  for (const char* key : {"llama.embedding_length", "llama.block_count",
                          "llama.attention.head_count", "llama.feed_forward_length",
                          "llama.context_length", "llama.attention.layer_norm_rms_epsilon"}) {
    TinyModel m = make_tiny_model({});
    m.drop_keys.insert(key);
    std::vector<uint8_t> keep;
    const std::string e = load_error(m, keep);
    EXPECT_CONTAINS(e, key);
    EXPECT_CONTAINS(e, "missing");
  }
}

TEST(ModelErrors, OptionalKeysHaveDefaults) {
  TinyModel m = make_tiny_model({});
  m.drop_keys = {"llama.rope.freq_base", "llama.rope.dimension_count", "llama.vocab_size"};
  const auto bytes = m.bytes();
  auto r = load(bytes);
  ASSERT_TRUE(r.ok()) << r.message();
  EXPECT_EQ((*r)->hparams().rope_freq_base, 10000.0);
  EXPECT_EQ((*r)->hparams().n_rot, 8);
  EXPECT_EQ((*r)->hparams().n_vocab, 64);  // from token_embd
}

TEST(ModelErrors, InconsistentHeadCounts) {
  TinySpec s;
  s.n_head_kv = 3;  // 4 heads do not split into 3 groups
  std::vector<uint8_t> keep;
  const std::string e = load_error(make_tiny_model(s), keep);
  EXPECT_CONTAINS(e, "head_count_kv");
}

TEST(ModelErrors, RopeDimsTooLarge) {
  TinyModel m = make_tiny_model({});
  m.spec.n_rot = 10;  // > head size 8
  std::vector<uint8_t> keep;
  EXPECT_CONTAINS(load_error(m, keep), "rope.dimension_count");
}

TEST(ModelErrors, VocabMismatch) {
  TinyModel m = make_tiny_model({});
  m.spec.n_vocab = 65;  // metadata says 65, token_embd has 64 rows
  std::vector<uint8_t> keep;
  const std::string e = load_error(m, keep);
  EXPECT_CONTAINS(e, "65");
  EXPECT_CONTAINS(e, "token_embd.weight");
}

TEST(ModelErrors, MissingTensorNamesItAndItsShape) {
  TinyModel m = make_tiny_model({});
  m.remove("blk.1.ffn_up.weight");
  std::vector<uint8_t> keep;
  const std::string e = load_error(m, keep);
  EXPECT_CONTAINS(e, "blk.1.ffn_up.weight");
  EXPECT_CONTAINS(e, "missing");
  EXPECT_CONTAINS(e, "[32, 48]");
}

TEST(ModelErrors, WrongShapeNamesBothShapes) {
  TinyModel m = make_tiny_model({});
  kiln::test::TinyTensor* t = m.find("blk.0.attn_k.weight");
  t->ne = {32, 32};
  t->values.resize(32 * 32, 0.0f);
  std::vector<uint8_t> keep;
  const std::string e = load_error(m, keep);
  EXPECT_CONTAINS(e, "blk.0.attn_k.weight");
  EXPECT_CONTAINS(e, "[32, 32]");
  EXPECT_CONTAINS(e, "expected [32, 16]");
}

TEST(ModelErrors, WrongNormShape) {
  TinyModel m = make_tiny_model({});
  kiln::test::TinyTensor* t = m.find("output_norm.weight");
  t->ne = {31};
  t->values.resize(31);
  std::vector<uint8_t> keep;
  const std::string e = load_error(m, keep);
  EXPECT_CONTAINS(e, "output_norm.weight");
  EXPECT_CONTAINS(e, "expected [32]");
}

TEST(ModelErrors, UnsupportedTensorType) {
  TinySpec s;
  s.n_embd = 256;  // a q2_k row needs 256 elements
  s.n_ff = 256;
  TinyModel m = make_tiny_model(s);
  kiln::test::TinyTensor* t = m.find("blk.0.ffn_gate.weight");
  t->type = DType::Q2_K;
  t->raw.assign(kiln::row_bytes(DType::Q2_K, 256) * 256, 0);
  std::vector<uint8_t> keep;
  const std::string e = load_error(m, keep);
  EXPECT_CONTAINS(e, "blk.0.ffn_gate.weight");
  EXPECT_CONTAINS(e, "q2_k");
}

TEST(ModelErrors, Qwen2NeedsBiasesQwen3NeedsQkNorm) {
  TinySpec s;
  s.arch = "qwen2";
  std::vector<uint8_t> keep;
  EXPECT_CONTAINS(load_error(make_tiny_model(s), keep), "blk.0.attn_q.bias");
  s.arch = "qwen3";
  EXPECT_CONTAINS(load_error(make_tiny_model(s), keep), "blk.0.attn_q_norm.weight");
}

TEST(ModelErrors, UnexpectedTensorIsReported) {
  TinySpec s;
  s.qk_norm = true;  // llama has no per-head norms: running without them would be wrong
  std::vector<uint8_t> keep;
  const std::string e = load_error(make_tiny_model(s), keep);
  EXPECT_CONTAINS(e, "attn_q_norm.weight");
  EXPECT_CONTAINS(e, "not part of the 'llama' architecture");
}

TEST(ModelErrors, ListsSeveralProblemsAtOnce) {
  TinyModel m = make_tiny_model({});
  m.remove("blk.0.attn_q.weight");
  m.remove("blk.1.attn_v.weight");
  std::vector<uint8_t> keep;
  const std::string e = load_error(m, keep);
  EXPECT_CONTAINS(e, "2 problems");
  EXPECT_CONTAINS(e, "blk.0.attn_q.weight");
  EXPECT_CONTAINS(e, "blk.1.attn_v.weight");
}

TEST(ModelErrors, UnsupportedRopeScaling) {
  TinyModel m = make_tiny_model({});
  auto w = m.writer();
  w.set_string("llama.rope.scaling.type", "yarn");
  w.set_f32("llama.rope.scaling.factor", 4.0f);
  const auto bytes = w.to_bytes();
  auto r = load(bytes);
  ASSERT_FALSE(r.ok());
  EXPECT_CONTAINS(r.message(), "yarn");
}

TEST(Model, LinearRopeScaling) {
  TinyModel m = make_tiny_model({});
  auto w = m.writer();
  w.set_string("llama.rope.scaling.type", "linear");
  w.set_f32("llama.rope.scaling.factor", 4.0f);
  const auto bytes = w.to_bytes();
  auto r = load(bytes);
  ASSERT_TRUE(r.ok()) << r.message();
  EXPECT_EQ((*r)->hparams().rope_scaling, kiln::model::RopeScaling::linear);
  EXPECT_EQ((*r)->hparams().rope_scale_factor, 4.0);
}

TEST(ModelErrors, VocabularyOnlyFile) {
  auto r = Model::load(kiln::test::testdata("vocab/ggml-vocab-llama-bpe.gguf"));
  ASSERT_FALSE(r.ok());
  EXPECT_CONTAINS(r.message(), "no tensors");
}
