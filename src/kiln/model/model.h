// A loaded model: the GGUF file (kept mapped), its hyperparameters, its
// architecture and the bound weight views. Immutable after load; backends
// and the tokenizer read from it.
#pragma once

#include <deque>
#include <memory>
#include <string>
#include <vector>

#include "kiln/core/status.h"
#include "kiln/model/arch.h"
#include "kiln/model/hparams.h"
#include "kiln/model/weights.h"

namespace kiln::gguf {
class File;
}

namespace kiln::model {

class Model {
 public:
  // Opens, validates and binds a GGUF model. Errors name the file and the
  // key or tensor at fault.
  static Result<std::unique_ptr<Model>> load(const std::string& path);
  static Result<std::unique_ptr<Model>> from_file(std::unique_ptr<gguf::File> file);
  ~Model();
  Model(const Model&) = delete;
  Model& operator=(const Model&) = delete;

  const gguf::File& file() const { return *file_; }
  const HParams& hparams() const { return hp_; }
  const ModelWeights& weights() const { return w_; }
  const ArchSpec& arch() const { return *arch_; }

 private:
  Model() = default;

  std::unique_ptr<gguf::File> file_;
  HParams hp_;
  const ArchSpec* arch_ = nullptr;
  ModelWeights w_;
  std::deque<std::vector<float>> vector_storage_;  // converted 1-D tensors (stable addresses)
};

}  // namespace kiln::model
