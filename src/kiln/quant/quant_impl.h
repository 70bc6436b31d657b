// Per-type row kernels behind quant.h's dispatch (quant.cpp). Internal to
// kiln_quant: callers use dequantize_row / quantize_row.
#pragma once

#include <cmath>
#include <cstdint>

#include "kiln/quant/blocks.h"

namespace kiln::quant::detail {

// Round half away from zero, exactly as roundf does (so q8_0 matches ggml's
// encoder bit for bit), without a libm call: truncation and the difference
// x - trunc(x) are both exact for |x| < 2^31. Callers keep x in int range.
inline int nearest_int(float x) {
  int i = int(x);
  const float frac = x - float(i);
  if (frac >= 0.5f)
    ++i;
  else if (frac <= -0.5f)
    --i;
  return i;
}

// 32-element block types (quant_legacy.cpp). n is a multiple of 32.
void dequantize_q4_0(const block_q4_0* x, float* y, int64_t n);
void dequantize_q4_1(const block_q4_1* x, float* y, int64_t n);
void dequantize_q5_0(const block_q5_0* x, float* y, int64_t n);
void dequantize_q5_1(const block_q5_1* x, float* y, int64_t n);
void dequantize_q8_0(const block_q8_0* x, float* y, int64_t n);
void quantize_q4_0(const float* x, block_q4_0* y, int64_t n);
void quantize_q4_1(const float* x, block_q4_1* y, int64_t n);
void quantize_q5_0(const float* x, block_q5_0* y, int64_t n);
void quantize_q5_1(const float* x, block_q5_1* y, int64_t n);
void quantize_q8_0(const float* x, block_q8_0* y, int64_t n);

// 256-element super-block types (quant_k.cpp). n is a multiple of 256.
void dequantize_q4_k(const block_q4_K* x, float* y, int64_t n);
void dequantize_q5_k(const block_q5_K* x, float* y, int64_t n);
void dequantize_q6_k(const block_q6_K* x, float* y, int64_t n);
void quantize_q4_k(const float* x, block_q4_K* y, int64_t n);
void quantize_q5_k(const float* x, block_q5_K* y, int64_t n);
void quantize_q6_k(const float* x, block_q6_K* y, int64_t n);

// The 6-bit scale and min of sub-block j (0..7) of a q4_k/q5_k super-block.
// Bytes 0-3 hold the low 6 bits of scales 0-3, bytes 4-7 those of mins 0-3;
// bytes 8-11 hold scale 4-7 (low nibble) and min 4-7 (high nibble) low 4 bits,
// their top 2 bits riding in the spare top bits of bytes 0-3 / 4-7.
inline void get_scale_min_k4(int j, const uint8_t* q, uint8_t& sc, uint8_t& m) {
  if (j < 4) {
    sc = q[j] & 63;
    m = q[j + 4] & 63;
  } else {
    sc = uint8_t((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4));
    m = uint8_t((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
  }
}

}  // namespace kiln::quant::detail
