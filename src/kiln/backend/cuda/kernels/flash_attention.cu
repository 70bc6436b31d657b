// Tensor-core prefill attention (see flash_attention.cuh); head size 64 or 128.
//
// Block = (row tile, KV head, context split), 4 warps. Warp w owns query rows
// [16/NG * w, 16/NG * (w + 1)) of the tile for the NG heads of the KV head:
// one m16 tile whose row m is (row m / NG, head m % NG). Per 64-position
// K/V tile (paged: 4 cache blocks of 16 rows, copied to shared memory with
// cp.async; rows padded to 272 bytes so fragment loads are conflict-free):
//   S = Q K^T    8 n8 tiles x 8 k16 steps, Q held as A fragments all along;
//   mask (causal, tile end), online softmax per row (quad shuffles);
//   O += P V     P re-packed from the S accumulators as A fragments (the
//                C layout of two n8 tiles is the A layout of one k16 step),
//                V fragments by ldmatrix.trans.
// Two stages of K/V tiles: tile i + 2 loads while tile i + 1 computes, and
// the first two go out before griddepcontrol.wait when earlier steps wrote
// all their positions (BatchMeta::new0: a prefix hit's cached context).
// Scores are scaled in f32; P and Q are rounded to f16 (the per-row kernel
// stays exact f32, which is why the tests hold this one to the f16 bound).
#include <algorithm>

#include "kiln/backend/cuda/common.cuh"
#include "kiln/backend/cuda/kernels/flash_attention.cuh"
#include "kiln/core/assert.h"

namespace kiln::cuda {
namespace {

constexpr int kWarps = 4;
constexpr int kTileKV = 64;
// Padded f16 row of K or V in shared memory (a multiple of 16 bytes and an
// odd number of 16-byte units, so 8 rows hit 8 different bank groups).
__host__ __device__ constexpr int row_bytes(int hd) { return hd * 2 + 16; }

struct FlashPlan {
  int n_splits = 1;
  int kv_per_split = 0;  // positions per split (multiple of kTileKV)
};

FlashPlan flash_plan(int max_ctx, int n_tiles, int n_kv, int n_sms) {
  FlashPlan p;
  const int n_kv_tiles = std::max(1, (max_ctx + kTileKV - 1) / kTileKV);
  const int64_t base = int64_t(n_tiles) * n_kv;
  // Two blocks per multiprocessor; four measured slower on a 12-row prefix
  // hit over 2,554 positions (2,382 against 2,634 tok/s, H100), and so did
  // one and a half (2,674 and 2,510 against 2,741 with two stages of tiles).
  const int64_t target = 2 * int64_t(n_sms);
  int splits = 1;
  if (base < target) splits = int(std::min<int64_t>((target + base - 1) / base, n_kv_tiles));
  const int tiles_per = (n_kv_tiles + splits - 1) / splits;
  p.kv_per_split = tiles_per * kTileKV;
  p.n_splits = (n_kv_tiles + tiles_per - 1) / tiles_per;
  return p;
}

__device__ __forceinline__ uint32_t pack_h2(float lo, float hi) {
  return h2_bits(__floats2half2_rn(lo, hi));
}

__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], const void* smem_row) {
  const uint32_t a = uint32_t(__cvta_generic_to_shared(smem_row));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(a));
}

template <int NG, int kHD>
__global__ void __launch_bounds__(kWarps * 32)
    flash_kernel(AttentionArgs a, const AttnTile* __restrict__ tiles, int kv_per_split, int n_splits,
                 float* __restrict__ part) {
  constexpr int R = 16 / NG;  // query rows per warp
  constexpr int kRowBytes = row_bytes(kHD);
  constexpr int kTileBytes = kTileKV * kRowBytes;
  extern __shared__ __align__(16) uint8_t smem[];  // [2 stages][K tile, V tile]
  pdl_trigger();
  // The tiles, metadata and block tables were uploaded before the step: they
  // and the K/V tiles of positions cached by earlier steps are read before
  // griddepcontrol.wait, while the previous kernel finishes.
  const int warp = threadIdx.x / kWarp, lane = threadIdx.x % kWarp;
  const int gq = lane / 4, tq = lane % 4;
  const AttnTile tile = tiles[blockIdx.x];
  const int g = blockIdx.y, split = blockIdx.z;
  const int seq = a.meta.seq[tile.row0];
  const int pos0 = a.meta.pos[tile.row0];
  const int n_ctx = a.meta.pos[tile.row0 + tile.n - 1] + 1;  // the tile's last row sees the most
  const int* bt = a.meta.bt + a.meta.bt_off[seq];
  const int bs = a.kv.block_size;
  const int kv0 = split * kv_per_split, kv1 = min(n_ctx, kv0 + kv_per_split);
  const int cached = a.meta.new0 ? a.meta.new0[seq] : 0;  // positions below: written by earlier steps
  const int n_t = kv0 < kv1 ? (kv1 - kv0 + kTileKV - 1) / kTileKV : 0;

  const uint8_t* kbase = a.kv.k_layer(a.layer) + size_t(g) * a.kv.k_head_stride;
  const uint8_t* vbase = a.kv.v_layer(a.layer) + size_t(g) * a.kv.v_head_stride;
  const uint32_t smem_s = uint32_t(__cvta_generic_to_shared(smem));
  // K/V tile `it` of the split into stage it % 2, one cp.async group per tile.
  int issued = 0;
  auto issue = [&] {
    const int t0 = kv0 + issued * kTileKV;
    const uint32_t ks_s = smem_s + (issued & 1) * 2 * kTileBytes, vs_s = ks_s + kTileBytes;
    for (int c = threadIdx.x; c < kTileKV * (kHD / 8); c += kWarps * 32) {
      const int p = c / (kHD / 8), part16 = c % (kHD / 8), pos = t0 + p;
      const bool ok = pos < kv1;
      const int blk = ok ? bt[pos / bs] : 0;
      const size_t off = size_t(part16) * 16;
      cp_async16(ks_s + p * kRowBytes + off,
                 kbase + size_t(blk) * a.kv.k_block_stride + size_t(pos % bs) * a.kv.k_row + off, ok);
      cp_async16(vs_s + p * kRowBytes + off,
                 vbase + size_t(blk) * a.kv.v_block_stride + size_t(pos % bs) * a.kv.v_row + off, ok);
    }
    cp_async_commit();
    ++issued;
  };
  while (issued < min(2, n_t) && min(kv1, kv0 + (issued + 1) * kTileKV) <= cached) issue();
  pdl_wait();
  while (issued < min(2, n_t)) issue();

  // The two m rows of this lane: m = gq and gq + 8.
  int qpos[2], row[2], head[2];
  bool live[2];
#pragma unroll
  for (int e = 0; e < 2; ++e) {
    const int m = gq + 8 * e, r = warp * R + m / NG;
    live[e] = r < tile.n;
    row[e] = tile.row0 + min(r, tile.n - 1);
    head[e] = g * NG + m % NG;
    qpos[e] = pos0 + r;
  }
  // Q as A fragments: step kk covers dims [16 kk, 16 kk + 16).
  uint32_t qa[kHD / 16][4];
#pragma unroll
  for (int kk = 0; kk < kHD / 16; ++kk)
#pragma unroll
    for (int e = 0; e < 2; ++e) {
      const float* q = a.q + int64_t(row[e]) * a.ldq + int64_t(head[e]) * kHD + 16 * kk + 2 * tq;
      const float2 lo = live[e] ? *reinterpret_cast<const float2*>(q) : make_float2(0.f, 0.f);
      const float2 hi = live[e] ? *reinterpret_cast<const float2*>(q + 8) : make_float2(0.f, 0.f);
      qa[kk][e] = pack_h2(lo.x, lo.y);      // a0 / a1: rows gq / gq + 8, dims 2tq, 2tq + 1
      qa[kk][2 + e] = pack_h2(hi.x, hi.y);  // a2 / a3: dims 2tq + 8, 2tq + 9
    }

  const float scale = rsqrtf(float(kHD));
  float o[kHD / 8][4];
#pragma unroll
  for (int nt = 0; nt < kHD / 8; ++nt)
#pragma unroll
    for (int e = 0; e < 4; ++e) o[nt][e] = 0.0f;
  float m_run[2] = {-INFINITY, -INFINITY}, l_run[2] = {0.0f, 0.0f};

  for (int it = 0; it < n_t; ++it) {
    const int t0 = kv0 + it * kTileKV;
    if (issued > it + 1) cp_async_wait<1>();  // tile it landed; it + 1 may still be in flight
    else cp_async_wait<0>();
    __syncthreads();
    const uint8_t* ks = smem + (it & 1) * 2 * kTileBytes;
    const uint8_t* vs = ks + kTileBytes;

    // S = Q K^T: B fragment (k = dims 2tq.., n = position gq) is K row gq.
    float s[kTileKV / 8][4];
#pragma unroll
    for (int nt = 0; nt < kTileKV / 8; ++nt) {
#pragma unroll
      for (int e = 0; e < 4; ++e) s[nt][e] = 0.0f;
      const uint8_t* krow = ks + (nt * 8 + gq) * kRowBytes + 4 * tq;
#pragma unroll
      for (int kk = 0; kk < kHD / 16; ++kk) {
        const uint32_t b0 = *reinterpret_cast<const uint32_t*>(krow + 32 * kk);
        const uint32_t b1 = *reinterpret_cast<const uint32_t*>(krow + 32 * kk + 16);
        mma16816(s[nt], qa[kk], b0, b1);
      }
    }
    // Scale, mask, online softmax (a row's 64 scores sit in the 4 lanes of a quad).
    float mx[2] = {-INFINITY, -INFINITY};
#pragma unroll
    for (int nt = 0; nt < kTileKV / 8; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int h = e >> 1, pos = t0 + nt * 8 + 2 * tq + (e & 1);
        float v = s[nt][e] * scale;
        if (!live[h] || pos > qpos[h] || pos >= kv1) v = -INFINITY;
        s[nt][e] = v;
        mx[h] = fmaxf(mx[h], v);
      }
    float alpha[2];
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      mx[h] = fmaxf(mx[h], __shfl_xor_sync(0xffffffffu, mx[h], 1));
      mx[h] = fmaxf(mx[h], __shfl_xor_sync(0xffffffffu, mx[h], 2));
      const float m_new = fmaxf(m_run[h], mx[h]);
      alpha[h] = m_new == -INFINITY ? 1.0f : expf(m_run[h] - m_new);  // exp(-inf) = 0 for a first tile
      m_run[h] = m_new;
    }
    float rs[2] = {0.0f, 0.0f};
#pragma unroll
    for (int nt = 0; nt < kTileKV / 8; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int h = e >> 1;
        const float p = m_run[h] == -INFINITY ? 0.0f : expf(s[nt][e] - m_run[h]);
        s[nt][e] = p;
        rs[h] += p;
      }
#pragma unroll
    for (int h = 0; h < 2; ++h) l_run[h] = l_run[h] * alpha[h] + rs[h];  // lane-partial; quad sum at the end
#pragma unroll
    for (int nt = 0; nt < kHD / 8; ++nt) {
      o[nt][0] *= alpha[0], o[nt][1] *= alpha[0];
      o[nt][2] *= alpha[1], o[nt][3] *= alpha[1];
    }
    // O += P V over 4 k16 steps of positions.
#pragma unroll
    for (int j = 0; j < kTileKV / 16; ++j) {
      const uint32_t pa[4] = {pack_h2(s[2 * j][0], s[2 * j][1]), pack_h2(s[2 * j][2], s[2 * j][3]),
                              pack_h2(s[2 * j + 1][0], s[2 * j + 1][1]), pack_h2(s[2 * j + 1][2], s[2 * j + 1][3])};
      const int q = lane / 8, rr = lane % 8;
      const uint8_t* vrow = vs + (16 * j + (q & 1) * 8 + rr) * kRowBytes + (q >> 1) * 16;
#pragma unroll
      for (int np = 0; np < kHD / 16; ++np) {  // dims [16 np, 16 np + 16): two n8 tiles
        uint32_t b[4];
        ldmatrix_x4_trans(b, vrow + np * 32);
        mma16816(o[2 * np], pa, b[0], b[1]);
        mma16816(o[2 * np + 1], pa, b[2], b[3]);
      }
    }
    __syncthreads();  // every warp is done with this stage: tile it + 2 may go there
    if (issued < n_t) issue();
  }

  // Row sums over the quad, then the output (one split) or the partial record.
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    l_run[h] += __shfl_xor_sync(0xffffffffu, l_run[h], 1);
    l_run[h] += __shfl_xor_sync(0xffffffffu, l_run[h], 2);
  }
  const int hd = kHD;
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    if (!live[h]) continue;
    if (n_splits == 1) {
      const float inv = l_run[h] > 0.0f ? 1.0f / l_run[h] : 0.0f;
      const int64_t at = int64_t(row[h]) * a.n_head * hd + int64_t(head[h]) * hd;
#pragma unroll
      for (int nt = 0; nt < kHD / 8; ++nt) {
        const int d = nt * 8 + 2 * tq;
        const float v0 = o[nt][2 * h] * inv, v1 = o[nt][2 * h + 1] * inv;
        *reinterpret_cast<float2*>(a.out + at + d) = make_float2(v0, v1);
        if (a.out16) *reinterpret_cast<uint32_t*>(a.out16 + at + d) = pack_h2(v0, v1);
      }
    } else {
      float* rec = part + ((int64_t(row[h]) * a.n_head + head[h]) * n_splits + split) * (hd + 2);
#pragma unroll
      for (int nt = 0; nt < kHD / 8; ++nt)
        *reinterpret_cast<float2*>(rec + nt * 8 + 2 * tq) = make_float2(o[nt][2 * h], o[nt][2 * h + 1]);
      if (tq == 0) rec[hd] = l_run[h] > 0.0f ? m_run[h] : -INFINITY, rec[hd + 1] = l_run[h];
    }
  }
}

// Two stages of K and V tiles: 68 KiB at head size 128, over the 48 KiB a
// kernel gets without asking.
template <int NG, int kHD>
size_t flash_smem_bytes() {
  constexpr size_t bytes = 4 * size_t(kTileKV) * size_t(row_bytes(kHD));
  static const bool set = [] {
    return cudaFuncSetAttribute(flash_kernel<NG, kHD>, cudaFuncAttributeMaxDynamicSharedMemorySize, int(bytes)) ==
           cudaSuccess;
  }();
  KILN_ASSERT_MSG(set, "flash attention: the GPU refused the kernel's shared memory");
  return bytes;
}

}  // namespace

bool flash_supported(const AttentionArgs& a) {
  const int ng = a.n_head_kv > 0 ? a.n_head / a.n_head_kv : 0;
  return a.kv.type == KvType::f16 && a.head_dim_k == a.head_dim_v &&
         (a.head_dim_k == 64 || a.head_dim_k == 128) && !a.outq.q &&
         (ng == 1 || ng == 2 || ng == 4 || ng == 8) && a.n_head % a.n_head_kv == 0;
}

int flash_rows_per_tile(const AttentionArgs& a) { return kWarps * (16 / (a.n_head / a.n_head_kv)); }

std::vector<AttnTile> flash_tiles(const int32_t* seq, const int32_t* pos, int64_t n, int max_rows) {
  std::vector<AttnTile> tiles;
  for (int64_t i = 0; i < n; ++i) {
    if (!tiles.empty()) {
      AttnTile& t = tiles.back();
      const int64_t last = t.row0 + t.n - 1;
      if (last == i - 1 && seq[last] == seq[i] && pos[last] + 1 == pos[i] && t.n < max_rows) {
        ++t.n;
        continue;
      }
    }
    tiles.push_back({int32_t(i), 1});
  }
  return tiles;
}

void flash_prime() {
  cudaFuncAttributes attr{};
  auto each = [&]<int NG>() {
    (void)cudaFuncGetAttributes(&attr, flash_kernel<NG, 64>);
    (void)cudaFuncGetAttributes(&attr, flash_kernel<NG, 128>);
    (void)flash_smem_bytes<NG, 64>();
    (void)flash_smem_bytes<NG, 128>();
  };
  each.template operator()<1>(), each.template operator()<2>(), each.template operator()<4>(),
      each.template operator()<8>();
  (void)cudaGetLastError();
}

size_t flash_workspace_floats(const AttentionArgs& a, int n_tiles, int n_sms) {
  const FlashPlan p = flash_plan(a.max_ctx, n_tiles, a.n_head_kv, n_sms);
  if (p.n_splits == 1) return 0;
  return size_t(a.n_rows) * size_t(a.n_head) * size_t(p.n_splits) * size_t(a.head_dim_v + 2);
}

void attention_flash(const AttentionArgs& a, const AttnTile* tiles, int n_tiles, float* work, int n_sms,
                     cudaStream_t stream) {
  if (n_tiles == 0) return;
  KILN_ASSERT(flash_supported(a));
  const FlashPlan p = flash_plan(a.max_ctx, n_tiles, a.n_head_kv, n_sms);
  KILN_ASSERT(p.n_splits == 1 || work != nullptr);
  const dim3 grid(unsigned(n_tiles), unsigned(a.n_head_kv), unsigned(p.n_splits));
  auto go = [&]<int NG>() {
    if (a.head_dim_k == 64)
      CUDA_CHECK(compat::launch_pdl(flash_kernel<NG, 64>, grid, dim3(kWarps * 32), flash_smem_bytes<NG, 64>(),
                                    stream, a, tiles, p.kv_per_split, p.n_splits, work));
    else
      CUDA_CHECK(compat::launch_pdl(flash_kernel<NG, 128>, grid, dim3(kWarps * 32), flash_smem_bytes<NG, 128>(),
                                    stream, a, tiles, p.kv_per_split, p.n_splits, work));
  };
  switch (a.n_head / a.n_head_kv) {
    case 1: go.template operator()<1>(); break;
    case 2: go.template operator()<2>(); break;
    case 4: go.template operator()<4>(); break;
    default: go.template operator()<8>(); break;
  }
  CUDA_CHECK_LAUNCH();
  if (p.n_splits > 1) attention_merge_splits(work, p.n_splits, a, stream);
}

}  // namespace kiln::cuda
