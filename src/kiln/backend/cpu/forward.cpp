// The CPU forward pass of a Llama-family decoder over a batch:
//   embed -> n_layer x [RMSNorm -> Q/K/V (+bias) -> per-head Q/K norm -> RoPE
//   -> store K/V in the paged cache -> attention -> output proj -> residual
//   -> RMSNorm -> SwiGLU FFN -> residual] -> final RMSNorm -> logits
//   (and/or the final-normed hidden state, for embeddings).
// Every op works row by row with a fixed order, so a row's result never
// depends on the other rows of the batch (batch invariance).
#include <fmt/format.h>

#include <algorithm>

#include "kiln/backend/cpu/cpu_backend.h"
#include "kiln/backend/cpu/ffn.h"
#include "kiln/backend/cpu/norm.h"
#include "kiln/backend/cpu/parallel_rows.h"
#include "kiln/core/assert.h"
#include "kiln/model/model.h"
#include "kiln/quant/quant.h"

namespace kiln::cpu {

Status CpuBackend::forward(const Batch& batch) {
  if (!model_) return make_error("forward: no model loaded");
  if (!kv_.ready()) return make_error("forward: the KV cache is not initialized");
  const model::HParams& hp = model_->hparams();
  const model::ModelWeights& w = model_->weights();
  KILN_TRY(validate_batch(batch, hp, kv_.config(), validate_scratch_));

  const int64_t n = batch.n_tokens();
  n_logits_ = 0;
  n_hidden_ = 0;
  n_out_ = 0;
  if (n == 0) return Status::success();
  reserve_rows(n);
  int64_t max_ctx = 0;
  for (const BatchToken& t : batch.tokens) {
    max_ctx = std::max<int64_t>(max_ctx, int64_t(t.pos) + 1);
    if (t.logits || t.hidden) act_.out_rows[size_t(n_out_++)] = int32_t(&t - batch.tokens.data());
    n_logits_ += t.logits ? 1 : 0;
    n_hidden_ += t.hidden ? 1 : 0;
  }
  ensure_attention_ctx(max_ctx);
  const size_t n_vocab = size_t(hp.n_vocab);
  if (logits_.size() < size_t(n_logits_) * n_vocab) logits_.resize(size_t(n_logits_) * n_vocab);
  if (hidden_.size() < size_t(n_hidden_) * size_t(hp.n_embd))
    hidden_.resize(size_t(n_hidden_) * size_t(hp.n_embd));

  // Token embeddings (any stored type, dequantized exactly) and RoPE angles.
  const int64_t e = hp.n_embd;
  for_rows(pool_, n, [&](int64_t i) {
    const BatchToken& t = batch.tokens[size_t(i)];
    quant::dequantize_row(w.tok_embd.type, w.tok_embd.row(t.token), act_.x.data() + i * e, e);
    rope_.angles(t.pos, act_.rope.data() + i * hp.n_rot);
  });

  for (int64_t l = 0; l < hp.n_layer; ++l) run_layer(batch, l, n);
  if (n_out_ == 0) return Status::success();

  // The last layer left only the output rows, compacted, in act_.x.
  for_rows(pool_, n_out_, [&](int64_t r) {
    rms_norm(act_.x.data() + r * e, w.output_norm.data, act_.xn.data() + r * e, e, hp.rms_eps);
  });
  if (n_logits_ < n_out_) {
    // Some rows want only their hidden state: copy those out, then compact
    // the logit rows in place (ascending, so a row moves only downwards onto
    // one already handled). Plain generation never takes this branch.
    float* xn = act_.xn.data();
    int64_t n_h = 0, n_l = 0;
    for (int64_t r = 0; r < n_out_; ++r) {
      const BatchToken& t = batch.tokens[size_t(act_.out_rows[size_t(r)])];
      if (t.hidden) std::copy_n(xn + r * e, e, hidden_.data() + (n_h++) * e);
      if (t.logits) {
        if (n_l != r) std::copy_n(xn + r * e, e, xn + n_l * e);
        ++n_l;
      }
    }
  } else if (n_hidden_ > 0) {  // every output row wants logits, some also hidden
    int64_t n_h = 0;
    for (int64_t r = 0; r < n_out_; ++r)
      if (batch.tokens[size_t(act_.out_rows[size_t(r)])].hidden)
        std::copy_n(act_.xn.data() + r * e, e, hidden_.data() + (n_h++) * e);
  }
  if (n_logits_ > 0) linear(w.output, model::Vector{}, act_.xn.data(), n_logits_, logits_.data());
  return Status::success();
}

void CpuBackend::run_layer(const Batch& batch, int64_t il, int64_t n) {
  const model::HParams& hp = model_->hparams();
  const model::LayerWeights& L = model_->weights().layers[size_t(il)];
  const int64_t e = hp.n_embd, n_q = hp.n_q(), n_k = hp.n_k(), n_v = hp.n_v();
  const int64_t hd_k = hp.head_dim_k, hd_v = hp.head_dim_v;
  float* x = act_.x.data();
  float* xn = act_.xn.data();

  // Attention block: Q/K/V from the normed residual.
  for_rows(pool_, n,
           [&](int64_t i) { rms_norm(x + i * e, L.attn_norm.data, xn + i * e, e, hp.rms_eps); });
  linear(L.wq, L.bq, xn, n, act_.q.data());
  linear(L.wk, L.bk, xn, n, act_.k.data());
  linear(L.wv, L.bv, xn, n, act_.v.data());

  // Per-head norms (qwen3), RoPE, then K/V into the cache. Attention reads
  // K/V back from the cache (not from act_.k) so that a chunked prefill and
  // a whole one see the same (possibly rounded) values.
  const KvType kv_type = kv_.config().type;
  const int32_t bs = kv_.config().block_size;
  for_rows(pool_, n, [&](int64_t i) {
    float* q = act_.q.data() + i * n_q;
    float* k = act_.k.data() + i * n_k;
    const float* v = act_.v.data() + i * n_v;
    if (L.q_norm) rms_norm_heads(q, L.q_norm.data, hp.n_head, hd_k, hp.rms_eps);
    if (L.k_norm) rms_norm_heads(k, L.k_norm.data, hp.n_head_kv, hd_k, hp.rms_eps);
    const float* cs = act_.rope.data() + i * hp.n_rot;
    rope_.apply(q, hp.n_head, hd_k, cs);
    rope_.apply(k, hp.n_head_kv, hd_k, cs);
    const BatchToken& t = batch.tokens[size_t(i)];
    const int32_t block = batch.seqs[size_t(t.seq)].block_table[size_t(t.pos / bs)];
    const int32_t slot = t.pos % bs;
    for (int64_t g = 0; g < hp.n_head_kv; ++g) {
      kv_store_row(kv_type, k + g * hd_k,
                   kv_.k_head(il, block, g) + size_t(slot) * kv_.k_row_bytes(), hd_k);
      kv_store_row(kv_type, v + g * hd_v,
                   kv_.v_head(il, block, g) + size_t(slot) * kv_.v_row_bytes(), hd_v);
    }
  });

  // In the last layer only rows that want an output go on: their K/V are stored
  // above, nothing later reads the other rows' outputs.
  const bool last = il == hp.n_layer - 1;
  const int32_t* rows = last ? act_.out_rows.data() : act_.all_rows.data();
  const int64_t n_rows = last ? n_out_ : n;
  if (n_rows == 0) return;

  AttentionArgs a;
  a.hp = &hp;
  a.kv = &kv_;
  a.layer = il;
  a.batch = &batch;
  a.q = act_.q.data();
  a.rows = rows;
  a.n_rows = n_rows;
  a.out = act_.attn.data();
  a.reference = path_ == MatmulPath::reference;
  a.kernels = attn_kernels_;
  attention(a, attn_scratch_, pool_);

  if (n_rows < n)  // compact the residual rows in place (rows[] increases, rows[r] >= r)
    for (int64_t r = 0; r < n_rows; ++r)
      if (rows[r] != r) std::copy_n(x + int64_t(rows[r]) * e, e, x + r * e);

  linear(L.wo, L.bo, act_.attn.data(), n_rows, act_.proj.data());
  for_rows(pool_, n_rows, [&](int64_t i) {
    add_inplace(x + i * e, act_.proj.data() + i * e, e);
    rms_norm(x + i * e, L.ffn_norm.data, xn + i * e, e, hp.rms_eps);
  });

  // FFN: down(silu(gate(x)) * up(x)).
  linear(L.w_gate, model::Vector{}, xn, n_rows, act_.gate.data());
  linear(L.w_up, model::Vector{}, xn, n_rows, act_.up.data());
  const int64_t ff = hp.n_ff;
  for_rows(pool_, n_rows,
           [&](int64_t i) { swiglu(act_.gate.data() + i * ff, act_.up.data() + i * ff, ff); });
  linear(L.w_down, model::Vector{}, act_.gate.data(), n_rows, act_.proj.data());
  for_rows(pool_, n_rows, [&](int64_t i) { add_inplace(x + i * e, act_.proj.data() + i * e, e); });
}

}  // namespace kiln::cpu
