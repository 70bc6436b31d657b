// Portable fast-path kernels: scalar integer dot products per block and the
// canonical float order of matmul_kernels.h, written out plainly. They run on
// any CPU and are the spelled-out definition the SIMD levels must match bit
// for bit (tests compare them).
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "kiln/backend/cpu/matmul_kernels.h"
#include "kiln/core/assert.h"
#include "kiln/core/fp16.h"
#include "kiln/quant/blocks.h"

namespace kiln::cpu::detail {
namespace {

using namespace kiln::quant;

inline uint16_t ld16(const uint8_t* p) {
  uint16_t v;
  std::memcpy(&v, p, 2);
  return v;
}
inline uint32_t ld32(const uint8_t* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

// ---- activation quantization ----------------------------------------------

// Quantizes n floats to int8 with one scale; returns d, writes q and sum(q).
float quant_block(const float* x, int n, int8_t* q, int32_t* sum_out) {
  uint32_t amax_bits = 0;
  for (int i = 0; i < n; ++i) amax_bits = std::max(amax_bits, f32_bits(x[i]) & 0x7fffffffu);
  int32_t sum = 0;
  float d;
  if (amax_bits >= 0x7f800000u || amax_bits < f32_bits(1e-30f)) {
    d = amax_bits >= 0x7f800000u ? std::numeric_limits<float>::quiet_NaN() : 0.0f;
    std::memset(q, 0, size_t(n));
  } else {
    const float amax = bits_f32(amax_bits);
    d = amax / 127.0f;
    const float id = 127.0f / amax;
    for (int i = 0; i < n; ++i) {
      q[i] = int8_t(int(std::nearbyint(x[i] * id)));  // default mode: nearest-even
      sum += q[i];
    }
  }
  *sum_out = sum;
  return d;
}

// ---- 32-element block types -----------------------------------------------

struct Q4_0 {
  static constexpr int kBytes = 18;
  static constexpr bool kMin = false;
  static int dot(const uint8_t* b, const int8_t* a) {
    const uint8_t* qs = b + 2;
    int s = 0;
    for (int l = 0; l < 16; ++l) s += ((qs[l] & 15) - 8) * a[l] + ((qs[l] >> 4) - 8) * a[l + 16];
    return s;
  }
};
struct Q4_1 {
  static constexpr int kBytes = 20;
  static constexpr bool kMin = true;
  static int dot(const uint8_t* b, const int8_t* a) {
    const uint8_t* qs = b + 4;
    int s = 0;
    for (int l = 0; l < 16; ++l) s += (qs[l] & 15) * a[l] + (qs[l] >> 4) * a[l + 16];
    return s;
  }
};
template <int kOffset, int kQh, int kQs>
int dot_q5(const uint8_t* b, const int8_t* a) {
  const uint32_t qh = ld32(b + kQh);
  const uint8_t* qs = b + kQs;
  int s = 0;
  for (int l = 0; l < 16; ++l) {
    const int lo = int((qs[l] & 15) | (((qh >> l) & 1) << 4)) - kOffset;
    const int hi = int((qs[l] >> 4) | (((qh >> (l + 16)) & 1) << 4)) - kOffset;
    s += lo * a[l] + hi * a[l + 16];
  }
  return s;
}
struct Q5_0 {
  static constexpr int kBytes = 22;
  static constexpr bool kMin = false;
  static int dot(const uint8_t* b, const int8_t* a) { return dot_q5<16, 2, 6>(b, a); }
};
struct Q5_1 {
  static constexpr int kBytes = 24;
  static constexpr bool kMin = true;
  static int dot(const uint8_t* b, const int8_t* a) { return dot_q5<0, 4, 8>(b, a); }
};
struct Q8_0 {
  static constexpr int kBytes = 34;
  static constexpr bool kMin = false;
  static int dot(const uint8_t* b, const int8_t* a) {
    const auto* qs = reinterpret_cast<const int8_t*>(b + 2);
    int s = 0;
    for (int l = 0; l < 32; ++l) s += qs[l] * a[l];
    return s;
  }
};

// q: the activation row's levels back in element order.
template <class T>
float dot_blocks(const uint8_t* w, const ActQ8_32& a, const int8_t* q, int64_t nb) {
  float acc[4] = {0, 0, 0, 0};
  for (int64_t i = 0; i < nb; ++i) {
    const uint8_t* b = w + i * T::kBytes;
    const int isum = T::dot(b, q + 32 * i);
    float& s = acc[i % 4];
    s = std::fma(fp16_to_f32(ld16(b)) * a.d[i], float(isum), s);
    if constexpr (T::kMin) s = std::fma(fp16_to_f32(ld16(b + 2)), a.s[i], s);
  }
  return (acc[0] + acc[1]) + (acc[2] + acc[3]);
}

template <class T>
void tile_blocks(const TileArgs& t) {
  const int64_t nb = t.n_in / 32;
  std::vector<int8_t> q(static_cast<size_t>(t.n_in));
  for (int64_t b = 0; b < t.n_batch; ++b) {
    const ActQ8_32 a = act_q8_32(t.act + size_t(b) * t.act_stride, t.act_layout);
    for (int64_t i = 0; i < nb; ++i)
      for (int e = 0; e < 32; ++e) q[size_t(32 * i + e)] = a.qs[q8_32_offset(i, e)];
    for (int64_t r = 0; r < t.n_rows; ++r)
      t.y[b * t.ldy + r] = dot_blocks<T>(t.w + size_t(r) * t.w_stride, a, q.data(), nb);
  }
}

// ---- k-quants ---------------------------------------------------------------

// The 6-bit scales and mins of a q4_k/q5_k super-block (GGUF's packing).
void scales_k4(const uint8_t* q, int sc[8], int m[8]) {
  for (int j = 0; j < 4; ++j) {
    sc[j] = q[j] & 63;
    m[j] = q[j + 4] & 63;
    sc[j + 4] = (q[j + 8] & 0xF) | ((q[j] >> 6) << 4);
    m[j + 4] = (q[j + 8] >> 4) | ((q[j + 4] >> 6) << 4);
  }
}

// kQh: q5_k (fifth bit from qh) or q4_k.
// q: the activation row's levels back in element order.
template <bool kQh>
float dot_q45k(const uint8_t* w, const ActQ8_256& a, const int8_t* q, int64_t nsb) {
  constexpr int kBytes = kQh ? 176 : 144;
  float acc[4] = {0, 0, 0, 0};
  for (int64_t i = 0; i < nsb; ++i) {
    const uint8_t* b = w + i * kBytes;
    const uint8_t* qh = b + 16;
    const uint8_t* qs = b + (kQh ? 48 : 16);
    const int8_t* q8 = q + 256 * i;
    int sc[8], m[8];
    scales_k4(b + 4, sc, m);
    const float da = a.d[i];
    const float dd = fp16_to_f32(ld16(b)) * da, dm = fp16_to_f32(ld16(b + 2)) * da;
    for (int c = 0; c < 4; ++c) {
      int dot[2] = {0, 0}, bs[2] = {0, 0};
      for (int l = 0; l < 32; ++l) {
        int lo = qs[32 * c + l] & 15, hi = qs[32 * c + l] >> 4;
        if (kQh) {
          lo |= ((qh[l] >> (2 * c)) & 1) << 4;
          hi |= ((qh[l] >> (2 * c + 1)) & 1) << 4;
        }
        dot[0] += lo * q8[64 * c + l];
        dot[1] += hi * q8[64 * c + 32 + l];
        bs[0] += q8[64 * c + l];
        bs[1] += q8[64 * c + 32 + l];
      }
      const int I = sc[2 * c] * dot[0] + sc[2 * c + 1] * dot[1];
      const int M = m[2 * c] * bs[0] + m[2 * c + 1] * bs[1];
      acc[c] = std::fma(dd, float(I), acc[c]);
      acc[c] = std::fma(-dm, float(M), acc[c]);
    }
  }
  return (acc[0] + acc[1]) + (acc[2] + acc[3]);
}

float dot_q6k(const uint8_t* w, const ActQ8_256& a, const int8_t* q, int64_t nsb) {
  float acc[4] = {0, 0, 0, 0};
  for (int64_t i = 0; i < nsb; ++i) {
    const uint8_t* b = w + i * 210;
    const auto* sc = reinterpret_cast<const int8_t*>(b + 192);
    const int8_t* q8 = q + 256 * i;
    const float dd = fp16_to_f32(ld16(b + 208)) * a.d[i];
    for (int h = 0; h < 2; ++h) {
      const uint8_t* ql = b + 64 * h;
      const uint8_t* qh = b + 128 + 32 * h;
      for (int c = 0; c < 4; ++c) {  // elements 128h + 32c + l
        const uint8_t* lq = ql + 32 * (c & 1);
        const int nib = 4 * (c >> 1), top = 2 * c;
        const int8_t* a8 = q8 + 128 * h + 32 * c;
        int dot[2] = {0, 0};
        for (int g = 0; g < 2; ++g)
          for (int l = 16 * g; l < 16 * g + 16; ++l)
            dot[g] += (int(((lq[l] >> nib) & 0xF) | (((qh[l] >> top) & 3) << 4)) - 32) * a8[l];
        const int I = sc[8 * h + 2 * c] * dot[0] + sc[8 * h + 2 * c + 1] * dot[1];
        acc[c] = std::fma(dd, float(I), acc[c]);
      }
    }
  }
  return (acc[0] + acc[1]) + (acc[2] + acc[3]);
}

template <DType kT, float (*kDot)(const uint8_t*, const ActQ8_256&, const int8_t*, int64_t)>
void tile_k(const TileArgs& t) {
  const int64_t nsb = t.n_in / 256;
  std::vector<int8_t> q(static_cast<size_t>(t.n_in));
  for (int64_t b = 0; b < t.n_batch; ++b) {
    const ActQ8_256 a = act_q8_256(t.act + size_t(b) * t.act_stride, t.act_layout);
    for (int64_t i = 0; i < nsb; ++i)
      for (int e = 0; e < 256; ++e)
        q[size_t(256 * i + e)] = a.qs[256 * i + int64_t(q8_256_offset(kT, e))];
    for (int64_t r = 0; r < t.n_rows; ++r)
      t.y[b * t.ldy + r] = kDot(t.w + size_t(r) * t.w_stride, a, q.data(), nsb);
  }
}

// ---- float weights ----------------------------------------------------------

inline float wf(DType t, const uint8_t* w, int64_t e) {
  if (t == DType::F32) {
    float v;
    std::memcpy(&v, w + 4 * e, 4);
    return v;
  }
  const uint16_t h = ld16(w + 2 * e);
  return t == DType::F16 ? fp16_to_f32(h) : bf16_to_f32(h);
}

template <DType kT>
void tile_float(const TileArgs& t) {
  for (int64_t b = 0; b < t.n_batch; ++b) {
    const auto* x = reinterpret_cast<const float*>(t.act + size_t(b) * t.act_stride);
    for (int64_t r = 0; r < t.n_rows; ++r) {
      const uint8_t* w = t.w + size_t(r) * t.w_stride;
      float acc[16] = {};
      for (int64_t e = 0; e < t.n_in; ++e) acc[e % 16] = std::fma(wf(kT, w, e), x[e], acc[e % 16]);
      float s8[8], s4[4], s2[2];
      for (int l = 0; l < 8; ++l) s8[l] = acc[l] + acc[l + 8];
      for (int l = 0; l < 4; ++l) s4[l] = s8[l] + s8[l + 4];
      for (int l = 0; l < 2; ++l) s2[l] = s4[l] + s4[l + 2];
      t.y[b * t.ldy + r] = s2[0] + s2[1];
    }
  }
}

}  // namespace

void quantize_act_scalar(DType w_type, const float* x, uint8_t* dst, int64_t n_in) {
  const ActFormat f = act_format(w_type);
  const ActLayout l = act_layout(f, n_in);
  auto* qs = reinterpret_cast<int8_t*>(dst);
  auto* d = reinterpret_cast<float*>(dst + l.off_d);
  if (f == ActFormat::q8_32) {
    auto* corr = reinterpret_cast<int32_t*>(dst + l.off_corr);
    auto* s = reinterpret_cast<float*>(dst + l.off_s);
    const int64_t nb = n_in / 32, nb4 = round_up(nb, 4);
    const int shift = q8_32_corr_shift(w_type);
    if (nb4 > 0) std::memset(qs + (nb4 - 4) * 32, 0, 128);  // missing blocks of the last group
    for (int64_t i = 0; i < nb4; ++i) {
      int32_t sum = 0;
      d[i] = 0;
      if (i < nb) {
        int8_t q[32];
        d[i] = quant_block(x + 32 * i, 32, q, &sum);
        for (int e = 0; e < 32; ++e) qs[q8_32_offset(i, e)] = q[e];
      }
      corr[i] = shift >= 0 ? -(sum << shift) : 0;
      s[i] = d[i] * float(sum);
    }
  } else {
    KILN_ASSERT(f == ActFormat::q8_256);
    auto* ext = reinterpret_cast<int32_t*>(dst + l.off_ext);
    for (int64_t i = 0; i < n_in / 256; ++i) {
      int8_t q[256];
      int32_t unused;
      d[i] = quant_block(x + 256 * i, 256, q, &unused);
      q8_256_pack(w_type, q, qs + 256 * i, ext + 16 * i);
    }
  }
}

TileFn tile_scalar(DType t) {
  switch (t) {
    case DType::F32:
      return tile_float<DType::F32>;
    case DType::F16:
      return tile_float<DType::F16>;
    case DType::BF16:
      return tile_float<DType::BF16>;
    case DType::Q4_0:
      return tile_blocks<Q4_0>;
    case DType::Q4_1:
      return tile_blocks<Q4_1>;
    case DType::Q5_0:
      return tile_blocks<Q5_0>;
    case DType::Q5_1:
      return tile_blocks<Q5_1>;
    case DType::Q8_0:
      return tile_blocks<Q8_0>;
    case DType::Q4_K:
      return tile_k<DType::Q4_K, dot_q45k<false>>;
    case DType::Q5_K:
      return tile_k<DType::Q5_K, dot_q45k<true>>;
    case DType::Q6_K:
      return tile_k<DType::Q6_K, dot_q6k>;
    default:
      return nullptr;
  }
}

const KernelSet& kernels_scalar() {
  static const KernelSet k{quantize_act_scalar, tile_scalar};
  return k;
}

}  // namespace kiln::cpu::detail
