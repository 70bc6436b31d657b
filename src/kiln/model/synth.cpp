// synth_model: fills each weight matrix in parallel (row chunks, each with its
// own RNG stream derived from the seed, so the bytes do not depend on the
// thread count) and hands the buffers to gguf::Writer by reference: the model
// is held in memory once, never twice.
#include "kiln/model/synth.h"

#include <fmt/format.h>
#include <sys/mman.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <utility>
#include <vector>

#include "kiln/core/fp16.h"
#include "kiln/core/threadpool.h"
#include "kiln/gguf/gguf.h"
#include "kiln/model/presets.h"
#include "kiln/quant/blocks.h"
#include "kiln/quant/mix.h"
#include "kiln/quant/quant.h"

namespace kiln::model {
namespace {

// ggml's quantization format version (general.quantization_version).
constexpr uint32_t kQuantizationVersion = 2;

// splitmix64: one add and two multiplies per 64 random bits, plenty for
// weights; seeded per (tensor, chunk) so chunks can be filled in any order.
struct SplitMix {
  uint64_t s;
  uint64_t next() {
    uint64_t z = (s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }
  // Roughly N(0, 1): the sum of four 16-bit uniforms (Irwin-Hall), centred
  // and scaled to unit variance; bounded by +-3.46, which is fine for weights.
  float gaussianish() {
    const uint64_t r = next();
    const float sum = float((r & 0xffff) + ((r >> 16) & 0xffff) + ((r >> 32) & 0xffff) + (r >> 48));
    return (sum + 2.0f - 131072.0f) * (1.7320508f / 65536.0f);
  }
};

uint64_t stream_seed(uint64_t seed, uint64_t tensor, uint64_t chunk) {
  SplitMix m{seed ^ (tensor * 0xd1b54a32d192ed03ull) ^ (chunk * 0x8cb92ba72f3d8dd7ull)};
  return m.next();
}

// Tensor memory straight from mmap, pre-faulted in one call, as huge pages
// where the kernel allows. Faulting pages in one by one on first write is
// what dominated the 8B synth on a VM (Firecracker: ~6 s per GiB of 4 KiB
// faults, ~0.2 s per GiB populated as 2 MiB pages).
class Buffer {
 public:
  Buffer() = default;
  Buffer(Buffer&& o) noexcept : p_(std::exchange(o.p_, nullptr)), n_(std::exchange(o.n_, 0)) {}
  Buffer& operator=(Buffer&&) = delete;
  ~Buffer() {
    if (p_) ::munmap(p_, n_);
  }
  bool allocate(size_t n) {
    if (n == 0) n = 1;
    void* p = ::mmap(nullptr, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) return false;
    p_ = static_cast<uint8_t*>(p);
    n_ = n;
#if defined(MADV_HUGEPAGE)
    ::madvise(p_, n_, MADV_HUGEPAGE);  // advisory: fine if refused
#endif
#if defined(MADV_POPULATE_WRITE)
    ::madvise(p_, n_, MADV_POPULATE_WRITE);  // Linux >= 5.14; else pages fault in lazily
#endif
    return true;
  }
  uint8_t* data() const {
    return p_;
  }

 private:
  uint8_t* p_ = nullptr;
  size_t n_ = 0;
};

struct PlannedTensor {
  std::string name;
  DType type;
  std::vector<int64_t> ne;  // ggml order: ne[0] = row length (input dim)
  bool is_norm = false;
  Buffer data;
  size_t n_bytes = 0;
};

std::string shape_str(const std::vector<int64_t>& ne) {
  std::string s;
  for (size_t i = 0; i < ne.size(); ++i) s += (i ? " x " : "") + std::to_string(ne[i]);
  return s;
}

// Fills one tensor. q4_0 is written as blocks directly (scale 0.02/4.6 and
// uniform nibbles: std of d * (q - 8) is 4.61 d = 0.02), which keeps the 8B
// reference model's synth to memory speed; other types quantize Gaussian-ish
// rows with the reference quantizer.
Status fill_tensor(ThreadPool& pool, PlannedTensor& t, uint64_t seed, uint64_t tensor_idx) {
  const int64_t n_per_row = t.ne[0];
  int64_t n_rows = 1;
  for (size_t i = 1; i < t.ne.size(); ++i) n_rows *= t.ne[i];
  const size_t row_size = row_bytes(t.type, n_per_row);
  t.n_bytes = row_size * size_t(n_rows);
  if (!t.data.allocate(t.n_bytes))
    return make_error(fmt::format("out of memory: {} needs {:.1f} MiB ({})", t.name,
                                  double(t.n_bytes) / (1 << 20), std::strerror(errno)));

  if (t.is_norm) {  // near ones, so a missing norm weight still shows in outputs
    SplitMix rng{stream_seed(seed, tensor_idx, 0)};
    auto* w = reinterpret_cast<float*>(t.data.data());
    for (int64_t i = 0; i < n_per_row * n_rows; ++i) w[i] = 1.0f + 0.05f * rng.gaussianish();
    return {};
  }

  // ~256K elements per task: large enough to amortize dispatch, small enough
  // to spread even the narrowest matrices over the threads.
  const int64_t rows_per_task = std::max<int64_t>(1, (int64_t(1) << 18) / n_per_row);
  const int64_t n_tasks = (n_rows + rows_per_task - 1) / rows_per_task;
  std::vector<std::vector<float>> scratch(size_t(pool.size()));  // [n_per_row] per thread
  pool.parallel_for(n_tasks, [&](int64_t task, int thread) {
    SplitMix rng{stream_seed(seed, tensor_idx, uint64_t(task))};
    const int64_t r0 = task * rows_per_task, r1 = std::min(n_rows, r0 + rows_per_task);
    uint8_t* out = t.data.data() + size_t(r0) * row_size;
    if (t.type == DType::Q4_0) {
      const uint16_t d = f32_to_fp16(kSynthWeightStd / 4.6f);
      const int64_t n_blocks = (r1 - r0) * (n_per_row / quant::QK4_0);
      auto* blocks = reinterpret_cast<quant::block_q4_0*>(out);
      for (int64_t b = 0; b < n_blocks; ++b) {
        const uint64_t lo = rng.next(), hi = rng.next();
        blocks[b].d = d;
        std::memcpy(blocks[b].qs, &lo, 8);
        std::memcpy(blocks[b].qs + 8, &hi, 8);
      }
      return;
    }
    auto& row = scratch[size_t(thread)];
    row.resize(size_t(n_per_row));
    for (int64_t r = r0; r < r1; ++r, out += row_size) {
      for (float& x : row) x = kSynthWeightStd * rng.gaussianish();
      quant::quantize_row(t.type, row.data(), out, n_per_row);
    }
  });
  return {};
}

}  // namespace

Result<SynthSummary> synth_model(const SynthOptions& opts) {
  using clock = std::chrono::steady_clock;
  auto say = [&](const std::string& line) {
    if (opts.progress) opts.progress(line);
  };

  const ModelPreset* preset = find_model_preset(opts.preset);
  if (!preset)
    return make_error("unknown preset '" + opts.preset + "': choose one of " +
                      model_preset_names());
  const auto qpreset = quant::quant_preset_from_name(opts.type);
  if (!qpreset)
    return make_error("unknown weight type '" + opts.type + "': choose one of " +
                      quant::quant_preset_names());
  // A plain type name gives every matrix that type; a mix name (q4_k_m)
  // follows llama-quantize's per-tensor rules.
  const auto plain = dtype_from_name(opts.type);
  const bool pure = plain && *plain == qpreset->base;

  auto vocab = gguf::File::open(opts.vocab_path);
  if (!vocab) return make_error("cannot read the vocab file: " + vocab.message());
  const gguf::Array* tokens = (*vocab)->get_array("tokenizer.ggml.tokens");
  if (!tokens || tokens->items.empty() || !(*vocab)->get_string("tokenizer.ggml.model"))
    return make_error("'" + opts.vocab_path +
                      "' has no tokenizer (tokenizer.ggml.model and tokenizer.ggml.tokens): "
                      "pass a vocab GGUF such as ggml-vocab-llama-bpe.gguf");
  const int64_t n_vocab = int64_t(tokens->items.size());

  const ModelPreset& p = *preset;
  const int64_t n_embd_kv = p.n_head_kv * p.head_dim();
  quant::MixModel mix;
  mix.arch = "llama";
  mix.n_layers = int(p.n_layer);

  // The tensors in file order: embeddings, the layers, the final norm and output.
  std::vector<PlannedTensor> plan;
  auto add = [&](std::string name, std::vector<int64_t> ne) {
    PlannedTensor t;
    t.is_norm = ne.size() == 1;
    t.type = t.is_norm ? DType::F32 : quant::tensor_type(*qpreset, mix, name, ne, pure);
    t.name = std::move(name);
    t.ne = std::move(ne);
    plan.push_back(std::move(t));
  };
  add("token_embd.weight", {p.n_embd, n_vocab});
  for (int64_t l = 0; l < p.n_layer; ++l) {
    const std::string b = "blk." + std::to_string(l) + ".";
    add(b + "attn_norm.weight", {p.n_embd});
    add(b + "attn_q.weight", {p.n_embd, p.n_head * p.head_dim()});
    add(b + "attn_k.weight", {p.n_embd, n_embd_kv});
    add(b + "attn_v.weight", {p.n_embd, n_embd_kv});
    add(b + "attn_output.weight", {p.n_head * p.head_dim(), p.n_embd});
    add(b + "ffn_norm.weight", {p.n_embd});
    add(b + "ffn_gate.weight", {p.n_embd, p.n_ff});
    add(b + "ffn_up.weight", {p.n_embd, p.n_ff});
    add(b + "ffn_down.weight", {p.n_ff, p.n_embd});
  }
  add("output_norm.weight", {p.n_embd});
  add("output.weight", {p.n_embd, n_vocab});

  if (pure) {  // one line about rows the type's blocks do not divide (tiny + k-quants)
    int n_fallback = 0;
    std::string to, rows;
    for (const auto& t : plan) {
      if (t.is_norm || t.type == qpreset->base) continue;
      ++n_fallback;
      to = dtype_name(t.type);
      const std::string r = std::to_string(t.ne[0]);
      if (rows.find(r) == std::string::npos) rows += (rows.empty() ? "" : " or ") + r;
    }
    if (n_fallback > 0)
      say(
          fmt::format("note: {} of the weight matrices have rows of {}, which {} blocks do not "
                      "divide: they get {}",
                      n_fallback, rows, opts.type, to));
  }

  gguf::Writer w;
  w.set_string("general.architecture", "llama");
  w.set_string("general.name", "kiln-synth-" + std::string(p.name));
  w.set_u32("llama.context_length", uint32_t(p.n_ctx_train));
  w.set_u32("llama.embedding_length", uint32_t(p.n_embd));
  w.set_u32("llama.block_count", uint32_t(p.n_layer));
  w.set_u32("llama.feed_forward_length", uint32_t(p.n_ff));
  w.set_u32("llama.rope.dimension_count", uint32_t(p.head_dim()));
  w.set_u32("llama.attention.head_count", uint32_t(p.n_head));
  w.set_u32("llama.attention.head_count_kv", uint32_t(p.n_head_kv));
  w.set_f32("llama.attention.layer_norm_rms_epsilon", p.norm_eps);
  w.set_f32("llama.rope.freq_base", p.rope_freq_base);
  w.set_u32("llama.vocab_size", uint32_t(n_vocab));
  w.set_u32("general.file_type", qpreset->file_type);
  w.set_u32("general.quantization_version", kQuantizationVersion);
  w.copy_metadata(**vocab, "tokenizer.");

  ThreadPool pool(opts.n_threads);
  SynthSummary sum;
  sum.n_vocab = n_vocab;
  const auto t0 = clock::now();
  auto fill_group = [&](size_t first, size_t last, const std::string& label) -> Status {
    const auto g0 = clock::now();
    uint64_t bytes = 0;
    for (size_t i = first; i < last; ++i) {
      KILN_TRY(fill_tensor(pool, plan[i], opts.seed, i));
      bytes += plan[i].n_bytes;
    }
    const double s = std::chrono::duration<double>(clock::now() - g0).count();
    say(fmt::format("{:<32} {:9.1f} MiB  {:6.2f} s", label, double(bytes) / (1 << 20), s));
    return {};
  };
  KILN_TRY(fill_group(
      0, 1, fmt::format("token_embd [{}] {}", shape_str(plan[0].ne), dtype_name(plan[0].type))));
  for (int64_t l = 0; l < p.n_layer; ++l)
    KILN_TRY(fill_group(1 + size_t(l) * 9, 1 + size_t(l + 1) * 9,
                        fmt::format("blk.{} ({} of {})", l, l + 1, p.n_layer)));
  KILN_TRY(fill_group(
      plan.size() - 2, plan.size(),
      fmt::format("output [{}] {}", shape_str(plan.back().ne), dtype_name(plan.back().type))));
  sum.generate_s = std::chrono::duration<double>(clock::now() - t0).count();

  for (auto& t : plan) {
    KILN_TRY(w.add_tensor_ref(t.name, t.type, t.ne, {t.data.data(), t.n_bytes}));
    sum.file_bytes += t.n_bytes;
    int64_t n = 1;
    for (auto d : t.ne) n *= d;
    sum.n_params += uint64_t(n);
  }
  say(fmt::format("writing {} ({:.2f} GiB of tensors)", opts.out_path,
                  double(sum.file_bytes) / (1 << 30)));
  const auto t1 = clock::now();
  KILN_TRY(w.write(opts.out_path));
  sum.write_s = std::chrono::duration<double>(clock::now() - t1).count();
  std::error_code ec;
  if (auto size = std::filesystem::file_size(opts.out_path, ec); !ec) sum.file_bytes = size;
  return sum;
}

}  // namespace kiln::model
