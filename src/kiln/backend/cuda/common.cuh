// Device-side helpers shared by the CUDA kernels: error checks, warp/block
// reductions, element conversions (f16, bf16, fp8 e4m3 — bit-exact with
// core/fp16.h) and the 32-element dequantization of every GGUF weight type.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>

#include "kiln/backend/cuda/cuda_check.h"
#include "kiln/backend/cuda/cuda_compat.h"
#include "kiln/backend/cuda/device_types.h"
#include "kiln/quant/blocks.h"

namespace kiln::cuda {

constexpr int kWarp = 32;

// Programmatic dependent launch (compat::launch_pdl): pdl_trigger lets the
// next kernel of the stream be scheduled; pdl_wait blocks until the previous
// kernel has completed and its writes are visible. Every kernel launched with
// launch_pdl calls pdl_wait before reading or writing activations; only
// reads of constant data (weights) may come before it. No-ops before sm_90.
__device__ __forceinline__ void pdl_trigger() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}
__device__ __forceinline__ void pdl_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ double warp_sum_d(double v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ int warp_sum_i(int v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// Sum over the whole block (blockDim.x a multiple of 32, <= 1024); every
// thread gets the result. `sh` holds 32 doubles.
__device__ __forceinline__ double block_sum_d(double v, double* sh) {
  const int lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp;
  v = warp_sum_d(v);
  __syncthreads();  // sh may still be read from a previous call
  if (lane == 0) sh[warp] = v;
  __syncthreads();
  const int n_warps = blockDim.x / kWarp;
  v = lane < n_warps ? sh[lane] : 0.0;
  return warp_sum_d(v);
}
__device__ __forceinline__ float block_max(float v, float* sh) {
  const int lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp;
  v = warp_max(v);
  __syncthreads();
  if (lane == 0) sh[warp] = v;
  __syncthreads();
  const int n_warps = blockDim.x / kWarp;
  v = lane < n_warps ? sh[lane] : -INFINITY;
  return warp_max(v);
}
__device__ __forceinline__ float block_sum(float v, float* sh) {
  const int lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp;
  v = warp_sum(v);
  __syncthreads();
  if (lane == 0) sh[warp] = v;
  __syncthreads();
  const int n_warps = blockDim.x / kWarp;
  v = lane < n_warps ? sh[lane] : 0.0f;
  return warp_sum(v);
}

// One RoPE output: element `second` (0 or 1) of the pair (x0, x1) rotated
// by the angle whose cosine and sine are c and s. Every kernel that applies
// RoPE goes through this, so a fused path has the separate one's bits.
__device__ __forceinline__ float rope_rotate(float x0, float x1, float c, float s, bool second) {
  return second ? x0 * s + x1 * c : x0 * c - x1 * s;
}

// Quantizes one warp's 32 values (one per lane: a block of ActQ8, at element
// index e of row r) into both planes: q1 = round(v / d1), d1 = max|v| / 127,
// then the same for the residual v - d1 q1. A non-finite value makes d1 NaN,
// so NaN/Inf propagate to every product with the block, as they would
// through a float dot product.
__device__ __forceinline__ void quantize_block_warp(float v, const ActQ8& a, int64_t r, int64_t e) {
  const bool bad = __any_sync(0xffffffffu, !isfinite(v));
  const float amax = warp_max(fabsf(v));
  const float d1 = bad ? __int_as_float(0x7fc00000) : amax / 127.0f;
  const float id1 = (!bad && d1 > 0.0f) ? 1.0f / d1 : 0.0f;
  const int q1 = bad ? 0 : __float2int_rn(v * id1);
  const float res = bad ? 0.0f : v - d1 * float(q1);
  const float amax2 = warp_max(fabsf(res));
  const float d2 = amax2 / 127.0f;
  const float id2 = d2 > 0.0f ? 1.0f / d2 : 0.0f;
  const int q2 = __float2int_rn(res * id2);
  const int s1 = warp_sum_i(q1), s2 = warp_sum_i(q2);
  a.q[r * a.ld + e] = int8_t(q1);
  a.q2[r * a.ld + e] = int8_t(q2);
  if (threadIdx.x % kWarp == 0)
    reinterpret_cast<float4*>(a.ds)[r * (a.ld / 32) + e / 32] = make_float4(d1, float(s1), d2, float(s2));
}

// ---- tensor-core and async-copy primitives (sm_80+) ---------------------------

// 16 bytes global -> shared without registers; valid == false fills zeros.
__device__ __forceinline__ void cp_async16(uint32_t dst, const void* src, bool valid) {
  const int n = valid ? 16 : 0;  // 0: fill the 16 bytes with zeros
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(n));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void cp_async_wait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(N)); }

// d += a (m16 x k16, row) * b (k16 x n8, col), f16 inputs, f32 accumulators.
__device__ __forceinline__ void mma16816(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

__device__ __forceinline__ uint32_t h2_bits(__half2 h) { return *reinterpret_cast<uint32_t*>(&h); }

// ---- element conversions ------------------------------------------------------

__device__ __forceinline__ float h2f(uint16_t bits) { return __half2float(__ushort_as_half(bits)); }
__device__ __forceinline__ uint16_t f2h(float f) { return __half_as_ushort(__float2half_rn(f)); }
__device__ __forceinline__ float bf2f(uint16_t bits) { return __uint_as_float(uint32_t(bits) << 16); }

// fp8 e4m3 (OCP e4m3fn), the same bit manipulation as core/fp16.h.
__device__ __forceinline__ float fp8_to_f32(uint8_t v) {
  const uint32_t sign = uint32_t(v & 0x80) << 24;
  const uint32_t exp = (v >> 3) & 0xf;
  const uint32_t mant = v & 0x7;
  if (exp == 0xf && mant == 0x7) return __uint_as_float(sign | 0x7fc00000u);
  if (exp == 0) {
    const float val = float(mant) * (1.0f / 512.0f);
    return sign ? -val : val;
  }
  return __uint_as_float(sign | (exp + 127 - 7) << 23 | mant << 20);
}
__device__ __forceinline__ uint8_t f32_to_fp8(float f) {
  const uint32_t x = __float_as_uint(f);
  const uint8_t sign = uint8_t((x >> 24) & 0x80);
  const uint32_t ax = x & 0x7fffffffu;
  if (ax > 0x7f800000u) return uint8_t(sign | 0x7f);
  if (ax >= 0x43e00000u) return uint8_t(sign | 0x7e);
  if (ax < 0x3c800000u) {
    const float af = __uint_as_float(ax) * 512.0f;
    uint32_t q = uint32_t(af);
    const float rem = af - float(q);
    if (rem > 0.5f || (rem == 0.5f && (q & 1))) ++q;
    return uint8_t(sign | q);
  }
  uint32_t r = ax - ((127u - 7u) << 23);
  const uint32_t rem = r & 0xfffff;
  r >>= 20;
  if (rem > 0x80000 || (rem == 0x80000 && (r & 1))) ++r;
  if (r > 0x7e) r = 0x7e;
  return uint8_t(sign | r);
}

__device__ __forceinline__ uint32_t load_u32_unaligned2(const uint8_t* p) {  // 2-byte aligned
  const uint16_t* h = reinterpret_cast<const uint16_t*>(p);
  return uint32_t(h[0]) | (uint32_t(h[1]) << 16);
}

// ---- weight dequantization, 32 elements at a time ---------------------------------
// dequant32<T>(row, scales_row, c, out): elements [32c, 32c+32) of one row. For
// repacked q4_0/q8_0 `row`/`srow` are the repacked quants/scales of the row;
// otherwise `row` is the GGUF row and srow is unused. The float expressions
// follow quant/quant_*.cpp so results match the CPU reference bit for bit.

__device__ __forceinline__ void get_scale_min_k4(int j, const uint8_t* q, int& sc, int& m) {
  if (j < 4) {
    sc = q[j] & 63;
    m = q[j + 4] & 63;
  } else {
    sc = (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4);
    m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
  }
}

template <DType T>
struct Dequant;

template <>
struct Dequant<DType::F32> {
  static __device__ __forceinline__ void run(const uint8_t* row, const uint16_t*, int c, float* y) {
    const float4* p = reinterpret_cast<const float4*>(row) + 8 * c;
#pragma unroll
    for (int i = 0; i < 8; ++i) {
      const float4 v = p[i];
      y[4 * i] = v.x, y[4 * i + 1] = v.y, y[4 * i + 2] = v.z, y[4 * i + 3] = v.w;
    }
  }
};
template <>
struct Dequant<DType::F16> {
  static __device__ __forceinline__ void run(const uint8_t* row, const uint16_t*, int c, float* y) {
    const uint4* p = reinterpret_cast<const uint4*>(row) + 4 * c;
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const uint4 v = p[i];
      const uint32_t w[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
      for (int k = 0; k < 4; ++k) {
        y[8 * i + 2 * k] = h2f(uint16_t(w[k] & 0xffff));
        y[8 * i + 2 * k + 1] = h2f(uint16_t(w[k] >> 16));
      }
    }
  }
};
template <>
struct Dequant<DType::BF16> {
  static __device__ __forceinline__ void run(const uint8_t* row, const uint16_t*, int c, float* y) {
    const uint4* p = reinterpret_cast<const uint4*>(row) + 4 * c;
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const uint4 v = p[i];
      const uint32_t w[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
      for (int k = 0; k < 4; ++k) {
        y[8 * i + 2 * k] = bf2f(uint16_t(w[k] & 0xffff));
        y[8 * i + 2 * k + 1] = bf2f(uint16_t(w[k] >> 16));
      }
    }
  }
};
// Raw (GGUF layout) 32-element block types.
template <>
struct Dequant<DType::Q4_0> {
  static __device__ __forceinline__ void run(const uint8_t* row, const uint16_t* srow, int c,
                                             float* y) {
    float d;
    uint32_t w[4];
    if (srow) {  // repacked
      const uint4 v = reinterpret_cast<const uint4*>(row)[c];
      w[0] = v.x, w[1] = v.y, w[2] = v.z, w[3] = v.w;
      d = h2f(srow[c]);
    } else {
      const uint8_t* b = row + 18 * c;
      d = h2f(*reinterpret_cast<const uint16_t*>(b));
#pragma unroll
      for (int k = 0; k < 4; ++k) w[k] = load_u32_unaligned2(b + 2 + 4 * k);
    }
#pragma unroll
    for (int k = 0; k < 4; ++k)
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const int q = (w[k] >> (8 * j)) & 0xff;
        y[4 * k + j] = float((q & 0xF) - 8) * d;
        y[4 * k + j + 16] = float((q >> 4) - 8) * d;
      }
  }
};
template <>
struct Dequant<DType::Q8_0> {
  static __device__ __forceinline__ void run(const uint8_t* row, const uint16_t* srow, int c,
                                             float* y) {
    if (srow) {
      const int8_t* q = reinterpret_cast<const int8_t*>(row) + 32 * c;
      const float d = h2f(srow[c]);
#pragma unroll
      for (int j = 0; j < 32; ++j) y[j] = float(q[j]) * d;
    } else {
      const uint8_t* b = row + 34 * c;
      const float d = h2f(*reinterpret_cast<const uint16_t*>(b));
      const int8_t* q = reinterpret_cast<const int8_t*>(b + 2);
#pragma unroll
      for (int j = 0; j < 32; ++j) y[j] = float(q[j]) * d;
    }
  }
};
template <>
struct Dequant<DType::Q4_1> {
  static __device__ __forceinline__ void run(const uint8_t* row, const uint16_t*, int c, float* y) {
    const uint8_t* b = row + 20 * c;
    const uint16_t* h = reinterpret_cast<const uint16_t*>(b);
    const float d = h2f(h[0]), m = h2f(h[1]);
    const uint8_t* qs = b + 4;
#pragma unroll
    for (int j = 0; j < 16; ++j) {
      y[j] = float(qs[j] & 0xF) * d + m;
      y[j + 16] = float(qs[j] >> 4) * d + m;
    }
  }
};
template <>
struct Dequant<DType::Q5_0> {
  static __device__ __forceinline__ void run(const uint8_t* row, const uint16_t*, int c, float* y) {
    const uint8_t* b = row + 22 * c;
    const float d = h2f(*reinterpret_cast<const uint16_t*>(b));
    const uint32_t qh = load_u32_unaligned2(b + 2);
    const uint8_t* qs = b + 6;
#pragma unroll
    for (int j = 0; j < 16; ++j) {
      const int lo = (qs[j] & 0xF) | int(((qh >> j) & 1) << 4);
      const int hi = (qs[j] >> 4) | int(((qh >> (j + 16)) & 1) << 4);
      y[j] = float(lo - 16) * d;
      y[j + 16] = float(hi - 16) * d;
    }
  }
};
template <>
struct Dequant<DType::Q5_1> {
  static __device__ __forceinline__ void run(const uint8_t* row, const uint16_t*, int c, float* y) {
    const uint8_t* b = row + 24 * c;
    const uint16_t* h = reinterpret_cast<const uint16_t*>(b);
    const float d = h2f(h[0]), m = h2f(h[1]);
    const uint32_t qh = *reinterpret_cast<const uint32_t*>(b + 4);
    const uint8_t* qs = b + 8;
#pragma unroll
    for (int j = 0; j < 16; ++j) {
      const int lo = (qs[j] & 0xF) | int(((qh >> j) & 1) << 4);
      const int hi = (qs[j] >> 4) | int(((qh >> (j + 16)) & 1) << 4);
      y[j] = float(lo) * d + m;
      y[j + 16] = float(hi) * d + m;
    }
  }
};
// k-quants: chunk c is sub-block c % 8 of super-block c / 8.
template <>
struct Dequant<DType::Q4_K> {
  static __device__ __forceinline__ void run(const uint8_t* row, const uint16_t*, int c, float* y) {
    const uint8_t* b = row + 144 * (c / 8);
    const int s = c % 8;
    const uint16_t* h = reinterpret_cast<const uint16_t*>(b);
    const float d = h2f(h[0]), dmin = h2f(h[1]);
    int sc, m;
    get_scale_min_k4(s, b + 4, sc, m);
    const float d1 = d * float(sc), m1 = dmin * float(m);
    const uint8_t* q = b + 16 + 32 * (s / 2);
    const int shift = (s & 1) * 4;
#pragma unroll
    for (int l = 0; l < 32; ++l) y[l] = d1 * float((q[l] >> shift) & 0xF) - m1;
  }
};
template <>
struct Dequant<DType::Q5_K> {
  static __device__ __forceinline__ void run(const uint8_t* row, const uint16_t*, int c, float* y) {
    const uint8_t* b = row + 176 * (c / 8);
    const int s = c % 8;
    const uint16_t* h = reinterpret_cast<const uint16_t*>(b);
    const float d = h2f(h[0]), dmin = h2f(h[1]);
    int sc, m;
    get_scale_min_k4(s, b + 4, sc, m);
    const float d1 = d * float(sc), m1 = dmin * float(m);
    const uint8_t* qh = b + 16;
    const uint8_t* ql = b + 48 + 32 * (s / 2);
    const int shift = (s & 1) * 4;
#pragma unroll
    for (int l = 0; l < 32; ++l)
      y[l] = d1 * float(((ql[l] >> shift) & 0xF) + ((qh[l] >> s) & 1 ? 16 : 0)) - m1;
  }
};
template <>
struct Dequant<DType::Q6_K> {
  static __device__ __forceinline__ void run(const uint8_t* row, const uint16_t*, int c, float* y) {
    const uint8_t* b = row + 210 * (c / 8);
    const int s = c % 8, half = s / 4, quarter = s % 4;
    const uint8_t* ql = b + 64 * half + 32 * (quarter & 1);
    const uint8_t* qh = b + 128 + 32 * half;
    const int8_t* sc = reinterpret_cast<const int8_t*>(b + 192) + 8 * half + 2 * quarter;
    const float d = h2f(*reinterpret_cast<const uint16_t*>(b + 208));
    const int lshift = (quarter >> 1) * 4, hshift = 2 * quarter;
#pragma unroll
    for (int l = 0; l < 32; ++l) {
      const int q = int(((ql[l] >> lshift) & 0xF) | (((qh[l] >> hshift) & 3) << 4)) - 32;
      y[l] = d * float(sc[l / 16]) * float(q);
    }
  }
};

// Calls f.template operator()<T>() for the runtime type t; false if unsupported.
template <class F>
__host__ bool dispatch_weight_type(DType t, F&& f) {
  switch (t) {
    case DType::F32: f.template operator()<DType::F32>(); return true;
    case DType::F16: f.template operator()<DType::F16>(); return true;
    case DType::BF16: f.template operator()<DType::BF16>(); return true;
    case DType::Q4_0: f.template operator()<DType::Q4_0>(); return true;
    case DType::Q4_1: f.template operator()<DType::Q4_1>(); return true;
    case DType::Q5_0: f.template operator()<DType::Q5_0>(); return true;
    case DType::Q5_1: f.template operator()<DType::Q5_1>(); return true;
    case DType::Q8_0: f.template operator()<DType::Q8_0>(); return true;
    case DType::Q4_K: f.template operator()<DType::Q4_K>(); return true;
    case DType::Q5_K: f.template operator()<DType::Q5_K>(); return true;
    case DType::Q6_K: f.template operator()<DType::Q6_K>(); return true;
    default: return false;
  }
}

inline unsigned ceil_div(int64_t a, int64_t b) { return unsigned((a + b - 1) / b); }

}  // namespace kiln::cuda
