// SwiGLU and residual adds (see ffn.h).
#include "kiln/backend/cpu/ffn.h"

#include <cmath>

namespace kiln::cpu {

void swiglu(float* gate, const float* up, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    const float g = gate[i];
    gate[i] = g / (1.0f + std::exp(-g)) * up[i];
  }
}

void add_inplace(float* x, const float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) x[i] += y[i];
}

}  // namespace kiln::cpu
