// RoPE tables and rotation (see rope.h).
#include "kiln/backend/cpu/rope.h"

#include <cmath>

namespace kiln::cpu {

void Rope::init(const model::HParams& hp, const float* rope_freqs) {
  style_ = hp.rope_style;
  const int64_t n = hp.n_rot / 2;
  inv_freq_.resize(size_t(n));
  for (int64_t i = 0; i < n; ++i) {
    double f = std::pow(hp.rope_freq_base, -2.0 * double(i) / double(hp.n_rot));
    if (rope_freqs) f /= double(rope_freqs[i]);
    if (hp.rope_scaling == model::RopeScaling::linear) f /= hp.rope_scale_factor;
    inv_freq_[size_t(i)] = f;
  }
}

void Rope::angles(int32_t pos, float* cos_sin) const {
  const int64_t n = n_pairs();
  for (int64_t i = 0; i < n; ++i) {
    const double a = double(pos) * inv_freq_[size_t(i)];
    cos_sin[i] = float(std::cos(a));
    cos_sin[n + i] = float(std::sin(a));
  }
}

void Rope::apply(float* x, int64_t n_heads, int64_t head_dim, const float* cos_sin) const {
  const int64_t n = n_pairs();
  const float* c = cos_sin;
  const float* s = cos_sin + n;
  // adjacent pairs: (2i, 2i+1); neox: (i, i + n_rot/2).
  const int64_t stride = style_ == model::RopeStyle::neox ? 1 : 2;
  const int64_t partner = style_ == model::RopeStyle::neox ? n : 1;
  for (int64_t h = 0; h < n_heads; ++h) {
    float* xh = x + h * head_dim;
    for (int64_t i = 0; i < n; ++i) {
      float* a = xh + i * stride;
      float* b = a + partner;
      const float x0 = *a, x1 = *b;
      *a = x0 * c[i] - x1 * s[i];
      *b = x0 * s[i] + x1 * c[i];
    }
  }
}

}  // namespace kiln::cpu
