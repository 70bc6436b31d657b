// Per-row pieces of the CPU encoder (BERT) forward pass: LayerNorm with bias,
// exact GELU, bias adds, pooling and L2 normalization.
#pragma once

#include <cstdint>

#include "kiln/model/encoder.h"

namespace kiln::cpu {

// y = (x - mean) / sqrt(var + eps) * w + b over one row of n (population
// variance, as torch.nn.LayerNorm). Mean and variance are accumulated in
// double in index order: the same for both matmul paths and cheap next to
// the matmuls. y may alias x.
void layer_norm(const float* x, const float* w, const float* b, float* y, int64_t n, float eps);

// x = x * Phi(x) with the exact normal CDF (erf), as Hugging Face's "gelu"
// that BERT checkpoints use (not the tanh approximation: it differs by up to
// ~1e-3 per activation). Computed in double, rounded once.
void gelu_erf_inplace(float* x, int64_t n);

// x[i] += b[i]; b may be null (no bias).
void add_bias(float* x, const float* b, int64_t n);

// One pooled vector out [n_embd] from the last hidden states h [n_tokens,
// n_embd] of one sequence: mean over all tokens (sums in double), the first
// token ([CLS]) or the last. n_tokens >= 1.
void pool_hidden(const float* h, int64_t n_tokens, int64_t n_embd, model::Pooling p, float* out);

// v /= max(|v|_2, 1e-12): torch.nn.functional.normalize(p=2), which
// sentence-transformers' Normalize module applies; unit length is also what
// the OpenAI embeddings API returns.
void l2_normalize(float* v, int64_t n);

}  // namespace kiln::cpu
