// CpuBackend::linear: every linear layer of the forward pass goes through
// cpu::matmul here, plus the optional bias, and (fast path, ActQuant::q8x2)
// the split of activations into an 8-bit grid part and a residual.
//
// Why the split is exact to ~16 bits: cpu::matmul quantizes each block of an
// activation row as d = amax / 127, q = round_nearest_even(x * (127 / amax))
// (backend/cpu/matmul_kernels.h). The grid part a = q * d is one of those
// quantized rows already, so matmul re-quantizes it without loss (a's block
// max is 127 * d); the residual r = x - a is exact in float (Sterbenz: a and x
// are within a factor of 2, or a = 0) and |r| <= d / 2, so its own 8-bit
// rounding errs by <= d / 508: W x = W a + W r with ~1/(254*254) relative
// activation error instead of ~1/254. Both rows are products of the same
// weights, so one matmul call with 2 rows reads the weights once.
#include <cmath>

#include "kiln/backend/cpu/cpu_backend.h"
#include "kiln/backend/cpu/ffn.h"
#include "kiln/backend/cpu/parallel_rows.h"
#include "kiln/model/weights.h"

namespace kiln::cpu {
namespace {

// Elements per activation block cpu::matmul uses for a weight type; 0 when
// activations stay float32 (f32 / f16 / bf16 weights).
int64_t act_block(DType t) {
  switch (t) {
    case DType::Q4_0:
    case DType::Q4_1:
    case DType::Q5_0:
    case DType::Q5_1:
    case DType::Q8_0:
      return 32;
    case DType::Q4_K:
    case DType::Q5_K:
    case DType::Q6_K:
      return 256;
    default:
      return 0;
  }
}

// x [n] -> grid part a [n] + residual r [n], per block of `block` elements.
void split_row(const float* x, float* a, float* r, int64_t n, int64_t block) {
  for (int64_t b0 = 0; b0 < n; b0 += block) {
    float amax = 0.0f;
    for (int64_t i = b0; i < b0 + block; ++i) amax = std::max(amax, std::fabs(x[i]));
    if (!(amax >= 1e-30f) || !std::isfinite(amax)) {
      // Zero, tiny or non-finite block: matmul handles it the same either way.
      for (int64_t i = b0; i < b0 + block; ++i) {
        a[i] = x[i];
        r[i] = 0.0f;
      }
      continue;
    }
    const float d = amax / 127.0f, id = 127.0f / amax;
    // Round to nearest even as matmul does: for |v| <= 127, adding 1.5 * 2^23
    // leaves a float whose unit is 1, so the sum rounds v exactly that way
    // (and, unlike nearbyint, vectorizes).
    constexpr float kMagic = 12582912.0f;
    for (int64_t i = b0; i < b0 + block; ++i) {
      const float q = (x[i] * id + kMagic) - kMagic;
      a[i] = q * d;
      r[i] = x[i] - a[i];
    }
  }
}

}  // namespace

void CpuBackend::linear(const model::Matrix& w, const model::Vector& bias, const float* x,
                        int64_t n_rows, float* y) {
  MatmulArgs args;
  args.w_type = w.type;
  args.w = w.data;
  args.n_out = w.n_out;
  args.n_in = w.n_in;
  args.scratch = &act_scratch_;
  const int64_t block = act_block(w.type);
  if (path_ == MatmulPath::fast && act_quant_ == ActQuant::q8x2 && block > 0 && n_rows > 0) {
    const size_t need_x = size_t(2 * n_rows * w.n_in), need_y = size_t(2 * n_rows * w.n_out);
    if (split_x_.size() < need_x) split_x_.resize(need_x);
    if (split_y_.size() < need_y) split_y_.resize(need_y);
    for_rows(pool_, n_rows, [&](int64_t r) {
      float* a = split_x_.data() + 2 * r * w.n_in;
      split_row(x + r * w.n_in, a, a + w.n_in, w.n_in, block);
    });
    args.x = split_x_.data();
    args.n_batch = 2 * n_rows;
    args.y = split_y_.data();
    matmul(path_, args, &pool_);
    for_rows(pool_, n_rows, [&](int64_t r) {
      const float* ya = split_y_.data() + 2 * r * w.n_out;
      const float* yr = ya + w.n_out;
      float* out = y + r * w.n_out;
      for (int64_t i = 0; i < w.n_out; ++i) out[i] = ya[i] + yr[i];
    });
  } else {
    args.x = x;
    args.n_batch = n_rows;
    args.y = y;
    matmul(path_, args, &pool_);
  }
  if (bias)
    for (int64_t r = 0; r < n_rows; ++r) add_inplace(y + r * w.n_out, bias.data, w.n_out);
}

}  // namespace kiln::cpu
