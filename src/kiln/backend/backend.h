// The backend interface: the one thing the engine calls to run the model.
// CPU and CUDA implement it; nothing above engine/ knows which one runs.
//
// A step = forward(batch) -> synchronize() -> logits(i). A batch is a flat
// list of tokens, each naming its sequence, its position in that sequence and
// whether its logits are wanted, so one call can mix prefill chunks of some
// sequences with decode tokens of others (continuous batching).
//
// KV cache (paged): a pool of n_blocks blocks, each holding K and V of
// block_size consecutive positions for every layer. A sequence owns a block
// table: block_table[i] holds its positions [i*block_size, (i+1)*block_size).
// Blocks are allocated, shared (prefix caching) and freed by the engine
// (engine/kv_block_pool.h); the backend only stores their contents.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "kiln/core/status.h"

namespace kiln::model {
class Model;
struct HParams;
}  // namespace kiln::model

namespace kiln {

// Element type of the stored K/V rows (one row = one head of one position).
// f32 matches the float64 reference; f16 is the serving default; fp8 (e4m3,
// saturating) and q8_0 (blocks of 32 with an f16 scale) halve it again.
enum class KvType : uint8_t { f32, f16, fp8, q8_0 };

std::string_view kv_type_name(KvType t);  // "f32", "f16", "fp8", "q8_0"
std::optional<KvType> kv_type_from_name(std::string_view name);
// Bytes of one stored row of head_dim elements (head_dim % 32 == 0 for q8_0).
size_t kv_row_bytes(KvType t, int64_t head_dim);

struct KvCacheConfig {
  KvType type = KvType::f16;
  int32_t block_size = 16;  // positions per block
  int32_t n_blocks = 0;     // blocks in the pool (block ids 0 .. n_blocks-1)
};

// Bytes one block id takes over all layers (K and V): what a KV pool of
// n_blocks costs, for sizing it from free memory.
uint64_t kv_bytes_per_block(const model::HParams& hp, KvType type, int32_t block_size);
// Blocks a KV pool of at most `budget_bytes` holds (kv_bytes_per_block
// each), capped at INT32_MAX; 0 when not even one block fits.
int32_t kv_blocks_for_bytes(const model::HParams& hp, KvType type, int32_t block_size,
                            uint64_t budget_bytes);
// Zeroes slots [first, block_size) of every layer's K and V heads in one
// block of the canonical format (Backend::read_kv_block): an exported
// partial block then carries no bytes of the pool's unwritten slots.
void clear_kv_slots(std::span<uint8_t> block, const model::HParams& hp, KvType type, int32_t block_size,
                    int32_t first);
// Checks that a KV configuration suits the model (type vs head size, sizes).
Status check_kv_config(const model::HParams& hp, const KvCacheConfig& cfg);

struct BatchToken {
  int32_t token = 0;    // vocabulary id
  int32_t pos = 0;      // position within its sequence, 0-based
  int32_t seq = 0;      // index into Batch::seqs
  bool logits = false;  // compute next-token logits for this row
  // Return this row's final hidden state (after the output norm, before the
  // output projection) through Backend::hidden(): embeddings. Only backends
  // whose supports_hidden() is true accept such rows.
  bool hidden = false;
};

struct BatchSeq {
  // The sequence's KV blocks (engine-owned memory, valid during forward()).
  // Must cover every position of its tokens in this batch.
  std::span<const int32_t> block_table;
};

// Contract for forward(): a token at position p attends to positions
// [0, p] of its sequence. Positions below the sequence's first position in
// this batch must already be in the cache (earlier forward() calls or shared
// prefix blocks); within one batch, a sequence's tokens come in increasing
// position order. Blocks shared between sequences are only read, never
// written (share full prefix blocks only). The vectors are reused from step
// to step: clear() keeps their capacity, so building a batch allocates nothing.
struct Batch {
  std::vector<BatchToken> tokens;  // [n_tokens]
  std::vector<BatchSeq> seqs;      // [n_seqs]

  void clear() {
    tokens.clear();
    seqs.clear();
  }
  int32_t add_seq(std::span<const int32_t> block_table) {
    seqs.push_back({block_table});
    return int32_t(seqs.size() - 1);
  }
  void add(int32_t token, int32_t pos, int32_t seq, bool logits, bool hidden = false) {
    tokens.push_back({token, pos, seq, logits, hidden});
  }
  int32_t n_tokens() const { return int32_t(tokens.size()); }
  int32_t n_logits() const {
    int32_t n = 0;
    for (const auto& t : tokens) n += t.logits ? 1 : 0;
    return n;
  }
  int32_t n_hidden() const {
    int32_t n = 0;
    for (const auto& t : tokens) n += t.hidden ? 1 : 0;
    return n;
  }
};

// Checks a batch against the model and the KV pool: token ids, sequence
// indices, positions covered by the block tables, block ids in range,
// increasing positions per sequence. `scratch` avoids allocation per step.
Status validate_batch(const Batch& batch, const model::HParams& hp, const KvCacheConfig& kv,
                      std::vector<int32_t>& scratch);

// One logits row for Backend::sample_rows: the host sampler's truncation
// parameters (engine/sampler.h SamplingParams, validated) and the sequence's
// next uniform draw (Sampler::peek_uniform), so the device chooses exactly
// the token Sampler::sample would, and the randomness stays on the host.
struct DeviceSampleRow {
  int32_t row = 0;           // logits row, as for Backend::logits(row)
  int32_t top_k = 0;         // 0 / -1 / >= n_vocab = off; never 1 (that is argmax)
  float temperature = 1.0f;  // > 0
  float top_p = 1.0f;        // (0, 1]
  float min_p = 0.0f;        // [0, 1]
  double u = 0.0;            // [0, 1)
};

struct MemoryReport {
  std::string device;          // e.g. "AMD EPYC (2 threads)" or a GPU name
  uint64_t weight_bytes = 0;   // weights the backend reads (CPU: mapped, not copied)
  uint64_t kv_bytes = 0;       // the KV block pool
  uint64_t scratch_bytes = 0;  // activations, logits, workspaces
  uint64_t device_total = 0;   // device memory (CPU: physical RAM)
  uint64_t device_free = 0;    // available now
};

class Backend {
 public:
  virtual ~Backend() = default;

  virtual std::string name() const = 0;         // "cpu", "cuda"
  virtual std::string device_name() const = 0;  // for logs and benchmark output

  // Prepares the weights (CPU: binds the mapped file; CUDA: uploads). The
  // model must outlive the backend.
  virtual Status load_weights(const model::Model& model) = 0;
  // (Re)allocates the KV block pool; contents start undefined.
  virtual Status init_kv_cache(const KvCacheConfig& cfg) = 0;
  // Sizes the per-step buffers for batches of up to max_rows rows now (after
  // load_weights), so the first large batch does not pay for allocations
  // (GPU: a device synchronization, freed and reallocated buffers, captured
  // graphs dropped). Its memory shows in memory() as scratch. Optional.
  // max_ctx: the longest context a step attends over (--ctx-size).
  virtual Status reserve_batch(int32_t max_rows, int32_t max_ctx) {
    (void)max_rows, (void)max_ctx;
    return Status::success();
  }
  virtual const KvCacheConfig& kv_config() const = 0;

  // Runs the model over a batch: writes each token's K/V into its block and
  // computes logits for the rows that want them. May return before the work
  // is done (GPU); synchronize() waits.
  virtual Status forward(const Batch& batch) = 0;
  virtual Status synchronize() = 0;
  // Valid after synchronize() until the next forward(): the next-token logits
  // of the i-th row that wanted logits, in batch order. [n_vocab]
  virtual int32_t n_logits() const = 0;
  virtual std::span<const float> logits(int32_t i) const = 0;
  // Index of the largest logit of row i (lowest index on ties, NaN never
  // wins) when the backend computed it beside the logits, else -1. A GPU
  // backend computes it on the device, so greedy decoding of many rows
  // moves only token ids to the host and never reads the rows.
  virtual int32_t argmax(int32_t i) const { (void)i; return -1; }

  // Sampling on the device (temperature, top-k, top-p, min-p; nothing that
  // needs the sequence's history), so a sampled row, like a greedy one,
  // moves one token id to the host instead of n_vocab floats. After
  // synchronize(): one call for all such rows of the step; then sampled(row)
  // is the chosen token of each row passed, or -1 where the backend declined
  // it (the engine then samples that row on the host with the same draw).
  // Valid until the next sample_rows() or forward(). Defaults: not supported
  // (the engine keeps every row on the host).
  virtual bool supports_sampling() const { return false; }
  virtual Status sample_rows(std::span<const DeviceSampleRow> rows);
  virtual int32_t sampled(int32_t row) const {
    (void)row;
    return -1;
  }

  // Final hidden states (embeddings) of the rows with BatchToken::hidden set.
  // Valid after synchronize() until the next forward(): hidden(i) is the i-th
  // such row, in batch order: the residual stream after the output RMSNorm
  // (what the output projection multiplies). [n_embd]
  // Defaults: not supported; the engine then refuses embedding requests, so
  // a backend without it never sees hidden rows.
  virtual bool supports_hidden() const { return false; }
  virtual int32_t n_hidden() const { return 0; }
  virtual std::span<const float> hidden(int32_t i) const { return {}; }

  // Copies the contents of KV block src into dst over all layers (forking a
  // sequence whose last block is partly filled).
  virtual Status copy_kv_block(int32_t src, int32_t dst) = 0;

  // KV block I/O in the canonical, backend-independent byte format, so a
  // prefix cache computed by one backend (`kiln bake` on the CPU) can be
  // restored into another (the GPU at serve time). One block is
  // kv_bytes_per_block(hp, type, block_size) bytes:
  //
  //   for layer l in 0 .. n_layer-1:
  //     K: [n_head_kv][block_size][kv_row_bytes(type, head_dim_k)]
  //     V: [n_head_kv][block_size][kv_row_bytes(type, head_dim_v)]
  //
  // i.e. per KV head, the block's positions in order (slot 0 = position
  // block_index * block_size), each row one head's head_dim values of that
  // position, post-RoPE for K (exactly what attention reads), encoded as:
  //   f32  little-endian IEEE binary32;
  //   f16  little-endian IEEE binary16 (round to nearest even);
  //   fp8  e4m3fn, one byte: bias 7, no infinities, 0x7f/0xff NaN,
  //        saturating at +-448 (core/fp16.h f32_to_fp8_e4m3);
  //   q8_0 head_dim/32 blocks of {f16 scale d, int8 q[32]} (34 bytes,
  //        GGUF's Q8_0 block: value = d * q).
  // This is the CPU backend's own layout (kv_cache.h), so there it is a
  // memcpy per layer; other backends convert. Slots past a partly filled
  // block's last position hold unspecified bytes. `out`/`in` must be exactly
  // one block; the block id must be in the pool. Errors (not asserts) for a
  // wrong size or id. Defaults: not supported (the message says so), so the
  // engine refuses to restore or export baked prefixes on such a backend.
  virtual Status read_kv_block(int32_t block, std::span<uint8_t> out) const;
  virtual Status write_kv_block(int32_t block, std::span<const uint8_t> in);
  // Many blocks at once (a restore of baked prefixes): what write_kv_block
  // does for each, which the default does one by one. On an error some
  // blocks may hold their new bytes and others not.
  struct KvBlockWrite {
    int32_t block = -1;
    std::span<const uint8_t> kv;  // [one block] canonical format
  };
  virtual Status write_kv_blocks(std::span<const KvBlockWrite> writes);

  virtual MemoryReport memory() const = 0;
};

}  // namespace kiln
