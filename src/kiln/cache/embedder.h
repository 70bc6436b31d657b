// The text embedder the semantic response cache asks for vectors. The BERT
// embedding model (--embedding-model) implements it; tests use TableEmbedder.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "kiln/core/status.h"

namespace kiln::cache {

class TextEmbedder {
 public:
  virtual ~TextEmbedder() = default;
  // One vector [dim()] for the whole text. The cache L2-normalizes it again,
  // so an implementation need not, but should pool the same way every call.
  // Called from HTTP threads, possibly concurrently: must be thread-safe.
  virtual Result<std::vector<float>> embed(std::string_view text) = 0;
  virtual int32_t dim() const = 0;
  // Names the model and its pooling: vectors of different ids are never
  // compared (it is part of the semantic partition, also across instances).
  virtual std::string model_id() const = 0;
};

}  // namespace kiln::cache
