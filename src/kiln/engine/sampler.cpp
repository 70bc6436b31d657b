// Sampler implementation. Cost per step is a pass or two over the vocabulary
// (150k logits, vectorized); everything after truncation touches only the
// surviving candidates. No std distributions, no libm in any value that decides
// a token, and a total order (logit desc, id asc) on candidates, so the chosen
// token depends only on the logits, the params and the seed.
#include "kiln/engine/sampler.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <limits>

#include "kiln/core/assert.h"

// Weights must be the same bits everywhere: no fused multiply-add contraction
// (g++ in ISO mode already compiles with -ffp-contract=off).
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#endif

namespace kiln::engine {
namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();
// Weights are summed in blocks of this many tokens: the draw finds its block
// from the block sums, then scans one block, instead of a serial prefix sum
// over the whole vocabulary.
constexpr int32_t kBlock = 256;

// Four floats through GCC/Clang vector extensions: the native width of the
// x86-64 baseline (SSE2) and of NEON, so one binary runs anywhere; plain IEEE
// ops, so a lane computes exactly what the scalar code computes.
typedef float f32x4 __attribute__((vector_size(16)));
typedef int32_t i32x4 __attribute__((vector_size(16)));

inline f32x4 load4(const float* p) {
  f32x4 v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
inline void store4(float* p, f32x4 v) {
  std::memcpy(p, &v, sizeof v);
}
inline f32x4 splat(float x) {
  return f32x4{} + x;
}
inline bool any(i32x4 m) {
  return ((m[0] | m[1]) | (m[2] | m[3])) != 0;
}

// exp(x) for x <= 0: x = n*ln2 + r with |r| <= ln2/2, e^r by a degree-7
// polynomial (Cephes expf's minimax coefficients), 2^n built in the exponent
// bits. -inf, NaN and x < -87 (exp < 1.7e-38) give exactly 0.
inline float exp_np(float x) {
  const bool keep = x >= -87.0f;
  x = keep ? x : 0.0f;
  x = x < 0.0f ? x : 0.0f;
  constexpr float kMagic = 12582912.0f;  // 1.5 * 2^23: t's low mantissa bits hold round(x/ln2)
  const float t = x * 1.44269504088896341f + kMagic;
  const float n = t - kMagic;
  const int32_t ni = std::bit_cast<int32_t>(t) - std::bit_cast<int32_t>(kMagic);
  float r = x - n * 0.693359375f;  // ln2 split in two so n * hi is exact
  r = r + n * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * (r * r) + r + 1.0f;
  const float scale = std::bit_cast<float>((ni + 127) << 23);  // n in [-126, 0]
  return keep ? p * scale : 0.0f;
}

// exp_np on four lanes, operation for operation.
inline f32x4 exp_np4(f32x4 x) {
  const f32x4 zero = splat(0.0f);
  const i32x4 keep = x >= splat(-87.0f);
  x = keep ? x : zero;
  x = x < zero ? x : zero;
  const f32x4 magic = splat(12582912.0f);
  const f32x4 t = x * splat(1.44269504088896341f) + magic;
  const f32x4 n = t - magic;
  const i32x4 ni = reinterpret_cast<i32x4>(t) - reinterpret_cast<i32x4>(magic);
  f32x4 r = x - n * splat(0.693359375f);
  r = r + n * splat(2.12194440e-4f);
  f32x4 p = splat(1.9875691500e-4f);
  p = p * r + splat(1.3981999507e-3f);
  p = p * r + splat(8.3334519073e-3f);
  p = p * r + splat(4.1665795894e-2f);
  p = p * r + splat(1.6666665459e-1f);
  p = p * r + splat(5.0000001201e-1f);
  p = p * (r * r) + r + splat(1.0f);
  const f32x4 scale = reinterpret_cast<f32x4>((ni + 127) << 23);
  return keep ? p * scale : zero;
}

// The sampling weight of a logit: exp((logit - max) * inv_temp).
inline float weight(float logit, float max_logit, float inv_temp) {
  return exp_np((logit - max_logit) * inv_temp);
}
void weights_into(const float* l, int32_t n, float max_logit, float inv_temp, float* w) {
  int32_t i = 0;
  const f32x4 m = splat(max_logit), it = splat(inv_temp);
  for (; i + 4 <= n; i += 4) store4(w + i, exp_np4((load4(l + i) - m) * it));
  for (; i < n; ++i) w[i] = weight(l[i], max_logit, inv_temp);
}

// Largest value of v[0..n); NaN ignored; -inf when there is none. Four
// independent accumulators keep the compare-select chains from serializing.
float max_value(const float* v, int32_t n) {
  f32x4 acc[4];
  for (auto& a : acc) a = splat(kNegInf);
  int32_t i = 0;
  for (; i + 16 <= n; i += 16)
    for (int k = 0; k < 4; ++k) {
      const f32x4 x = load4(v + i + 4 * k);
      acc[k] = x > acc[k] ? x : acc[k];
    }
  float m = kNegInf;
  for (; i < n; ++i) m = v[i] > m ? v[i] : m;
  for (const auto& a : acc)
    for (int j = 0; j < 4; ++j) m = a[j] > m ? a[j] : m;
  return m;
}

// Sum of w[0..n) in a fixed order: 8 interleaved float lanes, combined
// pairwise, widened to double.
double sum_block(const float* w, int32_t n) {
  f32x4 a = splat(0.0f), b = a;  // lanes 0-3 and 4-7
  int32_t i = 0;
  for (; i + 8 <= n; i += 8) {
    a += load4(w + i);
    b += load4(w + i + 4);
  }
  for (int j = 0; i < n; ++i, ++j) {
    if (j < 4)
      a[j] += w[i];
    else
      b[j - 4] += w[i];
  }
  return double(((a[0] + a[1]) + (a[2] + a[3])) + ((b[0] + b[1]) + (b[2] + b[3])));
}

template <class T>
inline bool better(const T& a, const T& b) {
  return a.logit > b.logit || (a.logit == b.logit && a.id < b.id);
}

// The k best of logits[0..n) by (logit desc, id asc), sorted best first,
// into `out` (T has id and logit first); -inf and NaN are never candidates.
template <class T>
void top_k_into(const float* logits, int32_t n, int32_t k, std::vector<T>& out) {
  out.clear();
  if (k <= 0) return;
  if (int64_t(k) * 8 > n) {
    // Most of the vocabulary survives: select in one pass over everything.
    for (int32_t i = 0; i < n; ++i)
      if (logits[i] > kNegInf) out.push_back(T{i, logits[i]});
    if (out.size() > size_t(k)) {
      std::nth_element(out.begin(), out.begin() + k, out.end(), better<T>);
      out.resize(size_t(k));
    }
  } else {
    // A heap of the k best so far, worst on top. Ids arrive in increasing
    // order, so a later token with the top's logit can never beat it: blocks
    // of 32 with nothing above the top's logit are skipped with a vector test.
    out.reserve(size_t(k));
    float floor = kNegInf;  // the worst kept logit once the heap is full
    auto offer = [&](int32_t i) {
      const float v = logits[i];
      if (!(v > floor)) return;  // also drops -inf and NaN
      if (out.size() < size_t(k)) {
        out.push_back(T{i, v});
        std::push_heap(out.begin(), out.end(), better<T>);
      } else {
        std::pop_heap(out.begin(), out.end(), better<T>);
        out.back() = T{i, v};
        std::push_heap(out.begin(), out.end(), better<T>);
      }
      if (out.size() == size_t(k)) floor = out.front().logit;
    };
    int32_t i = 0;
    for (; i + 32 <= n; i += 32) {
      const f32x4 f = splat(floor);
      i32x4 hit = load4(logits + i) > f;
      for (int32_t j = 4; j < 32; j += 4) hit |= load4(logits + i + j) > f;
      if (!any(hit)) continue;
      for (int32_t j = i; j < i + 32; ++j) offer(j);
    }
    for (; i < n; ++i) offer(i);
  }
  std::sort(out.begin(), out.end(), better<T>);
}

struct TokenLogit {
  int32_t id;
  float logit;
};

bool finite(float v) {
  return std::isfinite(v);
}

}  // namespace

float exp_nonpos(float x) {
  return exp_np(x);
}

void exp_nonpos_n(const float* x, float* y, int64_t n) {
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) store4(y + i, exp_np4(load4(x + i)));
  for (; i < n; ++i) y[i] = exp_np(x[i]);
}

int32_t argmax(const float* v, int32_t n) {
  // One pass: per lane of four accumulators the best value and its first
  // index (strict `>` keeps the earliest), then the lanes are merged by
  // (value desc, index asc), then the scalar tail (later ids: strictly greater wins).
  f32x4 best[4];
  i32x4 best_i[4], idx[4];
  for (int k = 0; k < 4; ++k) {
    best[k] = splat(kNegInf);
    best_i[k] = i32x4{} - 1;
    idx[k] = i32x4{0, 1, 2, 3} + 4 * k;
  }
  int32_t i = 0;
  for (; i + 16 <= n; i += 16)
    for (int k = 0; k < 4; ++k) {
      const f32x4 x = load4(v + i + 4 * k);
      const i32x4 up = x > best[k];
      best[k] = up ? x : best[k];
      best_i[k] = up ? idx[k] : best_i[k];
      idx[k] += 16;
    }
  float m = kNegInf;
  int32_t mi = -1;
  for (int k = 0; k < 4; ++k)
    for (int j = 0; j < 4; ++j) {
      if (best_i[k][j] < 0) continue;
      if (best[k][j] > m || (best[k][j] == m && best_i[k][j] < mi)) {
        m = best[k][j];
        mi = best_i[k][j];
      }
    }
  for (; i < n; ++i)
    if (v[i] > m) {
      m = v[i];
      mi = i;
    }
  if (mi >= 0) return mi;
  for (int32_t j = 0; j < n; ++j)  // nothing above -inf: the first -inf, else 0 (all NaN)
    if (v[j] == kNegInf) return j;
  return 0;
}

Status validate(const SamplingParams& p, int32_t n_vocab) {
  auto bad = [](std::string msg) { return Status(make_error(std::move(msg))); };
  if (!finite(p.temperature) || p.temperature < 0.0f)
    return bad("temperature must be a number >= 0 (0 = greedy), got " +
               std::to_string(p.temperature));
  if (p.top_k < -1)
    return bad("top_k must be >= 0 (0 or -1 = off), got " + std::to_string(p.top_k));
  if (!(p.top_p > 0.0f && p.top_p <= 1.0f))
    return bad("top_p must be in (0, 1] (1 = off), got " + std::to_string(p.top_p));
  if (!(p.min_p >= 0.0f && p.min_p <= 1.0f))
    return bad("min_p must be in [0, 1] (0 = off), got " + std::to_string(p.min_p));
  if (!finite(p.repetition_penalty) || p.repetition_penalty <= 0.0f)
    return bad("repetition_penalty must be > 0 (1 = off), got " +
               std::to_string(p.repetition_penalty));
  if (p.penalty_last_n < -1)
    return bad("penalty_last_n must be >= -1 (0 = none, -1 = whole context), got " +
               std::to_string(p.penalty_last_n));
  if (!(p.presence_penalty >= -2.0f && p.presence_penalty <= 2.0f))
    return bad("presence_penalty must be in [-2, 2], got " + std::to_string(p.presence_penalty));
  if (!(p.frequency_penalty >= -2.0f && p.frequency_penalty <= 2.0f))
    return bad("frequency_penalty must be in [-2, 2], got " + std::to_string(p.frequency_penalty));
  for (const auto& [id, bias] : p.logit_bias) {
    if (id < 0 || (n_vocab > 0 && id >= n_vocab))
      return bad("logit_bias: token id " + std::to_string(id) + " is outside the vocabulary [0, " +
                 (n_vocab > 0 ? std::to_string(n_vocab) : std::string("n_vocab")) + ")");
    if (!(bias >= -100.0f && bias <= 100.0f))
      return bad("logit_bias: the bias of token " + std::to_string(id) +
                 " must be in [-100, 100], got " + std::to_string(bias));
  }
  return Status::success();
}

// --- Rng -------------------------------------------------------------------

uint64_t Rng::splitmix64(uint64_t& state) {
  uint64_t z = (state += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

Rng::Rng(uint64_t seed) {
  // splitmix64 spreads any seed (0 included) over the 256-bit state, which
  // xoshiro needs to be not all zero.
  for (auto& s : s_) s = splitmix64(seed);
}

uint64_t Rng::next_u64() {
  const uint64_t result = std::rotl(s_[1] * 5, 7) * 9;
  const uint64_t t = s_[1] << 17;
  s_[2] ^= s_[0];
  s_[3] ^= s_[1];
  s_[1] ^= s_[2];
  s_[0] ^= s_[3];
  s_[2] ^= t;
  s_[3] = std::rotl(s_[3], 45);
  return result;
}

// --- logprobs --------------------------------------------------------------

Logprobs compute_logprobs(std::span<const float> logits, int32_t n_vocab, int32_t chosen,
                          int32_t n_top) {
  KILN_ASSERT(n_vocab > 0 && logits.size() >= size_t(n_vocab));
  const float* l = logits.data();
  const float m = max_value(l, n_vocab);
  // log-sum-exp around the max, in blocks so float sums stay short.
  float w[kBlock];
  double sum = 0.0;
  for (int32_t b = 0; b < n_vocab; b += kBlock) {
    const int32_t len = std::min(kBlock, n_vocab - b);
    weights_into(l + b, len, m, 1.0f, w);
    sum += sum_block(w, len);
  }
  const double lse = double(m) + std::log(sum);

  Logprobs out;
  if (chosen >= 0 && chosen < n_vocab) out.chosen = {chosen, float(double(l[chosen]) - lse)};
  std::vector<TokenLogit> top;
  top_k_into(l, n_vocab, std::min(n_top, n_vocab), top);
  out.top.reserve(top.size());
  for (const auto& t : top) out.top.push_back({t.id, float(double(t.logit) - lse)});
  return out;
}

// --- Sampler ---------------------------------------------------------------

Sampler::Sampler(SamplingParams params, std::span<const int32_t> eog_ids)
    : params_(std::move(params)), rng_(params_.seed), eog_ids_(eog_ids.begin(), eog_ids.end()) {
  KILN_ASSERT_MSG(validate(params_).ok(), "Sampler built from unvalidated SamplingParams");
}

void Sampler::push_context(int32_t token) {
  if (params_.repetition_penalty == 1.0f || params_.penalty_last_n == 0) return;
  ++window_counts_[token];
  if (params_.penalty_last_n < 0) return;  // whole context: counts only, nothing leaves
  window_.push_back(token);
  if (window_.size() > size_t(params_.penalty_last_n)) {
    const int32_t old = window_.front();
    window_.pop_front();
    auto it = window_counts_.find(old);
    if (--it->second == 0) window_counts_.erase(it);
  }
}

void Sampler::add_context(std::span<const int32_t> tokens) {
  for (int32_t t : tokens) push_context(t);
}

bool Sampler::plain_argmax() const {
  const auto& p = params_;
  return (p.greedy() || p.top_k == 1) && p.repetition_penalty == 1.0f && p.presence_penalty == 0.0f &&
         p.frequency_penalty == 0.0f && !(p.ignore_eos && !eog_ids_.empty()) && p.logit_bias.empty();
}

bool Sampler::device_samplable() const {
  const auto& p = params_;
  // repetition_penalty over an empty window (penalty_last_n 0) changes nothing.
  const bool rep = p.repetition_penalty != 1.0f && p.penalty_last_n != 0;
  return !p.greedy() && p.top_k != 1 && !rep && p.presence_penalty == 0.0f &&
         p.frequency_penalty == 0.0f && !(p.ignore_eos && !eog_ids_.empty()) &&
         p.logit_bias.empty();
}

double Sampler::peek_uniform() const {
  Rng copy = rng_;
  return copy.next_double();
}

void Sampler::accept_drawn(int32_t token) {
  rng_.next_u64();  // the draw peek_uniform() showed (next_double is one next_u64)
  accept(token);
}

void Sampler::accept(int32_t token) {
  ++n_generated_;
  if (params_.presence_penalty != 0.0f || params_.frequency_penalty != 0.0f) ++gen_counts_[token];
  push_context(token);
}

// Returns the logits the rest of the pipeline sees: `raw` itself when nothing
// changes them (the common case costs no copy), else a patched copy. Each
// adjustment touches only the tokens it names; the hash maps' iteration order
// does not matter because every token is changed independently.
const float* Sampler::apply_penalties(const float* raw, int32_t n_vocab) {
  const auto& p = params_;
  const bool rep = p.repetition_penalty != 1.0f && !window_counts_.empty();
  const bool pres_freq =
      (p.presence_penalty != 0.0f || p.frequency_penalty != 0.0f) && !gen_counts_.empty();
  const bool ban = p.ignore_eos && !eog_ids_.empty();
  if (!rep && !pres_freq && !ban && p.logit_bias.empty()) return raw;

  adjusted_.assign(raw, raw + n_vocab);
  float* l = adjusted_.data();
  if (rep) {
    for (const auto& [id, count] : window_counts_) {
      if (id < 0 || id >= n_vocab) continue;
      l[id] = l[id] > 0.0f ? l[id] / p.repetition_penalty : l[id] * p.repetition_penalty;
    }
  }
  if (pres_freq) {
    for (const auto& [id, count] : gen_counts_) {
      if (id < 0 || id >= n_vocab) continue;
      l[id] -= p.presence_penalty + p.frequency_penalty * float(count);
    }
  }
  for (const auto& [id, bias] : p.logit_bias)
    if (id >= 0 && id < n_vocab) l[id] += bias;
  if (ban)
    for (int32_t id : eog_ids_)
      if (id >= 0 && id < n_vocab) l[id] = kNegInf;
  return l;
}

std::span<const float> Sampler::adjusted_logits(std::span<const float> logits, int32_t n_vocab) {
  KILN_ASSERT(n_vocab > 0 && logits.size() >= size_t(n_vocab));
  return {apply_penalties(logits.data(), n_vocab), size_t(n_vocab)};
}

// Draws from weights_[0 .. n_vocab) (the whole vocabulary, untruncated).
int32_t Sampler::draw_dense(int32_t n_vocab, double u) {
  const float* w = weights_.data();
  block_sums_.resize(size_t((n_vocab + kBlock - 1) / kBlock));
  double total = 0.0;
  size_t last_block = 0;  // the last block with any weight takes what rounding leaves
  for (size_t bi = 0; bi < block_sums_.size(); ++bi) {
    const int32_t b = int32_t(bi) * kBlock;
    block_sums_[bi] = sum_block(w + b, std::min(kBlock, n_vocab - b));
    total += block_sums_[bi];
    if (block_sums_[bi] > 0.0) last_block = bi;
  }
  const double r = u * total;
  double cum = 0.0;
  for (size_t bi = 0; bi <= last_block; ++bi) {
    const double bs = block_sums_[bi];
    if (bs <= 0.0) continue;
    if (cum + bs <= r && bi != last_block) {
      cum += bs;
      continue;
    }
    // The token is in this block. Its sequential sum can differ from the
    // lane sum in the last bits, so fall back to its last token with weight.
    const int32_t b = int32_t(bi) * kBlock, e = std::min(b + kBlock, n_vocab);
    int32_t last = -1;
    for (int32_t i = b; i < e; ++i) {
      if (w[i] <= 0.0f) continue;
      cum += double(w[i]);
      last = i;
      if (cum > r) return i;
    }
    KILN_ASSERT(last >= 0);
    return last;
  }
  KILN_ASSERT_MSG(false, "no token has weight (the max logit always has weight 1)");
  return 0;
}

// Top-p over unsorted candidates_: moves the smallest set of best tokens whose
// weight reaches `target` to the front and returns its size. A quickselect
// on mass (expected O(n), any distribution) with our own partition, so the
// resulting order, and hence the draw, is the same with every standard library.
size_t Sampler::nucleus(double target) {
  auto& c = candidates_;
  size_t lo = 0, hi = c.size();
  double acc = 0.0;  // weight of c[0, lo), all of it in the nucleus
  for (int rounds = 0; hi - lo > 16; ++rounds) {
    if (rounds > 64) break;  // pathological pivots: finish by sorting
    // Median of three as pivot.
    const size_t mid = lo + (hi - lo) / 2;
    size_t pi = mid;
    const Candidate &a = c[lo], &b = c[mid], &z = c[hi - 1];
    if (better(a, b) != better(a, z))
      pi = lo;
    else if (better(b, a) != better(b, z))
      pi = mid;
    else
      pi = hi - 1;
    const Candidate pivot = c[pi];
    // Lomuto: the tokens better than the pivot to the front.
    size_t s = lo;
    double mass = 0.0;
    for (size_t i = lo; i < hi; ++i) {
      if (better(c[i], pivot)) {
        mass += double(c[i].weight);
        if (s == pi) pi = i;  // the pivot is about to move to i
        std::swap(c[i], c[s++]);
      }
    }
    if (acc + mass >= target) {
      hi = s;
      continue;
    }
    acc += mass;
    std::swap(c[s], c[pi]);  // the pivot is the best of the rest
    acc += double(c[s].weight);
    if (acc >= target) return s + 1;
    lo = s + 1;
  }
  std::sort(c.begin() + ptrdiff_t(lo), c.begin() + ptrdiff_t(hi), better<Candidate>);
  for (size_t i = lo; i < hi; ++i) {
    acc += double(c[i].weight);
    if (acc >= target) return i + 1;
  }
  return hi;  // rounding kept the sum just under target: the range ends the set
}

// Draws from the nucleus candidates_[0, n_keep) in id order, not in the order
// nucleus() left it in: that order is an artifact of the partitioning, while
// id order is canonical, so another implementation (the GPU sampler,
// backend/cuda/kernels/sample.cu) can reproduce the draw exactly. The nucleus
// is every candidate at least as good as its worst member (better() is a
// total order), so filtering the id-ordered copy by_id_ recovers it in
// O(candidates), with no sort.
int32_t Sampler::draw_nucleus(size_t n_keep, double u) {
  KILN_ASSERT(n_keep > 0 && n_keep <= candidates_.size());
  const Candidate worst = *std::max_element(
      candidates_.begin(), candidates_.begin() + ptrdiff_t(n_keep), better<Candidate>);
  std::erase_if(by_id_, [&](const Candidate& c) { return better(worst, c); });
  candidates_.swap(by_id_);
  return draw_candidates(candidates_.size(), u);
}

// Draws from candidates_[0, n_keep) in their order: the first whose
// cumulative weight exceeds u * total (rounding can leave u * total at or
// above the last sum: then the last token with weight).
int32_t Sampler::draw_candidates(size_t n_keep, double u) {
  const auto& c = candidates_;
  KILN_ASSERT(n_keep > 0 && n_keep <= c.size());
  double total = 0.0;
  for (size_t i = 0; i < n_keep; ++i) total += double(c[i].weight);
  const double r = u * total;
  double cum = 0.0;
  size_t last = 0;
  for (size_t i = 0; i < n_keep; ++i) {
    if (c[i].weight <= 0.0f) continue;
    cum += double(c[i].weight);
    last = i;
    if (cum > r) return c[i].id;
  }
  return c[last].id;
}

int32_t Sampler::sample(std::span<const float> logits, int32_t n_vocab) {
  KILN_ASSERT(n_vocab > 0 && logits.size() >= size_t(n_vocab));
  bool drew = false;
  const int32_t id = choose(logits.data(), n_vocab, peek_uniform(), &drew);
  if (drew)
    accept_drawn(id);
  else
    accept(id);
  return id;
}

int32_t Sampler::choose(std::span<const float> logits, int32_t n_vocab, double u) {
  KILN_ASSERT(n_vocab > 0 && logits.size() >= size_t(n_vocab));
  bool drew = false;
  return choose(logits.data(), n_vocab, u, &drew);
}

int32_t Sampler::choose(const float* raw, int32_t n_vocab, double u, bool* drew) {
  const float* l = apply_penalties(raw, n_vocab);
  const auto& p = params_;
  *drew = false;
  if (p.greedy() || p.top_k == 1) return argmax(l, n_vocab);

  // top-k, then the reference for temperature and min-p: the best logit.
  bool dense = true, sorted = false;
  if (p.top_k > 0 && p.top_k < n_vocab) {
    top_k_into(l, n_vocab, p.top_k, candidates_);
    dense = false;
    sorted = true;
  }
  const float max_logit =
      dense ? max_value(l, n_vocab) : (candidates_.empty() ? kNegInf : candidates_[0].logit);
  if (!(max_logit > kNegInf))
    return argmax(l, n_vocab);  // every token masked: nothing to draw from

  // Temperature: weights relative to the best token (which gets exactly 1).
  const float inv_temp = 1.0f / p.temperature;
  if (dense) {
    weights_.resize(size_t(n_vocab));
    weights_into(l, n_vocab, max_logit, inv_temp, weights_.data());
  } else {
    for (auto& c : candidates_) c.weight = weight(c.logit, max_logit, inv_temp);
  }

  // min-p: weight = p_i / p_max, so the test is on the weight itself.
  if (p.min_p > 0.0f) {
    if (dense) {
      candidates_.clear();
      for (int32_t i = 0; i < n_vocab; ++i)
        if (weights_[size_t(i)] >= p.min_p) candidates_.push_back({i, l[i], weights_[size_t(i)]});
      dense = false;
    } else {
      std::erase_if(candidates_, [&](const Candidate& c) { return !(c.weight >= p.min_p); });
    }
  }

  *drew = true;
  if (dense && p.top_p >= 1.0f) return draw_dense(n_vocab, u);
  if (dense) {
    // top-p over the whole vocabulary. Tokens lighter than a share
    // eps = (1 - top_p) * total / n_vocab can never be in the nucleus: all of
    // them together weigh less than the (1 - top_p) it leaves out. Dropping
    // them first leaves few candidates for a peaked distribution.
    double total = 0.0;
    for (int32_t b = 0; b < n_vocab; b += kBlock)
      total += sum_block(weights_.data() + b, std::min(kBlock, n_vocab - b));
    const float eps = float(0.5 * (1.0 - double(p.top_p)) * total / double(n_vocab));
    candidates_.clear();
    for (int32_t i = 0; i < n_vocab; ++i) {
      const float w = weights_[size_t(i)];
      if (w > 0.0f && w >= eps) candidates_.push_back({i, l[i], w});
    }
    by_id_.assign(candidates_.begin(), candidates_.end());
    return draw_nucleus(nucleus(double(p.top_p) * total), u);
  }
  size_t keep = candidates_.size();
  if (p.top_p < 1.0f) {
    double total = 0.0;
    for (const auto& c : candidates_) total += double(c.weight);
    const double target = double(p.top_p) * total;
    if (!sorted) {  // min-p left them in id order
      by_id_.assign(candidates_.begin(), candidates_.end());
      return draw_nucleus(nucleus(target), u);
    }
    double cum = 0.0;
    for (size_t i = 0; i < candidates_.size(); ++i)
      if ((cum += double(candidates_[i].weight)) >= target) {
        keep = i + 1;
        break;
      }
  }
  return draw_candidates(keep, u);
}

}  // namespace kiln::engine
