// Reference (scalar, readable) quantization and dequantization of rows in
// every GGUF type kiln computes with. These are the oracle the SIMD and CUDA
// paths are tested against; speed is secondary here.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "kiln/core/dtype.h"

namespace kiln::quant {

// dst[0..n) = exact value of each element of a row of n elements stored in t.
// n must be a multiple of t's block size.
void dequantize_row(DType t, const void* src, float* dst, int64_t n);

// Quantizes n floats into t's blocks (dst holds row_bytes(t, n) bytes).
// Deterministic; the k-quants search scales per sub-block as GGUF's reference
// quantizer does. n must be a multiple of t's block size.
void quantize_row(DType t, const float* src, void* dst, int64_t n);

// Reference dot product of a stored row with float activations:
// sum_i dequant(w)[i] * x[i], accumulated in double, rounded to float.
float dot_row_ref(DType t, const void* w, const float* x, int64_t n);

}  // namespace kiln::quant
