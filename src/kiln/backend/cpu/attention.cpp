// Paged causal attention (see attention.h). Two numerics: the reference
// accumulates dot products, softmax sums and the V mix in double; the fast
// path uses float SIMD kernels with a fixed reduction order
// (attention_kernels.h).
#include "kiln/backend/cpu/attention.h"

#include <algorithm>
#include <cmath>

#include "kiln/backend/cpu/attention_kernels.h"
#include "kiln/backend/cpu/kv_cache.h"
#include "kiln/core/assert.h"
#include "kiln/core/threadpool.h"
#include "kiln/model/hparams.h"

namespace kiln::cpu {
namespace {

double dot_f64(const float* a, const float* b, int64_t n) {
  double s = 0.0;
  for (int64_t i = 0; i < n; ++i) s += double(a[i]) * double(b[i]);
  return s;
}

struct Task {
  const AttentionArgs& a;
  AttentionScratch& s;

  void run(int64_t task, int thread) const {
    const model::HParams& hp = *a.hp;
    const KvCache& kv = *a.kv;
    const int64_t n_kv = hp.n_head_kv;
    const int64_t r = task / n_kv;  // index into rows / out
    const int64_t g = task % n_kv;  // KV head
    const BatchToken& tok = a.batch->tokens[size_t(a.rows[r])];
    const auto& table = a.batch->seqs[size_t(tok.seq)].block_table;
    const int64_t n_ctx = int64_t(tok.pos) + 1;
    const int64_t bs = kv.config().block_size;
    const int64_t hd_k = hp.head_dim_k, hd_v = hp.head_dim_v, n_group = hp.n_group();
    const KvType type = kv.config().type;
    const bool f32_cache = type == KvType::f32;
    const float scale = float(1.0 / std::sqrt(double(hd_k)));
    AttentionScratch::PerThread& t = s.threads[size_t(thread)];
    KILN_ASSERT(n_ctx <= s.max_ctx);

    const float* q = a.q + int64_t(a.rows[r]) * hp.n_q() + g * n_group * hd_k;  // [n_group, hd_k]
    float* scores = t.scores.data();                                            // [n_group, n_ctx]

    // Scores q . k for every cached position, block by block. The fast path
    // reads f32 / f16 rows in place; other cache types are widened first.
    const AttentionKernels& kern = *a.kernels;
    for (int64_t j0 = 0; j0 < n_ctx; j0 += bs) {
      const uint8_t* base = kv.k_head(a.layer, table[size_t(j0 / bs)], g);
      const int64_t n = std::min(bs, n_ctx - j0);
      for (int64_t slot = 0; slot < n; ++slot) {
        const uint8_t* row = base + size_t(slot) * kv.k_row_bytes();
        float* sc = scores + j0 + slot;
        if (!a.reference && type == KvType::f16) {
          const auto* k = reinterpret_cast<const uint16_t*>(row);
          for (int64_t h = 0; h < n_group; ++h)
            sc[h * n_ctx] = kern.dot_f16(q + h * hd_k, k, hd_k) * scale;
          continue;
        }
        const float* k = reinterpret_cast<const float*>(row);
        if (!f32_cache) {
          kv_load_row(type, row, t.k_row.data(), hd_k);
          k = t.k_row.data();
        }
        for (int64_t h = 0; h < n_group; ++h) {
          const float* qh = q + h * hd_k;
          sc[h * n_ctx] = a.reference ? float(dot_f64(qh, k, hd_k) * double(scale))
                                      : kern.dot_f32(qh, k, hd_k) * scale;
        }
      }
    }

    // Softmax weights, max-subtracted so exp never overflows; the
    // normalization is applied to the mixed output (one divide per element).
    float* out = a.out + r * hp.n_attn_out() + g * n_group * hd_v;  // [n_group, hd_v]
    double* inv_sum = t.inv_sum.data();                             // [n_group]
    for (int64_t h = 0; h < n_group; ++h) {
      float* sc = scores + h * n_ctx;
      float m = sc[0];
      for (int64_t j = 1; j < n_ctx; ++j) m = std::max(m, sc[j]);
      if (a.reference) {
        double sum = 0.0;
        for (int64_t j = 0; j < n_ctx; ++j) {
          const double e = std::exp(double(sc[j]) - double(m));
          sc[j] = float(e);
          sum += e;
        }
        inv_sum[h] = 1.0 / sum;
      } else {
        float sum = 0.0f;
        for (int64_t j = 0; j < n_ctx; ++j) {
          sc[j] = std::exp(sc[j] - m);
          sum += sc[j];
        }
        inv_sum[h] = 1.0 / double(sum);
      }
    }

    // out = sum_j w_j v_j, positions in order.
    double* acc = t.acc.data();
    if (a.reference)
      std::fill(acc, acc + n_group * hd_v, 0.0);
    else
      std::fill(out, out + n_group * hd_v, 0.0f);
    for (int64_t j0 = 0; j0 < n_ctx; j0 += bs) {
      const uint8_t* base = kv.v_head(a.layer, table[size_t(j0 / bs)], g);
      const int64_t n = std::min(bs, n_ctx - j0);
      for (int64_t slot = 0; slot < n; ++slot) {
        const uint8_t* row = base + size_t(slot) * kv.v_row_bytes();
        if (!a.reference && type == KvType::f16) {
          const auto* v = reinterpret_cast<const uint16_t*>(row);
          for (int64_t h = 0; h < n_group; ++h)
            kern.axpy_f16(out + h * hd_v, scores[h * n_ctx + j0 + slot], v, hd_v);
          continue;
        }
        const float* v = reinterpret_cast<const float*>(row);
        if (!f32_cache) {
          kv_load_row(type, row, t.v_row.data(), hd_v);
          v = t.v_row.data();
        }
        for (int64_t h = 0; h < n_group; ++h) {
          const float w = scores[h * n_ctx + j0 + slot];
          if (a.reference) {
            double* o = acc + h * hd_v;
            for (int64_t d = 0; d < hd_v; ++d) o[d] += double(w) * double(v[d]);
          } else {
            kern.axpy_f32(out + h * hd_v, w, v, hd_v);
          }
        }
      }
    }
    for (int64_t h = 0; h < n_group; ++h) {
      float* o = out + h * hd_v;
      if (a.reference) {
        for (int64_t d = 0; d < hd_v; ++d) o[d] = float(acc[h * hd_v + d] * inv_sum[h]);
      } else {
        const float inv = float(inv_sum[h]);
        for (int64_t d = 0; d < hd_v; ++d) o[d] *= inv;
      }
    }
  }
};

}  // namespace

void AttentionScratch::reserve(int n_threads, int64_t ctx, const model::HParams& hp) {
  max_ctx = ctx;
  threads.resize(size_t(n_threads));
  for (auto& t : threads) {
    t.scores.assign(size_t(hp.n_group() * ctx), 0.0f);
    t.k_row.assign(size_t(hp.head_dim_k), 0.0f);
    t.v_row.assign(size_t(hp.head_dim_v), 0.0f);
    t.acc.assign(size_t(hp.n_group() * hp.head_dim_v), 0.0);
    t.inv_sum.assign(size_t(hp.n_group()), 0.0);
  }
}

uint64_t AttentionScratch::bytes() const {
  uint64_t b = 0;
  for (const auto& t : threads)
    b += (t.scores.size() + t.k_row.size() + t.v_row.size()) * 4 +
         (t.acc.size() + t.inv_sum.size()) * 8;
  return b;
}

void attention(const AttentionArgs& args, AttentionScratch& scratch, ThreadPool& pool) {
  KILN_ASSERT(int64_t(scratch.threads.size()) >= pool.size());
  const Task task{args, scratch};
  // One pointer captured: std::function stores it inline (no allocation).
  pool.parallel_for(args.n_rows * args.hp->n_head_kv,
                    [&task](int64_t i, int thread) { task.run(i, thread); });
}

}  // namespace kiln::cpu
