// BertEmbedder: a BERT-family embedding GGUF (--embedding-model) with its
// WordPiece tokenizer and the CPU encoder, behind cache::TextEmbedder (the
// semantic cache) and a batch call over token ids (/v1/embeddings).
//
// Thread-safe: tokenization runs on the caller's thread; the forward pass is
// serialized by a mutex (it owns one thread pool and its scratch). Short texts
// cost one small forward each, with no allocation once the buffers have grown.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "kiln/backend/cpu/encoder.h"
#include "kiln/cache/embedder.h"
#include "kiln/core/status.h"
#include "kiln/core/threadpool.h"
#include "kiln/model/encoder.h"
#include "kiln/tokenizer/tokenizer.h"

namespace kiln::embed {

struct BertEmbedderOptions {
  // Threads of the encoder's own pool; <= 0: min(4, hardware threads), since
  // it sits beside the generation engine.
  int n_threads = 0;
  cpu::MatmulPath path = cpu::MatmulPath::fast;
  // Overrides `<arch>.pooling_type` (tests; files that lack the key).
  std::optional<model::Pooling> pooling;
  // The name requests use (/v1/embeddings "model"); empty: the file name
  // without .gguf.
  std::string name;
};

class BertEmbedder final : public cache::TextEmbedder {
 public:
  static Result<std::unique_ptr<BertEmbedder>> load(const std::string& path,
                                                    const BertEmbedderOptions& options = {});

  // TextEmbedder: [CLS] text [SEP] -> pooled, L2-normalized [dim()]. An
  // empty text embeds [CLS] [SEP] (as Hugging Face does); more tokens than
  // the model's positions is an error (the cache then skips the request).
  Result<std::vector<float>> embed(std::string_view text) override;
  int32_t dim() const override { return int32_t(model_->hparams().n_embd); }
  // "<name>:<pooling>:<fingerprint of the weights>": equal only for the same
  // weights pooled the same way, so vectors from another model never compare.
  std::string model_id() const override { return model_id_; }

  // Token ids as the model expects them ([CLS] ... [SEP]).
  std::vector<int32_t> tokenize(std::string_view text) const;
  // One vector per input of token ids; each input is checked (non-empty,
  // in the vocabulary, at most max_tokens()).
  Result<std::vector<std::vector<float>>> embed_tokens(
      const std::vector<std::vector<int32_t>>& inputs);

  const std::string& name() const { return name_; }
  int32_t max_tokens() const { return int32_t(model_->hparams().n_ctx_train); }
  model::Pooling pooling() const { return pooling_; }
  const Tokenizer& tokenizer() const { return tokenizer_; }
  const model::EncoderModel& model() const { return *model_; }
  uint64_t n_forward_calls() const;  // forward passes run (tests, metrics)

 private:
  BertEmbedder(std::unique_ptr<model::EncoderModel> m, Tokenizer tok, const BertEmbedderOptions& o,
               std::string name);

  std::unique_ptr<model::EncoderModel> model_;
  Tokenizer tokenizer_;
  model::Pooling pooling_;
  std::string name_;
  std::string model_id_;

  mutable std::mutex mu_;  // guards pool_, encoder_ (scratch) and n_calls_
  ThreadPool pool_;
  cpu::Encoder encoder_;
  uint64_t n_calls_ = 0;
};

}  // namespace kiln::embed
