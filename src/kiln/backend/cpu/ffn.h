// Elementwise pieces of the CPU forward pass: SwiGLU gating and residual adds.
#pragma once

#include <cstdint>

namespace kiln::cpu {

// gate[i] = silu(gate[i]) * up[i], silu(g) = g / (1 + e^-g). gate, up: [n]
void swiglu(float* gate, const float* up, int64_t n);

// x[i] += y[i]. x, y: [n]
void add_inplace(float* x, const float* y, int64_t n);

}  // namespace kiln::cpu
