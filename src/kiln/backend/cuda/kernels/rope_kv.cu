// RoPE table and the fused norm + rope + KV store (see rope_kv.cuh). One warp
// per (token, head); lane l holds elements l, l+32, ... of the head. RoPE
// partners sit in other lanes, so the head goes through shared memory once.
#include "kiln/backend/cuda/common.cuh"
#include "kiln/backend/cuda/kernels/rope_kv.cuh"
#include "kiln/core/assert.h"

namespace kiln::cuda {
namespace {

constexpr int kMaxHead = 256;
constexpr int kPer = kMaxHead / kWarp;  // elements per lane
constexpr int kWarps = 4;

__global__ void rope_table_kernel(const int32_t* __restrict__ pos, const double* __restrict__ inv,
                                  int n_pairs, float* __restrict__ cs) {
  pdl_trigger();
  pdl_wait();
  const int64_t t = blockIdx.x;
  for (int i = threadIdx.x; i < n_pairs; i += blockDim.x) {
    const double a = double(pos[t]) * inv[i];
    double s, c;
    sincos(a, &s, &c);
    cs[t * 2 * n_pairs + i] = float(c);
    cs[t * 2 * n_pairs + n_pairs + i] = float(s);
  }
}

template <KvType KT>
__device__ __forceinline__ void store_row(uint8_t* dst, const float (&v)[kPer], int hd, int lane) {
  if constexpr (KT == KvType::f32) {
#pragma unroll
    for (int k = 0; k < kPer; ++k)
      if (lane + 32 * k < hd) reinterpret_cast<float*>(dst)[lane + 32 * k] = v[k];
  } else if constexpr (KT == KvType::f16) {
#pragma unroll
    for (int k = 0; k < kPer; ++k)
      if (lane + 32 * k < hd) reinterpret_cast<uint16_t*>(dst)[lane + 32 * k] = f2h(v[k]);
  } else if constexpr (KT == KvType::fp8) {
#pragma unroll
    for (int k = 0; k < kPer; ++k)
      if (lane + 32 * k < hd) dst[lane + 32 * k] = f32_to_fp8(v[k]);
  } else {  // q8_0, hd % 32 == 0: block k is element k of every lane
#pragma unroll
    for (int k = 0; k < kPer; ++k) {
      if (32 * k >= hd) break;
      const float amax = warp_max(fabsf(v[k]));
      const float d = amax / 127.0f;
      const float id = d != 0.0f ? 1.0f / d : 0.0f;
      const float x = fminf(fmaxf(v[k] * id, -127.0f), 127.0f);
      const int q = x == x ? int(roundf(x)) : 0;
      uint8_t* blk = dst + 34 * k;
      if (lane == 0) *reinterpret_cast<uint16_t*>(blk) = f2h(d);
      blk[2 + lane] = uint8_t(int8_t(q));
    }
  }
}

template <KvType KT>
__global__ void __launch_bounds__(kWarps * 32) rope_kv_kernel(RopeKvArgs a) {
  __shared__ float buf[kWarps][kMaxHead];
  pdl_trigger();
  const int t = blockIdx.x;
  const int warp = threadIdx.x / kWarp, lane = threadIdx.x % kWarp;
  const int h = blockIdx.y * kWarps + warp;
  const int n_total = a.n_head + 2 * a.n_head_kv;
  const bool is_q = h < a.n_head;
  const bool is_k = !is_q && h < a.n_head + a.n_head_kv;
  // The cache slot of a K/V head's row: the metadata was uploaded before
  // the step, so its dependent loads run while the previous kernel ends.
  int block = 0, slot = 0;
  if (!is_q && h < n_total) {
    const int pos = a.meta.pos[t];
    block = a.meta.bt[a.meta.bt_off[a.meta.seq[t]] + pos / a.kv.block_size];
    slot = pos % a.kv.block_size;
  }
  pdl_wait();
  if (h >= n_total) return;
  const int n_q = a.n_head * a.head_dim_k, n_k = a.n_head_kv * a.head_dim_k;
  const int hd = (is_q || is_k) ? a.head_dim_k : a.head_dim_v;
  float* src = a.qkv + int64_t(t) * a.ld +
               (is_q ? h * a.head_dim_k
                     : is_k ? n_q + (h - a.n_head) * a.head_dim_k
                            : n_q + n_k + (h - a.n_head - a.n_head_kv) * a.head_dim_v);
  float v[kPer];
#pragma unroll
  for (int k = 0; k < kPer; ++k) v[k] = lane + 32 * k < hd ? src[lane + 32 * k] : 0.0f;

  if (is_q || is_k) {
    const float* nw = is_q ? a.q_norm : a.k_norm;
    if (nw) {
      double ss = 0.0;
#pragma unroll
      for (int k = 0; k < kPer; ++k) ss += double(v[k]) * double(v[k]);
      ss = warp_sum_d(ss);
      const float scale = float(1.0 / sqrt(ss / double(hd) + double(a.eps)));
#pragma unroll
      for (int k = 0; k < kPer; ++k)
        if (lane + 32 * k < hd) v[k] = (v[k] * scale) * nw[lane + 32 * k];
    }
    float* b = buf[warp];
#pragma unroll
    for (int k = 0; k < kPer; ++k)
      if (lane + 32 * k < hd) b[lane + 32 * k] = v[k];
    __syncwarp();
    const int n_pairs = a.n_rot / 2;
    const float* c = a.cs + int64_t(t) * a.n_rot;
    const float* s = c + n_pairs;
#pragma unroll
    for (int k = 0; k < kPer; ++k) {
      const int d = lane + 32 * k;
      if (d >= a.n_rot) continue;
      // adjacent pairs: (2i, 2i+1); NeoX: (i, i + n_rot/2).
      const int i = a.neox ? d % n_pairs : d / 2;
      const int side = a.neox ? d / n_pairs : d % 2;
      const int first = a.neox ? i : 2 * i;
      const int second = a.neox ? i + n_pairs : 2 * i + 1;
      v[k] = rope_rotate(b[first], b[second], c[i], s[i], side != 0);
    }
  }
  if (is_q) {
#pragma unroll
    for (int k = 0; k < kPer; ++k)
      if (lane + 32 * k < hd) src[lane + 32 * k] = v[k];
    return;
  }
  uint8_t* dst;
  if (is_k) {
    const int g = h - a.n_head;
    dst = a.kv.k_layer(a.layer) + size_t(block) * a.kv.k_block_stride + size_t(g) * a.kv.k_head_stride +
          size_t(slot) * a.kv.k_row;
  } else {
    const int g = h - a.n_head - a.n_head_kv;
    dst = a.kv.v_layer(a.layer) + size_t(block) * a.kv.v_block_stride + size_t(g) * a.kv.v_head_stride +
          size_t(slot) * a.kv.v_row;
  }
  store_row<KT>(dst, v, hd, lane);
}

}  // namespace

void rope_table(const int32_t* pos, int64_t n_tokens, const double* inv_freq, int64_t n_pairs,
                float* cs, cudaStream_t stream) {
  if (n_tokens == 0 || n_pairs == 0) return;
  CUDA_CHECK(compat::launch_pdl(rope_table_kernel, dim3(unsigned(n_tokens)), dim3(64), 0, stream, pos, inv_freq, int(n_pairs), cs));
  CUDA_CHECK_LAUNCH();
}

void rope_kv_store(const RopeKvArgs& a, cudaStream_t stream) {
  if (a.meta.n_tokens == 0) return;
  KILN_ASSERT(a.head_dim_k <= kMaxHead && a.head_dim_v <= kMaxHead && a.n_rot <= a.head_dim_k);
  const dim3 grid(unsigned(a.meta.n_tokens), ceil_div(a.n_head + 2 * a.n_head_kv, kWarps));
  switch (a.kv.type) {
    case KvType::f32: CUDA_CHECK(compat::launch_pdl(rope_kv_kernel<KvType::f32>, grid, dim3(kWarps * 32), 0, stream, a)); break;
    case KvType::f16: CUDA_CHECK(compat::launch_pdl(rope_kv_kernel<KvType::f16>, grid, dim3(kWarps * 32), 0, stream, a)); break;
    case KvType::fp8: CUDA_CHECK(compat::launch_pdl(rope_kv_kernel<KvType::fp8>, grid, dim3(kWarps * 32), 0, stream, a)); break;
    case KvType::q8_0: CUDA_CHECK(compat::launch_pdl(rope_kv_kernel<KvType::q8_0>, grid, dim3(kWarps * 32), 0, stream, a)); break;
  }
  CUDA_CHECK_LAUNCH();
}

}  // namespace kiln::cuda
