// Matrix-vector kernels (see matvec.cuh). Lanes of a warp walk a row's
// 32-element blocks, so a warp reads 32 consecutive blocks per step (16-byte
// loads for repacked q4_0); the dp4a kernel gives a warp 2-4 rows and splits
// short rows over 1-4 warps (shape heuristic in matvec_q8, tuned on H100:
// bench/NOTES.md). Batch rows are a template bound B with a run-time guard,
// so one instantiation serves 1..B rows.
//
// q4_0 with 8-bit activations: per block and activation plane,
// sum_j (w_j - 8) a_j = dot(w, a) - 8 * sum(a), the dot done by dp4a on
// nibbles masked into bytes, scaled by d_w * d_a; the two planes of ActQ8
// (grid + residual) are summed.
#include "kiln/backend/cuda/common.cuh"
#include "kiln/backend/cuda/kernels/matvec.cuh"
#include "kiln/core/assert.h"

namespace kiln::cuda {
namespace {

#ifndef KILN_MATVEC_WARPS
#define KILN_MATVEC_WARPS 4
#endif
#ifndef KILN_MATVEC_MIN_R
#define KILN_MATVEC_MIN_R 2
#endif
#ifndef KILN_MATVEC_WANT_WARPS
#define KILN_MATVEC_WANT_WARPS 4096
#endif
constexpr int kWarpsPerBlock = KILN_MATVEC_WARPS;

// Loop structure of the dp4a kernel (bench/NOTES.md has the measurements):
// 0 load+compute per step, 1 double buffer, 2 batches of loads first.
#ifndef KILN_MATVEC_VARIANT
#define KILN_MATVEC_VARIANT 0
#endif

__device__ __forceinline__ void store_row_result(float v, int j, int row, float* y, int64_t ldy,
                                                 const float* bias, bool accumulate) {
  if (bias) v += bias[row];
  float* p = y + int64_t(j) * ldy + row;
  *p = accumulate ? *p + v : v;
}

// Dot of 32 weights (as 8 int words of bytes) with one activation block.
__device__ __forceinline__ int dot32(const int (&w)[8], const int4& x0, const int4& x1) {
  int s = __dp4a(w[0], x0.x, 0);
  s = __dp4a(w[1], x0.y, s);
  s = __dp4a(w[2], x0.z, s);
  s = __dp4a(w[3], x0.w, s);
  s = __dp4a(w[4], x1.x, s);
  s = __dp4a(w[5], x1.y, s);
  s = __dp4a(w[6], x1.z, s);
  return __dp4a(w[7], x1.w, s);
}

// Weight bytes are read once per step: loaded without allocating in L1, so
// the activation blocks that every warp of the SM reads again stay there
// (tg128 on an H100: 444-446 against 433 tok/s with __ldg; an L2 256-byte
// prefetch hint on top changed nothing).
__device__ __forceinline__ uint4 ld_stream16(const uint4* p) {
  uint4 v;
  asm("ld.global.nc.L1::no_allocate.v4.u32 {%0,%1,%2,%3}, [%4];"
      : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
      : "l"(p));
  return v;
}
__device__ __forceinline__ uint16_t ld_stream2(const uint16_t* p) {
  uint16_t v;
  asm("ld.global.nc.L1::no_allocate.u16 %0, [%1];" : "=h"(v) : "l"(p));
  return v;
}

// Q4_0 (kQ4 = true: bytes hold nibble pairs, value q - 8) or Q8_0, repacked.
// Work split (chosen per matrix shape by the launcher so that every shape
// puts enough independent loads in flight): a group of `ks` warps of a block
// computes kR rows together; each warp takes every ks-th 32-block step of the
// row and the group's partial sums meet in shared memory, added in a fixed
// order. kR > 1 lets each activation block loaded (two planes + scales, 80
// bytes, more than the 18 weight bytes it meets) serve kR rows.
template <bool kQ4, int B, int kR>
__global__ void __launch_bounds__(kWarpsPerBlock * 32)
    matvec_q8act_kernel(const uint8_t* __restrict__ qs, const uint16_t* __restrict__ sc, int n_in,
                        int n_out, int ks, ActQ8 x, RowScale rs, int n_rows, float* __restrict__ y,
                        int64_t ldy, const float* __restrict__ bias, bool accumulate) {
  __shared__ float red[kWarpsPerBlock][kR][B];
  __shared__ float row_scale[B];
  const int warp = threadIdx.x / kWarp, lane = threadIdx.x % kWarp;
  const int group = warp / ks, kpart = warp % ks;
  const int row0 = (blockIdx.x * (kWarpsPerBlock / ks) + group) * kR;
  const int nb = n_in / 32;
  const size_t row_bytes = size_t(kQ4 ? n_in / 2 : n_in);
  const float4* ds = reinterpret_cast<const float4*>(x.ds);
  const int64_t ldb = x.ld / 32;
  float acc[kR][B];
#pragma unroll
  for (int r = 0; r < kR; ++r)
#pragma unroll
    for (int j = 0; j < B; ++j) acc[r][j] = 0.0f;
  const int b_end = row0 < n_out ? nb : 0;  // warps past the last row only join the barrier
  const int stride = kWarp * ks;

  // Weights of one 32-block step for the kR rows.
  struct Step {
    int w[kR][8];
    float dw[kR];
  };
  auto load = [&](int b, Step& st) {
#pragma unroll
    for (int r = 0; r < kR; ++r) {
      const int row = min(row0 + r, n_out - 1);  // duplicate the last row past the end
      const uint4* wr = reinterpret_cast<const uint4*>(qs + size_t(row) * row_bytes);
      if constexpr (kQ4) {
        const uint4 v = ld_stream16(wr + b);
        st.w[r][0] = v.x & 0x0F0F0F0F, st.w[r][1] = v.y & 0x0F0F0F0F;
        st.w[r][2] = v.z & 0x0F0F0F0F, st.w[r][3] = v.w & 0x0F0F0F0F;
        st.w[r][4] = (v.x >> 4) & 0x0F0F0F0F, st.w[r][5] = (v.y >> 4) & 0x0F0F0F0F;
        st.w[r][6] = (v.z >> 4) & 0x0F0F0F0F, st.w[r][7] = (v.w >> 4) & 0x0F0F0F0F;
      } else {
        const uint4 v0 = ld_stream16(wr + 2 * b), v1 = ld_stream16(wr + 2 * b + 1);
        st.w[r][0] = int(v0.x), st.w[r][1] = int(v0.y), st.w[r][2] = int(v0.z), st.w[r][3] = int(v0.w);
        st.w[r][4] = int(v1.x), st.w[r][5] = int(v1.y), st.w[r][6] = int(v1.z), st.w[r][7] = int(v1.w);
      }
      st.dw[r] = h2f(ld_stream2(sc + size_t(row) * nb + b));
    }
  };

  // Dot products of one step's weights with every batch row's activations.
  auto compute = [&](int b, const Step& st) {
#pragma unroll
    for (int j = 0; j < B; ++j) {
      if (j < n_rows) {
        const int64_t off = int64_t(j) * x.ld + 32 * b;
        const float4 d = ds[int64_t(j) * ldb + b];  // (d1, sum1, d2, sum2)
        const int4 a0 = reinterpret_cast<const int4*>(x.q + off)[0];
        const int4 a1 = reinterpret_cast<const int4*>(x.q + off)[1];
        const int4 c0 = reinterpret_cast<const int4*>(x.q2 + off)[0];
        const int4 c1 = reinterpret_cast<const int4*>(x.q2 + off)[1];
#pragma unroll
        for (int r = 0; r < kR; ++r) {
          const int s1 = dot32(st.w[r], a0, a1), s2 = dot32(st.w[r], c0, c1);
          if constexpr (kQ4)
            acc[r][j] += st.dw[r] * (d.x * (float(s1) - 8.0f * d.y) + d.z * (float(s2) - 8.0f * d.w));
          else
            acc[r][j] += st.dw[r] * (d.x * float(s1) + d.z * float(s2));
        }
      }
    }
  };
  auto row_scales = [&] {
    if (warp == 0) {  // deferred RMSNorm scales, summed in a fixed order
#pragma unroll
      for (int j = 0; j < B; ++j) {
        float v = 1.0f;
        if (rs.ssq && j < n_rows) {
          float s = 0.0f;
          for (int64_t k = lane; k < rs.n_ssq; k += kWarp) s += rs.ssq[j * rs.ld + k];
          s = warp_sum(s);
          v = float(1.0 / sqrt(double(s) / double(rs.n) + double(rs.eps)));
        }
        if (lane == 0) row_scale[j] = v;
      }
    }
  };

  pdl_trigger();
#if KILN_MATVEC_VARIANT == 1
  // Double buffer: the first step's weights are read before waiting for the
  // previous kernel (they do not depend on it); each step then loads the next.
  int b = lane + kWarp * kpart;
  Step cur;
  if (b < b_end) load(b, cur);
  pdl_wait();
  row_scales();
  for (; b < b_end; b += stride) {
    Step nxt;
    if (b + stride < b_end) load(b + stride, nxt);
    compute(b, cur);
    cur = nxt;
  }
#elif KILN_MATVEC_VARIANT == 2
  // Batches of kBatch steps: all their weight loads are issued before any
  // compute (a lane has kBatch x kR 16-byte loads in flight).
  constexpr int kBatch = kR == 1 ? 4 : kR == 2 ? 2 : 1;
  pdl_wait();
  row_scales();
  for (int b0 = lane + kWarp * kpart; b0 < b_end; b0 += stride * kBatch) {
    Step st[kBatch];
#pragma unroll
    for (int i = 0; i < kBatch; ++i)
      if (b0 + i * stride < b_end) load(b0 + i * stride, st[i]);
#pragma unroll
    for (int i = 0; i < kBatch; ++i)
      if (b0 + i * stride < b_end) compute(b0 + i * stride, st[i]);
  }
#else
  pdl_wait();
  row_scales();
#pragma unroll 2
  for (int b = lane + kWarp * kpart; b < b_end; b += stride) {
    Step st;
    load(b, st);
    compute(b, st);
  }
#endif
#pragma unroll
  for (int r = 0; r < kR; ++r)
#pragma unroll
    for (int j = 0; j < B; ++j) {
      const float v = warp_sum(acc[r][j]);
      if (lane == 0) red[warp][r][j] = v;
    }
  __syncthreads();
  // Lane (r, j) of the group's first warp adds the ks partial sums in order.
  if (kpart == 0 && lane < kR * B) {
    const int r = lane / B, j = lane % B;
    if (j < n_rows && row0 + r < n_out) {
      float v = 0.0f;
      for (int k = 0; k < ks; ++k) v += red[warp + k][r][j];
      store_row_result(v * row_scale[j], j, row0 + r, y, ldy, bias, accumulate);
    }
  }
}

// Any weight type, float activations.
template <DType T, int B>
__global__ void __launch_bounds__(kWarpsPerBlock * 32)
    matvec_f32_kernel(DeviceMatrix w, const float* __restrict__ x, int64_t ldx, int n_rows,
                      float* __restrict__ y, int64_t ldy, const float* __restrict__ bias,
                      bool accumulate) {
  pdl_trigger();
  pdl_wait();
  const int row = blockIdx.x * kWarpsPerBlock + threadIdx.x / kWarp;
  const int lane = threadIdx.x % kWarp;
  if (row >= w.n_out) return;
  const int nc = int(w.n_in / 32);
  const uint8_t* wr = w.data + size_t(row) * w.row_stride;
  const uint16_t* sr = w.scales ? w.scales + size_t(row) * nc : nullptr;
  float acc[B];
#pragma unroll
  for (int j = 0; j < B; ++j) acc[j] = 0.0f;
  for (int c = lane; c < nc; c += kWarp) {
    float wv[32];
    Dequant<T>::run(wr, sr, c, wv);
#pragma unroll
    for (int j = 0; j < B; ++j) {
      if (j < n_rows) {
        const float4* xp = reinterpret_cast<const float4*>(x + int64_t(j) * ldx) + 8 * c;
        float s = 0.0f;
#pragma unroll
        for (int i = 0; i < 8; ++i) {
          const float4 v = xp[i];
          s += wv[4 * i] * v.x + wv[4 * i + 1] * v.y + wv[4 * i + 2] * v.z + wv[4 * i + 3] * v.w;
        }
        acc[j] += s;
      }
    }
  }
#pragma unroll
  for (int j = 0; j < B; ++j) {
    if (j < n_rows) {
      const float v = warp_sum(acc[j]);
      if (lane == 0) store_row_result(v, j, row, y, ldy, bias, accumulate);
    }
  }
}

template <class F>
void dispatch_rows(int64_t n_rows, F&& f) {
  KILN_ASSERT(n_rows >= 1 && n_rows <= kMatvecMaxRows);
  if (n_rows == 1) f.template operator()<1>();
  else if (n_rows == 2) f.template operator()<2>();
  else if (n_rows <= 4) f.template operator()<4>();
  else f.template operator()<8>();
}

}  // namespace

void matvec_q8(const DeviceMatrix& w, const ActQ8& x, int64_t n_rows, float* y, int64_t ldy,
               const float* bias, bool accumulate, cudaStream_t stream) {
  matvec_q8(w, x, RowScale{}, n_rows, y, ldy, bias, accumulate, stream);
}

void matvec_q8(const DeviceMatrix& w, const ActQ8& x, const RowScale& rs, int64_t n_rows, float* y,
               int64_t ldy, const float* bias, bool accumulate, cudaStream_t stream) {
  if (n_rows == 0) return;
  KILN_ASSERT(w.repacked() && x.ld >= w.n_in && w.n_in % 32 == 0);
  // Enough warps to fill an H100 (132 SMs x 64) with a few 16-byte loads
  // each: rows per warp up to 4 for tall matrices, else the K range of a row
  // split over 2 or 4 warps.
  constexpr int64_t kWantWarps = KILN_MATVEC_WANT_WARPS;
  int rows_per_warp = KILN_MATVEC_MIN_R;
  while (rows_per_warp < 4 && w.n_out / (2 * rows_per_warp) >= kWantWarps) rows_per_warp *= 2;
  int ks = 1;
  const int64_t nb = w.n_in / 32;
  while (ks < kWarpsPerBlock && w.n_out / rows_per_warp * ks < kWantWarps && nb / (32 * 2 * ks) >= 1) ks *= 2;
  const int64_t rows_per_block = int64_t(kWarpsPerBlock / ks) * rows_per_warp;
  const unsigned grid = ceil_div(w.n_out, rows_per_block);
  dispatch_rows(n_rows, [&]<int B>() {
    auto launch = [&]<int R>() {
      if (w.type == DType::Q4_0)
        CUDA_CHECK(compat::launch_pdl(matvec_q8act_kernel<true, B, R>, dim3(grid), dim3(kWarpsPerBlock * 32), 0,
                                      stream, w.data, w.scales, int(w.n_in), int(w.n_out), ks, x, rs,
                                      int(n_rows), y, ldy, bias, accumulate));
      else
        CUDA_CHECK(compat::launch_pdl(matvec_q8act_kernel<false, B, R>, dim3(grid), dim3(kWarpsPerBlock * 32), 0,
                                      stream, w.data, w.scales, int(w.n_in), int(w.n_out), ks, x, rs,
                                      int(n_rows), y, ldy, bias, accumulate));
    };
    if (rows_per_warp == 4) launch.template operator()<4>();
    else if (rows_per_warp == 2) launch.template operator()<2>();
    else launch.template operator()<1>();
  });
  CUDA_CHECK_LAUNCH();
}

void matvec_prime(DType t) {
  cudaFuncAttributes attr{};
  auto rows = [&]<int B>() {
    auto q8act = [&]<bool kQ4>() {
      (void)cudaFuncGetAttributes(&attr, matvec_q8act_kernel<kQ4, B, 1>);
      (void)cudaFuncGetAttributes(&attr, matvec_q8act_kernel<kQ4, B, 2>);
      (void)cudaFuncGetAttributes(&attr, matvec_q8act_kernel<kQ4, B, 4>);
    };
    if (t == DType::Q4_0) q8act.template operator()<true>();
    if (t == DType::Q8_0) q8act.template operator()<false>();
    dispatch_weight_type(t, [&]<DType T>() { (void)cudaFuncGetAttributes(&attr, matvec_f32_kernel<T, B>); });
  };
  rows.template operator()<1>(), rows.template operator()<2>(), rows.template operator()<4>(), rows.template operator()<8>();
  (void)cudaGetLastError();
}

void matvec_f32(const DeviceMatrix& w, const float* x, int64_t ldx, int64_t n_rows, float* y,
                int64_t ldy, const float* bias, bool accumulate, cudaStream_t stream) {
  if (n_rows == 0) return;
  KILN_ASSERT(w.n_in % 32 == 0 && ldx % 4 == 0);
  const unsigned grid = ceil_div(w.n_out, kWarpsPerBlock);
  const bool ok = dispatch_weight_type(w.type, [&]<DType T>() {
    dispatch_rows(n_rows, [&]<int B>() {
      CUDA_CHECK(compat::launch_pdl(matvec_f32_kernel<T, B>, dim3(grid), dim3(kWarpsPerBlock * 32), 0, stream,
                                    w, x, ldx, int(n_rows), y, ldy, bias, accumulate));
    });
  });
  KILN_ASSERT_MSG(ok, "matvec_f32: unsupported weight type");
  CUDA_CHECK_LAUNCH();
}

}  // namespace kiln::cuda
