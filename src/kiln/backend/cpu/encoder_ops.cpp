// Per-row pieces of the CPU encoder forward pass (see encoder_ops.h).
#include "kiln/backend/cpu/encoder_ops.h"

#include <algorithm>
#include <cmath>
#include <vector>

namespace kiln::cpu {

void layer_norm(const float* x, const float* w, const float* b, float* y, int64_t n, float eps) {
  double sum = 0.0;
  for (int64_t i = 0; i < n; ++i) sum += x[i];
  const double mean = sum / double(n);
  // Two passes (not E[x^2] - mean^2): post-LN residual streams can have a
  // large mean, where the one-pass form cancels badly.
  double sq = 0.0;
  for (int64_t i = 0; i < n; ++i) {
    const double d = double(x[i]) - mean;
    sq += d * d;
  }
  const double inv = 1.0 / std::sqrt(sq / double(n) + double(eps));
  for (int64_t i = 0; i < n; ++i)
    y[i] = float((double(x[i]) - mean) * inv * double(w[i]) + double(b[i]));
}

void gelu_erf_inplace(float* x, int64_t n) {
  constexpr double kInvSqrt2 = 0.70710678118654752440;
  for (int64_t i = 0; i < n; ++i) {
    const double v = x[i];
    x[i] = float(0.5 * v * (1.0 + std::erf(v * kInvSqrt2)));
  }
}

void add_bias(float* x, const float* b, int64_t n) {
  if (!b) return;
  for (int64_t i = 0; i < n; ++i) x[i] += b[i];
}

void pool_hidden(const float* h, int64_t n_tokens, int64_t n_embd, model::Pooling p, float* out) {
  switch (p) {
    case model::Pooling::cls:
      std::copy(h, h + n_embd, out);
      return;
    case model::Pooling::last:
      std::copy(h + (n_tokens - 1) * n_embd, h + n_tokens * n_embd, out);
      return;
    case model::Pooling::mean: {
      std::vector<double> acc(size_t(n_embd), 0.0);
      for (int64_t t = 0; t < n_tokens; ++t)
        for (int64_t i = 0; i < n_embd; ++i) acc[size_t(i)] += h[t * n_embd + i];
      for (int64_t i = 0; i < n_embd; ++i) out[i] = float(acc[size_t(i)] / double(n_tokens));
      return;
    }
  }
}

void l2_normalize(float* v, int64_t n) {
  double sq = 0.0;
  for (int64_t i = 0; i < n; ++i) sq += double(v[i]) * v[i];
  const double inv = 1.0 / std::max(std::sqrt(sq), 1e-12);
  for (int64_t i = 0; i < n; ++i) v[i] = float(v[i] * inv);
}

}  // namespace kiln::cpu
