// The k-quants q4_k, q5_k, q6_k (256-element super-blocks): exact decoding and
// kiln's own scale-searching encoders.
//
// Layouts (see blocks.h): q4_k/q5_k have 8 sub-blocks of 32 with a 6-bit scale
// and 6-bit min each, x = d*scale*q - dmin*min; qs byte 32c+l holds element
// 64c+l (low nibble) and 64c+32+l (high nibble); q5_k's qh[l] bit 2c / 2c+1 is
// the fifth bit of element 64c+l / 64c+32+l. q6_k has 16 sub-blocks of 16 with
// int8 scales, x = d*scale*(q - 32); per 128-element half, ql[l] / ql[l+32]
// hold the low nibbles of elements l, l+32 (low) and l+64, l+96 (high), and
// qh[l] holds their two top bits at bit pairs 0, 2, 4, 6.
//
// Encoding method (per super-block):
//  1. Importance weights w_i = rms(x) + |x_i|: large weights dominate dot
//     products, while the rms floor keeps small ones from being ignored.
//  2. Each sub-block is fitted on its own with an unquantized scale (and min):
//     for 21 candidate grids (levels spanning the sub-block's range stretched
//     by -1..+1 level in steps of 0.1) the integer levels are rounded and the
//     scale (and offset) re-solved by weighted least squares; the best fit is
//     then refined by two alternations (re-round levels, re-solve). The offset
//     is kept <= 0 because the format stores it as a non-negative min.
//  3. The per-sub-block scales/mins are quantized against the super-block's
//     largest (6 bits unsigned for q4_k/q5_k, int8 for q6_k); each sub-block
//     then tries the neighbouring quantized scale/min codes (+-1) and keeps the
//     one with the smallest weighted error after re-rounding its levels.
// Everything is scalar and deterministic.
#include <algorithm>
#include <cmath>
#include <cstring>

#include "kiln/core/fp16.h"
#include "kiln/quant/quant_impl.h"

namespace kiln::quant::detail {
namespace {

constexpr int kSearchSteps = 10;      // candidates -10..+10
constexpr float kSearchDelta = 0.1f;  // in levels
constexpr int kRefineIters = 2;

inline int clampi(int v, int lo, int hi) {
  return std::min(std::max(v, lo), hi);
}

// Level of x for x ~ scale * L - min, clamped to [0, nmax]; iscale = 1/scale
// (0 when scale is 0: every level is then 0). Branch-free, as the search calls
// it ~60 times per element: clamp first (NaN becomes the lowest level), then
// round by truncating v + 0.5 (v >= 0). That can round 0.49999997 up; the
// search only needs *a* level per element, and errors are always measured on the levels
// actually chosen.
inline int level_affine(float x, float iscale, float min, int nmax) {
  float v = (x + min) * iscale;
  v = v > 0.0f ? v : 0.0f;  // (NaN -> 0; written so it compiles to maxss/minss)
  v = v < float(nmax) ? v : float(nmax);
  return int(v + 0.5f);
}

// Same for q6_k's signed levels [-32, 31].
inline int level_sym(float x, float iscale) {
  float v = x * iscale;
  v = v > -32.0f ? v : -32.0f;
  v = v < 31.0f ? v : 31.0f;
  return int(v + 32.5f) - 32;
}

inline float inverse(float s) {
  return s != 0.0f ? 1.0f / s : 0.0f;
}

// Weighted error of x ~ scale*L - min with the levels re-rounded.
float affine_error(const float* x, const float* w, int n, int nmax, float scale, float min) {
  const float iscale = inverse(scale);
  float err = 0.0f;
  for (int i = 0; i < n; ++i) {
    const float diff = scale * float(level_affine(x[i], iscale, min, nmax)) - min - x[i];
    err += w[i] * diff * diff;
  }
  return err;
}

// Solves min over (a, b <= 0) of sum w (a L + b - x)^2 for fixed levels L;
// returns false when the levels are degenerate (all equal and zero weight).
bool solve_affine(const float* x, const float* w, const int* L, int n, float& a, float& b) {
  double sw = 0, swl = 0, swl2 = 0, swx = 0, swlx = 0;
  for (int i = 0; i < n; ++i) {
    sw += w[i];
    swl += w[i] * L[i];
    swl2 += double(w[i]) * L[i] * L[i];
    swx += w[i] * x[i];
    swlx += double(w[i]) * L[i] * x[i];
  }
  const double det = sw * swl2 - swl * swl;
  double aa, bb;
  if (det > 0) {
    aa = (sw * swlx - swl * swx) / det;
    bb = (swl2 * swx - swl * swlx) / det;
  } else {
    return false;
  }
  if (bb > 0) {  // the format cannot add a positive offset: pin it at 0
    bb = 0;
    if (swl2 <= 0) return false;
    aa = swlx / swl2;
  }
  if (aa <= 0) return false;
  a = float(aa);
  b = float(bb);
  return true;
}

// Best (scale >= 0, min >= 0) for x ~ scale * L - min, L in [0, nmax].
void fit_affine(const float* x, const float* w, int n, int nmax, float& best_scale,
                float& best_min) {
  float lo = x[0], hi = x[0];
  for (int i = 1; i < n; ++i) {
    lo = std::min(lo, x[i]);
    hi = std::max(hi, x[i]);
  }
  lo = std::min(lo, 0.0f);
  best_min = -lo;
  if (!(hi > lo)) {  // constant block (or NaN): the min alone represents it
    best_scale = 0.0f;
    return;
  }
  best_scale = (hi - lo) / float(nmax);
  float best_err = affine_error(x, w, n, nmax, best_scale, best_min);
  int L[32];
  for (int s = -kSearchSteps; s <= kSearchSteps; ++s) {
    const float iscale = (float(nmax) + kSearchDelta * float(s)) / (hi - lo);
    for (int i = 0; i < n; ++i) L[i] = level_affine(x[i], iscale, -lo, nmax);
    float a, b;
    if (!solve_affine(x, w, L, n, a, b)) continue;
    const float err = affine_error(x, w, n, nmax, a, -b);
    if (err < best_err) {
      best_err = err;
      best_scale = a;
      best_min = -b;
    }
  }
  for (int it = 0; it < kRefineIters; ++it) {
    const float iscale = inverse(best_scale);
    for (int i = 0; i < n; ++i) L[i] = level_affine(x[i], iscale, best_min, nmax);
    float a, b;
    if (!solve_affine(x, w, L, n, a, b)) break;
    const float err = affine_error(x, w, n, nmax, a, -b);
    if (!(err < best_err)) break;
    best_err = err;
    best_scale = a;
    best_min = -b;
  }
}

float sym_error(const float* x, const float* w, int n, float scale) {
  const float iscale = inverse(scale);
  float err = 0.0f;
  for (int i = 0; i < n; ++i) {
    const float diff = scale * float(level_sym(x[i], iscale)) - x[i];
    err += w[i] * diff * diff;
  }
  return err;
}

// Best signed scale for x ~ scale * L, L in [-32, 31] (q6_k's levels).
float fit_symmetric(const float* x, const float* w, int n) {
  float amax = 0.0f, max = 0.0f;
  for (int i = 0; i < n; ++i) {
    if (std::fabs(x[i]) > amax) {
      amax = std::fabs(x[i]);
      max = x[i];
    }
  }
  if (!(amax > 0.0f)) return 0.0f;
  // The largest-magnitude element maps to level -32, using the asymmetric
  // range's extra negative level.
  float best = max / -32.0f;
  float best_err = sym_error(x, w, n, best);
  int L[16];
  auto try_levels = [&]() {
    double swlx = 0, swl2 = 0;
    for (int i = 0; i < n; ++i) {
      swlx += double(w[i]) * L[i] * x[i];
      swl2 += double(w[i]) * L[i] * L[i];
    }
    if (swl2 <= 0) return false;
    const float a = float(swlx / swl2);
    const float err = sym_error(x, w, n, a);
    if (!(err < best_err)) return false;
    best_err = err;
    best = a;
    return true;
  };
  for (int s = -kSearchSteps; s <= kSearchSteps; ++s) {
    const float iscale = -(32.0f + kSearchDelta * float(s)) / max;
    for (int i = 0; i < n; ++i) L[i] = level_sym(x[i], iscale);
    try_levels();
  }
  for (int it = 0; it < kRefineIters; ++it) {
    const float iscale = inverse(best);
    for (int i = 0; i < n; ++i) L[i] = level_sym(x[i], iscale);
    if (!try_levels()) break;
  }
  return best;
}

void importance_weights(const float* x, int n, float* w) {
  double sum2 = 0;
  for (int i = 0; i < n; ++i) sum2 += double(x[i]) * x[i];
  const float rms = float(std::sqrt(sum2 / n));
  for (int i = 0; i < n; ++i) w[i] = rms + std::fabs(x[i]);
}

void pack_scale_min_k4(const int* ls, const int* lm, uint8_t* q) {
  std::memset(q, 0, K_SCALE_SIZE);
  for (int j = 0; j < 8; ++j) {
    if (j < 4) {
      q[j] = uint8_t(ls[j]);
      q[j + 4] = uint8_t(lm[j]);
    } else {
      q[j + 4] = uint8_t((ls[j] & 0xF) | ((lm[j] & 0xF) << 4));
      q[j - 4] |= uint8_t((ls[j] >> 4) << 6);
      q[j] |= uint8_t((lm[j] >> 4) << 6);
    }
  }
}

// Steps 1-3 for q4_k / q5_k: fills d, dmin, the packed scales and the levels
// L[256] (0..nmax) of one super-block.
void quantize_affine_superblock(const float* x, int nmax, uint16_t& d_out, uint16_t& dmin_out,
                                uint8_t* packed, uint8_t* L) {
  float w[QK_K];
  importance_weights(x, QK_K, w);
  float scales[8], mins[8];
  float max_scale = 0.0f, max_min = 0.0f;
  for (int j = 0; j < 8; ++j) {
    fit_affine(x + 32 * j, w + 32 * j, 32, nmax, scales[j], mins[j]);
    max_scale = std::max(max_scale, scales[j]);
    max_min = std::max(max_min, mins[j]);
  }
  d_out = f32_to_fp16(max_scale / 63.0f);
  dmin_out = f32_to_fp16(max_min / 63.0f);
  const float d = fp16_to_f32(d_out), dmin = fp16_to_f32(dmin_out);
  int ls[8], lm[8];
  for (int j = 0; j < 8; ++j) {
    const int ls0 = d > 0.0f ? clampi(nearest_int(scales[j] / d), 0, 63) : 0;
    const int lm0 = dmin > 0.0f ? clampi(nearest_int(mins[j] / dmin), 0, 63) : 0;
    ls[j] = ls0;
    lm[j] = lm0;
    float best_err =
        affine_error(x + 32 * j, w + 32 * j, 32, nmax, d * float(ls0), dmin * float(lm0));
    for (int ds = -1; ds <= 1; ++ds) {
      for (int dm = -1; dm <= 1; ++dm) {
        const int cs = ls0 + ds, cm = lm0 + dm;
        if ((ds == 0 && dm == 0) || cs < 0 || cs > 63 || cm < 0 || cm > 63) continue;
        const float err =
            affine_error(x + 32 * j, w + 32 * j, 32, nmax, d * float(cs), dmin * float(cm));
        if (err < best_err) {
          best_err = err;
          ls[j] = cs;
          lm[j] = cm;
        }
      }
    }
  }
  pack_scale_min_k4(ls, lm, packed);
  for (int j = 0; j < 8; ++j) {
    uint8_t sc, m;
    get_scale_min_k4(j, packed, sc, m);
    // Same float expressions as the decoder, so levels round against the
    // values it will reconstruct.
    const float D = d * float(sc), M = dmin * float(m);
    const float iD = inverse(D);
    for (int i = 0; i < 32; ++i) L[32 * j + i] = uint8_t(level_affine(x[32 * j + i], iD, M, nmax));
  }
}

}  // namespace

// ---- decoding ---------------------------------------------------------------

void dequantize_q4_k(const block_q4_K* x, float* y, int64_t n) {
  for (int64_t i = 0; i < n / QK_K; ++i) {
    const float d = fp16_to_f32(x[i].d), dmin = fp16_to_f32(x[i].dmin);
    const uint8_t* q = x[i].qs;
    for (int c = 0; c < 4; ++c, q += 32) {
      uint8_t sc, m;
      get_scale_min_k4(2 * c, x[i].scales, sc, m);
      const float d1 = d * float(sc), m1 = dmin * float(m);
      get_scale_min_k4(2 * c + 1, x[i].scales, sc, m);
      const float d2 = d * float(sc), m2 = dmin * float(m);
      for (int l = 0; l < 32; ++l) *y++ = d1 * float(q[l] & 0xF) - m1;
      for (int l = 0; l < 32; ++l) *y++ = d2 * float(q[l] >> 4) - m2;
    }
  }
}

void dequantize_q5_k(const block_q5_K* x, float* y, int64_t n) {
  for (int64_t i = 0; i < n / QK_K; ++i) {
    const float d = fp16_to_f32(x[i].d), dmin = fp16_to_f32(x[i].dmin);
    const uint8_t* ql = x[i].qs;
    const uint8_t* qh = x[i].qh;
    for (int c = 0; c < 4; ++c, ql += 32) {
      uint8_t sc, m;
      get_scale_min_k4(2 * c, x[i].scales, sc, m);
      const float d1 = d * float(sc), m1 = dmin * float(m);
      get_scale_min_k4(2 * c + 1, x[i].scales, sc, m);
      const float d2 = d * float(sc), m2 = dmin * float(m);
      const uint8_t u1 = uint8_t(1u << (2 * c)), u2 = uint8_t(2u << (2 * c));
      for (int l = 0; l < 32; ++l) *y++ = d1 * float((ql[l] & 0xF) + (qh[l] & u1 ? 16 : 0)) - m1;
      for (int l = 0; l < 32; ++l) *y++ = d2 * float((ql[l] >> 4) + (qh[l] & u2 ? 16 : 0)) - m2;
    }
  }
}

void dequantize_q6_k(const block_q6_K* x, float* y, int64_t n) {
  for (int64_t i = 0; i < n / QK_K; ++i) {
    const float d = fp16_to_f32(x[i].d);
    for (int half = 0; half < 2; ++half, y += 128) {
      const uint8_t* ql = x[i].ql + 64 * half;
      const uint8_t* qh = x[i].qh + 32 * half;
      const int8_t* sc = x[i].scales + 8 * half;
      for (int l = 0; l < 32; ++l) {
        const int is = l / 16;
        const int q1 = int((ql[l] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32;
        const int q2 = int((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
        const int q3 = int((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
        const int q4 = int((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
        y[l] = d * float(sc[is + 0]) * float(q1);
        y[l + 32] = d * float(sc[is + 2]) * float(q2);
        y[l + 64] = d * float(sc[is + 4]) * float(q3);
        y[l + 96] = d * float(sc[is + 6]) * float(q4);
      }
    }
  }
}

// ---- encoding ---------------------------------------------------------------

void quantize_q4_k(const float* x, block_q4_K* y, int64_t n) {
  uint8_t L[QK_K];
  for (int64_t i = 0; i < n / QK_K; ++i, x += QK_K) {
    quantize_affine_superblock(x, 15, y[i].d, y[i].dmin, y[i].scales, L);
    for (int c = 0; c < 4; ++c)
      for (int l = 0; l < 32; ++l)
        y[i].qs[32 * c + l] = uint8_t(L[64 * c + l] | (L[64 * c + 32 + l] << 4));
  }
}

void quantize_q5_k(const float* x, block_q5_K* y, int64_t n) {
  uint8_t L[QK_K];
  for (int64_t i = 0; i < n / QK_K; ++i, x += QK_K) {
    quantize_affine_superblock(x, 31, y[i].d, y[i].dmin, y[i].scales, L);
    std::memset(y[i].qh, 0, sizeof(y[i].qh));
    for (int c = 0; c < 4; ++c) {
      for (int l = 0; l < 32; ++l) {
        const int a = L[64 * c + l], b = L[64 * c + 32 + l];
        y[i].qs[32 * c + l] = uint8_t((a & 0xF) | ((b & 0xF) << 4));
        y[i].qh[l] |= uint8_t(((a >> 4) << (2 * c)) | ((b >> 4) << (2 * c + 1)));
      }
    }
  }
}

void quantize_q6_k(const float* x, block_q6_K* y, int64_t n) {
  float w[QK_K];
  int8_t L[QK_K];  // -32..31
  for (int64_t i = 0; i < n / QK_K; ++i, x += QK_K) {
    importance_weights(x, QK_K, w);
    float scales[16];
    float amax = 0.0f, max = 0.0f;
    for (int j = 0; j < 16; ++j) {
      scales[j] = fit_symmetric(x + 16 * j, w + 16 * j, 16);
      if (std::fabs(scales[j]) > amax) {
        amax = std::fabs(scales[j]);
        max = scales[j];
      }
    }
    // The largest sub-block scale maps to code -128 (int8's extra level).
    y[i].d = f32_to_fp16(max / -128.0f);
    const float d = fp16_to_f32(y[i].d);
    for (int j = 0; j < 16; ++j) {
      const float* xs = x + 16 * j;
      const float* ws = w + 16 * j;
      int best = d != 0.0f ? clampi(nearest_int(scales[j] / d), -128, 127) : 0;
      float best_err = sym_error(xs, ws, 16, d * float(best));
      for (int c : {best - 1, best + 1}) {
        if (c < -128 || c > 127 || d == 0.0f) continue;
        const float err = sym_error(xs, ws, 16, d * float(c));
        if (err < best_err) {
          best_err = err;
          best = c;
        }
      }
      y[i].scales[j] = int8_t(best);
      const float iD = inverse(d * float(best));
      for (int l = 0; l < 16; ++l) L[16 * j + l] = int8_t(level_sym(xs[l], iD));
    }
    for (int half = 0; half < 2; ++half) {
      uint8_t* ql = y[i].ql + 64 * half;
      uint8_t* qh = y[i].qh + 32 * half;
      const int8_t* Lh = L + 128 * half;
      for (int l = 0; l < 32; ++l) {
        const int q1 = Lh[l] + 32, q2 = Lh[l + 32] + 32, q3 = Lh[l + 64] + 32, q4 = Lh[l + 96] + 32;
        ql[l] = uint8_t((q1 & 0xF) | ((q3 & 0xF) << 4));
        ql[l + 32] = uint8_t((q2 & 0xF) | ((q4 & 0xF) << 4));
        qh[l] = uint8_t((q1 >> 4) | ((q2 >> 4) << 2) | ((q3 >> 4) << 4) | ((q4 >> 4) << 6));
      }
    }
  }
}

}  // namespace kiln::quant::detail
