// The architecture registry: what each supported `general.architecture` needs
// beyond the common hyperparameters (its RoPE style, extra keys) and which
// tensors it binds. Adding an architecture = one file in model/arch/ plus one
// line in arch.cpp's table.
#pragma once

#include <string>
#include <string_view>

#include "kiln/core/status.h"
#include "kiln/model/hparams.h"
#include "kiln/model/weights.h"

namespace kiln::gguf {
class File;
}

namespace kiln::model {

class WeightBinder;

struct ArchSpec {
  std::string_view name;    // general.architecture value
  std::string_view models;  // human description, e.g. "Llama 2/3.x, Mistral"
  // Called after the common keys are read: set rope_style, read arch-only
  // keys, adjust defaults. May be null.
  Status (*finish_hparams)(const gguf::File& file, HParams& hp);
  // Binds every tensor of the model (errors collect in the binder).
  void (*bind)(WeightBinder& b, const HParams& hp, ModelWeights& w);
};

// nullptr when the architecture is not supported.
const ArchSpec* find_arch(std::string_view name);
// "llama (Llama 2/3.x, Mistral), qwen2 (...), ..." for error messages.
std::string supported_archs();

}  // namespace kiln::model
