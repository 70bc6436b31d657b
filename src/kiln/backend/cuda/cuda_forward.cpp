// The CUDA forward pass over a mixed batch (see cuda_backend.h):
//   embed -> n_layer x [RMSNorm -> Q|K|V (+bias) -> per-head norm, RoPE, K/V
//   into the paged cache -> attention -> output proj (+= residual) -> RMSNorm
//   -> gate|up -> SwiGLU -> down (+= residual)] -> final RMSNorm -> logits.
// The last layer keeps only the rows that want logits after attention (their
// K/V are stored first), as the CPU backend does. In a decode step on the
// row-wise attention kernel, RoPE and the K/V store happen inside attention.
#include <fmt/format.h>

#include <algorithm>
#include <bit>
#include <limits>

#include "kiln/backend/cuda/cuda_compat.h"
#include "kiln/backend/cuda/cuda_impl.h"
#include "kiln/backend/cuda/cuda_check.h"
#include "kiln/backend/cuda/kernels/attention.cuh"
#include "kiln/backend/cuda/kernels/embed.cuh"
#include "kiln/backend/cuda/kernels/flash_attention.cuh"
#include "kiln/backend/cuda/kernels/matvec.cuh"
#include "kiln/backend/cuda/kernels/mma.cuh"
#include "kiln/backend/cuda/kernels/norm.cuh"
#include "kiln/backend/cuda/kernels/rope_kv.cuh"
#include "kiln/backend/cuda/kernels/argmax.cuh"
#include "kiln/backend/cuda/kernels/rows.cuh"
#include "kiln/backend/cuda/kernels/swiglu.cuh"
#include "kiln/core/assert.h"
#include "kiln/model/model.h"

namespace kiln::cuda {

#define KILN_CUDA_TRY(expr) KILN_TRY(cuda_status((expr), #expr))

void CudaBackend::Impl::linear(const LinearGroup& g, Input& in, int64_t n_rows, float* y,
                               int64_t ldy, bool accumulate) {
  if (n_rows == 0) return;
  for (const auto& part : g.parts) {
    const float* bias = g.bias ? g.bias + part.col : nullptr;
    float* yp = y + part.col;
    if (use_matvec(n_rows)) {
      if (matvec_wants_q8(part.m)) {
        if (!in.q8_ready) {
          quantize_q8(in.x, in.ldx, act_q8(), n_rows, part.m.n_in, stream);
          in.q8_ready = true;
        }
        matvec_q8(part.m, act_q8(), in.scale, n_rows, yp, ldy, bias, accumulate, stream);
      } else {
        matvec_f32(part.m, in.x, in.ldx, n_rows, yp, ldy, bias, accumulate, stream);
      }
    } else if (use_mma(part.m, n_rows)) {
      if (!in.x16_ready) {  // every part of a group reads the same input
        convert_f32_f16(in.x, in.ldx, n_rows, part.m.n_in, x16.as<uint16_t>(), stream);
        in.x16_ready = true;
      }
      linear_mma(part.m, x16.as<uint16_t>(), part.m.n_in, n_rows, yp, ldy, bias, accumulate,
                 mma_part.as<float>(), n_sms, stream);
    } else {
      linear_gemm(cublas, part.m, in.x, in.ldx, n_rows, yp, ldy, bias, accumulate, gemm_ws(),
                  stream);
    }
  }
}

namespace {

bool wants_q8(const CudaBackend::Impl& s, const LinearGroup& g, int64_t n_rows) {
  return s.use_matvec(n_rows) && !g.parts.empty() && matvec_wants_q8(g.parts[0].m);
}

// Every part of g takes the tensor-core path: its input's producer writes
// the f16 copy that path reads (no separate conversion pass).
bool all_mma_parts(const CudaBackend::Impl& s, const LinearGroup& g, int64_t n_rows) {
  if (g.parts.empty()) return false;
  for (const auto& p : g.parts)
    if (!s.use_mma(p.m, n_rows)) return false;
  return true;
}

// Every part of g reads 8-bit activations: its input norm can be deferred.
bool all_q8(const CudaBackend::Impl& s, const LinearGroup& g, int64_t n_rows) {
  if (!s.use_matvec(n_rows) || g.parts.empty()) return false;
  for (const auto& p : g.parts)
    if (!matvec_wants_q8(p.m)) return false;
  return true;
}

}  // namespace

CudaBackend::Impl::Input CudaBackend::Impl::norm_input(const float* x, const float* w,
                                                      const LinearGroup& g, int64_t n_rows) {
  const model::HParams& hp = model->hparams();
  const int64_t e = hp.n_embd;
  Input in{xn.as<float>(), e, false, {}};
  if (all_q8(*this, g, n_rows)) {
    const int64_t ld = max_in / 32;
    rms_norm_q8_deferred(x, e, w, act_q8(), ssq.as<float>(), ld, n_rows, e, stream);
    in.q8_ready = true;
    in.scale = RowScale{ssq.as<float>(), ld, e / 32, e, hp.rms_eps};
  } else {
    const bool q8 = wants_q8(*this, g, n_rows);
    const bool f16 = all_mma_parts(*this, g, n_rows);
    rms_norm(x, e, w, f16 ? nullptr : xn.as<float>(), e, q8 ? act_q8() : ActQ8{}, n_rows, e, hp.rms_eps,
             stream, f16 ? x16.as<uint16_t>() : nullptr);
    in.q8_ready = q8;
    in.x16_ready = f16;
  }
  return in;
}

Status CudaBackend::forward(const Batch& batch) {
  KILN_TRY(impl_->wait_cublas());
  Impl& s = *impl_;
  if (!s.model) return make_error("forward: no model loaded");
  if (!s.kv.base) return make_error("forward: the KV cache is not initialized");
  // Restores are over: the loader's pinned staging goes (on another thread
  // when a restore started that already), and is gone before this first
  // step runs, so unpinning it never competes with serving.
  if (s.spare_staging) s.release_spare_staging();
  if (s.staging_release.valid()) s.staging_release.get();
  const model::HParams& hp = s.model->hparams();
  KILN_TRY(validate_batch(batch, hp, s.kv_cfg, s.validate_scratch));
  KILN_CUDA_TRY(cudaSetDevice(s.opt.device));
  const int64_t n = batch.n_tokens();
  s.n_logits = 0;
  if (n == 0) return Status::success();
  if (n > kMaxBatchRows)
    return make_error(fmt::format("forward: {} rows in one step, over the CUDA backend's {}", n, kMaxBatchRows));

  // Batch metadata, one upload: tokens | pos | seq | logit rows | table
  // offsets | first new positions | tables.
  const int64_t n_seqs = int64_t(batch.seqs.size());
  const int64_t head = 4 * n + 2 * n_seqs;
  const std::vector<int32_t>& last_pos = s.validate_scratch;  // validate_batch's last positions
  int64_t n_bt = 0;
  for (int64_t q = 0; q < n_seqs; ++q)
    n_bt += last_pos[size_t(q)] < 0 ? 0 : last_pos[size_t(q)] / s.kv_cfg.block_size + 1;
  std::vector<int32_t>& m = s.meta_scratch;
  m.assign(size_t(head + n_bt), 0);
  int32_t* tokens = m.data();
  int32_t* pos = tokens + n;
  int32_t* seq = pos + n;
  int32_t* logit_rows = seq + n;
  int32_t* bt_off = logit_rows + n;
  int32_t* new0 = bt_off + n_seqs;
  int32_t* bt = tokens + head;
  std::fill(new0, new0 + n_seqs, std::numeric_limits<int32_t>::max());
  int32_t max_ctx = 0, max_ctx_logits = 0, n_logits = 0;
  // A decode step: each sequence has one row (their K/V rows of earlier
  // steps are then all the attention reads besides the row's own). With as
  // many rows as sequences, that is every sequence having a row.
  const bool decode =
      n == n_seqs && std::all_of(last_pos.begin(), last_pos.end(), [](int32_t p) { return p >= 0; });
  for (int64_t i = 0; i < n; ++i) {
    const BatchToken& t = batch.tokens[size_t(i)];
    new0[t.seq] = std::min(new0[t.seq], t.pos);
    tokens[i] = t.token;
    pos[i] = t.pos;
    seq[i] = t.seq;
    max_ctx = std::max(max_ctx, t.pos + 1);
    if (t.logits) {
      logit_rows[n_logits++] = int32_t(i);
      max_ctx_logits = std::max(max_ctx_logits, t.pos + 1);
    }
  }
  int32_t off = 0;
  for (int64_t q = 0; q < n_seqs; ++q) {
    bt_off[q] = off;
    const int64_t used = last_pos[size_t(q)] < 0 ? 0 : last_pos[size_t(q)] / s.kv_cfg.block_size + 1;
    const auto& table = batch.seqs[size_t(q)].block_table;
    for (int64_t b = 0; b < used; ++b) bt[off++] = table[size_t(b)];
  }
  // Rows in runs of one sequence (prefill chunks) take the tensor-core
  // attention: its tiles travel with the metadata. Not for steps where every
  // row wants logits (decode, which graphs capture without tiles).
  const int64_t tiles_off = int64_t(m.size());
  int64_t n_tiles = 0;
  if (s.opt.flash_attention && n >= s.opt.flash_min_rows && n_logits < n) {
    AttentionArgs probe;
    probe.kv.type = s.kv.type;
    probe.n_head = int(hp.n_head);
    probe.n_head_kv = int(hp.n_head_kv);
    probe.head_dim_k = int(hp.head_dim_k);
    probe.head_dim_v = int(hp.head_dim_v);
    if (flash_supported(probe)) {
      const auto tiles = flash_tiles(seq, pos, n, flash_rows_per_tile(probe));
      if (int64_t(tiles.size()) * 4 <= n) {  // on average 4+ rows share each K/V load
        n_tiles = int64_t(tiles.size());
        m.resize(size_t(tiles_off + 2 * n_tiles));  // (the row pointers above are stale now)
        for (int64_t i = 0; i < n_tiles; ++i) {
          m[size_t(tiles_off + 2 * i)] = tiles[size_t(i)].row0;
          m[size_t(tiles_off + 2 * i + 1)] = tiles[size_t(i)].n;
        }
      }
    }
  }
  KILN_TRY(s.reserve_meta(m.size()));
  KILN_TRY(s.reserve_rows(n));
  KILN_TRY(s.reserve_logits(n_logits));
  // The background kernel and cuBLAS warm-up (started by create()) must be over before a GEMM
  // and before any graph capture: its handle set-up and teardown may
  // synchronize the device, which would invalidate a capture.
  if (s.gemm_warm.valid() && ((!s.use_matvec(n) && !s.all_mma(n)) || s.opt.use_graphs)) s.gemm_warm.wait();
  if (!s.use_matvec(n)) {
    if (!s.all_mma(n)) KILN_TRY(s.ensure_w16());  // some layer goes through cuBLAS
    KILN_TRY(s.reserve_mma(n, n_logits));
  }
  KILN_CUDA_TRY(cudaEventSynchronize(s.meta_done));  // the previous upload has left meta_host
  std::copy(m.begin(), m.end(), s.meta_host);
  KILN_CUDA_TRY(cudaMemcpyAsync(s.meta_dev.as<void>(), s.meta_host, m.size() * 4,
                                cudaMemcpyHostToDevice, s.stream));
  KILN_CUDA_TRY(cudaEventRecord(s.meta_done, s.stream));
  s.n_logits = n_logits;
  s.logits_on_host = false;
  Impl::Step step;
  step.n = n;
  step.n_seqs = n_seqs;
  step.n_logits = n_logits;
  step.max_ctx = max_ctx;
  step.max_ctx_logits = max_ctx_logits;
  step.n_tiles = n_tiles;
  step.tiles_off = tiles_off;
  step.decode = decode;
  const bool graph = s.graph_eligible(step) && n_tiles == 0;
  if (graph) step.max_ctx = step.max_ctx_logits = Impl::ctx_bucket(max_ctx);
  KILN_TRY(s.reserve_attention(step));
  if (!graph) {
    s.enqueue(step);
    return Status::success();
  }
  return s.launch_graph(step);
}

void CudaBackend::Impl::enqueue(const Step& st) {
  Impl& s = *this;
  const model::HParams& hp = model->hparams();
  const int64_t n = st.n, n_logits = st.n_logits;
  const int32_t* md = s.meta_dev.as<int32_t>();
  BatchMeta meta;
  meta.tokens = md;
  meta.pos = md + n;
  meta.seq = md + 2 * n;
  const int32_t* logit_rows_dev = md + 3 * n;
  meta.bt_off = md + 4 * n;
  meta.new0 = md + 4 * n + st.n_seqs;
  meta.bt = md + 4 * n + 2 * st.n_seqs;
  meta.n_tokens = int32_t(n);

  const int64_t e = hp.n_embd;
  const int64_t n_qkv = hp.n_q() + hp.n_k() + hp.n_v();
  float* x = s.x.as<float>();
  float* x_alt = s.x2.as<float>();
  embed_rows(s.tok_embd, meta.tokens, n, x, e, s.stream);
  rope_table(meta.pos, n, s.inv_freq, hp.n_rot / 2, s.cs.as<float>(), s.stream);

  for (int64_t il = 0; il < hp.n_layer; ++il) {
    const DeviceLayer& L = s.layers[size_t(il)];
    const bool last = il == hp.n_layer - 1;

    Impl::Input in = s.norm_input(x, L.attn_norm, L.qkv, n);
    float* qkv = s.qkv.as<float>();
    s.linear(L.qkv, in, n, qkv, n_qkv, false);

    const int64_t n_rows = last ? n_logits : n;
    AttentionArgs a;
    a.q = qkv;
    a.ldq = n_qkv;
    a.rows = last ? logit_rows_dev : nullptr;  // nullptr: every row, in order
    a.n_rows = n_rows;
    a.max_ctx = last ? st.max_ctx_logits : st.max_ctx;
    a.out = s.attn.as<float>();
    a.kv = s.kv;
    a.layer = il;
    a.meta = meta;
    a.n_head = int(hp.n_head);
    a.n_head_kv = int(hp.n_head_kv);
    a.head_dim_k = int(hp.head_dim_k);
    a.head_dim_v = int(hp.head_dim_v);
    a.decode_step = st.decode;
    // wo's 8-bit input comes out of the attention's split merge directly.
    const bool q8_wo = n_rows > 0 && wants_q8(s, L.wo, n_rows);
    if (q8_wo) a.outq = s.act_q8();
    const bool f16_wo = n_rows > 0 && all_mma_parts(s, L.wo, n_rows);
    if (f16_wo) a.out16 = s.x16.as<uint16_t>();
    // A decode step whose attention covers every row rotates Q/K and stores
    // K/V itself: one kernel and its boundary fewer per layer.
    const bool fuse_rope = n_rows == n && attention_fuses_rope(a, s.n_sms, int(hp.n_rot), L.q_norm || L.k_norm);
    if (fuse_rope) {
      a.rope_cs = s.cs.as<float>();
      a.rope_neox = hp.rope_style == model::RopeStyle::neox;
    } else {
      RopeKvArgs r;
      r.qkv = qkv;
      r.ld = n_qkv;
      r.cs = s.cs.as<float>();
      r.q_norm = L.q_norm;
      r.k_norm = L.k_norm;
      r.eps = hp.rms_eps;
      r.n_head = int(hp.n_head);
      r.n_head_kv = int(hp.n_head_kv);
      r.head_dim_k = int(hp.head_dim_k);
      r.head_dim_v = int(hp.head_dim_v);
      r.n_rot = int(hp.n_rot);
      r.neox = hp.rope_style == model::RopeStyle::neox;
      r.kv = s.kv;
      r.layer = il;
      r.meta = meta;
      rope_kv_store(r, s.stream);
    }
    if (n_rows == 0) break;
    if (!last && st.n_tiles > 0 && !a.outq.q)
      attention_flash(a, reinterpret_cast<const AttnTile*>(md + st.tiles_off), int(st.n_tiles),
                      s.attn_work.as<float>(), s.n_sms, s.stream);
    else
      attention(a, s.attn_work.as<float>(), s.n_sms, s.stream);

    if (last && n_rows < n) {  // keep the logit rows of the residual stream, compacted
      gather_rows(x, logit_rows_dev, n_rows, e, x_alt, s.stream);
      std::swap(x, x_alt);
    }
    Impl::Input ain{s.attn.as<float>(), hp.n_attn_out(), q8_wo};
    ain.x16_ready = f16_wo;
    s.linear(L.wo, ain, n_rows, x, e, true);

    Impl::Input fin = s.norm_input(x, L.ffn_norm, L.gate_up, n_rows);
    float* gu = s.gu.as<float>();
    s.linear(L.gate_up, fin, n_rows, gu, 2 * hp.n_ff, false);
    const bool q8_down = wants_q8(s, L.down, n_rows);
    const bool f16_down = all_mma_parts(s, L.down, n_rows);
    swiglu(gu, 2 * hp.n_ff, n_rows, hp.n_ff, q8_down || f16_down ? nullptr : s.act.as<float>(),
           q8_down ? s.act_q8() : ActQ8{}, s.stream, f16_down ? s.x16.as<uint16_t>() : nullptr);
    Impl::Input din{s.act.as<float>(), hp.n_ff, q8_down};
    din.x16_ready = f16_down;
    s.linear(L.down, din, n_rows, x, e, true);
  }

  if (n_logits == 0) return;
  Impl::Input oin = s.norm_input(x, s.output_norm, s.output, n_logits);
  s.linear(s.output, oin, n_logits, s.logits_dev.as<float>(), hp.n_vocab, false);
  // Only the greedy ids travel with every step; rows on demand (logits()).
  argmax_rows(s.logits_dev.as<float>(), n_logits, hp.n_vocab, s.argmax_dev.as<int32_t>(),
              s.argmax_done.as<unsigned>(), s.argmax_part.as<void>(), s.stream);
  CUDA_CHECK(cudaMemcpyAsync(s.argmax_host, s.argmax_dev.as<void>(), size_t(n_logits) * 4,
                             cudaMemcpyDeviceToHost, s.stream));
}

// ---- CUDA graphs for decode steps ------------------------------------------------------
// A decode step (every row wants logits, few rows) launches ~10 kernels per
// layer whose host launch cost exceeds their GPU time; replaying a captured
// graph removes it. The captured launches depend only on the step's shape
// (rows, sequences, logit rows) and on the attention split plan, which is
// made for a bucketed context length (rows with shorter contexts skip the
// empty splits), so one graph serves every step of that shape and bucket.
// Buffers are fixed between captures; any reallocation drops the graphs.

int32_t CudaBackend::Impl::ctx_bucket(int32_t max_ctx) {
  int32_t b = 256;
  while (b < max_ctx) b *= 2;
  return b;
}

bool CudaBackend::Impl::graph_eligible(const Step& st) const {
  return opt.use_graphs && (use_matvec(st.n) || all_mma(st.n)) && st.n_logits == st.n;
}

bool CudaBackend::Impl::all_mma(int64_t n_rows) const {
  return mma_everywhere && !use_matvec(n_rows) && n_rows <= opt.mma_max_rows;
}

size_t CudaBackend::Impl::attention_work_floats(const Step& st, KvType type) const {
  const model::HParams& hp = model->hparams();
  AttentionArgs a;
  a.kv.type = type;  // the kernel, so the split plan, depends on it
  a.n_head = int(hp.n_head);
  a.n_head_kv = int(hp.n_head_kv);
  a.head_dim_k = int(hp.head_dim_k);
  a.head_dim_v = int(hp.head_dim_v);
  // Every layer but the last attends for all rows; the last only for the logit rows.
  a.n_rows = st.n;
  a.max_ctx = st.max_ctx;
  size_t work = attention_workspace_floats(a, n_sms);
  if (st.n_tiles > 0) work = std::max(work, flash_workspace_floats(a, int(st.n_tiles), n_sms));
  a.n_rows = st.n_logits;
  a.max_ctx = st.max_ctx_logits;
  return std::max(work, attention_workspace_floats(a, n_sms));
}

Status CudaBackend::Impl::grow_attention_work(size_t floats) {
  if (attn_work.bytes() >= floats * 4) return Status::success();
  KILN_CUDA_TRY(cudaStreamSynchronize(stream));
  drop_graphs();
  if (!attn_work.alloc(std::max(floats * 4, size_t(1) << 20)))
    return make_error("out of GPU memory for attention");
  return Status::success();
}

Status CudaBackend::Impl::reserve_attention(const Step& st) {
  return grow_attention_work(attention_work_floats(st, kv.type));
}

void CudaBackend::Impl::drop_graphs() {
  for (auto& [key, exec] : graphs) cudaGraphExecDestroy(exec);
  graphs.clear();
}

Status CudaBackend::Impl::launch_graph(const Step& st) {
  // 16 bits each for rows, sequences and logit rows (<= mma_max_rows), then
  // log2 of the bucketed context (a power of two), then whether it is a
  // decode step (its attention may take RoPE and the K/V store).
  const uint64_t key = uint64_t(st.n) | uint64_t(st.n_seqs) << 16 | uint64_t(st.n_logits) << 32 |
                       uint64_t(std::countr_zero(uint32_t(st.max_ctx))) << 48 | uint64_t(st.decode) << 56;
  auto it = graphs.find(key);
  if (it == graphs.end()) {
    cudaGraph_t g = nullptr;
    KILN_CUDA_TRY(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal));
    enqueue(st);
    KILN_CUDA_TRY(cudaStreamEndCapture(stream, &g));
    cudaGraphExec_t exec = nullptr;
    const cudaError_t err = compat::graph_instantiate(&exec, g);
    cudaGraphDestroy(g);
    KILN_TRY(cuda_status(err, "instantiating the decode graph"));
    it = graphs.emplace(key, exec).first;
  }
  return cuda_status(cudaGraphLaunch(it->second, stream), "cudaGraphLaunch");
}

}  // namespace kiln::cuda
