// CPU encoder forward pass (see encoder.h). Shapes per group of packed
// sequences: x [n, e] -> per layer: q/k/v [n, e] (heads side by side, head h
// in columns [h*d, (h+1)*d)), att [n, e], x = LN(x + att Wo), ff [n, n_ff],
// x = LN(x + gelu(x Wup) Wdown).
#include "kiln/backend/cpu/encoder.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>

#include "kiln/backend/cpu/attention_kernels.h"
#include "kiln/backend/cpu/encoder_ops.h"
#include "kiln/backend/cpu/parallel_rows.h"
#include "kiln/core/assert.h"
#include "kiln/core/threadpool.h"
#include "kiln/quant/quant.h"

namespace kiln::cpu {
namespace {

// Tokens per packed group: big enough that matmuls read each weight once for
// many rows, small enough to bound the activation buffers (~2 MB per
// [1024, 512] float buffer). A longer single sequence runs as its own group.
constexpr int64_t kMaxGroupTokens = 1024;

// Multiply-adds per layer below which a group runs on the calling thread
// alone: waking the pool costs tens of microseconds (much more on a loaded
// machine), more than a short text's whole layer on a small model. Results
// are the same either way (every op has a fixed order per row).
constexpr int64_t kMinParallelMacs = 2'000'000;

}  // namespace

Status check_encoder_input(const model::EncoderHParams& hp, std::span<const int32_t> ids) {
  if (ids.empty())
    return make_error("an input has no tokens: there is nothing to embed (give a non-empty input)");
  if (int64_t(ids.size()) > hp.n_ctx_train)
    return make_error(fmt::format(
        "an input has {} tokens, more than the {} positions the embedding model was trained "
        "for ({}.context_length); shorten or split it",
        ids.size(), hp.n_ctx_train, hp.arch));
  for (int32_t id : ids)
    if (id < 0 || id >= hp.n_vocab)
      return make_error(fmt::format(
          "an input holds the token id {}, outside the embedding model's vocabulary [0, {})", id,
          hp.n_vocab));
  return Status::success();
}

Encoder::Encoder(const model::EncoderModel& model, ThreadPool& pool, MatmulPath path)
    : model_(model), pool_(pool), path_(path) {
  scores_.resize(size_t(pool.size()));
  for (auto& s : scores_) s.resize(size_t(model.hparams().n_ctx_train));
}

void Encoder::linear(const model::Matrix& w, const model::Vector& b, const float* x, int64_t n_rows,
                     float* y) {
  MatmulArgs args;
  args.w_type = w.type;
  args.w = w.data;
  args.n_out = w.n_out;
  args.n_in = w.n_in;
  args.x = x;
  args.n_batch = n_rows;
  args.y = y;
  args.scratch = &mm_scratch_;
  matmul(path_, args, parallel_ ? &pool_ : nullptr);
  if (b) {
    const int64_t n_out = w.n_out;
    each_row(n_rows, [&](int64_t r) { add_bias(y + r * n_out, b.data, n_out); });
  }
}

void Encoder::layer_norm_rows(float* x, const model::Vector& w, const model::Vector& b,
                              int64_t n_rows) {
  const int64_t e = model_.hparams().n_embd;
  const float eps = model_.hparams().norm_eps;
  each_row(n_rows, [&](int64_t r) { layer_norm(x + r * e, w.data, b.data, x + r * e, e, eps); });
}

void Encoder::embed_tokens(std::span<const std::vector<int32_t>> seqs, int64_t n_tokens) {
  const auto& w = model_.weights();
  const int64_t e = model_.hparams().n_embd;
  // Token type 0 ("sentence A") for every token, as llama.cpp and
  // sentence-transformers feed single texts.
  std::vector<float> type0(size_t(e), 0.0f);
  if (w.type_embd) quant::dequantize_row(w.type_embd.type, w.type_embd.row(0), type0.data(), e);
  each_row(n_tokens, [&](int64_t r) {
    // Which sequence row r belongs to gives its position.
    const auto it = std::upper_bound(seq_start_.begin(), seq_start_.end(), r) - 1;
    const int64_t s = it - seq_start_.begin(), pos = r - *it;
    float* xr = x_.data() + r * e;
    quant::dequantize_row(w.tok_embd.type, w.tok_embd.row(seqs[size_t(s)][size_t(pos)]), xr, e);
    float* p = tmp_.data() + r * e;  // free until the first projection
    quant::dequantize_row(w.pos_embd.type, w.pos_embd.row(pos), p, e);
    for (int64_t i = 0; i < e; ++i) xr[i] += type0[size_t(i)] + p[i];
  });
  layer_norm_rows(x_.data(), w.embd_norm, w.embd_norm_b, n_tokens);
}

void Encoder::attention(std::span<const std::vector<int32_t>> seqs) {
  const auto& hp = model_.hparams();
  const int64_t e = hp.n_embd, d = hp.head_dim, n_head = hp.n_head;
  const double scale = 1.0 / std::sqrt(double(d));
  const AttentionKernels& kern = attention_kernels();
  const bool ref = path_ == MatmulPath::reference;
  // One task per (sequence, head): every query of the sequence against every
  // key of it (no mask: bidirectional, and packed sequences never see each other).
  const int64_t n_tasks = int64_t(seqs.size()) * n_head;
  auto task_fn = [&](int64_t task, int thread) {
    const int64_t s = task / n_head, h = task % n_head;
    const int64_t start = seq_start_[size_t(s)], n = seq_start_[size_t(s) + 1] - start;
    std::vector<double>& sc = scores_[size_t(thread)];
    for (int64_t i = 0; i < n; ++i) {
      const float* q = q_.data() + (start + i) * e + h * d;
      double mx = -INFINITY;
      for (int64_t j = 0; j < n; ++j) {
        const float* k = k_.data() + (start + j) * e + h * d;
        double dot;
        if (ref) {
          dot = 0.0;
          for (int64_t c = 0; c < d; ++c) dot += double(q[c]) * k[c];
        } else {
          dot = kern.dot_f32(q, k, d);
        }
        sc[size_t(j)] = dot * scale;
        mx = std::max(mx, sc[size_t(j)]);
      }
      double sum = 0.0;
      for (int64_t j = 0; j < n; ++j) sum += sc[size_t(j)] = std::exp(sc[size_t(j)] - mx);
      const double inv = 1.0 / sum;
      float* out = att_.data() + (start + i) * e + h * d;
      if (ref) {
        for (int64_t c = 0; c < d; ++c) {
          double acc = 0.0;
          for (int64_t j = 0; j < n; ++j)
            acc += sc[size_t(j)] * v_[size_t((start + j) * e + h * d + c)];
          out[c] = float(acc * inv);
        }
      } else {
        std::fill(out, out + d, 0.0f);
        for (int64_t j = 0; j < n; ++j)
          kern.axpy_f32(out, float(sc[size_t(j)] * inv), v_.data() + (start + j) * e + h * d, d);
      }
    }
  };
  if (parallel_) {
    pool_.parallel_for(n_tasks, task_fn);
  } else {
    for (int64_t t = 0; t < n_tasks; ++t) task_fn(t, 0);
  }
}

void Encoder::run_group(std::span<const std::vector<int32_t>> seqs, float* out) {
  const auto& hp = model_.hparams();
  const auto& w = model_.weights();
  const int64_t e = hp.n_embd;
  seq_start_.assign(1, 0);
  for (const auto& s : seqs) seq_start_.push_back(seq_start_.back() + int64_t(s.size()));
  const int64_t n = seq_start_.back();
  parallel_ = pool_.size() > 1 && n * (4 * e * e + 2 * e * hp.n_ff) >= kMinParallelMacs;
  for (auto* buf : {&x_, &q_, &k_, &v_, &att_, &tmp_})
    if (buf->size() < size_t(n * e)) buf->resize(size_t(n * e));
  if (ff_.size() < size_t(n * hp.n_ff)) ff_.resize(size_t(n * hp.n_ff));

  embed_tokens(seqs, n);
  for (const model::EncoderLayerWeights& l : w.layers) {
    linear(l.wq, l.bq, x_.data(), n, q_.data());
    linear(l.wk, l.bk, x_.data(), n, k_.data());
    linear(l.wv, l.bv, x_.data(), n, v_.data());
    attention(seqs);
    linear(l.wo, l.bo, att_.data(), n, tmp_.data());
    // Post-LN: the residual sum is normalized, not the sublayer's input.
    each_row(n, [&](int64_t r) {
      float* xr = x_.data() + r * e;
      const float* t = tmp_.data() + r * e;
      for (int64_t i = 0; i < e; ++i) xr[i] += t[i];
    });
    layer_norm_rows(x_.data(), l.attn_norm, l.attn_norm_b, n);
    linear(l.w_up, l.b_up, x_.data(), n, ff_.data());
    each_row(n, [&](int64_t r) { gelu_erf_inplace(ff_.data() + r * hp.n_ff, hp.n_ff); });
    linear(l.w_down, l.b_down, ff_.data(), n, tmp_.data());
    each_row(n, [&](int64_t r) {
      float* xr = x_.data() + r * e;
      const float* t = tmp_.data() + r * e;
      for (int64_t i = 0; i < e; ++i) xr[i] += t[i];
    });
    layer_norm_rows(x_.data(), l.out_norm, l.out_norm_b, n);
  }
  std::copy(x_.begin(), x_.begin() + n * e, out);
}

Status Encoder::hidden_states(std::span<const std::vector<int32_t>> seqs, std::vector<float>& out) {
  const auto& hp = model_.hparams();
  int64_t total = 0;
  for (size_t i = 0; i < seqs.size(); ++i) {
    if (auto st = check_encoder_input(hp, seqs[i]); !st)
      return make_error(seqs.size() == 1 ? st.message()
                                         : fmt::format("input {}: {}", i, st.message()));
    total += int64_t(seqs[i].size());
  }
  out.resize(size_t(total * hp.n_embd));
  size_t begin = 0;
  int64_t row = 0;
  while (begin < seqs.size()) {
    size_t end = begin + 1;
    int64_t n = int64_t(seqs[begin].size());
    while (end < seqs.size() && n + int64_t(seqs[end].size()) <= kMaxGroupTokens)
      n += int64_t(seqs[end++].size());
    run_group(seqs.subspan(begin, end - begin), out.data() + row * hp.n_embd);
    row += n;
    begin = end;
  }
  KILN_ASSERT(row == total);
  return Status::success();
}

Result<std::vector<std::vector<float>>> Encoder::embed(std::span<const std::vector<int32_t>> seqs,
                                                       model::Pooling pooling) {
  std::vector<float> h;
  KILN_TRY(hidden_states(seqs, h));
  const int64_t e = model_.hparams().n_embd;
  std::vector<std::vector<float>> out(seqs.size(), std::vector<float>(size_t(e)));
  int64_t row = 0;
  for (size_t i = 0; i < seqs.size(); ++i) {
    const int64_t n = int64_t(seqs[i].size());
    pool_hidden(h.data() + row * e, n, e, pooling, out[i].data());
    l2_normalize(out[i].data(), e);
    row += n;
  }
  return out;
}

}  // namespace kiln::cpu
