// Tensor-core linear layers for repacked q4_0 / q8_0 weights (see mma.cuh).
//
// Block tile: 128 output rows (4 warps x 2 m16 tiles) x 8*NT batch rows, over
// one K range (split-K). K advances in tiles of 256 (q4_0) / 128 (q8_0)
// elements: the tile's activations are copied to shared memory with cp.async
// (double-buffered), while each warp holds its weights for the tile in
// registers, loaded one tile ahead.
//
// Fragment layout. A k128 step covers 4 weight blocks of 32; lane (g, t)
// (g = lane / 4, t = lane % 4) reads block t of rows g and g + 8 of each m16
// tile: one 16-byte load per row for q4_0 (two for q8_0), and the 4 lanes of
// a group read 64 consecutive bytes. The dot product does not depend on which
// k goes to which mma slot as long as A and B agree, so mma i (i = 0..7) of
// the step takes elements 4i..4i+3 of the lane's block as its k slots
// {2t, 2t+1, 2t+8, 2t+9}; a q4_0 word holds elements 4w..4w+3 in its low
// nibbles and 16+4w.. in its high ones, so that is the low nibbles of word i
// (i < 4) or the high nibbles of word i - 4. The B fragment of mma i is then
// 4 consecutive activations of block t: one 8-byte shared load, 16 bytes for
// mma pairs. Shared rows store each 32-element block in 80 bytes (16 bytes of
// padding) with a row stride of 64 mod 128 bytes, so the 8 lanes of each
// quarter-warp phase of a 16-byte load hit 8 different bank groups.
#include <algorithm>

#include "kiln/backend/cuda/common.cuh"
#include "kiln/backend/cuda/kernels/mma.cuh"
#include "kiln/core/assert.h"

namespace kiln::cuda {
namespace {

constexpr int kWarps = 4;
constexpr int kMT = 2;                          // m16 tiles per warp
constexpr int kRowsPerBlock = kWarps * kMT * 16;  // 128 output rows
constexpr int kBlockBytes = 80;                 // 32 f16 + 16 bytes of padding

constexpr int padded_row_bytes(int blocks) {
  const int b = blocks * kBlockBytes;
  return b + (64 - b % 128 + 128) % 128;
}

template <bool kQ4>
struct Cfg {
  static constexpr int kSteps = kQ4 ? 2 : 1;  // k128 steps per K tile
  static constexpr int kTileK = 128 * kSteps;
  static constexpr int kTileBlocks = kTileK / 32;
  static constexpr int kRowBytes = padded_row_bytes(kTileBlocks);  // shared bytes per batch row
  static constexpr int kLoads = kQ4 ? 1 : 2;  // 16-byte weight loads per row and step
};

// One K tile's weights for one lane: [m tile][row g / g + 8][step][load].
template <bool kQ4>
struct Raw {
  uint4 q[kMT][2][Cfg<kQ4>::kSteps][Cfg<kQ4>::kLoads];
  uint16_t d[kMT][2][Cfg<kQ4>::kSteps];
};


// Four 8-bit unsigned values u (bytes of `bytes`) as f16 pairs (u0 - bias,
// u1 - bias), (u2 - bias, u3 - bias), scaled by d: 0x64XX is the f16 1024 + XX,
// the subtraction is exact, the multiply rounds once (= f16(d * (u - bias))).
__device__ __forceinline__ void bytes_to_h2(uint32_t bytes, __half2 bias, __half2 d, uint32_t& lo,
                                            uint32_t& hi) {
  const uint32_t p0 = __byte_perm(bytes, 0x64646464u, 0x4140);
  const uint32_t p1 = __byte_perm(bytes, 0x64646464u, 0x4342);
  lo = h2_bits(__hmul2(__hsub2(*reinterpret_cast<const __half2*>(&p0), bias), d));
  hi = h2_bits(__hmul2(__hsub2(*reinterpret_cast<const __half2*>(&p1), bias), d));
}

__device__ __forceinline__ uint32_t word_of(const uint4& v, int w) {
  return w == 0 ? v.x : w == 1 ? v.y : w == 2 ? v.z : v.w;
}

template <bool kQ4, int NT>
__global__ void __launch_bounds__(kWarps * 32)
    mma_kernel(const uint8_t* __restrict__ qs, const uint16_t* __restrict__ sc, int n_in, int n_out,
               const uint16_t* __restrict__ x16, int64_t ldx, int n_rows, int tiles_per_split,
               float* __restrict__ y, int64_t ldy, const float* __restrict__ bias, bool accumulate,
               float* __restrict__ partial) {
  using C = Cfg<kQ4>;
  constexpr int kBatch = 8 * NT;
  extern __shared__ __align__(16) uint8_t smem[];  // [2][kBatch][C::kRowBytes]
  const int warp = threadIdx.x / kWarp, lane = threadIdx.x % kWarp;
  const int g = lane / 4, t = lane % 4;
  const int batch0 = blockIdx.x * kBatch;
  const int row_base = blockIdx.y * kRowsPerBlock + warp * (kMT * 16);
  const int n_tiles = (n_in + C::kTileK - 1) / C::kTileK;
  const int tile0 = blockIdx.z * tiles_per_split;
  const int tile1 = min(n_tiles, tile0 + tiles_per_split);
  const int nb = n_in / 32;
  const size_t row_bytes = size_t(kQ4 ? n_in / 2 : n_in);

  // Weight rows of this lane, clamped: rows past n_out repeat the last row
  // (their results are never stored).
  const uint8_t* wrow[kMT][2];
  const uint16_t* srow[kMT][2];
#pragma unroll
  for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int r = min(row_base + mt * 16 + h * 8 + g, n_out - 1);
      wrow[mt][h] = qs + size_t(r) * row_bytes;
      srow[mt][h] = sc + size_t(r) * nb;
    }

  auto load_raw = [&](int tile, Raw<kQ4>& raw) {
#pragma unroll
    for (int s = 0; s < C::kSteps; ++s) {
      const int blk = tile * C::kTileBlocks + s * 4 + t;
      const bool ok = blk < nb;  // a last tile of 128 when n_in % kTileK != 0
#pragma unroll
      for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          const uint4* p = reinterpret_cast<const uint4*>(wrow[mt][h] + size_t(ok ? blk : 0) * (kQ4 ? 16 : 32));
          // Through L1 (__ldg), unlike the matvec's weights: loads that skip
          // L1 (ld.global.nc.L1::no_allocate) made 8 / 32 / 64 / 128 streams
          // 3-5 % slower (bench/NOTES.md row 38).
#pragma unroll
          for (int l = 0; l < C::kLoads; ++l) raw.q[mt][h][s][l] = __ldg(p + l);
          raw.d[mt][h][s] = ok ? __ldg(srow[mt][h] + blk) : uint16_t(0);
        }
    }
  };

  // Activations of one K tile into shared buffer `buf` (zeros past n_rows / n_in).
  auto stage = [&](int tile, int buf) {
    constexpr int kChunks = kBatch * C::kTileBlocks * 4;  // 16-byte chunks
    const uint32_t base = uint32_t(__cvta_generic_to_shared(smem)) + buf * kBatch * C::kRowBytes;
    for (int c = threadIdx.x; c < kChunks; c += kWarps * 32) {
      const int row = c / (C::kTileBlocks * 4), rem = c % (C::kTileBlocks * 4);
      const int blk = rem / 4, part = rem % 4;
      const int k = tile * C::kTileK + blk * 32 + part * 8;
      const bool ok = batch0 + row < n_rows && k < n_in;
      const uint16_t* src = ok ? x16 + int64_t(batch0 + row) * ldx + k : x16;
      cp_async16(base + row * C::kRowBytes + blk * kBlockBytes + part * 16, src, ok);
    }
    cp_async_commit();
  };

  float acc[kMT][NT][4];
#pragma unroll
  for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
    for (int nt = 0; nt < NT; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e) acc[mt][nt][e] = 0.0f;

  const __half2 bias2 = __half2half2(__ushort_as_half(kQ4 ? uint16_t(0x6408) : uint16_t(0x6480)));
  Raw<kQ4> cur;
  pdl_trigger();
  if (tile0 < tile1) load_raw(tile0, cur);  // weights do not depend on the previous kernel
  pdl_wait();
  if (tile0 < tile1) stage(tile0, 0);

  for (int tile = tile0; tile < tile1; ++tile) {
    const int buf = (tile - tile0) & 1;
    Raw<kQ4> nxt;
    const bool more = tile + 1 < tile1;
    if (more) {
      stage(tile + 1, buf ^ 1);
      load_raw(tile + 1, nxt);
      cp_async_wait<1>();
    } else {
      cp_async_wait<0>();
    }
    __syncthreads();
    const uint8_t* xs = smem + buf * kBatch * C::kRowBytes;
    // One k128 step; a template so the register arrays are indexed statically
    // (a run-time step index would put `cur` in local memory).
    auto step = [&]<int s>() {
      __half2 d[kMT][2];
#pragma unroll
      for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
        for (int h = 0; h < 2; ++h) d[mt][h] = __half2half2(__ushort_as_half(cur.d[mt][h][s]));
#pragma unroll
      for (int m = 0; m < 4; ++m) {  // mma pairs (2m, 2m + 1)
        uint4 b[NT];
#pragma unroll
        for (int nt = 0; nt < NT; ++nt)
          b[nt] = *reinterpret_cast<const uint4*>(xs + (nt * 8 + g) * C::kRowBytes + (s * 4 + t) * kBlockBytes + m * 16);
#pragma unroll
        for (int half = 0; half < 2; ++half) {
          const int i = 2 * m + half;
          uint32_t a[kMT][4];
#pragma unroll
          for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
            for (int h = 0; h < 2; ++h) {
              uint32_t bytes;
              if constexpr (kQ4) {
                const uint32_t w = word_of(cur.q[mt][h][s][0], i & 3);
                bytes = i < 4 ? (w & 0x0F0F0F0Fu) : ((w >> 4) & 0x0F0F0F0Fu);
              } else {
                bytes = word_of(cur.q[mt][h][s][i / 4], i & 3) ^ 0x80808080u;  // int8 -> u8 + 128
              }
              // a0/a2: row g, k slots (2t, 2t+1) / (2t+8, 2t+9); a1/a3: row g + 8.
              bytes_to_h2(bytes, bias2, d[mt][h], a[mt][h], a[mt][2 + h]);
            }
#pragma unroll
          for (int nt = 0; nt < NT; ++nt) {
            const uint32_t b0 = half ? b[nt].z : b[nt].x, b1 = half ? b[nt].w : b[nt].y;
#pragma unroll
            for (int mt = 0; mt < kMT; ++mt) mma16816(acc[mt][nt], a[mt], b0, b1);
          }
        }
      }
    };
    step.template operator()<0>();
    if constexpr (C::kSteps > 1) step.template operator()<1>();
    __syncthreads();  // the buffer is staged again two tiles later
    if (more) cur = nxt;
  }

  // C fragment: c0, c1 = (row g, batch 2t, 2t + 1), c2, c3 = (row g + 8, same).
#pragma unroll
  for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
    for (int nt = 0; nt < NT; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int o = row_base + mt * 16 + g + (e >= 2 ? 8 : 0);
        const int j = batch0 + nt * 8 + 2 * t + (e & 1);
        if (o >= n_out || j >= n_rows) continue;
        float v = acc[mt][nt][e];
        if (partial) {
          partial[(int64_t(blockIdx.z) * n_rows + j) * n_out + o] = v;
        } else {
          if (bias) v += bias[o];
          float* p = y + int64_t(j) * ldy + o;
          *p = accumulate ? *p + v : v;
        }
      }
}

// y[j][o] (= or +=) sum over splits of partial[split][j][o] (+ bias[o]), in split order.
__global__ void splitk_reduce_kernel(const float* __restrict__ partial, int n_splits, int n_rows,
                                     int n_out, float* __restrict__ y, int64_t ldy,
                                     const float* __restrict__ bias, bool accumulate) {
  pdl_trigger();
  pdl_wait();
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= int64_t(n_rows) * n_out) return;
  const int j = int(i / n_out), o = int(i % n_out);
  float v = 0.0f;
  for (int s = 0; s < n_splits; ++s) v += partial[int64_t(s) * n_rows * n_out + i];
  if (bias) v += bias[o];
  float* p = y + int64_t(j) * ldy + o;
  *p = accumulate ? *p + v : v;
}

struct Plan {
  int nt = 1;               // n8 tiles per block (batch rows per block / 8)
  int batch_tiles = 1;
  int row_blocks = 1;
  int tiles_per_split = 1;
  int splits = 1;
};

template <bool kQ4, int NT>
size_t smem_bytes() {
  return size_t(2) * 8 * NT * Cfg<kQ4>::kRowBytes;
}

// Blocks of mma_kernel<kQ4, NT> one SM holds at once (registers, shared
// memory); asked once per instantiation and device (the answer is fixed).
template <bool kQ4, int NT>
int resident_blocks() {
  static const int n = [] {
    auto kernel = mma_kernel<kQ4, NT>;
    const int smem = int(smem_bytes<kQ4, NT>());
    if (smem > 48 * 1024) cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
    int b = 0;
    if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&b, kernel, kWarps * 32, size_t(smem)) != cudaSuccess) b = 1;
    (void)cudaGetLastError();
    return std::max(b, 1);
  }();
  return n;
}

Plan make_plan(const DeviceMatrix& w, int64_t n_rows, int n_sms, int force_splits) {
  Plan p;
  p.nt = n_rows <= 8 ? 1 : n_rows <= 16 ? 2 : n_rows <= 32 ? 4 : 8;
  p.batch_tiles = int((n_rows + 8 * p.nt - 1) / (8 * p.nt));
  p.row_blocks = int((w.n_out + kRowsPerBlock - 1) / kRowsPerBlock);
  const bool q4 = w.type == DType::Q4_0;
  const int tile_k = q4 ? Cfg<true>::kTileK : Cfg<false>::kTileK;
  const int n_tiles = int((w.n_in + tile_k - 1) / tile_k);
  int resident = 1;
  auto ask = [&]<int NT>() { resident = q4 ? resident_blocks<true, NT>() : resident_blocks<false, NT>(); };
  switch (p.nt) {
    case 1: ask.template operator()<1>(); break;
    case 2: ask.template operator()<2>(); break;
    case 4: ask.template operator()<4>(); break;
    default: ask.template operator()<8>(); break;
  }
  // Split K so the grid keeps memory busy without a mostly idle last wave.
  // Time model, in units of one K tile streamed by a lone block: ~kSaturate
  // blocks together saturate HBM (fitted to H100 measurements of the 8B
  // shapes at 8-128 rows, bench/NOTES.md); a wave of c blocks takes (tiles
  // per block + ~1 for the pipeline's start) x max(1, c / kSaturate). Split
  // partials cost their bytes (written and read once) at the full rate, plus
  // a launch.
  constexpr double kSaturate = 384.0;
  const double tile_bytes = double(kRowsPerBlock) * tile_k * (q4 ? 18.0 / 32.0 : 34.0 / 32.0);
  const int64_t base = int64_t(p.row_blocks) * p.batch_tiles;
  const int64_t capacity = int64_t(n_sms) * resident;
  double best = 1e300;
  for (int splits = 1; splits <= std::min(n_tiles, 32); ++splits) {
    const int tps = (n_tiles + splits - 1) / splits;
    const int eff = (n_tiles + tps - 1) / tps;
    if (eff != splits) continue;  // the same plan as a smaller count
    double cost = 0.0;
    for (int64_t left = base * eff; left > 0; left -= capacity)
      cost += (tps + 1.0) * std::max(1.0, double(std::min(left, capacity)) / kSaturate);
    if (eff > 1) cost += double(eff) * double(n_rows) * double(w.n_out) * 8.0 / (kSaturate * tile_bytes) + 0.5;
    if (cost < best - 1e-9) best = cost, p.tiles_per_split = tps, p.splits = eff;
  }
  if (force_splits > 0) {  // benchmarks of the model against fixed counts
    p.tiles_per_split = (n_tiles + force_splits - 1) / force_splits;
    p.splits = (n_tiles + p.tiles_per_split - 1) / p.tiles_per_split;
  }
  return p;
}

template <bool kQ4, int NT>
void launch(const DeviceMatrix& w, const Plan& p, const uint16_t* x16, int64_t ldx, int64_t n_rows,
            float* y, int64_t ldy, const float* bias, bool accumulate, float* partial,
            cudaStream_t stream) {
  const size_t smem = smem_bytes<kQ4, NT>();
  auto kernel = mma_kernel<kQ4, NT>;
  if (smem > 48 * 1024)  // opt-in above 48 KiB (a host-side attribute, cheap to set again)
    CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)));
  const dim3 grid(unsigned(p.batch_tiles), unsigned(p.row_blocks), unsigned(p.splits));
  CUDA_CHECK(compat::launch_pdl(kernel, grid, dim3(kWarps * 32), smem, stream, w.data, w.scales,
                                int(w.n_in), int(w.n_out), x16, ldx, int(n_rows), p.tiles_per_split,
                                y, ldy, bias, accumulate, p.splits > 1 ? partial : nullptr));
}

}  // namespace

void mma_prime() {
  auto each = [&]<bool kQ4>() {
    resident_blocks<kQ4, 1>(), resident_blocks<kQ4, 2>(), resident_blocks<kQ4, 4>(), resident_blocks<kQ4, 8>();
  };
  each.template operator()<true>();
  each.template operator()<false>();
  cudaFuncAttributes attr{};
  (void)cudaFuncGetAttributes(&attr, splitk_reduce_kernel);  // loads it
  (void)cudaGetLastError();
}

bool mma_supported(const DeviceMatrix& w) {
  return w.repacked() && (w.type == DType::Q4_0 || w.type == DType::Q8_0) && w.n_in % 128 == 0 &&
         w.n_out < (int64_t(1) << 31);
}

size_t mma_partial_floats(const DeviceMatrix& w, int64_t n_rows, int n_sms, int force_splits) {
  if (!mma_supported(w) || n_rows <= 0) return 0;
  const Plan p = make_plan(w, n_rows, n_sms, force_splits);
  return p.splits > 1 ? size_t(p.splits) * size_t(n_rows) * size_t(w.n_out) : 0;
}

void linear_mma(const DeviceMatrix& w, const uint16_t* x16, int64_t ldx, int64_t n_rows, float* y,
                int64_t ldy, const float* bias, bool accumulate, float* partial, int n_sms,
                cudaStream_t stream, int force_splits) {
  if (n_rows == 0) return;
  KILN_ASSERT(mma_supported(w) && ldx % 8 == 0 && ldx >= w.n_in);
  const Plan p = make_plan(w, n_rows, n_sms, force_splits);
  KILN_ASSERT_MSG(p.splits == 1 || partial, "linear_mma: split-K needs a partial-sum workspace");
  auto go = [&]<bool kQ4>() {
    switch (p.nt) {
      case 1: launch<kQ4, 1>(w, p, x16, ldx, n_rows, y, ldy, bias, accumulate, partial, stream); break;
      case 2: launch<kQ4, 2>(w, p, x16, ldx, n_rows, y, ldy, bias, accumulate, partial, stream); break;
      case 4: launch<kQ4, 4>(w, p, x16, ldx, n_rows, y, ldy, bias, accumulate, partial, stream); break;
      default: launch<kQ4, 8>(w, p, x16, ldx, n_rows, y, ldy, bias, accumulate, partial, stream); break;
    }
  };
  if (w.type == DType::Q4_0) go.template operator()<true>();
  else go.template operator()<false>();
  CUDA_CHECK_LAUNCH();
  if (p.splits > 1) {
    const int64_t n = n_rows * w.n_out;
    CUDA_CHECK(compat::launch_pdl(splitk_reduce_kernel, dim3(ceil_div(n, 256)), dim3(256), 0, stream,
                                  static_cast<const float*>(partial), p.splits, int(n_rows), int(w.n_out),
                                  y, ldy, bias, accumulate));
    CUDA_CHECK_LAUNCH();
  }
}

}  // namespace kiln::cuda
