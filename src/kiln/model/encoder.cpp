// Encoder model loading: architecture lookup, hyperparameters, weight binding
// (see encoder.h). Adding an encoder architecture = one file in model/arch/
// plus one line in kEncoderArchs.
#include "kiln/model/encoder.h"

#include <fmt/format.h>

#include <array>

#include "kiln/gguf/gguf.h"
#include "kiln/model/arch.h"
#include "kiln/model/arch/encoder_archs.h"
#include "kiln/model/binder.h"

namespace kiln::model {
namespace {

constexpr std::array kEncoderArchs = {
    &arch::bert,
};

uint64_t bytes_of(const Matrix& m) {
  return m ? m.n_bytes : 0;
}
uint64_t bytes_of(const Vector& v) {
  return v ? uint64_t(v.n) * sizeof(float) : 0;
}

}  // namespace

const char* pooling_name(Pooling p) {
  switch (p) {
    case Pooling::mean:
      return "mean";
    case Pooling::cls:
      return "cls";
    case Pooling::last:
      return "last";
  }
  return "?";
}

std::optional<Pooling> pooling_from_name(std::string_view s) {
  for (Pooling p : {Pooling::mean, Pooling::cls, Pooling::last})
    if (s == pooling_name(p)) return p;
  return std::nullopt;
}

const EncoderArchSpec* find_encoder_arch(std::string_view name) {
  for (const EncoderArchSpec* a : kEncoderArchs)
    if (a->name == name) return a;
  return nullptr;
}

std::string supported_encoder_archs() {
  std::string s;
  for (const EncoderArchSpec* a : kEncoderArchs) {
    if (!s.empty()) s += ", ";
    s += std::string(a->name) + " (" + std::string(a->models) + ")";
  }
  return s;
}

uint64_t EncoderWeights::total_bytes() const {
  uint64_t n = bytes_of(tok_embd) + bytes_of(type_embd) + bytes_of(pos_embd) + bytes_of(embd_norm) +
               bytes_of(embd_norm_b);
  for (const auto& l : layers) {
    for (const Matrix* m : {&l.wq, &l.wk, &l.wv, &l.wo, &l.w_up, &l.w_down}) n += bytes_of(*m);
    for (const Vector* v : {&l.bq, &l.bk, &l.bv, &l.bo, &l.attn_norm, &l.attn_norm_b, &l.b_up,
                            &l.b_down, &l.out_norm, &l.out_norm_b})
      n += bytes_of(*v);
  }
  return n;
}

EncoderModel::~EncoderModel() = default;

Result<std::unique_ptr<EncoderModel>> EncoderModel::load(const std::string& path) {
  auto file = gguf::File::open(path);
  if (!file.ok()) return file.error();
  return from_file(std::move(file.value()));
}

Result<std::unique_ptr<EncoderModel>> EncoderModel::from_file(std::unique_ptr<gguf::File> file) {
  const gguf::File& f = *file;
  const auto arch_name = f.get_string("general.architecture");
  if (!arch_name)
    return make_error(fmt::format(
        "{}: metadata key 'general.architecture' is missing, so the model type is unknown "
        "(embedding models kiln runs: {})",
        f.path(), supported_encoder_archs()));
  const EncoderArchSpec* arch = find_encoder_arch(*arch_name);
  if (!arch) {
    const bool decoder = find_arch(*arch_name) != nullptr;
    return make_error(fmt::format(
        "{}: architecture '{}' is not an embedding (encoder) model kiln runs{}; "
        "--embedding-model takes {}",
        f.path(), *arch_name, decoder ? " (it is a generation model: serve it with -m)" : "",
        supported_encoder_archs()));
  }
  if (f.tensors().empty())
    return make_error(fmt::format(
        "{}: the file has no tensors (a vocabulary-only GGUF?); give a model file", f.path()));

  EncoderHParams hp;
  hp.arch = *arch_name;
  KILN_TRY(arch->read_hparams(f, hp));
  // The vocabulary size must agree with token_embd; when the metadata is
  // silent, token_embd decides.
  if (const gguf::TensorInfo* te = f.tensor("token_embd.weight"); te && te->ne.size() == 2) {
    if (hp.n_vocab == 0) {
      hp.n_vocab = te->ne[1];
    } else if (hp.n_vocab != te->ne[1]) {
      return make_error(fmt::format(
          "{}: the vocabulary has {} tokens (tokenizer.ggml.tokens) but token_embd.weight has {} "
          "rows; the file is inconsistent",
          f.path(), hp.n_vocab, te->ne[1]));
    }
  }
  if (hp.n_vocab <= 0)
    return make_error(
        fmt::format("{}: the vocabulary size is unknown (no tokenizer.ggml.tokens "
                    "or token_embd.weight)",
                    f.path()));

  std::unique_ptr<EncoderModel> m(new EncoderModel());
  m->hp_ = std::move(hp);
  m->arch_ = arch;
  WeightBinder binder(f, m->vector_storage_);
  arch->bind(binder, m->hp_, m->w_);
  KILN_TRY(binder.status());
  m->file_ = std::move(file);
  return m;
}

std::string describe(const EncoderHParams& hp) {
  return fmt::format(
      "{} encoder: vocab {}, embd {}, layers {}, heads {} (dim {}), ffn {}, positions {}, token "
      "types {}, LayerNorm eps {:g}, pooling {}{}",
      hp.arch, hp.n_vocab, hp.n_embd, hp.n_layer, hp.n_head, hp.head_dim, hp.n_ff, hp.n_ctx_train,
      hp.n_token_types, hp.norm_eps, pooling_name(hp.pooling),
      hp.pooling_in_file ? "" : " (pooling_type absent: mean assumed)");
}

}  // namespace kiln::model
