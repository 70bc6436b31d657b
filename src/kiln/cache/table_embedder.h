// A controlled TextEmbedder for tests: fixed vectors per text from a table,
// so a test decides exactly how similar two texts look to the cache.
#pragma once

#include <map>
#include <mutex>
#include <string>

#include "kiln/cache/embedder.h"

namespace kiln::cache {

class TableEmbedder final : public TextEmbedder {
 public:
  explicit TableEmbedder(int32_t dim, std::string id = "table-embedder")
      : dim_(dim), id_(std::move(id)) {}

  // Registers `text` -> `v` ([dim]; need not be normalized).
  void set(const std::string& text, std::vector<float> v);
  // A unit vector at angle acos(similarity) from `base` in the plane of
  // `base` and axis `axis`: the dot product of the two is `similarity`.
  static std::vector<float> rotated(const std::vector<float>& base, int32_t axis, float similarity);
  // The unit vector along `axis`.
  std::vector<float> axis(int32_t i) const;

  // Unknown texts are an error, so a test cannot pass on a vector it never set.
  Result<std::vector<float>> embed(std::string_view text) override;
  int32_t dim() const override { return dim_; }
  std::string model_id() const override { return id_; }
  int64_t calls() const;

 private:
  int32_t dim_;
  std::string id_;
  mutable std::mutex mu_;
  std::map<std::string, std::vector<float>, std::less<>> table_;
  int64_t calls_ = 0;
};

}  // namespace kiln::cache
