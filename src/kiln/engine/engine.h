// The engine: one thread that owns the backend, the KV block pool, the prefix
// cache and the scheduler, and runs steps of continuous batching. Other
// threads talk to it only through submit() and the per-request ResultChannel.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "kiln/backend/backend.h"
#include "kiln/core/status.h"
#include "kiln/engine/prefix_blocks.h"
#include "kiln/engine/request.h"

namespace kiln {
class Tokenizer;
namespace model {
class Model;
}
}  // namespace kiln

namespace kiln::engine {

struct EngineConfig {
  int32_t n_parallel = 8;          // --parallel: sequences decoded together at most
  int32_t max_batch_tokens = 512;  // --max-batch-tokens: tokens per step (decode + prefill chunks)
  int32_t ctx_size = 4096;         // --ctx-size: prompt + generated tokens per request
  KvCacheConfig kv;                // type, block size, number of blocks
  bool prefix_cache = true;        // automatic prefix caching of full blocks
  // `kiln bake`: a finished prompt's last, partial block is kept as a cached
  // tail (prefix_cache.h) so export_prefix_blocks can bake it too. Serving
  // leaves it off (every request would keep one more block).
  bool cache_prompt_tails = false;
  // One stderr line per step with where its time went (KILN_TRACE_STEPS=1
  // in kiln serve): for finding what a request's latency is made of.
  bool trace_steps = false;
  // Tests only: replaces the prefix cache's block hash (parent key, block
  // token ids) -> key, e.g. with a constant to force collisions, which token
  // verification must catch. Empty: the real hash.
  std::function<uint64_t(uint64_t, std::span<const int32_t>)> prefix_hash_for_testing;
};

// Counters and gauges, updated by the engine thread, read by /metrics.
struct EngineStats {
  std::atomic<int64_t> running{0};  // sequences holding a slot
  std::atomic<int64_t> waiting{0};  // submitted, not yet scheduled
  std::atomic<uint64_t> steps{0};
  std::atomic<uint64_t> step_time_us_total{0};
  std::atomic<int64_t> max_seqs_in_step{0};         // most sequences in one step so far
  std::atomic<uint64_t> mixed_steps{0};             // steps with both prefill and decode rows
  std::atomic<int64_t> max_seqs_in_mixed_step{0};   // most sequences in one such step
  std::atomic<uint64_t> batch_tokens{0};            // rows run through the model (all steps)
  std::atomic<uint64_t> prompt_tokens{0};           // prompt tokens of admitted requests
  std::atomic<uint64_t> prompt_tokens_computed{0};  // ... actually run through the model
  std::atomic<uint64_t> prompt_tokens_cached{0};    // ... served from the prefix cache
  std::atomic<uint64_t> generated_tokens{0};
  std::atomic<uint64_t> device_sampled_tokens{0};  // ... of them sampled on the backend's device
  std::atomic<uint64_t> preemptions{0};
  std::atomic<uint64_t> prefix_lookups{0};     // full prompt blocks looked up
  std::atomic<uint64_t> prefix_hits{0};        // ... found and verified
  std::atomic<uint64_t> prefix_collisions{0};  // key found, token verification failed
  std::atomic<int64_t> kv_blocks_total{0};
  std::atomic<int64_t> kv_blocks_used{0};     // referenced by sequences
  std::atomic<int64_t> kv_blocks_cached{0};   // held only by the prefix cache (reclaimable)
  std::atomic<uint64_t> embedding_inputs{0};  // embedding inputs completed
  std::atomic<uint64_t> embedding_tokens{0};  // ... their tokens
};

// One L2-normalized vector [n_embd] per input, in input order, or the error.
using EmbeddingDone = std::function<void(Result<std::vector<std::vector<float>>>)>;

class Engine {
 public:
  // The model, tokenizer and backend must outlive the engine; the backend's
  // weights must be loaded. Allocates the KV pool (cfg.kv).
  static Result<std::unique_ptr<Engine>> create(Backend& backend, const model::Model& model,
                                                const Tokenizer& tokenizer, EngineConfig cfg);
  virtual ~Engine() = default;

  // Starts / stops the engine thread. stop() cancels nothing: call it after
  // draining; requests still queued then get FinishReason::cancelled.
  virtual void start() = 0;
  virtual void stop() = 0;

  // Thread-safe. Queues a request; the engine answers through `out`. Fails
  // (without touching `out`) when the request can never fit (prompt +
  // max_tokens beyond ctx_size or beyond the whole KV pool) or when stopped.
  virtual Status submit(GenerationRequest req, std::shared_ptr<ResultChannel> out) = 0;

  virtual const EngineConfig& config() const = 0;
  virtual const EngineStats& stats() const = 0;

  // Thread-safe. Embeds each input (token ids) with the served model: the
  // mean over its positions of the last hidden state after the final norm,
  // L2-normalized. The inputs run as sequences of the same scheduler (slots,
  // token budget, KV blocks) as generation. `done` runs exactly once, on the
  // engine thread (it must not block), with every vector or the first error
  // (cancelled by stop() included). Fails without calling `done` when an
  // input is empty, longer than ctx_size or the KV pool, holds ids outside
  // the vocabulary, or the backend cannot return hidden states.
  virtual Status submit_embeddings(std::vector<std::vector<int32_t>> inputs, EmbeddingDone done) {
    return make_error("this engine does not compute embeddings");
  }
  virtual int32_t n_embd() const { return 0; }  // length of an embedding vector

  // Baked prefix caches. Only while the engine thread is not running
  // (before start(), or after stop()): they touch the pool, the prefix cache
  // and the backend's KV blocks directly, and refuse otherwise.
  //
  // Restores blocks exported by an engine of the same model, KV type and
  // block size (the artifact's fingerprint checks that): each block is
  // allocated from the pool, written through Backend::write_kv_block and
  // registered under the same chained key as a baked cache entry (kept over
  // ordinary cached blocks under pressure; prefix_cache.h). Stops adopting
  // when the pool has no free block left (report.skipped).
  virtual Result<PrefixImportReport> import_prefix_blocks(const PrefixBlocks& blocks) {
    return make_error("this engine cannot restore baked prefix blocks");
  }
  // The cached full blocks at the start of each prompt (the chains a later
  // request with that prefix would hit), deduplicated across prompts, read
  // through Backend::read_kv_block. Deterministic: prompt order, then chain
  // order.
  virtual Result<PrefixBlocks> export_prefix_blocks(std::span<const std::vector<int32_t>> prompts) {
    return make_error("this engine cannot export prefix blocks");
  }
};

}  // namespace kiln::engine
