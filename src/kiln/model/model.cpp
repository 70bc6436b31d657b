// Model loading: architecture lookup, hyperparameters, weight binding.
#include "kiln/model/model.h"

#include <fmt/format.h>

#include "kiln/gguf/gguf.h"
#include "kiln/model/binder.h"
#include "kiln/model/encoder.h"

namespace kiln::model {

Model::~Model() = default;

Result<std::unique_ptr<Model>> Model::load(const std::string& path) {
  auto file = gguf::File::open(path);
  if (!file.ok()) return file.error();
  return from_file(std::move(file.value()));
}

Result<std::unique_ptr<Model>> Model::from_file(std::unique_ptr<gguf::File> file) {
  const gguf::File& f = *file;
  const auto arch_name = f.get_string("general.architecture");
  if (!arch_name)
    return make_error(
        fmt::format("{}: metadata key 'general.architecture' is missing, so the "
                    "model type is unknown (supported: {})",
                    f.path(), supported_archs()));
  const ArchSpec* arch = find_arch(*arch_name);
  if (!arch && find_encoder_arch(*arch_name))
    return make_error(fmt::format(
        "{}: '{}' is an embedding (encoder) model, not a generation model; serve it beside a "
        "chat model with --embedding-model",
        f.path(), *arch_name));
  if (!arch)
    return make_error(fmt::format("{}: architecture '{}' is not supported; kiln runs {}", f.path(),
                                  *arch_name, supported_archs()));

  if (f.tensors().empty())
    return make_error(
        fmt::format("{}: the file has no tensors (a vocabulary-only GGUF?); give "
                    "a model file",
                    f.path()));
  auto hp = read_hparams(f, *arch_name);
  if (!hp.ok()) return hp.error();
  if (arch->finish_hparams) KILN_TRY(arch->finish_hparams(f, *hp));

  // The vocabulary size must agree with token_embd; when the metadata is
  // silent, token_embd decides.
  if (const gguf::TensorInfo* te = f.tensor("token_embd.weight"); te && te->ne.size() == 2) {
    if (hp->n_vocab == 0) {
      hp->n_vocab = te->ne[1];
    } else if (hp->n_vocab != te->ne[1]) {
      return make_error(fmt::format(
          "{}: the vocabulary has {} tokens ({}.vocab_size or tokenizer.ggml.tokens) but "
          "token_embd.weight has {} rows; the file is inconsistent",
          f.path(), hp->n_vocab, *arch_name, te->ne[1]));
    }
  }
  KILN_TRY(validate_hparams(*hp, f.path()));

  std::unique_ptr<Model> m(new Model());
  m->hp_ = std::move(hp.value());
  m->arch_ = arch;
  WeightBinder binder(f, m->vector_storage_);
  arch->bind(binder, m->hp_, m->w_);
  KILN_TRY(binder.status());
  m->file_ = std::move(file);
  return m;
}

}  // namespace kiln::model
