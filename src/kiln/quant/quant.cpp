// Dispatch of the reference row (de)quantizers by type, the plain float types
// (f32 / f16 / bf16) and the reference dot product.
#include "kiln/quant/quant.h"

#include <algorithm>
#include <cstring>

#include "kiln/core/assert.h"
#include "kiln/core/fp16.h"
#include "kiln/quant/quant_impl.h"

namespace kiln::quant {

using namespace detail;

namespace {

void check_row(DType t, int64_t n) {
  const auto& info = dtype_info(t);
  KILN_ASSERT_MSG(info.supported, "tensor type without a reference (de)quantizer");
  KILN_ASSERT(n >= 0 && n % info.block_elems == 0);
}

}  // namespace

void dequantize_row(DType t, const void* src, float* dst, int64_t n) {
  check_row(t, n);
  switch (t) {
    case DType::F32:
      std::memcpy(dst, src, size_t(n) * sizeof(float));
      return;
    case DType::F16: {
      const auto* h = static_cast<const uint16_t*>(src);
      for (int64_t i = 0; i < n; ++i) dst[i] = fp16_to_f32(h[i]);
      return;
    }
    case DType::BF16: {
      const auto* h = static_cast<const uint16_t*>(src);
      for (int64_t i = 0; i < n; ++i) dst[i] = bf16_to_f32(h[i]);
      return;
    }
    case DType::Q4_0:
      return dequantize_q4_0(static_cast<const block_q4_0*>(src), dst, n);
    case DType::Q4_1:
      return dequantize_q4_1(static_cast<const block_q4_1*>(src), dst, n);
    case DType::Q5_0:
      return dequantize_q5_0(static_cast<const block_q5_0*>(src), dst, n);
    case DType::Q5_1:
      return dequantize_q5_1(static_cast<const block_q5_1*>(src), dst, n);
    case DType::Q8_0:
      return dequantize_q8_0(static_cast<const block_q8_0*>(src), dst, n);
    case DType::Q4_K:
      return dequantize_q4_k(static_cast<const block_q4_K*>(src), dst, n);
    case DType::Q5_K:
      return dequantize_q5_k(static_cast<const block_q5_K*>(src), dst, n);
    case DType::Q6_K:
      return dequantize_q6_k(static_cast<const block_q6_K*>(src), dst, n);
    default:
      KILN_ASSERT_MSG(false, "dequantize_row: unsupported type");
  }
}

void quantize_row(DType t, const float* src, void* dst, int64_t n) {
  check_row(t, n);
  switch (t) {
    case DType::F32:
      std::memcpy(dst, src, size_t(n) * sizeof(float));
      return;
    case DType::F16: {
      auto* h = static_cast<uint16_t*>(dst);
      for (int64_t i = 0; i < n; ++i) h[i] = f32_to_fp16(src[i]);
      return;
    }
    case DType::BF16: {
      auto* h = static_cast<uint16_t*>(dst);
      for (int64_t i = 0; i < n; ++i) h[i] = f32_to_bf16(src[i]);
      return;
    }
    case DType::Q4_0:
      return quantize_q4_0(src, static_cast<block_q4_0*>(dst), n);
    case DType::Q4_1:
      return quantize_q4_1(src, static_cast<block_q4_1*>(dst), n);
    case DType::Q5_0:
      return quantize_q5_0(src, static_cast<block_q5_0*>(dst), n);
    case DType::Q5_1:
      return quantize_q5_1(src, static_cast<block_q5_1*>(dst), n);
    case DType::Q8_0:
      return quantize_q8_0(src, static_cast<block_q8_0*>(dst), n);
    case DType::Q4_K:
      return quantize_q4_k(src, static_cast<block_q4_K*>(dst), n);
    case DType::Q5_K:
      return quantize_q5_k(src, static_cast<block_q5_K*>(dst), n);
    case DType::Q6_K:
      return quantize_q6_k(src, static_cast<block_q6_K*>(dst), n);
    default:
      KILN_ASSERT_MSG(false, "quantize_row: unsupported type");
  }
}

float dot_row_ref(DType t, const void* w, const float* x, int64_t n) {
  check_row(t, n);
  // One block at a time keeps the scratch on the stack; the summation order
  // is still plain left to right, so the result does not depend on n's split.
  const auto& info = dtype_info(t);
  const int64_t chunk = info.block_elems == 1 ? 256 : info.block_elems;
  float buf[256];
  const auto* bytes = static_cast<const uint8_t*>(w);
  double acc = 0.0;
  for (int64_t i = 0; i < n; i += chunk) {
    const int64_t m = std::min<int64_t>(chunk, n - i);
    dequantize_row(t, bytes + row_bytes(t, i), buf, m);
    for (int64_t j = 0; j < m; ++j) acc += double(buf[j]) * double(x[i + j]);
  }
  return float(acc);
}

}  // namespace kiln::quant
