// CpuBackend set-up, KV pool, logits access and memory report; the forward
// pass itself is in forward.cpp.
#include "kiln/backend/cpu/cpu_backend.h"
#include "kiln/backend/weight_image.h"
#include "kiln/gguf/gguf.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>

#include "kiln/backend/cpu/cpu_info.h"
#include "kiln/core/assert.h"
#include "kiln/model/model.h"

namespace kiln::cpu {
namespace {

MatmulPath resolve_path(const CpuOptions& o) {
  if (o.read_env) {
    const char* e = std::getenv("KILN_CPU_REFERENCE");
    if (e && *e && std::strcmp(e, "0") != 0) return MatmulPath::reference;
  }
  return o.path;
}

}  // namespace

KvType default_kv_type(MatmulPath path) {
  return path == MatmulPath::reference ? KvType::f32 : KvType::f16;
}

std::string_view act_quant_name(ActQuant a) {
  return a == ActQuant::q8 ? "q8" : "q8x2";
}

CpuBackend::CpuBackend(const CpuOptions& options)
    : path_(resolve_path(options)),
      act_quant_(options.act),
      attn_kernels_(&attention_kernels()),
      pool_(options.n_threads) {}

std::string CpuBackend::numerics() const {
  if (path_ == MatmulPath::reference) return "scalar (reference)";
  return fmt::format("{}, act {}", fast_isa(), act_quant_name(act_quant_));
}

CpuBackend::~CpuBackend() = default;

std::string CpuBackend::device_name() const {
  return fmt::format("{} ({} threads)", cpu_model_name(), pool_.size());
}

Status CpuBackend::load_weights(const model::Model& model) {
  // A GPU weight image keeps GGUF names and types but not GGUF's bytes.
  if (const std::string layout = image::image_layout(model.file()); !layout.empty())
    return make_error(fmt::format("{} holds weights in the GPU layout '{}', which the CPU backend "
                                  "cannot read; serve it with --device cuda, or bake with "
                                  "--target-arch cpu for CPU serving",
                                  model.file().path(), layout));
  // The forward pass reads the mapped weights in place, so with a file still
  // downloading (serve --model URL) all of them must be there first.
  if (const gguf::File& f = model.file(); f.arriving())
    KILN_TRY(f.await(f.data_offset(), f.file_size() - f.data_offset()));
  model_ = &model;
  rope_.init(model.hparams(), model.weights().rope_freqs.data);
  act_ = Activations{};
  logits_.clear();
  n_logits_ = 0;
  hidden_.clear();
  n_hidden_ = 0;
  n_out_ = 0;
  return Status::success();
}

Status CpuBackend::init_kv_cache(const KvCacheConfig& cfg) {
  if (!model_) return make_error("init_kv_cache: load the model's weights first");
  KILN_TRY(kv_.init(model_->hparams(), cfg));
  attn_scratch_ = AttentionScratch{};
  // Room for contexts up to 4096 positions now, so ordinary decoding never
  // grows it inside the loop; longer contexts grow it geometrically.
  ensure_attention_ctx(std::min<int64_t>(int64_t(cfg.n_blocks) * cfg.block_size, 4096));
  return Status::success();
}

std::span<const float> CpuBackend::logits(int32_t i) const {
  KILN_ASSERT(i >= 0 && i < n_logits_);
  const size_t n_vocab = size_t(model_->hparams().n_vocab);
  return {logits_.data() + size_t(i) * n_vocab, n_vocab};
}

std::span<const float> CpuBackend::hidden(int32_t i) const {
  KILN_ASSERT(i >= 0 && i < n_hidden_);
  const size_t n_embd = size_t(model_->hparams().n_embd);
  return {hidden_.data() + size_t(i) * n_embd, n_embd};
}

Status CpuBackend::copy_kv_block(int32_t src, int32_t dst) {
  const int32_t n = kv_.config().n_blocks;
  if (!kv_.ready() || src < 0 || dst < 0 || src >= n || dst >= n)
    return make_error(
        fmt::format("copy_kv_block({}, {}): block ids must be in [0, {})", src, dst, n));
  if (src != dst) kv_.copy_block(src, dst);
  return Status::success();
}

namespace {

Status check_kv_block_io(const KvCache& kv, int32_t block, size_t n_bytes, const char* what) {
  const int32_t n = kv.config().n_blocks;
  if (!kv.ready() || block < 0 || block >= n)
    return make_error(fmt::format("{}({}): block id must be in [0, {})", what, block, n));
  if (n_bytes != kv.block_bytes())
    return make_error(fmt::format("{}({}): {} bytes given, a KV block is {} bytes", what, block,
                                  n_bytes, kv.block_bytes()));
  return Status::success();
}

}  // namespace

Status CpuBackend::read_kv_block(int32_t block, std::span<uint8_t> out) const {
  KILN_TRY(check_kv_block_io(kv_, block, out.size(), "read_kv_block"));
  kv_.read_block(block, out.data());
  return Status::success();
}

Status CpuBackend::write_kv_block(int32_t block, std::span<const uint8_t> in) {
  KILN_TRY(check_kv_block_io(kv_, block, in.size(), "write_kv_block"));
  kv_.write_block(block, in.data());
  return Status::success();
}

MemoryReport CpuBackend::memory() const {
  MemoryReport r;
  r.device = device_name();
  r.weight_bytes = model_ ? model_->weights().total_bytes() : 0;
  r.kv_bytes = kv_.bytes();
  uint64_t act = 0;
  for (const auto* v : {&act_.x, &act_.xn, &act_.q, &act_.k, &act_.v, &act_.attn, &act_.proj,
                        &act_.gate, &act_.up, &act_.rope, &split_x_, &split_y_, &logits_, &hidden_})
    act += v->capacity() * sizeof(float);
  r.scratch_bytes = act + attn_scratch_.bytes();
  r.device_total = physical_memory_bytes();
  r.device_free = available_memory_bytes();
  return r;
}

void CpuBackend::reserve_rows(int64_t n) {
  if (n <= act_.cap) return;
  const model::HParams& hp = model_->hparams();
  const size_t c = size_t(n);
  act_.cap = n;
  act_.x.resize(c * size_t(hp.n_embd));
  act_.xn.resize(c * size_t(hp.n_embd));
  act_.q.resize(c * size_t(hp.n_q()));
  act_.k.resize(c * size_t(hp.n_k()));
  act_.v.resize(c * size_t(hp.n_v()));
  act_.attn.resize(c * size_t(hp.n_attn_out()));
  act_.proj.resize(c * size_t(hp.n_embd));
  act_.gate.resize(c * size_t(hp.n_ff));
  act_.up.resize(c * size_t(hp.n_ff));
  act_.rope.resize(c * size_t(hp.n_rot));
  act_.all_rows.resize(c);
  for (size_t i = 0; i < c; ++i) act_.all_rows[i] = int32_t(i);
  act_.out_rows.resize(c);
}

void CpuBackend::ensure_attention_ctx(int64_t n_ctx) {
  if (n_ctx <= attn_scratch_.max_ctx && int64_t(attn_scratch_.threads.size()) >= pool_.size())
    return;
  // Grow geometrically (capped by the pool's capacity): a decode loop that
  // extends its context reallocates O(log n) times, not every step.
  const int64_t cap = int64_t(kv_.config().n_blocks) * kv_.config().block_size;
  const int64_t want = std::min(cap, std::max(n_ctx, 2 * attn_scratch_.max_ctx));
  attn_scratch_.reserve(pool_.size(), std::max(want, n_ctx), model_->hparams());
}

}  // namespace kiln::cpu
