// Rotary position embedding on the CPU.
//
// Frequency i of n_rot/2: f_i = base^(-2i/n_rot) / rope_freqs[i] (when the
// model has rope_freqs.weight) / linear scale factor. Angles pos * f_i are
// formed in double and their cos/sin stored once per token and reused by
// every layer and head.
#pragma once

#include <cstdint>
#include <vector>

#include "kiln/model/hparams.h"

namespace kiln::cpu {

class Rope {
 public:
  // rope_freqs: optional [n_rot/2] divisors (nullptr when absent).
  void init(const model::HParams& hp, const float* rope_freqs);
  int64_t n_pairs() const { return int64_t(inv_freq_.size()); }

  // cos_sin: [2 * n_pairs()] for one position: cos first, then sin.
  void angles(int32_t pos, float* cos_sin) const;

  // Rotates the first n_rot dims of each of n_heads heads (stride head_dim)
  // in x, with the angles of one position.
  void apply(float* x, int64_t n_heads, int64_t head_dim, const float* cos_sin) const;

 private:
  std::vector<double> inv_freq_;  // [n_rot/2]
  model::RopeStyle style_ = model::RopeStyle::adjacent_pairs;
};

}  // namespace kiln::cpu
