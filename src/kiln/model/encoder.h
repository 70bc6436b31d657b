// Encoder-only embedding models (BERT family: bge, MiniLM, ...): their
// hyperparameters, bound weights and loading. Kept apart from model::Model on
// purpose: an encoder has learned absolute positions, LayerNorms with biases,
// bidirectional attention and a pooling step, and it must never reach the
// causal generation engine. Architectures register in encoder.cpp's table
// (one file per architecture in model/arch/, as for decoders).
#pragma once

#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "kiln/core/status.h"
#include "kiln/model/weights.h"

namespace kiln::gguf {
class File;
}

namespace kiln::model {

class WeightBinder;

// How per-token hidden states become one vector. Values are the GGUF
// `<arch>.pooling_type` numbers llama.cpp's converter writes (0 = none and
// 4 = rank exist there too; kiln's embeddings need one of these three).
enum class Pooling : int32_t { mean = 1, cls = 2, last = 3 };
const char* pooling_name(Pooling p);                           // "mean", "cls", "last"
std::optional<Pooling> pooling_from_name(std::string_view s);  // inverse of pooling_name

struct EncoderHParams {
  std::string arch;     // general.architecture, e.g. "bert"
  int64_t n_vocab = 0;  // rows of token_embd
  int64_t n_embd = 0;   // hidden width = embedding size
  int64_t n_layer = 0;
  int64_t n_head = 0;         // attention heads (no GQA in BERT)
  int64_t head_dim = 0;       // n_embd / n_head
  int64_t n_ff = 0;           // FFN hidden width
  int64_t n_ctx_train = 0;    // learned positions = most tokens per input
  int64_t n_token_types = 0;  // rows of token_types (0: the tensor is absent)
  float norm_eps = 1e-12f;    // LayerNorm epsilon
  Pooling pooling = Pooling::mean;
  bool pooling_in_file = false;  // false: `<arch>.pooling_type` absent, mean assumed
};

struct EncoderLayerWeights {
  Matrix wq, wk, wv;              // [n_embd, n_embd] each
  Vector bq, bk, bv;              // [n_embd] (optional in the file)
  Matrix wo;                      // [n_embd, n_embd]
  Vector bo;                      // [n_embd] (optional)
  Vector attn_norm, attn_norm_b;  // attn_output_norm: LayerNorm after the attention residual
  Matrix w_up;                    // [n_ff, n_embd]
  Vector b_up;                    // [n_ff] (optional)
  Matrix w_down;                  // [n_embd, n_ff]
  Vector b_down;                  // [n_embd] (optional)
  Vector out_norm, out_norm_b;    // layer_output_norm: LayerNorm after the FFN residual
};

struct EncoderWeights {
  Matrix tok_embd;                // [n_vocab, n_embd]
  Matrix type_embd;               // [n_token_types, n_embd]; optional (row 0 is added when present)
  Matrix pos_embd;                // [n_ctx_train, n_embd]: row p is added at position p
  Vector embd_norm, embd_norm_b;  // token_embd_norm: LayerNorm of the summed embeddings
  std::vector<EncoderLayerWeights> layers;

  uint64_t total_bytes() const;  // bytes of every bound tensor
};

struct EncoderArchSpec {
  std::string_view name;    // general.architecture value
  std::string_view models;  // human description
  // Reads `<arch>.*` keys into hp (n_vocab may stay 0: token_embd decides).
  Status (*read_hparams)(const gguf::File& file, EncoderHParams& hp);
  void (*bind)(WeightBinder& b, const EncoderHParams& hp, EncoderWeights& w);
};

const EncoderArchSpec* find_encoder_arch(std::string_view name);  // nullptr: not an encoder
std::string supported_encoder_archs();

class EncoderModel {
 public:
  // Opens, validates and binds an encoder GGUF. Errors name the file and the
  // key or tensor at fault; a decoder file is refused with a hint.
  static Result<std::unique_ptr<EncoderModel>> load(const std::string& path);
  static Result<std::unique_ptr<EncoderModel>> from_file(std::unique_ptr<gguf::File> file);
  ~EncoderModel();
  EncoderModel(const EncoderModel&) = delete;
  EncoderModel& operator=(const EncoderModel&) = delete;

  const gguf::File& file() const { return *file_; }
  const EncoderHParams& hparams() const { return hp_; }
  const EncoderWeights& weights() const { return w_; }
  const EncoderArchSpec& arch() const { return *arch_; }

 private:
  EncoderModel() = default;

  std::unique_ptr<gguf::File> file_;
  EncoderHParams hp_;
  const EncoderArchSpec* arch_ = nullptr;
  EncoderWeights w_;
  std::deque<std::vector<float>> vector_storage_;  // converted 1-D tensors (stable addresses)
};

std::string describe(const EncoderHParams& hp);  // one line for logs

}  // namespace kiln::model
