// BertEmbedder: loading, the model id, and the serialized forward calls.
#include "kiln/embed/bert_embedder.h"

#include <fmt/format.h>

#include <algorithm>
#include <filesystem>
#include <thread>

#include "kiln/gguf/gguf.h"

namespace kiln::embed {
namespace {

int default_threads(int n) {
  if (n > 0) return n;
  const int hw = int(std::max(1u, std::thread::hardware_concurrency()));
  return std::min(hw, 4);
}

// FNV-1a over the first bytes of every tensor and the tensor shapes: cheap at
// load time, and two files that share a name but not their weights differ.
uint64_t weights_fingerprint(const gguf::File& f) {
  uint64_t h = 1469598103934665603ull;
  auto mix = [&h](const void* p, size_t n) {
    const auto* b = static_cast<const uint8_t*>(p);
    for (size_t i = 0; i < n; ++i) h = (h ^ b[i]) * 1099511628211ull;
  };
  for (const auto& t : f.tensors()) {
    mix(t.name.data(), t.name.size());
    for (int64_t ne : t.ne) mix(&ne, sizeof ne);
    mix(t.data, std::min<size_t>(t.n_bytes, 256));
  }
  return h;
}

}  // namespace

Result<std::unique_ptr<BertEmbedder>> BertEmbedder::load(const std::string& path,
                                                         const BertEmbedderOptions& o) {
  auto m = model::EncoderModel::load(path);
  if (!m) return m.error();
  auto tok = Tokenizer::from_gguf((*m)->file());
  if (!tok) return tok.error();
  if (tok->kind() != TokenizerKind::wpm)
    return make_error(
        fmt::format("{}: the embedding model's tokenizer is '{}', not WordPiece "
                    "('bert'), which BERT encoders use",
                    path, tok->model_name()));
  if (tok->n_vocab() != (*m)->hparams().n_vocab)
    return make_error(fmt::format("{}: the tokenizer has {} tokens but token_embd has {} rows",
                                  path, tok->n_vocab(), (*m)->hparams().n_vocab));
  std::string name = o.name.empty() ? std::filesystem::path(path).stem().string() : o.name;
  return std::unique_ptr<BertEmbedder>(
      new BertEmbedder(std::move(*m), std::move(*tok), o, std::move(name)));
}

BertEmbedder::BertEmbedder(std::unique_ptr<model::EncoderModel> m, Tokenizer tok,
                           const BertEmbedderOptions& o, std::string name)
    : model_(std::move(m)),
      tokenizer_(std::move(tok)),
      pooling_(o.pooling.value_or(model_->hparams().pooling)),
      name_(std::move(name)),
      pool_(default_threads(o.n_threads)),
      encoder_(*model_, pool_, o.path) {
  model_id_ = fmt::format("{}:{}:{:016x}", name_, model::pooling_name(pooling_),
                          weights_fingerprint(model_->file()));
}

std::vector<int32_t> BertEmbedder::tokenize(std::string_view text) const {
  return tokenizer_.encode(text, /*add_special=*/true, /*parse_special=*/false);
}

Result<std::vector<float>> BertEmbedder::embed(std::string_view text) {
  std::vector<std::vector<int32_t>> in{tokenize(text)};
  auto r = embed_tokens(in);
  if (!r) return r.error();
  return std::move(r->front());
}

Result<std::vector<std::vector<float>>> BertEmbedder::embed_tokens(
    const std::vector<std::vector<int32_t>>& inputs) {
  std::lock_guard<std::mutex> lock(mu_);
  ++n_calls_;
  return encoder_.embed(inputs, pooling_);
}

uint64_t BertEmbedder::n_forward_calls() const {
  std::lock_guard<std::mutex> lock(mu_);
  return n_calls_;
}

}  // namespace kiln::embed
