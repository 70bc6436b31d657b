// The 32-element block types q4_0, q4_1, q5_0, q5_1, q8_0: exact decoding and
// the round-to-nearest encoders that produce the files found in the wild.
//
// Encoders (one scale per block, no search), matching ggml's reference ones:
//   q4_0  d = (element of largest magnitude, sign kept) / -8, q = trunc(x/d + 8.5)
//         clamped to 15: that element lands exactly on level 0 (= -8 d) and the
//         other side gets the remaining 7 levels.
//   q5_0  the same with 16 / 31.
//   q4_1  d = (max - min) / 15, m = min, q = trunc((x - min)/d + 0.5).
//   q5_1  the same with 31.
//   q8_0  d = max|x| / 127, q = round(x/d) (half away from zero).
// The reciprocal 1/d is taken from the float d *before* d is rounded to f16,
// as ggml does, so requantizing its files reproduces them bit for bit.
#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstring>

#include "kiln/core/fp16.h"
#include "kiln/quant/quant_impl.h"

namespace kiln::quant::detail {
namespace {

// trunc(v) clamped to [0, hi]; NaN maps to 0 instead of undefined behaviour.
inline uint8_t trunc_clamp(float v, int hi) {
  if (!(v > 0.0f)) return 0;
  if (v >= float(hi)) return uint8_t(hi);
  return uint8_t(v);
}

// Signed value of largest magnitude (the first one on ties).
inline float signed_absmax(const float* x, int n) {
  float amax = 0.0f, max = 0.0f;
  for (int j = 0; j < n; ++j) {
    if (std::fabs(x[j]) > amax) {
      amax = std::fabs(x[j]);
      max = x[j];
    }
  }
  return max;
}

inline void min_max(const float* x, int n, float& mn, float& mx) {
  mn = FLT_MAX;
  mx = -FLT_MAX;
  for (int j = 0; j < n; ++j) {
    mn = std::min(mn, x[j]);
    mx = std::max(mx, x[j]);
  }
}

inline uint32_t load_qh(const uint8_t* qh) {
  uint32_t v;
  std::memcpy(&v, qh, 4);  // little-endian, as stored
  return v;
}

}  // namespace

// ---- decoding ---------------------------------------------------------------

void dequantize_q4_0(const block_q4_0* x, float* y, int64_t n) {
  for (int64_t i = 0; i < n / QK4_0; ++i, y += QK4_0) {
    const float d = fp16_to_f32(x[i].d);
    for (int j = 0; j < QK4_0 / 2; ++j) {
      y[j] = float((x[i].qs[j] & 0xF) - 8) * d;
      y[j + QK4_0 / 2] = float((x[i].qs[j] >> 4) - 8) * d;
    }
  }
}

void dequantize_q4_1(const block_q4_1* x, float* y, int64_t n) {
  for (int64_t i = 0; i < n / QK4_1; ++i, y += QK4_1) {
    const float d = fp16_to_f32(x[i].d), m = fp16_to_f32(x[i].m);
    for (int j = 0; j < QK4_1 / 2; ++j) {
      y[j] = float(x[i].qs[j] & 0xF) * d + m;
      y[j + QK4_1 / 2] = float(x[i].qs[j] >> 4) * d + m;
    }
  }
}

void dequantize_q5_0(const block_q5_0* x, float* y, int64_t n) {
  for (int64_t i = 0; i < n / QK5_0; ++i, y += QK5_0) {
    const float d = fp16_to_f32(x[i].d);
    const uint32_t qh = load_qh(x[i].qh);
    for (int j = 0; j < QK5_0 / 2; ++j) {
      const int lo = (x[i].qs[j] & 0xF) | int(((qh >> j) & 1) << 4);
      const int hi = (x[i].qs[j] >> 4) | int(((qh >> (j + 16)) & 1) << 4);
      y[j] = float(lo - 16) * d;
      y[j + QK5_0 / 2] = float(hi - 16) * d;
    }
  }
}

void dequantize_q5_1(const block_q5_1* x, float* y, int64_t n) {
  for (int64_t i = 0; i < n / QK5_1; ++i, y += QK5_1) {
    const float d = fp16_to_f32(x[i].d), m = fp16_to_f32(x[i].m);
    const uint32_t qh = load_qh(x[i].qh);
    for (int j = 0; j < QK5_1 / 2; ++j) {
      const int lo = (x[i].qs[j] & 0xF) | int(((qh >> j) & 1) << 4);
      const int hi = (x[i].qs[j] >> 4) | int(((qh >> (j + 16)) & 1) << 4);
      y[j] = float(lo) * d + m;
      y[j + QK5_1 / 2] = float(hi) * d + m;
    }
  }
}

void dequantize_q8_0(const block_q8_0* x, float* y, int64_t n) {
  for (int64_t i = 0; i < n / QK8_0; ++i, y += QK8_0) {
    const float d = fp16_to_f32(x[i].d);
    for (int j = 0; j < QK8_0; ++j) y[j] = float(x[i].qs[j]) * d;
  }
}

// ---- encoding ---------------------------------------------------------------

void quantize_q4_0(const float* x, block_q4_0* y, int64_t n) {
  for (int64_t i = 0; i < n / QK4_0; ++i, x += QK4_0) {
    const float d = signed_absmax(x, QK4_0) / -8.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    y[i].d = f32_to_fp16(d);
    for (int j = 0; j < QK4_0 / 2; ++j) {
      const uint8_t lo = trunc_clamp(x[j] * id + 8.5f, 15);
      const uint8_t hi = trunc_clamp(x[j + QK4_0 / 2] * id + 8.5f, 15);
      y[i].qs[j] = uint8_t(lo | (hi << 4));
    }
  }
}

void quantize_q4_1(const float* x, block_q4_1* y, int64_t n) {
  for (int64_t i = 0; i < n / QK4_1; ++i, x += QK4_1) {
    float mn, mx;
    min_max(x, QK4_1, mn, mx);
    const float d = (mx - mn) / 15.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    y[i].d = f32_to_fp16(d);
    y[i].m = f32_to_fp16(mn);
    for (int j = 0; j < QK4_1 / 2; ++j) {
      const uint8_t lo = trunc_clamp((x[j] - mn) * id + 0.5f, 15);
      const uint8_t hi = trunc_clamp((x[j + QK4_1 / 2] - mn) * id + 0.5f, 15);
      y[i].qs[j] = uint8_t(lo | (hi << 4));
    }
  }
}

void quantize_q5_0(const float* x, block_q5_0* y, int64_t n) {
  for (int64_t i = 0; i < n / QK5_0; ++i, x += QK5_0) {
    const float d = signed_absmax(x, QK5_0) / -16.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    y[i].d = f32_to_fp16(d);
    uint32_t qh = 0;
    for (int j = 0; j < QK5_0 / 2; ++j) {
      const uint8_t lo = trunc_clamp(x[j] * id + 16.5f, 31);
      const uint8_t hi = trunc_clamp(x[j + QK5_0 / 2] * id + 16.5f, 31);
      y[i].qs[j] = uint8_t((lo & 0xF) | ((hi & 0xF) << 4));
      qh |= uint32_t(lo >> 4) << j;
      qh |= uint32_t(hi >> 4) << (j + QK5_0 / 2);
    }
    std::memcpy(y[i].qh, &qh, 4);
  }
}

void quantize_q5_1(const float* x, block_q5_1* y, int64_t n) {
  for (int64_t i = 0; i < n / QK5_1; ++i, x += QK5_1) {
    float mn, mx;
    min_max(x, QK5_1, mn, mx);
    const float d = (mx - mn) / 31.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    y[i].d = f32_to_fp16(d);
    y[i].m = f32_to_fp16(mn);
    uint32_t qh = 0;
    for (int j = 0; j < QK5_1 / 2; ++j) {
      const uint8_t lo = trunc_clamp((x[j] - mn) * id + 0.5f, 31);
      const uint8_t hi = trunc_clamp((x[j + QK5_1 / 2] - mn) * id + 0.5f, 31);
      y[i].qs[j] = uint8_t((lo & 0xF) | ((hi & 0xF) << 4));
      qh |= uint32_t(lo >> 4) << j;
      qh |= uint32_t(hi >> 4) << (j + QK5_1 / 2);
    }
    std::memcpy(y[i].qh, &qh, 4);
  }
}

void quantize_q8_0(const float* x, block_q8_0* y, int64_t n) {
  for (int64_t i = 0; i < n / QK8_0; ++i, x += QK8_0) {
    float amax = 0.0f;
    for (int j = 0; j < QK8_0; ++j) amax = std::max(amax, std::fabs(x[j]));
    const float d = amax / 127.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    y[i].d = f32_to_fp16(d);
    for (int j = 0; j < QK8_0; ++j) {
      const float v = std::clamp(x[j] * id, -127.0f, 127.0f);  // NaN-free inputs stay in range
      y[i].qs[j] = int8_t(v == v ? nearest_int(v) : 0);
    }
  }
}

}  // namespace kiln::quant::detail
