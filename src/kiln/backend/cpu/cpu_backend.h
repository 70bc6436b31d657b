// The CPU backend: runs the Llama-family forward pass over the mapped GGUF
// weights with a paged KV cache, multithreaded over a ThreadPool.
//
// Two numerics behind one switch (CpuOptions::path, or KILN_CPU_REFERENCE=1
// in the environment): `reference` — weights dequantized exactly, float32
// activations, double accumulation in matmuls and attention: the oracle;
// `fast` — cpu::matmul's quantized-activation kernels and float attention.
// Both are batch-invariant: every row's result has a fixed reduction order
// that does not depend on the other rows or on how a prefill was chunked.
#pragma once

#include <memory>
#include <string_view>
#include <vector>

#include "kiln/backend/backend.h"
#include "kiln/backend/cpu/attention.h"
#include "kiln/backend/cpu/attention_kernels.h"
#include "kiln/backend/cpu/kv_cache.h"
#include "kiln/backend/cpu/matmul.h"
#include "kiln/backend/cpu/rope.h"
#include "kiln/core/threadpool.h"

namespace kiln::model {
struct Matrix;
struct Vector;
}  // namespace kiln::model

namespace kiln::cpu {

// How the fast path feeds activations to matmuls over quantized weights
// (cpu::matmul quantizes them to 8 bits per block).
enum class ActQuant {
  // Straight 8-bit blocks, as llama.cpp does: fastest prefill; logits land
  // about as far from the exact ones as llama.cpp's (0.2-0.6 in log-prob on
  // the random reference models, whose large logits magnify the rounding).
  q8,
  // Each activation row is split into its 8-bit grid part and the residual,
  // and both go through the matmul as two rows (~16-bit accuracy: 20-50x
  // closer to the exact logits). Decode costs the same (the weights are read
  // once for both rows); prefill does twice the integer work.
  q8x2,
};
std::string_view act_quant_name(ActQuant a);  // "q8", "q8x2"

struct CpuOptions {
  int n_threads = 0;  // <= 0: every hardware thread
  MatmulPath path = MatmulPath::fast;
  ActQuant act = ActQuant::q8x2;  // fast path only
  bool read_env = true;           // KILN_CPU_REFERENCE=1 forces the reference path
};

// The KV element type each path uses unless told otherwise: the reference
// keeps f32 (to match a float64 forward), the fast path f16 (half the memory
// traffic, what servers use).
KvType default_kv_type(MatmulPath path);

class CpuBackend final : public Backend {
 public:
  explicit CpuBackend(const CpuOptions& options);
  ~CpuBackend() override;

  std::string name() const override { return "cpu"; }
  std::string device_name() const override;
  Status load_weights(const model::Model& model) override;
  Status init_kv_cache(const KvCacheConfig& cfg) override;
  const KvCacheConfig& kv_config() const override { return kv_.config(); }
  Status forward(const Batch& batch) override;
  Status synchronize() override { return Status::success(); }
  int32_t n_logits() const override { return n_logits_; }
  std::span<const float> logits(int32_t i) const override;
  bool supports_hidden() const override { return true; }
  int32_t n_hidden() const override { return n_hidden_; }
  std::span<const float> hidden(int32_t i) const override;
  Status copy_kv_block(int32_t src, int32_t dst) override;
  Status read_kv_block(int32_t block, std::span<uint8_t> out) const override;
  Status write_kv_block(int32_t block, std::span<const uint8_t> in) override;
  MemoryReport memory() const override;

  MatmulPath path() const { return path_; }
  ActQuant act_quant() const { return act_quant_; }
  // "scalar (reference)", or the fast path's ISA and activation scheme.
  std::string numerics() const;
  int n_threads() const { return pool_.size(); }
  ThreadPool& pool() { return pool_; }

 private:
  // Activation buffers for up to `cap` batch rows; grown only when a larger
  // batch arrives, so steady-state decoding allocates nothing.
  struct Activations {
    int64_t cap = 0;
    std::vector<float> x;           // [cap, n_embd] residual stream
    std::vector<float> xn;          // [cap, n_embd] normed sublayer input
    std::vector<float> q;           // [cap, n_q]
    std::vector<float> k;           // [cap, n_k]
    std::vector<float> v;           // [cap, n_v]
    std::vector<float> attn;        // [cap, n_attn_out]
    std::vector<float> proj;        // [cap, n_embd] sublayer output
    std::vector<float> gate;        // [cap, n_ff]
    std::vector<float> up;          // [cap, n_ff]
    std::vector<float> rope;        // [cap, n_rot] cos | sin per row
    std::vector<int32_t> all_rows;  // [cap] 0, 1, 2, ...
    std::vector<int32_t> out_rows;  // [cap] rows that want logits or hidden states
  };

  void reserve_rows(int64_t n);
  void ensure_attention_ctx(int64_t n_ctx);
  void linear(const model::Matrix& w, const model::Vector& bias, const float* x, int64_t n_rows,
              float* y);
  void run_layer(const Batch& batch, int64_t layer, int64_t n_rows);

  MatmulPath path_;
  ActQuant act_quant_;
  const AttentionKernels* attn_kernels_;  // fast attention inner loops for this CPU
  ThreadPool pool_;
  const model::Model* model_ = nullptr;
  Rope rope_;
  KvCache kv_;
  AttentionScratch attn_scratch_;
  Activations act_;
  std::vector<float> split_x_;  // [2 * rows, n_in] q8x2: grid part and residual per row
  std::vector<float> split_y_;  // [2 * rows, n_out] their products
  MatmulScratch act_scratch_;   // quantized activations of each matmul call, reused
  std::vector<float> logits_;   // [n_logits, n_vocab]
  int32_t n_logits_ = 0;
  std::vector<float> hidden_;  // [n_hidden, n_embd] final-normed rows (BatchToken::hidden)
  int32_t n_hidden_ = 0;
  int32_t n_out_ = 0;  // rows the last layer keeps: logits or hidden wanted
  std::vector<int32_t> validate_scratch_;
};

}  // namespace kiln::cpu
