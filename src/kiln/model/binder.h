// WeightBinder: looks tensors up by name, checks their presence, type and
// shape, and turns them into Matrix / Vector views. Collects every problem so
// one error message lists all of them (naming tensor and expected shape).
#pragma once

#include <cstdint>
#include <deque>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "kiln/core/status.h"
#include "kiln/model/weights.h"

namespace kiln::gguf {
class File;
}

namespace kiln::model {

class WeightBinder {
 public:
  // Converted (non-F32) vectors are stored in `vector_storage`, which must
  // outlive the bound weights (the Model owns it).
  WeightBinder(const gguf::File& file, std::deque<std::vector<float>>& vector_storage)
      : file_(file), storage_(vector_storage) {}

  // A required 2-D weight with GGUF ne = [n_in, n_out], in a type kiln computes with.
  Matrix matrix(const std::string& name, int64_t n_in, int64_t n_out);
  // nullptr-data Matrix when absent (no error); checked like matrix() when present.
  Matrix optional_matrix(const std::string& name, int64_t n_in, int64_t n_out);
  // A required 1-D float vector of n elements (F32, F16 or BF16 in the file).
  Vector vector(const std::string& name, int64_t n);
  Vector optional_vector(const std::string& name, int64_t n);

  bool has(const std::string& name) const;
  // Marks a tensor the model deliberately does not use (no error for it).
  void ignore(const std::string& name) { used_.insert(name); }
  // Adds an error for every tensor of the file that was never bound or
  // ignored: an unexpected tensor means a model variant kiln would run wrongly.
  void check_all_used(std::string_view arch);
  void fail(std::string message) { errors_.push_back(std::move(message)); }
  // Success, or one error listing every problem found (at most a dozen shown).
  Status status() const;

 private:
  const gguf::File& file_;
  std::deque<std::vector<float>>& storage_;
  std::vector<std::string> errors_;
  std::set<std::string, std::less<>> used_;
};

}  // namespace kiln::model
