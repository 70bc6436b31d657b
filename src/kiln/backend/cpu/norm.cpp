// RMSNorm (see norm.h).
#include "kiln/backend/cpu/norm.h"

#include <cmath>

namespace kiln::cpu {

void rms_norm(const float* x, const float* w, float* y, int64_t n, float eps) {
  double ss = 0.0;
  for (int64_t i = 0; i < n; ++i) ss += double(x[i]) * double(x[i]);
  const float scale = float(1.0 / std::sqrt(ss / double(n) + double(eps)));
  for (int64_t i = 0; i < n; ++i) y[i] = (x[i] * scale) * w[i];
}

void rms_norm_heads(float* x, const float* w, int64_t n_heads, int64_t head_dim, float eps) {
  for (int64_t h = 0; h < n_heads; ++h)
    rms_norm(x + h * head_dim, w, x + h * head_dim, head_dim, eps);
}

}  // namespace kiln::cpu
