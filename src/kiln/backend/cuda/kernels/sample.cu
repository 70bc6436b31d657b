// Row sampling on the device (see sample.cuh): one block of 1024 threads per
// logits row, implementing engine/sampler.cpp's choose() for rows without
// penalties, bias or bans.
//
// The host sampler is the specification. Per row:
//  1. m = the largest logit (NaN ignored); weights w_i = exp_np((l_i - m) *
//     (1 / T)) with the host's own exp, operation for operation and without
//     contraction into FMAs (__fmul_rn / __fadd_rn), so every weight has the
//     host's bits; NaN and -inf weigh 0.
//  2. As the host branches:
//     top-k (1 < k < n): the k best by (logit desc, id asc) that weigh > 0
//        (the host keeps weightless ones too, but they never change a sum or
//        get drawn); min-p zeroes those under min_p; top-p keeps the
//        shortest prefix whose sum reaches top_p * (sum of all k); drawn best
//        first.
//     top-p < 1 alone: the candidates C (w >= min_p, or w > 0) in the same
//        order; the nucleus is the shortest best-first prefix of C whose sum
//        reaches top_p * total (total: of C with min-p, else of the whole
//        row); drawn in id order.
//     otherwise: C (min-p) or the whole row, drawn in id order.
//  3. The draw: the first token in that order whose cumulative float64
//     weight exceeds u * (sum of the kept weights); where rounding leaves
//     none, the last token with weight.
//
// Why the token equals the host's, and where alone it may not: every step
// is either a comparison of values computed bit for bit alike (m, the
// weights, the top-k set and order by a total order, min-p's w >= min_p) or
// a comparison of a float64 sum of weights with a threshold (top-p's
// cum >= target, the draw's cum > u * total). The sums are formed in the
// host's order, so they are its bits, wherever that order is a sequential
// walk the kernel can afford: the row total and block sums of a plain
// temperature draw (the host's 8-lane float block sums, reproduced lane for
// lane), and the cumulative sums over the sorted top-k or the nucleus when
// they hold at most kSerialMax tokens. Elsewhere (min-p's totals over the
// whole row, bigger candidate sets, the boundary of the host's nucleus,
// which its quickselect sums in partition order) the kernel adds the same
// float64 terms in another fixed order, which differs from the host's sum by
// rounding alone, ~1e-16 relative. The tokens can then differ only where a
// threshold lies that close to a cumulative sum: u within ~1e-16 of the edge
// between two tokens, or the top-p target within that of a prefix's mass.
// The bound that sizes the top-p candidate set (below) keeps a margin of
// 1e-6, so it never decides anything. No float atomics anywhere: the result
// is the same on every run.
//
// Cost at n_vocab = 128256 (the Llama 3 vocabulary), one row on one SM: a
// read of the row for m, a pass computing the weights (~30 float ops each
// where they are needed: every token for a plain draw or top-p, the few
// above the cut for min-p, none for top-k, which only counts), then for
// top-k / top-p a cheap read to gather the candidates, a bitonic sort of at
// most 4096 keys in shared memory and short scans. Measured on an H100
// 80GB HBM3 (tests/gpu/test_cuda_sample.cpp prints it), one row: about 18 us
// (min-p 0.05), 38 (top-k 40 + top-p 0.95), 44 (plain temperature), 67
// (top-p 0.9 alone: every weight, and many tokens to count); 128 rows, one
// block per SM side by side, take 56-103 us in all.
//
// The top-k / top-p candidates without a sort of the vocabulary: a
// histogram of x = (l - m) / T in kBins bins, monotone in the logit, bounds
// the boundary: top-k takes the bins up to the one where the count reaches
// k; top-p those up to where a lower bound of the mass (count times the
// bin's least weight) reaches the target. Exactly the members of those bins
// are gathered and sorted by (logit desc, id asc); a set over
// kSampleMaxCandidates is declined (one bin of thousands of equal logits, a
// flat distribution's nucleus, or top_p so near 1 that the bound falls short).
#include <climits>
#include <mutex>

#include "kiln/backend/cuda/common.cuh"
#include "kiln/backend/cuda/kernels/sample.cuh"

namespace kiln::cuda {
namespace {

constexpr int kThreads = 1024;
constexpr int kWarps = kThreads / kWarp;
constexpr int kTile = 256;  // ids per partial sum: the host sampler's kBlock
constexpr int kBins = 4096;
constexpr int kCap = kSampleMaxCandidates;
constexpr int kSerialMax = 1024;  // longest cumulative sum walked by one thread
constexpr unsigned kAll = 0xffffffffu;

static_assert(kBins <= kCap);

struct Shared {
  union {
    uint64_t keys[kCap];       // candidates: rank_key, then (nucleus) id_key
    double floor_mass[kBins];  // before them: a lower bound of each bin's mass, then prefix sums
  };
  union {
    double cum[kCap];       // the candidates' weights, then cumulative sums
    uint32_t count[kBins];  // before them: candidates per bin, then prefix sums
  };
  double warp_tmp[kWarps];
  float red[kWarps];
  int first;    // atomicMin slot (INT_MAX: none)
  int last;     // atomicMax slot (-1: none)
  int n_slots;  // gathered candidates
  int token;
};
// Then, per row tile: double tile_sum[n_tiles], tile_pre[n_tiles] (inclusive prefix).
constexpr size_t kSharedHead = (sizeof(Shared) + 15) & ~size_t(15);

// engine/sampler.cpp exp_np, operation for operation: the same bits.
__device__ __forceinline__ float exp_np(float x) {
  const bool keep = x >= -87.0f;
  x = keep ? x : 0.0f;
  x = x < 0.0f ? x : 0.0f;
  constexpr float kMagic = 12582912.0f;
  const float t = __fadd_rn(__fmul_rn(x, 1.44269504088896341f), kMagic);
  const float n = __fsub_rn(t, kMagic);
  const int ni = __float_as_int(t) - __float_as_int(kMagic);
  float r = __fsub_rn(x, __fmul_rn(n, 0.693359375f));
  r = __fadd_rn(r, __fmul_rn(n, 2.12194440e-4f));
  float p = 1.9875691500e-4f;
  p = __fadd_rn(__fmul_rn(p, r), 1.3981999507e-3f);
  p = __fadd_rn(__fmul_rn(p, r), 8.3334519073e-3f);
  p = __fadd_rn(__fmul_rn(p, r), 4.1665795894e-2f);
  p = __fadd_rn(__fmul_rn(p, r), 1.6666665459e-1f);
  p = __fadd_rn(__fmul_rn(p, r), 5.0000001201e-1f);
  p = __fadd_rn(__fadd_rn(__fmul_rn(p, __fmul_rn(r, r)), r), 1.0f);
  const float scale = __int_as_float((ni + 127) << 23);
  return keep ? __fmul_rn(p, scale) : 0.0f;
}

// Float bits in an order where larger floats give larger keys; -0 as +0,
// since the host's comparisons tie them.
__device__ __forceinline__ uint32_t ord(float f) {
  const uint32_t u = __float_as_uint(f == 0.0f ? 0.0f : f);
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}
__device__ __forceinline__ float unord(uint32_t o) {
  return __uint_as_float((o & 0x80000000u) ? (o & 0x7fffffffu) : ~o);
}
// Descending order of these keys: best first (logit desc, id asc) ...
__device__ __forceinline__ uint64_t rank_key(float l, int id) {
  return (uint64_t(ord(l)) << 32) | uint32_t(~uint32_t(id));
}
__device__ __forceinline__ int rank_id(uint64_t k) {
  return int(~uint32_t(k));
}
__device__ __forceinline__ float rank_logit(uint64_t k) {
  return unord(uint32_t(k >> 32));
}
// ... and id ascending. A real key is never 0, the padding.
__device__ __forceinline__ uint64_t id_key(float l, int id) {
  return (uint64_t(~uint32_t(id)) << 32) | ord(l);
}
__device__ __forceinline__ int id_of_id_key(uint64_t k) {
  return int(~uint32_t(k >> 32));
}
__device__ __forceinline__ float logit_of_id_key(uint64_t k) {
  return unord(uint32_t(k));
}

// Bin of x in [x_lo, 0] (below: the last), kBins per -x_lo: monotone in x,
// 0 holds the best tokens.
__device__ __forceinline__ int bin_of(float x, float scale) {
  return min(__float2int_rz(__fmul_rn(-x, scale)), kBins - 1);
}
// A lower bound of any weight in bin b < kBins - 1: x > -(b + 1) / scale up
// to the rounding of the product, and exp_np is within 3e-7 of exp. The
// last bin's tokens weigh at least `floor` (what was counted).
__device__ __forceinline__ double bin_floor_weight(int b, float scale, float floor) {
  if (b == kBins - 1) return double(floor);
  return exp(-(double(b) + 1.0) / double(scale) * (1.0 + 1e-6)) * (1.0 - 1e-6);
}
// Loads of a row are issued kUnroll at a time per thread, so enough are in
// flight for one SM to stream the row at speed (one at a time, each thread
// would wait out the memory latency per element).
constexpr int kUnroll = 8;

// f(i, l[i]) for every i < n, in batches of kUnroll loads per thread, four
// floats a load where the row is 16-byte aligned.
template <class F>
__device__ __forceinline__ void for_each_logit(const float* __restrict__ l, int n, F&& f) {
  int done = 0;
  if ((reinterpret_cast<uintptr_t>(l) & 15) == 0) {
    const int n4 = n / 4;
    const float4* __restrict__ l4 = reinterpret_cast<const float4*>(l);
    constexpr int kVec = kUnroll / 2;  // 16 floats in flight per thread
    for (int base = 0; base < n4; base += kThreads * kVec) {
      float4 v[kVec];
#pragma unroll
      for (int k = 0; k < kVec; ++k) {
        const int i = base + k * kThreads + int(threadIdx.x);
        v[k] = i < n4 ? l4[i] : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
      }
#pragma unroll
      for (int k = 0; k < kVec; ++k) {
        const int i = base + k * kThreads + int(threadIdx.x);
        if (i < n4)
          f(4 * i, v[k].x), f(4 * i + 1, v[k].y), f(4 * i + 2, v[k].z), f(4 * i + 3, v[k].w);
      }
    }
    done = 4 * n4;
  }
  for (int base = done; base < n; base += kThreads * kUnroll) {
    float v[kUnroll];
#pragma unroll
    for (int k = 0; k < kUnroll; ++k) {
      const int i = base + k * kThreads + int(threadIdx.x);
      v[k] = i < n ? l[i] : -INFINITY;
    }
#pragma unroll
    for (int k = 0; k < kUnroll; ++k) {
      const int i = base + k * kThreads + int(threadIdx.x);
      if (i < n) f(i, v[k]);
    }
  }
}

// In-place inclusive prefix sums of a[0, n) by the block, in a fixed order
// (contiguous chunks per thread, then warp and block offsets).
template <class T>
__device__ void block_scan(T* a, int n, T* tmp) {
  const int lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp;
  const int per = (n + kThreads - 1) / kThreads;
  const int b = min(n, int(threadIdx.x) * per), e = min(n, b + per);
  T s = 0;
  for (int i = b; i < e; ++i) s += a[i];
  T incl = s;
#pragma unroll
  for (int o = 1; o < kWarp; o <<= 1) {
    const T v = __shfl_up_sync(kAll, incl, o);
    if (lane >= o) incl += v;
  }
  __syncthreads();
  if (lane == kWarp - 1) tmp[warp] = incl;
  __syncthreads();
  if (warp == 0) {
    T v = tmp[lane];
#pragma unroll
    for (int o = 1; o < kWarp; o <<= 1) {
      const T u = __shfl_up_sync(kAll, v, o);
      if (lane >= o) v += u;
    }
    tmp[lane] = v;
  }
  __syncthreads();
  T excl = __shfl_up_sync(kAll, incl, 1);
  if (lane == 0) excl = 0;
  T run = (warp > 0 ? tmp[warp - 1] : T(0)) + excl;
  for (int i = b; i < e; ++i) a[i] = run += a[i];
  __syncthreads();
}

// Inclusive prefix sums of a[0, n): by one thread in index order when
// `serial` (the host's sequential sum, bit for bit), else block_scan.
__device__ void prefix_sums(double* a, int n, bool serial, double* tmp) {
  if (!serial) return block_scan(a, n, tmp);
  if (threadIdx.x == 0) {
    // Loads in batches of 8 so only the adds form the dependent chain.
    double s = 0.0;
    int i = 0;
    for (; i + 8 <= n; i += 8) {
      double v[8];
#pragma unroll
      for (int k = 0; k < 8; ++k) v[k] = a[i + k];
#pragma unroll
      for (int k = 0; k < 8; ++k) a[i + k] = s = s + v[k];
    }
    for (; i < n; ++i) a[i] = s = s + a[i];
  }
  __syncthreads();
}

// Bitonic sort of k[0, n) descending (n a power of two).
__device__ void sort_desc(uint64_t* k, int n) {
  for (int size = 2; size <= n; size <<= 1)
    for (int stride = size >> 1; stride > 0; stride >>= 1) {
      for (int i = threadIdx.x; i < n; i += kThreads) {
        const int j = i ^ stride;
        if (j <= i) continue;
        const uint64_t a = k[i], b = k[j];
        if ((i & size) == 0 ? a < b : a > b) k[i] = b, k[j] = a;
      }
      __syncthreads();
    }
}

// Pads k[n, pow2) with 0 and sorts; n <= kCap.
__device__ void sort_padded(uint64_t* k, int n) {
  int p = 2;
  while (p < n) p <<= 1;
  for (int j = n + int(threadIdx.x); j < p; j += kThreads) k[j] = 0;
  __syncthreads();
  sort_desc(k, p);
}

// Reads the atomicMin slot every thread has written to, and resets it.
__device__ int take_first(Shared& sh) {
  __syncthreads();
  const int v = sh.first;
  __syncthreads();
  if (threadIdx.x == 0) sh.first = INT_MAX;
  __syncthreads();
  return v;
}
__device__ int take_last(Shared& sh) {
  __syncthreads();
  const int v = sh.last;
  __syncthreads();
  if (threadIdx.x == 0) sh.last = -1;
  __syncthreads();
  return v;
}

// The token of one row (the same value in every thread), or -1: declined.
__device__ int sample_row(Shared& sh, double* tile_sum, double* tile_pre,
                          const float* __restrict__ l, int n, const SampleRow rp) {
  const int tid = threadIdx.x, lane = tid % kWarp, warp = tid / kWarp;
  const int n_tiles = (n + kTile - 1) / kTile;
  const bool top_k = rp.top_k > 0 && rp.top_k < n;
  const bool min_p = rp.min_p > 0.0f;
  const bool nucleus = !top_k && rp.top_p < 1.0f;
  if ((top_k && (rp.top_k == 1 || rp.top_k > kCap)) || !(rp.temperature > 0.0f) ||
      !(rp.top_p > 0.0f && rp.top_p <= 1.0f) || !(rp.min_p <= 1.0f) || !(rp.u >= 0.0 && rp.u < 1.0))
    return -1;

  // 1. The reference logit. All masked: the host returns its argmax without
  // a draw. +inf: every host weight is 0 (inf - inf is NaN). Neither is ours.
  float m = -INFINITY;
  for_each_logit(l, n, [&](int, float v) { m = fmaxf(m, v); });  // fmaxf skips NaN
  m = block_max(m, sh.red);
  if (!(m > -INFINITY) || m == INFINITY) return -1;
  const float inv_t = __fdiv_rn(1.0f, rp.temperature);
  auto x_of = [&](float li) { return __fmul_rn(__fsub_rn(li, m), inv_t); };
  auto in_c = [&](float w) { return min_p ? w >= rp.min_p : w > 0.0f; };

  // 2. One pass over the row: the per-tile sums of what is drawn from or
  // totalled (without min-p: every weight, as the host's float block sums;
  // with it: C's in float64), and the bin counts of the top-k / top-p
  // candidates. A weight is computed only where it counts: top-k needs none
  // here (w > 0 exactly when x >= -87), min-p none below its cut.
  // Each tile is a quarter warp's: lane j sums ids j, j+8, ..., j+248 in
  // turn, which is the host's sum_block lane for lane (8 float lanes, then
  // combined pairwise), so its block sums come out bit for bit.
  // Below x_cut a token weighs 0, or (min-p before any top-k) less than
  // min_p: exp_np is within 3e-7 of exp, logf within an ulp.
  const float x_cut = min_p && !top_k ? logf(rp.min_p) - 0.01f : -87.0f;
  // A token lighter than (1 - top_p) / 2 of the mean weight is never in the
  // nucleus (all of them weigh less than the 1 - top_p it leaves out: the
  // host's own argument for its eps); the mean is at least 1 / n.
  const float eps = nucleus ? float(0.49 * (1.0 - double(rp.top_p)) / double(n)) : 0.0f;
  // The bins span the x that can matter: down to exp_np's 0 for top-k, to
  // eps for top-p. Narrower bins, a tighter mass bound: it reaches top_p up
  // to about 0.99 (e^-(bin width) times the counted share of the mass).
  const float x_lo = nucleus ? fmaxf(-87.0f, logf(eps) - 0.01f) : -87.0f;
  const float scale = float(kBins) / -x_lo;
  for (int b = tid; b < kBins; b += kThreads) sh.count[b] = 0;
  if (tid == 0) sh.first = INT_MAX, sh.last = -1, sh.n_slots = 0;
  __syncthreads();
  for (int t0 = warp * 4; t0 < n_tiles; t0 += kWarps * 4) {
    const int t = t0 + lane / 8, j = lane % 8;
    float fsum = 0.0f;  // the host's lane sum
    double dsum = 0.0;  // C's weights (min-p)
    for (int m0 = 0; m0 < kTile / 8; m0 += kUnroll) {
      float v[kUnroll];
#pragma unroll
      for (int k = 0; k < kUnroll; ++k) {
        const int i = t * kTile + j + 8 * (m0 + k);
        v[k] = t < n_tiles && i < n ? l[i] : -INFINITY;
      }
#pragma unroll
      for (int k = 0; k < kUnroll; ++k) {
        const float x = x_of(v[k]);
        if (top_k) {
          if (x >= -87.0f) atomicAdd(&sh.count[bin_of(x, scale)], 1u);
          continue;
        }
        if (!(x >= x_cut)) continue;  // weighs 0 (or less than min_p): adds nothing
        const float w = exp_np(x);
        if (!min_p) fsum = __fadd_rn(fsum, w);
        if (in_c(w)) {
          if (min_p) dsum += double(w);
          if (nucleus && w >= eps) atomicAdd(&sh.count[bin_of(x, scale)], 1u);
        }
      }
    }
    if (top_k) continue;
    // The quarter's 8 lanes, pairwise as the host combines them.
    double s;
    if (min_p) {
      for (int o = 1; o < 8; o <<= 1) dsum += __shfl_xor_sync(kAll, dsum, o);
      s = dsum;
    } else {
      for (int o = 1; o < 8; o <<= 1) fsum = __fadd_rn(fsum, __shfl_xor_sync(kAll, fsum, o));
      s = double(fsum);
    }
    if (j == 0 && t < n_tiles) {
      tile_sum[t] = s;
      if (s > 0.0) atomicMax(&sh.last, t);
    }
  }
  __syncthreads();

  double target = 0.0;  // top-p without top-k: top_p * total
  if (!top_k) {
    for (int t = tid; t < n_tiles; t += kThreads) tile_pre[t] = tile_sum[t];
    __syncthreads();
    // Without min-p the host totals its block sums one after another.
    prefix_sums(tile_pre, n_tiles, !min_p, sh.warp_tmp);
    const double total = tile_pre[n_tiles - 1];
    if (nucleus) {
      target = double(rp.top_p) * total;
    } else {
      // 3a. Draw in id order: the tile (the host's draw_dense skips whole
      // blocks while cum + block <= r; the last block with weight takes
      // what rounding leaves), then its ids one by one on one thread, as
      // the host walks them.
      const double r = rp.u * total;
      const int last = sh.last;  // >= 0: the best token weighs 1
      for (int t = tid; t < n_tiles; t += kThreads)
        if (tile_sum[t] > 0.0 && (tile_pre[t] > r || t == last)) atomicMin(&sh.first, t);
      const int t = take_first(sh);
      if (tid < kTile) {
        const int i = t * kTile + tid;
        const float w = i < n ? exp_np(x_of(l[i])) : 0.0f;
        sh.cum[tid] = in_c(w) ? double(w) : 0.0;
      }
      __syncthreads();
      if (tid == 0) {
        double cum = t > 0 ? tile_pre[t - 1] : 0.0;
        int token = -1;
        for (int o = 0; o < kTile; ++o) {
          if (!(sh.cum[o] > 0.0)) continue;
          cum += sh.cum[o];
          token = t * kTile + o;
          if (cum > r) break;
        }
        sh.token = token;
      }
      __syncthreads();
      return sh.token;
    }
  }

  // 3b. The candidates: the bins that must hold the top-k, or the nucleus
  // (a lower bound of their mass reaches the target with a 1e-6 margin).
  if (tid == 0) sh.last = -1;  // free again (the draw below uses it)
  if (nucleus)
    for (int b = tid; b < kBins; b += kThreads)
      sh.floor_mass[b] = double(sh.count[b]) * bin_floor_weight(b, scale, eps);
  block_scan(sh.count, kBins, reinterpret_cast<uint32_t*>(sh.warp_tmp));
  if (nucleus) block_scan(sh.floor_mass, kBins, sh.warp_tmp);
  const double need = target * (1.0 + 1e-6);
  for (int b = tid; b < kBins; b += kThreads)
    if (top_k ? sh.count[b] >= uint32_t(rp.top_k) : sh.floor_mass[b] >= need)
      atomicMin(&sh.first, b);
  int b_max = take_first(sh);
  if (b_max == INT_MAX) b_max = kBins - 1;  // all of them
  if (sh.count[b_max] > uint32_t(kCap)) return -1;

  // Gather them (x and the bin first: most tokens need no exp) and sort best
  // first; slots come in any order, the sort makes it the same every time.
  for_each_logit(l, n, [&](int i, float li) {
    const float x = x_of(li);
    if (!(x >= x_cut) || bin_of(x, scale) > b_max) return;
    const float w = top_k ? 1.0f : exp_np(x);  // top-k: x >= -87 is w > 0
    if (top_k || (in_c(w) && w >= eps)) {
      const int slot = atomicAdd(&sh.n_slots, 1);
      if (slot < kCap) sh.keys[slot] = rank_key(li, i);  // always: the same test counted them
    }
  });
  __syncthreads();
  const int n_cand = min(sh.n_slots, kCap);
  sort_padded(sh.keys, n_cand);

  // Their weights (min-p after top-k: a zero weight drops a token from
  // every sum and from the draw), cumulative in the host's order.
  const int n_keep = top_k ? min(rp.top_k, n_cand) : n_cand;
  auto weight_at = [&](int j) {
    const float w = exp_np(x_of(rank_logit(sh.keys[j])));
    return min_p && !(w >= rp.min_p) ? 0.0f : w;
  };
  for (int j = tid; j < n_keep; j += kThreads) sh.cum[j] = double(weight_at(j));
  __syncthreads();
  prefix_sums(sh.cum, n_keep, n_keep <= kSerialMax, sh.warp_tmp);

  // top-p: the first prefix reaching the target.
  int keep = n_keep;
  if (rp.top_p < 1.0f) {
    const double tgt = top_k ? double(rp.top_p) * sh.cum[n_keep - 1] : target;
    for (int j = tid; j < n_keep; j += kThreads)
      if (sh.cum[j] >= tgt) atomicMin(&sh.first, j);
    const int f = take_first(sh);
    if (f != INT_MAX)
      keep = f + 1;
    else if (!top_k)
      return -1;  // cannot happen (the bound has a margin); the host knows
  }

  // The nucleus is drawn in id order: re-key, sort, sum again.
  if (!top_k) {
    for (int j = tid; j < keep; j += kThreads) {
      const uint64_t k = sh.keys[j];
      sh.keys[j] = id_key(rank_logit(k), rank_id(k));
    }
    __syncthreads();
    sort_padded(sh.keys, keep);
    for (int j = tid; j < keep; j += kThreads)
      sh.cum[j] = double(exp_np(x_of(logit_of_id_key(sh.keys[j]))));
    __syncthreads();
    prefix_sums(sh.cum, keep, keep <= kSerialMax, sh.warp_tmp);
  }

  // 4. The draw over [0, keep): the first with weight whose sum exceeds
  // r, else the last with weight.
  const double r = rp.u * sh.cum[keep - 1];
  for (int j = tid; j < keep; j += kThreads) {
    const bool weighs = top_k ? weight_at(j) > 0.0f : true;  // the nucleus is all in C
    if (weighs && sh.cum[j] > r) atomicMin(&sh.first, j);
    if (weighs) atomicMax(&sh.last, j);
  }
  int j = take_first(sh);
  const int last = take_last(sh);
  if (j == INT_MAX) j = last;
  if (j < 0) return -1;  // nothing weighs: cannot happen (the best token weighs 1)
  return top_k ? rank_id(sh.keys[j]) : id_of_id_key(sh.keys[j]);
}

__global__ void __launch_bounds__(kThreads, 1)
    sample_kernel(const float* __restrict__ logits, int n, const SampleRow* __restrict__ rows,
                  int32_t* __restrict__ out) {
  extern __shared__ __align__(16) unsigned char smem[];
  Shared& sh = *reinterpret_cast<Shared*>(smem);
  const int n_tiles = (n + kTile - 1) / kTile;
  double* tile_sum = reinterpret_cast<double*>(smem + kSharedHead);
  const SampleRow rp = rows[blockIdx.x];
  const int token =
      sample_row(sh, tile_sum, tile_sum + n_tiles, logits + int64_t(rp.row) * n, n, rp);
  if (threadIdx.x == 0) out[blockIdx.x] = token;
}

__global__ void exp_kernel(const float* __restrict__ x, float* __restrict__ y, int64_t n) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) y[i] = exp_np(x[i]);
}

}  // namespace

void sample_rows(const float* logits, int64_t n_vocab, const SampleRow* rows, int32_t n_rows,
                 int32_t* out, cudaStream_t stream) {
  if (n_rows <= 0) return;
  if (n_vocab <= 0 || n_vocab > INT_MAX / 2) {
    std::fprintf(stderr, "kiln: sample_rows: n_vocab %lld out of range\n", (long long)n_vocab);
    std::abort();
  }
  const int n_tiles = int((n_vocab + kTile - 1) / kTile);
  const size_t smem = kSharedHead + size_t(n_tiles) * 2 * sizeof(double);
  // ~74 KB for a 128k vocabulary: above the 48 KB default, within every
  // target's opt-in limit (99 KB on sm_89 / sm_120, 227 KB on sm_90). Raised
  // once per device, not per launch (a host call that costs as much as
  // sampling a few rows).
  {
    static std::mutex mu;
    static size_t allowed[64] = {};
    int dev = 0;
    CUDA_CHECK(cudaGetDevice(&dev));
    std::lock_guard<std::mutex> lock(mu);
    if (dev >= 64 || allowed[dev] < smem) {
      CUDA_CHECK(cudaFuncSetAttribute(sample_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                      int(smem)));
      if (dev < 64) allowed[dev] = smem;
    }
  }
  sample_kernel<<<unsigned(n_rows), kThreads, smem, stream>>>(logits, int(n_vocab), rows, out);
  CUDA_CHECK_LAUNCH();
}

void sample_prime() {
  cudaFuncAttributes attr{};
  (void)cudaFuncGetAttributes(&attr, sample_kernel);
  (void)cudaFuncGetAttributes(&attr, exp_kernel);
  (void)cudaGetLastError();
}

void sample_exp_nonpos(const float* x, float* y, int64_t n, cudaStream_t stream) {
  if (n <= 0) return;
  exp_kernel<<<unsigned((n + 255) / 256), 256, 0, stream>>>(x, y, n);
  CUDA_CHECK_LAUNCH();
}

}  // namespace kiln::cuda
