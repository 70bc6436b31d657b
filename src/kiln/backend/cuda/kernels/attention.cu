// Paged attention (see attention.cuh).
//
// Grid: (KV head x head subgroup, row, context split). A block takes one batch
// row, up to kMaxGroup query heads sharing one KV head, and one contiguous
// span of `chunk` positions: it scores them (a thread per position), takes a
// max-subtracted softmax per head (a warp per head), and mixes V (a thread per
// 8 dimensions x every n-th position, all heads at once, so each K/V element
// is read once per block, with 16-byte loads).
// With several splits each block writes (acc, max, sum) partials and a second
// kernel merges them; with one split the block writes the output directly.
// Splits are chosen so short batches (decode) still fill the GPU.
#include <algorithm>

#include "kiln/backend/cuda/common.cuh"
#include "kiln/backend/cuda/kernels/attention.cuh"
#include "kiln/backend/cuda/kernels/attention_decode.cuh"
#include "kiln/backend/cuda/kernels/norm.cuh"
#include "kiln/core/assert.h"

namespace kiln::cuda {
namespace {

constexpr int kThreads = 128;
constexpr int kMaxGroup = 8;
constexpr int kMaxChunk = 1024;
// Fewest positions per split when splitting a short batch over the context.
#ifndef KILN_ATTN_MIN_CHUNK
#define KILN_ATTN_MIN_CHUNK 32
#endif

struct Plan {
  int n_sub = 1;     // head subgroups per KV head (n_group > kMaxGroup)
  int n_splits = 1;
  int chunk = 0;     // positions per split
};

Plan make_plan(const AttentionArgs& a, int n_sms) {
  Plan p;
  const int n_group = a.n_head / a.n_head_kv;
  p.n_sub = (n_group + kMaxGroup - 1) / kMaxGroup;
  const int64_t base = a.n_rows * a.n_head_kv * p.n_sub;
  const int64_t target = 2 * int64_t(n_sms);
  const int ctx = std::max(1, a.max_ctx);
  int splits = 1;
  if (base < target)
    splits = int(std::min<int64_t>((target + base - 1) / base,
                                   (ctx + KILN_ATTN_MIN_CHUNK - 1) / KILN_ATTN_MIN_CHUNK));
  splits = std::max(splits, (ctx + kMaxChunk - 1) / kMaxChunk);
  int chunk = (ctx + splits - 1) / splits;
  chunk = (chunk + 31) / 32 * 32;
  p.chunk = std::min(chunk, kMaxChunk);
  p.n_splits = (ctx + p.chunk - 1) / p.chunk;
  return p;
}

// 8 consecutive elements [d, d+8) of a stored row (d % 8 == 0).
template <KvType KT>
__device__ __forceinline__ void load8(const uint8_t* row, int d, float* o) {
  if constexpr (KT == KvType::f32) {
    const float4 a = *reinterpret_cast<const float4*>(row + 4 * d);
    const float4 b = *reinterpret_cast<const float4*>(row + 4 * d + 16);
    o[0] = a.x, o[1] = a.y, o[2] = a.z, o[3] = a.w, o[4] = b.x, o[5] = b.y, o[6] = b.z, o[7] = b.w;
  } else if constexpr (KT == KvType::f16) {
    const uint4 u = *reinterpret_cast<const uint4*>(row + 2 * d);
    const uint32_t w[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      const float2 f = __half22float2(*reinterpret_cast<const __half2*>(&w[k]));
      o[2 * k] = f.x, o[2 * k + 1] = f.y;
    }
  } else if constexpr (KT == KvType::fp8) {
    const uint2 u = *reinterpret_cast<const uint2*>(row + d);
#pragma unroll
    for (int k = 0; k < 4; ++k) o[k] = fp8_to_f32(uint8_t(u.x >> (8 * k)));
#pragma unroll
    for (int k = 0; k < 4; ++k) o[4 + k] = fp8_to_f32(uint8_t(u.y >> (8 * k)));
  } else {
    const uint8_t* blk = row + 34 * (d / 32);
    const float s = h2f(*reinterpret_cast<const uint16_t*>(blk));
    const int8_t* q = reinterpret_cast<const int8_t*>(blk + 2 + d % 32);
#pragma unroll
    for (int k = 0; k < 8; ++k) o[k] = float(q[k]) * s;
  }
}

template <KvType KT>
__device__ __forceinline__ float load1(const uint8_t* row, int d) {
  if constexpr (KT == KvType::f32) return reinterpret_cast<const float*>(row)[d];
  else if constexpr (KT == KvType::f16) return h2f(reinterpret_cast<const uint16_t*>(row)[d]);
  else if constexpr (KT == KvType::fp8) return fp8_to_f32(row[d]);
  else {
    const uint8_t* blk = row + 34 * (d / 32);
    return float(int8_t(blk[2 + d % 32])) * h2f(*reinterpret_cast<const uint16_t*>(blk));
  }
}

template <KvType KT>
__global__ void __launch_bounds__(kThreads)
    attention_kernel(AttentionArgs a, Plan plan, float* __restrict__ part) {
  extern __shared__ float sm[];
  __shared__ float stat_m[kMaxGroup], stat_l[kMaxGroup];
  pdl_trigger();
  pdl_wait();
  const int i = blockIdx.y;
  const int g = blockIdx.x / plan.n_sub, sub = blockIdx.x % plan.n_sub;
  const int split = blockIdx.z;
  const int n_group = a.n_head / a.n_head_kv;
  const int h0 = sub * kMaxGroup;                   // first head of this block within the group
  const int ng = min(kMaxGroup, n_group - h0);      // heads in this block
  const int head0 = g * n_group + h0;               // global index of the first head
  const int hd_k = a.head_dim_k, hd_v = a.head_dim_v;
  const int t = a.rows ? a.rows[i] : i;
  const int n_ctx = a.meta.pos[t] + 1;
  const int j0 = split * plan.chunk;
  const int j1 = min(n_ctx, j0 + plan.chunk);
  const int chunk = plan.chunk;

  auto part_ptr = [&](int h) {  // partial record of head h (block-local) for this split
    return part + ((int64_t(i) * a.n_head + head0 + h) * plan.n_splits + split) * (hd_v + 2);
  };
  if (j0 >= j1) {  // nothing of this row's context falls in this split
    if (plan.n_splits > 1)
      for (int h = threadIdx.x; h < ng; h += blockDim.x) {
        part_ptr(h)[hd_v] = -INFINITY;
        part_ptr(h)[hd_v + 1] = 0.0f;
      }
    return;
  }

  float* qs = sm;                                   // [ng][hd_k]
  float* p = sm + ng * hd_k;                        // [ng][chunk]
  int* blk = reinterpret_cast<int*>(p + ng * chunk);  // [chunk] KV block of each position
  const float* q = a.q + int64_t(t) * a.ldq + int64_t(head0) * hd_k;
  for (int e = threadIdx.x; e < ng * hd_k; e += blockDim.x) qs[e] = q[e];
  const int* bt = a.meta.bt + a.meta.bt_off[a.meta.seq[t]];
  const int bs = a.kv.block_size;
  for (int j = j0 + threadIdx.x; j < j1; j += blockDim.x) blk[j - j0] = bt[j / bs];
  __syncthreads();

  const uint8_t* kbase = a.kv.k_layer(a.layer) + size_t(g) * a.kv.k_head_stride;
  const uint8_t* vbase = a.kv.v_layer(a.layer) + size_t(g) * a.kv.v_head_stride;
  const float scale = rsqrtf(float(hd_k));

  // Scores, a thread per position.
  for (int j = j0 + threadIdx.x; j < j1; j += blockDim.x) {
    const uint8_t* krow = kbase + size_t(blk[j - j0]) * a.kv.k_block_stride + size_t(j % bs) * a.kv.k_row;
    float acc[kMaxGroup];
#pragma unroll
    for (int h = 0; h < kMaxGroup; ++h) acc[h] = 0.0f;
    // Four 8-element loads issued before their products: with one load in
    // flight per thread the loop was latency-bound (the head size is a
    // run-time value, so the compiler cannot unroll it). Same summation
    // order as one load at a time.
    int d = 0;
    for (; d + 32 <= hd_k; d += 32) {
      float kv[4][8];
#pragma unroll
      for (int u = 0; u < 4; ++u) load8<KT>(krow, d + 8 * u, kv[u]);
#pragma unroll
      for (int u = 0; u < 4; ++u)
#pragma unroll
        for (int h = 0; h < kMaxGroup; ++h) {
          if (h < ng) {
            const float* qh = qs + h * hd_k + d + 8 * u;
#pragma unroll
            for (int e = 0; e < 8; ++e) acc[h] += qh[e] * kv[u][e];
          }
        }
    }
    for (; d < hd_k; d += 8) {
      float kv[8];
      load8<KT>(krow, d, kv);
#pragma unroll
      for (int h = 0; h < kMaxGroup; ++h) {
        if (h < ng) {
          const float* qh = qs + h * hd_k + d;
#pragma unroll
          for (int e = 0; e < 8; ++e) acc[h] += qh[e] * kv[e];
        }
      }
    }
#pragma unroll
    for (int h = 0; h < kMaxGroup; ++h)
      if (h < ng) p[h * chunk + (j - j0)] = acc[h] * scale;
  }
  __syncthreads();

  // Softmax statistics per head (a warp per head); p becomes exp(score - max).
  const int n = j1 - j0;
  const int warp = threadIdx.x / kWarp, lane = threadIdx.x % kWarp;
  for (int h = warp; h < ng; h += blockDim.x / kWarp) {
    float* ph = p + h * chunk;
    float m = -INFINITY;
    for (int j = lane; j < n; j += kWarp) m = fmaxf(m, ph[j]);
    m = warp_max(m);
    float l = 0.0f;
    for (int j = lane; j < n; j += kWarp) {
      const float e = expf(ph[j] - m);
      ph[j] = e;
      l += e;
    }
    l = warp_sum(l);
    if (lane == 0) stat_m[h] = m, stat_l[h] = l;
  }
  __syncthreads();

  // V mix: a thread takes 8 consecutive dimensions (one 16-byte f16 load) of
  // every n_pg-th position, for every head of the block; the n_pg partial
  // sums of each output are then added in a fixed order (deterministic).
  const int n_dg = hd_v / 8;                   // threads per V row
  const int n_pg = blockDim.x / n_dg;          // position groups
  const int dg = threadIdx.x % n_dg, pg = threadIdx.x / n_dg;
  float acc[kMaxGroup][8];
#pragma unroll
  for (int h = 0; h < kMaxGroup; ++h)
#pragma unroll
    for (int e = 0; e < 8; ++e) acc[h][e] = 0.0f;
  if (pg < n_pg) {
    auto vrow = [&](int j) {
      return vbase + size_t(blk[j - j0]) * a.kv.v_block_stride + size_t(j % bs) * a.kv.v_row;
    };
    auto mix = [&](int j, const float (&v)[8]) {
#pragma unroll
      for (int h = 0; h < kMaxGroup; ++h) {
        if (h < ng) {
          const float w = p[h * chunk + (j - j0)];
#pragma unroll
          for (int e = 0; e < 8; ++e) acc[h][e] += w * v[e];
        }
      }
    };
    int j = j0 + pg;
    // Four positions' loads in flight before their products (as for K).
    for (; j + 3 * n_pg < j1; j += 4 * n_pg) {
      float v[4][8];
#pragma unroll
      for (int u = 0; u < 4; ++u) load8<KT>(vrow(j + u * n_pg), 8 * dg, v[u]);
#pragma unroll
      for (int u = 0; u < 4; ++u) mix(j + u * n_pg, v[u]);
    }
    for (; j < j1; j += n_pg) {
      float v[8];
      load8<KT>(vrow(j), 8 * dg, v);
      mix(j, v);
    }
  }
  __syncthreads();  // p, qs are free now: reuse the shared memory for the partial sums
  float* red = sm;  // [n_pg][ng][hd_v]
  if (pg < n_pg)
#pragma unroll
    for (int h = 0; h < kMaxGroup; ++h)
      if (h < ng)
#pragma unroll
        for (int e = 0; e < 8; ++e) red[(pg * ng + h) * hd_v + 8 * dg + e] = acc[h][e];
  __syncthreads();
  for (int o = threadIdx.x; o < ng * hd_v; o += blockDim.x) {
    const int h = o / hd_v, d = o % hd_v;
    float sum = 0.0f;
    for (int k = 0; k < n_pg; ++k) sum += red[k * ng * hd_v + o];
    if (plan.n_splits == 1) {
      const int64_t at = int64_t(i) * a.n_head * hd_v + int64_t(head0 + h) * hd_v + d;
      a.out[at] = sum / stat_l[h];
      if (a.out16) a.out16[at] = f2h(sum / stat_l[h]);
    } else {
      float* rec = part_ptr(h);
      rec[d] = sum;
      if (d == 0) rec[hd_v] = stat_m[h], rec[hd_v + 1] = stat_l[h];
    }
  }
}

// Merges the splits of one (row, head): out = sum_s e^(m_s - M) acc_s / sum_s e^(m_s - M) l_s.
// The split maxima and weights are read by all threads at once into shared
// memory (a loop over the splits per thread put ~3 x n_splits dependent
// loads in a row: 12 us for 21 splits under ncu), then each output dimension
// sums its column with every load of it in flight.
constexpr int kCombineThreads = 128;
constexpr int kCombineSmem = 1024;  // splits whose weights stay in shared memory

__global__ void __launch_bounds__(kCombineThreads)
    attention_combine_kernel(const float* __restrict__ part, int n_splits, int hd_v, int n_head,
                             float* __restrict__ out, ActQ8 outq, uint16_t* __restrict__ out16) {
  __shared__ float sh_w[kCombineSmem];
  __shared__ float sh_red[32];
  pdl_trigger();
  pdl_wait();
  const int64_t i = blockIdx.x, h = blockIdx.y;
  const int stride = hd_v + 2;
  const float* rec = part + (i * n_head + h) * n_splits * stride;
  float m = -INFINITY;
  for (int s = threadIdx.x; s < n_splits; s += blockDim.x) m = fmaxf(m, rec[s * stride + hd_v]);
  m = block_max(m, sh_red);
  // Weight e^(m_s - M) of split s; 0 for a split that saw no position (its
  // accumulator was never written).
  auto weight = [&](int s) {
    const float ms = rec[s * stride + hd_v];
    return ms == -INFINITY ? 0.0f : expf(ms - m);
  };
  float l = 0.0f;
  for (int s = threadIdx.x; s < n_splits; s += blockDim.x) {
    const float w = weight(s);
    if (s < kCombineSmem) sh_w[s] = w;
    if (w != 0.0f) l += w * rec[s * stride + hd_v + 1];
  }
  l = block_sum(l, sh_red);  // its barriers also publish sh_w
  // With outq (hd_v % 32 == 0) every warp's 32 dimensions are one q8 block.
  const int d_end = outq.q ? (hd_v + 31) / 32 * 32 : hd_v;
  for (int d0 = 0; d0 < d_end; d0 += blockDim.x) {
    const int d = d0 + threadIdx.x;
    if (d0 + (threadIdx.x / kWarp) * kWarp >= d_end) break;  // warp-uniform
    float acc = 0.0f;
    if (d < hd_v) {
#pragma unroll 8
      for (int s = 0; s < n_splits; ++s) {
        const float w = s < kCombineSmem ? sh_w[s] : weight(s);
        if (w != 0.0f) acc += w * rec[s * stride + d];
      }
      out[i * n_head * hd_v + h * hd_v + d] = acc / l;
      if (out16) out16[i * n_head * hd_v + h * hd_v + d] = f2h(acc / l);
    }
    if (outq.q) quantize_block_warp(acc / l, outq, i, h * hd_v + d);
  }
}

}  // namespace

void attention_prime(KvType t) {
  cudaFuncAttributes attr{};
  switch (t) {
    case KvType::f32: (void)cudaFuncGetAttributes(&attr, attention_kernel<KvType::f32>); break;
    case KvType::f16: (void)cudaFuncGetAttributes(&attr, attention_kernel<KvType::f16>); break;
    case KvType::fp8: (void)cudaFuncGetAttributes(&attr, attention_kernel<KvType::fp8>); break;
    case KvType::q8_0: (void)cudaFuncGetAttributes(&attr, attention_kernel<KvType::q8_0>); break;
  }
  (void)cudaFuncGetAttributes(&attr, attention_combine_kernel);
  (void)cudaGetLastError();
}

void attention_merge_splits(const float* part, int n_splits, const AttentionArgs& a, cudaStream_t stream) {
  const bool fuse_q8 = a.outq.q && a.head_dim_v % 32 == 0;
  CUDA_CHECK(compat::launch_pdl(attention_combine_kernel, dim3(unsigned(a.n_rows), unsigned(a.n_head)),
                                dim3(kCombineThreads), 0, stream, part, n_splits, a.head_dim_v, a.n_head, a.out,
                                fuse_q8 ? a.outq : ActQ8{}, a.out16));
  CUDA_CHECK_LAUNCH();
  if (a.outq.q && !fuse_q8)
    quantize_q8(a.out, int64_t(a.n_head) * a.head_dim_v, a.outq, a.n_rows, int64_t(a.n_head) * a.head_dim_v,
                stream);
}

size_t attention_workspace_floats(const AttentionArgs& a, int n_sms) {
  if (a.n_rows == 0) return 0;
  const int n_splits = attention_decode_supported(a, n_sms) ? attention_decode_plan(a, n_sms).n_splits
                                                            : make_plan(a, n_sms).n_splits;
  if (n_splits == 1) return 0;  // no partials: the kernel writes the output directly
  return size_t(a.n_rows) * size_t(a.n_head) * size_t(n_splits) * size_t(a.head_dim_v + 2);
}

bool attention_fuses_rope(const AttentionArgs& a, int n_sms, int n_rot, bool qk_norm) {
  return a.decode_step && !qk_norm && n_rot == a.head_dim_k && attention_decode_supported(a, n_sms);
}

void attention(const AttentionArgs& a, float* work, int n_sms, cudaStream_t stream) {
  if (a.n_rows == 0) return;
  KILN_ASSERT_MSG(!a.rope_cs || attention_decode_supported(a, n_sms), "attention: RoPE fused on a kernel without it");
  if (attention_decode_supported(a, n_sms)) {  // the common f16 shapes: attention_decode.cu
    attention_decode(a, attention_decode_plan(a, n_sms), work, stream);
    return;
  }
  KILN_ASSERT(a.head_dim_k % 8 == 0 && a.head_dim_v % 8 == 0 && a.head_dim_v <= 8 * kThreads &&
              a.n_head % a.n_head_kv == 0);
  const Plan plan = make_plan(a, n_sms);
  KILN_ASSERT(plan.n_splits == 1 || work != nullptr);
  const int n_group = a.n_head / a.n_head_kv;
  const int ng = std::min(n_group, kMaxGroup);
  // q + scores + block ids, then reused for the V partial sums.
  const size_t n_pg = kThreads / std::max(1, a.head_dim_v / 8);
  const size_t smem = std::max(size_t(ng) * size_t(a.head_dim_k + plan.chunk) + size_t(plan.chunk),
                               n_pg * size_t(ng) * size_t(a.head_dim_v)) * sizeof(float);
  KILN_ASSERT(smem <= 48 * 1024);
  // KV heads fastest: the blocks running together read all the KV heads of a
  // cache block (adjacent in memory) rather than one head's rows of many
  // cache blocks (32 KB apart for the 8B shape): 128 decode streams
  // 8,152-8,169 against 8,091-8,098 tok/s on an H100, same results. Rows in
  // y, as every per-row kernel here (kMaxBatchRows).
  const dim3 grid(unsigned(a.n_head_kv * plan.n_sub), unsigned(a.n_rows), unsigned(plan.n_splits));
  switch (a.kv.type) {
    case KvType::f32: CUDA_CHECK(compat::launch_pdl(attention_kernel<KvType::f32>, grid, dim3(kThreads), smem, stream, a, plan, work)); break;
    case KvType::f16: CUDA_CHECK(compat::launch_pdl(attention_kernel<KvType::f16>, grid, dim3(kThreads), smem, stream, a, plan, work)); break;
    case KvType::fp8: CUDA_CHECK(compat::launch_pdl(attention_kernel<KvType::fp8>, grid, dim3(kThreads), smem, stream, a, plan, work)); break;
    case KvType::q8_0: CUDA_CHECK(compat::launch_pdl(attention_kernel<KvType::q8_0>, grid, dim3(kThreads), smem, stream, a, plan, work)); break;
  }
  CUDA_CHECK_LAUNCH();
  if (plan.n_splits > 1) {
    attention_merge_splits(work, plan.n_splits, a, stream);
  } else if (a.outq.q) {
    quantize_q8(a.out, int64_t(a.n_head) * a.head_dim_v, a.outq, a.n_rows,
                int64_t(a.n_head) * a.head_dim_v, stream);
  }
}

}  // namespace kiln::cuda
