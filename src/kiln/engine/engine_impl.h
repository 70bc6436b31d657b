// The engine behind engine.h: the inbox other threads submit into, and the
// engine thread's state (scheduler, KV block pool, prefix cache, batch).
// engine.cpp has the lifecycle and submission, engine_step.cpp one step.
#pragma once

#include <atomic>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include "kiln/engine/engine.h"
#include "kiln/engine/kv_block_pool.h"
#include "kiln/engine/prefix_cache.h"
#include "kiln/engine/scheduler.h"
#include "kiln/engine/sequence.h"

namespace kiln::engine {

class EngineImpl final : public Engine {
 public:
  EngineImpl(Backend& backend, const model::Model& model, const Tokenizer& tokenizer,
             EngineConfig cfg);
  ~EngineImpl() override;

  void start() override;
  void stop() override;
  Status submit(GenerationRequest req, std::shared_ptr<ResultChannel> out) override;
  Status submit_embeddings(std::vector<std::vector<int32_t>> inputs, EmbeddingDone done) override;
  int32_t n_embd() const override { return int32_t(n_embd_); }
  const EngineConfig& config() const override { return cfg_; }
  const EngineStats& stats() const override { return stats_; }
  Result<PrefixImportReport> import_prefix_blocks(const PrefixBlocks& blocks) override;
  Result<PrefixBlocks> export_prefix_blocks(
      std::span<const std::vector<int32_t>> prompts) override;

 private:
  // Checks that an input of n_tokens tokens (ids checked too) that may grow
  // to n_total positions can ever run; the message names `what`.
  Status check_fits(std::span<const int32_t> tokens, int64_t n_total, const char* what) const;
  void enqueue(std::vector<std::unique_ptr<Sequence>> seqs);

  void run();   // the engine thread
  void step();  // one step of continuous batching (engine_step.cpp)
  void take_inbox(std::vector<std::unique_ptr<Sequence>>& inbox);
  void drop_cancelled();
  void build_batch(const std::vector<ScheduledChunk>& plan);
  void process_outputs(const std::vector<ScheduledChunk>& plan);
  bool sample_on_device(const std::vector<ScheduledChunk>& plan);
  void emit_token(Sequence& s, std::span<const float> logits);
  void emit_chosen(Sequence& s, int32_t token);  // a greedy id the backend chose
  void emit_event(Sequence& s, int32_t token, TokenEvent ev);
  void keep_prompt_tail(const Sequence& s);  // cfg_.cache_prompt_tails, at its finish
  void finish_embedding(Sequence& s);
  // Ends a sequence with an event (generation) or the group's callback
  // (embeddings); frees its blocks.
  void end_sequence(Sequence& s, FinishReason why, const std::string& error);
  void fail_running(const std::string& error);
  void publish_stats();
  void deliver();  // publish_stats(), then hand out the pending events and results
  Status check_idle_for_prefix_io();  // engine thread not running, cache on

  Backend& backend_;
  const model::Model& model_;
  const Tokenizer& tokenizer_;
  EngineConfig cfg_;
  int64_t n_vocab_ = 0;
  int64_t n_embd_ = 0;
  std::vector<int32_t> eog_ids_;  // the vocabulary's end-of-generation ids (< n_vocab)
  EngineStats stats_;

  // Submission side (any thread), guarded by mu_.
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::unique_ptr<Sequence>> inbox_;
  std::atomic<int64_t> n_inbox_{0};  // inbox_.size(), readable without the lock (gauges)
  bool started_ = false;
  bool stopping_ = false;
  bool thread_done_ = false;  // stop() joined the engine thread
  uint64_t next_id_ = 1;
  std::thread thread_;

  // Engine-thread state.
  KvBlockPool pool_;
  std::unique_ptr<PrefixCache> cache_;  // null: prefix caching off
  Scheduler sched_;
  Batch batch_;                                    // reused from step to step
  std::vector<std::unique_ptr<Sequence>> intake_;  // inbox taken under the lock
  struct PendingEvent {
    std::shared_ptr<ResultChannel> channel;
    TokenEvent event;
  };
  std::vector<PendingEvent> pending_events_;  // pushed by deliver()
  std::vector<std::pair<EmbeddingDone, Result<std::vector<std::vector<float>>>>> pending_done_;
  int64_t step_prompt_computed_ = 0;
  int64_t step_generated_ = 0;
  int64_t step_device_sampled_ = 0;
  bool device_sampling_ = backend_.supports_sampling();  // off after a refused call
  std::vector<DeviceSampleRow> device_rows_;             // reused from step to step
};

}  // namespace kiln::engine
