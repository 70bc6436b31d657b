// `kiln synth` library path: shapes, types, metadata and tokenizer of the
// written GGUF, the statistics of the random weights, determinism, and the
// error messages for bad options.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <string>
#include <vector>

#include "common/paths.h"
#include "kiln/gguf/gguf.h"
#include "kiln/model/presets.h"
#include "kiln/model/synth.h"
#include "kiln/quant/quant.h"

namespace kiln::model {
namespace {

namespace fs = std::filesystem;

class Synth : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("kiln_test_synth_" + std::to_string(::testing::UnitTest::GetInstance()->random_seed()) +
            "_" + ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::string path(const std::string& name) const { return (dir_ / name).string(); }

  SynthOptions opts(const std::string& preset, const std::string& type, const std::string& out,
                    const std::string& vocab = "ggml-vocab-llama-bpe.gguf") const {
    SynthOptions o;
    o.preset = preset;
    o.type = type;
    o.vocab_path = test::testdata("vocab/" + vocab);
    o.out_path = path(out);
    o.seed = 1;
    o.n_threads = 2;
    return o;
  }

  // A vocab GGUF of n made-up byte-level BPE tokens: keeps models small where
  // a test synthesizes many of them.
  std::string small_vocab(int n) const {
    gguf::Writer w;
    w.set_string("general.architecture", "llama");
    w.set_string("tokenizer.ggml.model", "gpt2");
    w.set_string("tokenizer.ggml.pre", "default");
    std::vector<std::string> tokens;
    for (int i = 0; i < n; ++i) tokens.push_back("t" + std::to_string(i));
    w.set("tokenizer.ggml.tokens", gguf::make_string_array(tokens));
    w.set("tokenizer.ggml.token_type", gguf::make_i32_array(std::vector<int32_t>(size_t(n), 1)));
    const std::string p = path("small_vocab.gguf");
    EXPECT_TRUE(w.write(p).ok());
    return p;
  }

  fs::path dir_;
};

// Mean and standard deviation of a tensor's dequantized values.
std::pair<double, double> stats(const gguf::TensorInfo& t) {
  std::vector<float> row(size_t(t.ne[0]));
  const size_t rb = row_bytes(t.type, t.ne[0]);
  double s = 0, s2 = 0;
  for (int64_t r = 0; r < t.n_rows(); ++r) {
    quant::dequantize_row(t.type, t.data + size_t(r) * rb, row.data(), t.ne[0]);
    for (float v : row) {
      s += v;
      s2 += double(v) * v;
    }
  }
  const double n = double(t.n_elements());
  const double mean = s / n;
  return {mean, std::sqrt(std::max(0.0, s2 / n - mean * mean))};
}

struct Expected {
  std::string name;
  std::vector<int64_t> ne;
};

std::vector<Expected> expected_tensors(const ModelPreset& p, int64_t n_vocab) {
  const int64_t kv = p.n_head_kv * p.head_dim();
  std::vector<Expected> e = {{"token_embd.weight", {p.n_embd, n_vocab}}};
  for (int64_t l = 0; l < p.n_layer; ++l) {
    const std::string b = "blk." + std::to_string(l) + ".";
    e.push_back({b + "attn_norm.weight", {p.n_embd}});
    e.push_back({b + "attn_q.weight", {p.n_embd, p.n_embd}});
    e.push_back({b + "attn_k.weight", {p.n_embd, kv}});
    e.push_back({b + "attn_v.weight", {p.n_embd, kv}});
    e.push_back({b + "attn_output.weight", {p.n_embd, p.n_embd}});
    e.push_back({b + "ffn_norm.weight", {p.n_embd}});
    e.push_back({b + "ffn_gate.weight", {p.n_embd, p.n_ff}});
    e.push_back({b + "ffn_up.weight", {p.n_embd, p.n_ff}});
    e.push_back({b + "ffn_down.weight", {p.n_ff, p.n_embd}});
  }
  e.push_back({"output_norm.weight", {p.n_embd}});
  e.push_back({"output.weight", {p.n_embd, n_vocab}});
  return e;
}

TEST_F(Synth, TinyQ4_0HasTheLayoutMetadataAndTokenizer) {
  std::vector<std::string> progress;
  auto o = opts("tiny", "q4_0", "tiny.gguf");
  o.progress = [&](const std::string& line) { progress.push_back(line); };
  auto r = synth_model(o);
  ASSERT_TRUE(r.ok()) << r.message();
  EXPECT_GE(progress.size(), 4u);  // embeddings, 2 layers, output, writing

  auto f = gguf::File::open(o.out_path);
  ASSERT_TRUE(f.ok()) << f.message();
  auto vocab = gguf::File::open(o.vocab_path);
  ASSERT_TRUE(vocab.ok());
  const int64_t n_vocab = int64_t((*vocab)->get_array("tokenizer.ggml.tokens")->items.size());
  EXPECT_EQ(n_vocab, 128256);
  EXPECT_EQ(r->n_vocab, n_vocab);
  EXPECT_EQ(r->file_bytes, (*f)->file_size());

  const gguf::File& g = **f;
  EXPECT_EQ(g.get_string("general.architecture"), "llama");
  EXPECT_EQ(g.get_string("general.name"), "kiln-synth-tiny");
  EXPECT_EQ(g.get_int("llama.embedding_length"), 64);
  EXPECT_EQ(g.get_int("llama.block_count"), 2);
  EXPECT_EQ(g.get_int("llama.attention.head_count"), 4);
  EXPECT_EQ(g.get_int("llama.attention.head_count_kv"), 2);
  EXPECT_EQ(g.get_int("llama.feed_forward_length"), 128);
  EXPECT_EQ(g.get_int("llama.rope.dimension_count"), 16);
  EXPECT_EQ(g.get_int("llama.context_length"), 2048);
  EXPECT_EQ(g.get_int("llama.vocab_size"), n_vocab);
  EXPECT_EQ(g.get_int("general.file_type"), 2);  // LLAMA_FTYPE_MOSTLY_Q4_0
  EXPECT_EQ(g.get_int("general.quantization_version"), 2);
  ASSERT_TRUE(g.get_float("llama.attention.layer_norm_rms_epsilon"));
  EXPECT_FLOAT_EQ(float(*g.get_float("llama.attention.layer_norm_rms_epsilon")), 1e-5f);
  EXPECT_FLOAT_EQ(float(*g.get_float("llama.rope.freq_base")), 10000.0f);
  // llama.cpp's converter writes these counts as u32 and the floats as f32.
  EXPECT_EQ(g.find("llama.block_count")->type(), gguf::ValueType::U32);
  EXPECT_EQ(g.find("llama.rope.freq_base")->type(), gguf::ValueType::F32);

  // Every tokenizer.* entry of the vocab file, identical; nothing else from it.
  int n_tok_keys = 0;
  for (const auto& [k, v] : (*vocab)->metadata()) {
    if (k.rfind("tokenizer.", 0) != 0) continue;
    ++n_tok_keys;
    const gguf::Value* got = g.find(k);
    ASSERT_NE(got, nullptr) << k;
    EXPECT_EQ(got->type(), v.type()) << k;
    EXPECT_EQ(got->to_display(1u << 30), v.to_display(1u << 30)) << k;
  }
  EXPECT_GE(n_tok_keys, 4);
  EXPECT_EQ(g.get_string("tokenizer.ggml.pre"), "llama-bpe");

  const auto want = expected_tensors(*find_model_preset("tiny"), n_vocab);
  ASSERT_EQ(g.tensors().size(), want.size());
  for (size_t i = 0; i < want.size(); ++i) {
    const auto& t = g.tensors()[i];
    EXPECT_EQ(t.name, want[i].name);
    EXPECT_EQ(t.ne, want[i].ne) << t.name;
    if (t.ne.size() == 1) {
      EXPECT_EQ(t.type, DType::F32) << t.name;
      auto [mean, sd] = stats(t);
      EXPECT_NEAR(mean, 1.0, 0.03) << t.name;  // near ones
      EXPECT_LT(sd, 0.1) << t.name;
    } else {
      EXPECT_EQ(t.type, DType::Q4_0) << t.name;
      auto [mean, sd] = stats(t);
      EXPECT_NEAR(sd, 0.02, 0.002) << t.name;  // within 10%
      // Uniform nibbles give d * (q - 8) for q in 0..15: mean -d/2 (within
      // five standard errors: 64 x 64 matrices hold only 4096 samples).
      EXPECT_NEAR(mean, -0.5 * 0.02 / 4.6, 5 * 0.02 / std::sqrt(double(t.n_elements()))) << t.name;
    }
  }
}

TEST_F(Synth, SameSeedSameBytesWhateverTheThreadCount) {
  auto a = opts("tiny", "q4_0", "a.gguf", "ggml-vocab-llama-spm.gguf");
  auto b = a;
  b.out_path = path("b.gguf");
  b.n_threads = 1;
  auto c = a;
  c.out_path = path("c.gguf");
  c.seed = 2;
  ASSERT_TRUE(synth_model(a).ok());
  ASSERT_TRUE(synth_model(b).ok());
  ASSERT_TRUE(synth_model(c).ok());
  const std::string fa = test::read_file(a.out_path);
  EXPECT_EQ(fa, test::read_file(b.out_path));
  EXPECT_NE(fa, test::read_file(c.out_path));
  EXPECT_EQ(fa.size(), test::read_file(c.out_path).size());
}

TEST_F(Synth, EveryTypeGivesWeightsOfStd002) {
  struct Case {
    const char* type;
    DType want;
    int file_type;
  };
  const Case cases[] = {
      {"f32", DType::F32, 0},    {"f16", DType::F16, 1},    {"bf16", DType::BF16, 32},
      {"q8_0", DType::Q8_0, 7},  {"q4_0", DType::Q4_0, 2},  {"q4_1", DType::Q4_1, 3},
      {"q5_0", DType::Q5_0, 8},  {"q5_1", DType::Q5_1, 9},  {"q4_k", DType::Q4_K, 14},
      {"q5_k", DType::Q5_K, 16}, {"q6_k", DType::Q6_K, 18},
  };
  const std::string vocab = small_vocab(512);
  for (const auto& c : cases) {
    SCOPED_TRACE(c.type);
    auto o = opts("tiny-k", c.type, std::string(c.type) + ".gguf");
    o.vocab_path = vocab;
    auto r = synth_model(o);
    ASSERT_TRUE(r.ok()) << r.message();
    auto f = gguf::File::open(o.out_path);
    ASSERT_TRUE(f.ok()) << f.message();
    EXPECT_EQ((*f)->get_int("general.file_type"), c.file_type);
    EXPECT_EQ((*f)->get_int("llama.vocab_size"), 512);
    EXPECT_EQ((*f)->get_string("tokenizer.ggml.model"), "gpt2");
    for (const auto& t : (*f)->tensors()) {
      if (t.ne.size() == 1) continue;
      EXPECT_EQ(t.type, c.want) << t.name;
      auto [mean, sd] = stats(t);
      EXPECT_NEAR(sd, 0.02, 0.002) << t.name;
    }
    std::filesystem::remove(o.out_path);
  }
}

TEST_F(Synth, KQuantRowsThatDoNotFitFallBack) {
  // tiny's rows of 64 and 128 do not fit 256-element blocks: q4_k -> q5_0.
  std::vector<std::string> progress;
  auto o = opts("tiny", "q4_k", "tiny_q4k.gguf", "ggml-vocab-llama-spm.gguf");
  o.progress = [&](const std::string& line) { progress.push_back(line); };
  ASSERT_TRUE(synth_model(o).ok());
  auto f = gguf::File::open(o.out_path);
  ASSERT_TRUE(f.ok());
  EXPECT_EQ((*f)->tensor("blk.0.ffn_down.weight")->type, DType::Q5_0);
  EXPECT_EQ((*f)->tensor("token_embd.weight")->type, DType::Q5_0);
  bool noted = false;
  for (const auto& l : progress)
    noted |= l.find("do not divide: they get q5_0") != std::string::npos;
  EXPECT_TRUE(noted);
}

TEST_F(Synth, MixFollowsTheQuantizeRules) {
  auto o = opts("tiny-k", "q4_k_m", "mix.gguf");
  o.vocab_path = small_vocab(512);
  ASSERT_TRUE(synth_model(o).ok());
  auto f = gguf::File::open(o.out_path);
  ASSERT_TRUE(f.ok());
  EXPECT_EQ((*f)->get_int("general.file_type"), 15);  // LLAMA_FTYPE_MOSTLY_Q4_K_M
  EXPECT_EQ((*f)->tensor("output.weight")->type, DType::Q6_K);
  EXPECT_EQ((*f)->tensor("blk.0.attn_q.weight")->type, DType::Q4_K);
  // "More bits" layers of 2: 7 * 2 / 8 = 1 onwards, as llama-quantize counts.
  EXPECT_EQ((*f)->tensor("blk.0.attn_v.weight")->type, DType::Q4_K);
  EXPECT_EQ((*f)->tensor("blk.1.attn_v.weight")->type, DType::Q6_K);
  EXPECT_EQ((*f)->tensor("blk.1.ffn_down.weight")->type, DType::Q6_K);
}

TEST_F(Synth, ClearErrors) {
  auto o = opts("huge", "q4_0", "x.gguf");
  auto r = synth_model(o);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.message().find("unknown preset 'huge'"), std::string::npos) << r.message();
  EXPECT_NE(r.message().find("tiny, tiny-k, llama3.2-1b, llama3-8b"), std::string::npos)
      << r.message();

  o = opts("tiny", "q3_k", "x.gguf");
  r = synth_model(o);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.message().find("unknown weight type 'q3_k'"), std::string::npos) << r.message();
  EXPECT_NE(r.message().find("q4_0"), std::string::npos) << r.message();

  o = opts("tiny", "q4_0", "x.gguf");
  o.vocab_path = path("missing.gguf");
  r = synth_model(o);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.message().find("vocab"), std::string::npos) << r.message();

  // A valid GGUF without tokenizer metadata.
  gguf::Writer w;
  w.set_string("general.architecture", "llama");
  ASSERT_TRUE(w.write(path("notok.gguf")).ok());
  o.vocab_path = path("notok.gguf");
  r = synth_model(o);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.message().find("has no tokenizer"), std::string::npos) << r.message();
  EXPECT_FALSE(fs::exists(path("x.gguf")));
}

}  // namespace
}  // namespace kiln::model
