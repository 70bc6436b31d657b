// TableEmbedder: vectors looked up, never computed.
#include "kiln/cache/table_embedder.h"

#include <algorithm>
#include <cmath>

#include "kiln/core/assert.h"

namespace kiln::cache {

void TableEmbedder::set(const std::string& text, std::vector<float> v) {
  KILN_ASSERT(int32_t(v.size()) == dim_);
  std::lock_guard<std::mutex> lock(mu_);
  table_[text] = std::move(v);
}

std::vector<float> TableEmbedder::axis(int32_t i) const {
  KILN_ASSERT(i >= 0 && i < dim_);
  std::vector<float> v(size_t(dim_), 0.0f);
  v[size_t(i)] = 1.0f;
  return v;
}

std::vector<float> TableEmbedder::rotated(const std::vector<float>& base, int32_t axis,
                                          float similarity) {
  // Gram-Schmidt: the part of e_axis orthogonal to base, then mix.
  double nb = 0;
  for (float x : base) nb += double(x) * x;
  nb = std::sqrt(nb);
  std::vector<double> b(base.size()), o(base.size(), 0.0);
  for (size_t i = 0; i < base.size(); ++i) b[i] = base[i] / nb;
  o[size_t(axis)] = 1.0;
  const double d = b[size_t(axis)];
  double no = 0;
  for (size_t i = 0; i < o.size(); ++i) {
    o[i] -= d * b[i];
    no += o[i] * o[i];
  }
  no = std::sqrt(no);
  KILN_ASSERT_MSG(no > 1e-6, "rotated(): the axis is parallel to the base vector");
  const double s = similarity, c = std::sqrt(std::max(0.0, 1.0 - s * s));
  std::vector<float> out(base.size());
  for (size_t i = 0; i < out.size(); ++i) out[i] = float(s * b[i] + c * o[i] / no);
  return out;
}

Result<std::vector<float>> TableEmbedder::embed(std::string_view text) {
  std::lock_guard<std::mutex> lock(mu_);
  ++calls_;
  auto it = table_.find(text);
  if (it == table_.end())
    return make_error("TableEmbedder: no vector registered for \"" + std::string(text) + "\"");
  return it->second;
}

int64_t TableEmbedder::calls() const {
  std::lock_guard<std::mutex> lock(mu_);
  return calls_;
}

}  // namespace kiln::cache
