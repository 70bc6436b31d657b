// Row-wise attention over the paged f16 KV cache (see attention_decode.cuh).
//
// Block = (row, query heads of one KV head, context split), kWarps warps;
// a block takes the KV head's whole group of query heads, or part of it
// while the blocks would leave SMs idle (attention_decode_plan).
// The per-thread kernel of attention.cu spent ~15 us per layer on a decode
// step of an 8B model (H100, contexts of 1-128): ~9 dependent memory round
// trips (row, position, sequence, table offset, block ids, then K in four
// rounds and V), a position per thread with 3 of 4 warps idle at short
// contexts, and a second kernel merging 8 mostly empty splits. Here:
//   - a warp takes kU positions at a time; lane l holds dims
//     [kL * l, kL * l + kL) of each K and V row (kL = HD / 32), so a row is
//     one coalesced read and all 2 kU loads of a lane are in flight at once;
//   - every query head of the block uses each K/V row loaded;
//   - scores are butterfly-summed across the warp (every lane gets them),
//     softmax is online per head in registers, and the warps of the block
//     merge through shared memory at the end;
//   - a split covers 256 to 1024 positions, so the decode graphs' first
//     context bucket (256) needs one split and no merge kernel; the output
//     goes out as f32, f16 and the 8-bit blocks of the output projection's
//     input directly;
//   - the metadata chain (row, position, sequence, table) and the first
//     round's K/V rows cached by earlier steps are read before
//     griddepcontrol.wait, while the previous kernel finishes;
//   - in a decode step the kernel can also take RoPE and the K/V store of
//     the row's own position (rope_cs): the Q|K|V matvec's output comes in
//     unrotated and rope_kv.cu's kernel, with its boundary, drops out of the
//     layer (tg128 402 -> 427 tok/s on an H100 with the pre-wait reads).
// Used while a batch's (row, KV head) pairs do not fill the GPU (decode of
// a few streams); larger batches keep attention.cu's kernel.
#include "kiln/backend/cuda/kernels/attention_decode.cuh"

#include <algorithm>

#include "kiln/backend/cuda/common.cuh"
#include "kiln/core/assert.h"

namespace kiln::cuda {
namespace {

constexpr int kWarps = 8;
constexpr int kU = 8;                      // positions per warp per round
constexpr int kRound = kWarps * kU;        // positions per block per round
constexpr int kMaxChunk = 1024;            // positions per split at most

// kL consecutive f16 values as raw bits.
template <int kL>
struct Half;
template <>
struct Half<2> {
  uint32_t w;
  __device__ __forceinline__ void load(const uint8_t* p) { w = *reinterpret_cast<const uint32_t*>(p); }
  __device__ __forceinline__ void store(uint8_t* p) const { *reinterpret_cast<uint32_t*>(p) = w; }
  __device__ __forceinline__ void pack(const float (&v)[2]) { w = uint32_t(f2h(v[0])) | uint32_t(f2h(v[1])) << 16; }
  __device__ __forceinline__ float get(int e) const { return h2f(uint16_t(e == 0 ? w & 0xffff : w >> 16)); }
};
template <>
struct Half<4> {
  uint2 w;
  __device__ __forceinline__ void load(const uint8_t* p) { w = *reinterpret_cast<const uint2*>(p); }
  __device__ __forceinline__ void store(uint8_t* p) const { *reinterpret_cast<uint2*>(p) = w; }
  __device__ __forceinline__ void pack(const float (&v)[4]) {
    w.x = uint32_t(f2h(v[0])) | uint32_t(f2h(v[1])) << 16;
    w.y = uint32_t(f2h(v[2])) | uint32_t(f2h(v[3])) << 16;
  }
  __device__ __forceinline__ float get(int e) const {
    const uint32_t x = e < 2 ? w.x : w.y;
    return h2f(uint16_t(e % 2 == 0 ? x & 0xffff : x >> 16));
  }
};

// RoPE over a whole head held kL dims per lane (lane l: dims kL*l + e),
// with rope_kv.cu's arithmetic (rope_rotate). NeoX pairs (d, d + HD/2) sit
// in lanes l and l^16; adjacent pairs (2i, 2i + 1) in one lane (kL is even).
template <int HD>
__device__ __forceinline__ void rope_lane(float (&v)[HD / 32], const float* __restrict__ c,
                                          const float* __restrict__ s, bool neox, int lane) {
  constexpr int kL = HD / 32;
  float r[kL];
#pragma unroll
  for (int e = 0; e < kL; ++e) {
    const float other = __shfl_xor_sync(0xffffffffu, v[e], 16);
    const int d = kL * lane + e;
    if (neox) {
      const int i = d % (HD / 2);
      r[e] = lane < 16 ? rope_rotate(v[e], other, c[i], s[i], false) : rope_rotate(other, v[e], c[i], s[i], true);
    } else {
      const int i = d / 2;
      r[e] = rope_rotate(v[e & ~1], v[e | 1], c[i], s[i], e % 2 != 0);
    }
  }
#pragma unroll
  for (int e = 0; e < kL; ++e) v[e] = r[e];
}

template <int HD, int G>
__global__ void __launch_bounds__(kWarps * 32)
    attention_decode_kernel(AttentionArgs a, int chunk, int n_splits, float* __restrict__ part) {
  constexpr int kL = HD / 32;
  __shared__ float sm_m[kWarps][G], sm_l[kWarps][G];
  __shared__ float sm_acc[kWarps][G][HD];
  pdl_trigger();
  // The metadata and block tables were uploaded before the step, so they
  // (and the first round's K/V rows that earlier steps wrote: positions
  // below BatchMeta::new0) are read while the previous kernel still runs.
  // Block y covers query heads [G y, G y + G) of KV head g (G divides the group).
  const int i = blockIdx.x, split = blockIdx.z;
  const int group = a.n_head / a.n_head_kv;  // query heads per KV head
  const int head0 = blockIdx.y * G, g = head0 / group;
  const int warp = threadIdx.x / kWarp, lane = threadIdx.x % kWarp;
  const int t = a.rows ? a.rows[i] : i;
  const int n_ctx = a.meta.pos[t] + 1;
  const int seq = a.meta.seq[t];
  const int* bt = a.meta.bt + a.meta.bt_off[seq];
  const int j0 = split * chunk, j1 = min(n_ctx, j0 + chunk);
  const int fresh = a.meta.new0 ? a.meta.new0[seq] : 0;  // positions >= fresh may be written in this step
  const bool fused = a.rope_cs != nullptr;  // a decode step: RoPE and the K/V store here
  uint8_t* kbase = a.kv.k_layer(a.layer) + size_t(g) * a.kv.k_head_stride + 2 * kL * lane;
  uint8_t* vbase = a.kv.v_layer(a.layer) + size_t(g) * a.kv.v_head_stride + 2 * kL * lane;
  const int bs = a.kv.block_size;

  // K/V rows of the round starting at jb whose positions lie in [lo, hi);
  // blk_lane: lane u < kU holds position jb + u's block id. The row's own
  // new position comes from knew / vnew when RoPE is fused.
  Half<kL> kr[kU], vr[kU], knew{}, vnew{};
  auto load_round = [&](int jb, int blk_lane, int lo, int hi) {
#pragma unroll
    for (int u = 0; u < kU; ++u) {
      const int j = jb + u;
      const int b = __shfl_sync(0xffffffffu, blk_lane, u);
      if (j < lo || j >= hi) continue;
      if (fused && j == n_ctx - 1) {
        kr[u] = knew, vr[u] = vnew;
      } else {
        kr[u].load(kbase + size_t(b) * a.kv.k_block_stride + size_t(j % bs) * a.kv.k_row);
        vr[u].load(vbase + size_t(b) * a.kv.v_block_stride + size_t(j % bs) * a.kv.v_row);
      }
    }
  };
  auto round_blocks = [&](int jb) { return lane < kU && jb + lane < j1 ? bt[(jb + lane) / bs] : 0; };
  int jb = j0 + warp * kU;
  int blk = round_blocks(jb);
#pragma unroll
  for (int u = 0; u < kU; ++u) kr[u] = {}, vr[u] = {};
  load_round(jb, blk, j0, min(j1, fresh));
  pdl_wait();

  auto part_ptr = [&](int h) {
    return part + ((int64_t(i) * a.n_head + head0 + h) * n_splits + split) * (HD + 2);
  };
  if (j0 >= j1) {  // nothing of this row's context falls in this split
    if (threadIdx.x < G) {
      part_ptr(threadIdx.x)[HD] = -INFINITY;
      part_ptr(threadIdx.x)[HD + 1] = 0.0f;
    }
    return;
  }

  // This lane's dims of each head's query, pre-scaled.
  const float scale = rsqrtf(float(HD));
  float q[G][kL];
  const float* qp = a.q + int64_t(t) * a.ldq + int64_t(head0) * HD + kL * lane;
#pragma unroll
  for (int h = 0; h < G; ++h)
#pragma unroll
    for (int e = 0; e < kL; ++e) q[h][e] = qp[h * HD + e];
  if (fused) {
    // RoPE on Q and on the row's own K; its K/V go to the cache from the
    // split that holds the newest position (j1 == n_ctx), as f16 like any row.
    const float* c = a.rope_cs + int64_t(t) * HD;
    const float* sn = c + HD / 2;
#pragma unroll
    for (int h = 0; h < G; ++h) rope_lane<HD>(q[h], c, sn, a.rope_neox, lane);
    const float* kp = a.q + int64_t(t) * a.ldq + int64_t(a.n_head + g) * HD + kL * lane;
    const float* vp = kp + int64_t(a.n_head_kv) * HD;
    float kf[kL], vf[kL];
#pragma unroll
    for (int e = 0; e < kL; ++e) kf[e] = kp[e], vf[e] = vp[e];
    rope_lane<HD>(kf, c, sn, a.rope_neox, lane);
    knew.pack(kf);
    vnew.pack(vf);
    if (warp == 0 && j1 == n_ctx && head0 == g * group) {  // the group's first block
      const int p = n_ctx - 1, b = bt[p / bs];
      knew.store(kbase + size_t(b) * a.kv.k_block_stride + size_t(p % bs) * a.kv.k_row);
      vnew.store(vbase + size_t(b) * a.kv.v_block_stride + size_t(p % bs) * a.kv.v_row);
    }
  }
#pragma unroll
  for (int h = 0; h < G; ++h)
#pragma unroll
    for (int e = 0; e < kL; ++e) q[h][e] *= scale;

  float m[G], l[G], acc[G][kL];
#pragma unroll
  for (int h = 0; h < G; ++h) {
    m[h] = -INFINITY, l[h] = 0.0f;
#pragma unroll
    for (int e = 0; e < kL; ++e) acc[h][e] = 0.0f;
  }

  load_round(jb, blk, max(j0, fresh), j1);  // the first round's rest
  for (; jb < j1; jb += kRound) {
    if (jb != j0 + warp * kU) {
      blk = round_blocks(jb);
#pragma unroll
      for (int u = 0; u < kU; ++u) kr[u] = {}, vr[u] = {};
      load_round(jb, blk, j0, j1);
    }
    float s[kU][G];
#pragma unroll
    for (int u = 0; u < kU; ++u)
#pragma unroll
      for (int h = 0; h < G; ++h) {
        float d = 0.0f;
#pragma unroll
        for (int e = 0; e < kL; ++e) d += q[h][e] * kr[u].get(e);
        s[u][h] = d;
      }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1)
#pragma unroll
      for (int u = 0; u < kU; ++u)
#pragma unroll
        for (int h = 0; h < G; ++h) s[u][h] += __shfl_xor_sync(0xffffffffu, s[u][h], o);
#pragma unroll
    for (int h = 0; h < G; ++h) {
      float mx = m[h];
#pragma unroll
      for (int u = 0; u < kU; ++u)
        if (jb + u < j1) mx = fmaxf(mx, s[u][h]);
      const float alpha = m[h] == -INFINITY ? 0.0f : expf(m[h] - mx);
      l[h] *= alpha;
#pragma unroll
      for (int e = 0; e < kL; ++e) acc[h][e] *= alpha;
#pragma unroll
      for (int u = 0; u < kU; ++u) {
        if (jb + u >= j1) continue;
        const float p = expf(s[u][h] - mx);
        l[h] += p;
#pragma unroll
        for (int e = 0; e < kL; ++e) acc[h][e] += p * vr[u].get(e);
      }
      m[h] = mx;
    }
  }

  // Merge the warps' (m, l, acc): a warp that had no position has m = -inf.
  if (lane == 0)
#pragma unroll
    for (int h = 0; h < G; ++h) sm_m[warp][h] = m[h], sm_l[warp][h] = l[h];
#pragma unroll
  for (int h = 0; h < G; ++h)
#pragma unroll
    for (int e = 0; e < kL; ++e) sm_acc[warp][h][kL * lane + e] = acc[h][e];
  __syncthreads();
  // A warp covers 32 consecutive dims of one head (HD % 32 == 0): one 8-bit block.
  for (int o = threadIdx.x; o < G * HD; o += kWarps * 32) {
    const int h = o / HD, d = o % HD;
    float mm = -INFINITY;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) mm = fmaxf(mm, sm_m[w][h]);
    float ll = 0.0f, aa = 0.0f;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) {
      const float mw = sm_m[w][h];
      if (mw == -INFINITY) continue;
      const float f = expf(mw - mm);
      ll += f * sm_l[w][h];
      aa += f * sm_acc[w][h][d];
    }
    if (n_splits == 1) {
      const float v = aa / ll;
      const int64_t col = int64_t(head0 + h) * HD + d;
      a.out[int64_t(i) * a.n_head * HD + col] = v;
      if (a.out16) a.out16[int64_t(i) * a.n_head * HD + col] = f2h(v);
      if (a.outq.q) quantize_block_warp(v, a.outq, i, col);
    } else {
      float* rec = part_ptr(h);
      rec[d] = aa;
      if (d == 0) rec[HD] = mm, rec[HD + 1] = ll;
    }
  }
}

template <class F>
bool dispatch_decode(const AttentionArgs& a, int heads_per_block, F&& f) {
  auto hd = [&]<int HD>() {
    switch (heads_per_block) {
      case 1: f.template operator()<HD, 1>(); return true;
      case 2: f.template operator()<HD, 2>(); return true;
      case 4: f.template operator()<HD, 4>(); return true;
      case 8: f.template operator()<HD, 8>(); return true;
      default: return false;
    }
  };
  if (a.head_dim_k == 64) return hd.template operator()<64>();
  if (a.head_dim_k == 128) return hd.template operator()<128>();
  return false;
}

// Fewest positions per split when a small batch is spread over the
// context: 4 rounds. One row on an H100 (tg128): 64 -> 407.5 tok/s, 256 ->
// 408.7, 1024 -> 405.6 (one split up to the 256 graph bucket wins by a hair).
constexpr int kMinChunk = 4 * kRound;

}  // namespace

bool attention_decode_supported(const AttentionArgs& a, int n_sms) {
  if (a.kv.type != KvType::f16 || a.n_head_kv <= 0 || a.n_head % a.n_head_kv != 0) return false;
  // Batches whose (row, KV head) pairs alone fill the GPU stay with the
  // thread-per-position kernel: its scores need no cross-lane sums, and 64
  // decode streams ran 10 % slower here (6,561 against 7,317 tok/s, H100).
  if (a.n_rows * a.n_head_kv >= 2 * int64_t(n_sms)) return false;
  if (a.head_dim_k != a.head_dim_v || (a.head_dim_k != 64 && a.head_dim_k != 128)) return false;
  const int g = a.n_head / a.n_head_kv;
  return g == 1 || g == 2 || g == 4 || g == 8;
}

DecodePlan attention_decode_plan(const AttentionArgs& a, int n_sms) {
  DecodePlan p;
  const int ctx = std::max(1, a.max_ctx);
  const int64_t base = std::max<int64_t>(1, a.n_rows * a.n_head_kv);
  const int most = (ctx + kMinChunk - 1) / kMinChunk;  // splits of at least kMinChunk positions
  int splits = 1;
  if (base < 2 * int64_t(n_sms)) splits = int(std::min<int64_t>((2 * int64_t(n_sms) + base - 1) / base, most));
  splits = std::max(splits, (ctx + kMaxChunk - 1) / kMaxChunk);
  const int per = (ctx + splits - 1) / splits;
  p.chunk = (per + kRound - 1) / kRound * kRound;
  p.n_splits = (ctx + p.chunk - 1) / p.chunk;
  // While the (row, KV head, split) blocks leave SMs idle, the query heads
  // of a group are spread over more blocks (as far as one wave holds them):
  // a block's chain of dependent steps (scores summed across the warp, the
  // warps' merge, the 8-bit output) then covers fewer heads, and the
  // group's blocks read the same K/V rows side by side (L2 serves all but
  // the first). H100, 8B shape, same logits: tg128 468-470 against 444-445
  // tok/s; 64 tokens after 512 / 1,500 of context 396-398 / 378 against
  // 365-366 / 359-361. Past one wave it loses: at 4,000 positions (128
  // blocks already) one head per block gave 325 against 344.
  const int group = a.n_head / a.n_head_kv;
  p.heads_per_block = group;
  while (p.heads_per_block > 1 && base * p.n_splits * (group / p.heads_per_block) * 2 <= n_sms)
    p.heads_per_block /= 2;
  return p;
}

void attention_decode(const AttentionArgs& a, const DecodePlan& plan, float* work, cudaStream_t stream) {
  if (a.n_rows == 0) return;
  KILN_ASSERT(plan.n_splits == 1 || work != nullptr);
  const dim3 grid(unsigned(a.n_rows), unsigned(a.n_head / plan.heads_per_block), unsigned(plan.n_splits));
  const bool ok = dispatch_decode(a, plan.heads_per_block, [&]<int HD, int G>() {
    CUDA_CHECK(compat::launch_pdl(attention_decode_kernel<HD, G>, grid, dim3(kWarps * 32), 0, stream, a,
                                  plan.chunk, plan.n_splits, work));
  });
  KILN_ASSERT(ok);
  CUDA_CHECK_LAUNCH();
  if (plan.n_splits > 1) attention_merge_splits(work, plan.n_splits, a, stream);
}

void attention_decode_prime() {
  cudaFuncAttributes attr{};
  auto each = [&]<int HD>() {
    (void)cudaFuncGetAttributes(&attr, attention_decode_kernel<HD, 1>);
    (void)cudaFuncGetAttributes(&attr, attention_decode_kernel<HD, 2>);
    (void)cudaFuncGetAttributes(&attr, attention_decode_kernel<HD, 4>);
    (void)cudaFuncGetAttributes(&attr, attention_decode_kernel<HD, 8>);
  };
  each.template operator()<64>();
  each.template operator()<128>();
  (void)cudaGetLastError();
}

}  // namespace kiln::cuda
