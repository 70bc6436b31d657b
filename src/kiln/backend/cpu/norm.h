// RMSNorm on the CPU (residual-stream norms and Qwen3's per-head Q/K norms).
#pragma once

#include <cstdint>

namespace kiln::cpu {

// y = x / sqrt(mean(x^2) + eps) * w. x, w, y: [n]; y may alias x. The sum of
// squares is accumulated in double in index order: exact enough for the
// reference path and cheap next to the matmuls, so both paths share it.
void rms_norm(const float* x, const float* w, float* y, int64_t n, float eps);

// rms_norm over each of the n_heads consecutive slices of head_dim in x
// (in place), with the same weight w [head_dim] for every head.
void rms_norm_heads(float* x, const float* w, int64_t n_heads, int64_t head_dim, float eps);

}  // namespace kiln::cpu
