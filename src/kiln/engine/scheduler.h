// The scheduler: a FIFO of waiting sequences and the set of running ones,
// and the plan of each engine step: one decode token for every running
// sequence that is generating, prefill chunks for those still prefilling,
// then newly admitted sequences, within the step's token budget and the
// --parallel slots. KV blocks are allocated here, step by step; when they run
// out, unreferenced prefix-cache blocks are reclaimed first, then the most
// recently admitted running sequence is preempted (its blocks freed; it goes
// back to the front of the queue and later recomputes prompt + generated
// tokens). Owned by the engine thread; not thread-safe.
#pragma once

#include <cstdint>
#include <deque>
#include <memory>
#include <vector>

#include "kiln/engine/kv_block_pool.h"
#include "kiln/engine/prefix_cache.h"
#include "kiln/engine/sequence.h"

namespace kiln::engine {

struct SchedulerConfig {
  int32_t n_parallel = 8;          // running sequences at most
  int32_t max_batch_tokens = 512;  // tokens per step (>= n_parallel, so every decode fits)
  int32_t block_size = 16;
};

// One sequence's share of a step: tokens[start, start + n_tokens).
struct ScheduledChunk {
  Sequence* seq = nullptr;
  int32_t start = 0;
  int32_t n_tokens = 0;
  bool decode = false;  // the newest generated token of a generating sequence
};

// A cached tail (prefix_cache.h) to copy into a newly admitted sequence's
// block before the step runs: `src` is retained by the scheduler for it; the
// engine copies the K/V, then hands `src` back with PrefixCache::release.
struct TailCopy {
  int32_t src = -1;
  int32_t dst = -1;
};

// Totals since start, read by the engine into EngineStats.
struct SchedulerCounters {
  uint64_t preemptions = 0;
  uint64_t prefix_lookups = 0;        // full blocks looked up in the prefix cache
  uint64_t prefix_hits = 0;           // ... found and verified
  uint64_t prompt_tokens = 0;         // prompt tokens of admitted requests (first admission)
  uint64_t prompt_tokens_cached = 0;  // ... served from the prefix cache then
};

class Scheduler {
 public:
  // `cache` may be null (prefix caching off). Pool and cache must outlive it.
  Scheduler(const SchedulerConfig& cfg, KvBlockPool& pool, PrefixCache* cache);

  void add(std::unique_ptr<Sequence> seq);  // to the back of the queue

  // Plans the next step; the chunks come in batch order, each sequence at
  // most once, with KV blocks covering every scheduled position. Valid until
  // the next call. Empty only when there is nothing to run.
  const std::vector<ScheduledChunk>& schedule();
  // The K/V copies the last schedule() needs done before its step runs.
  const std::vector<TailCopy>& tail_copies() const { return copies_; }

  // Frees the KV blocks of a sequence that ended (finished, cancelled,
  // failed) and marks it finished; sweep() then drops it.
  void finish(Sequence& seq);
  // Removes finished sequences from the queue and the running set.
  void sweep();

  // Frees a sequence's blocks and resets it for recompute (used by
  // preemption; exposed for tests).
  void reset_for_recompute(Sequence& seq);

  bool has_work() const { return !waiting_.empty() || !running_.empty(); }
  const std::deque<std::unique_ptr<Sequence>>& waiting() const { return waiting_; }
  const std::vector<std::unique_ptr<Sequence>>& running() const { return running_; }
  const SchedulerCounters& counters() const { return counters_; }

  // Blocks that are free or only held by the prefix cache (reclaimable).
  int32_t n_available_blocks() const;

 private:
  int32_t fit(const Sequence& s, int32_t want) const;
  bool reserve(Sequence& s, int64_t n_positions);
  void release_blocks(Sequence& s);
  bool place_running(size_t index, int32_t want, bool decode);
  bool admit_front();
  void preempt_newest();

  SchedulerConfig cfg_;
  KvBlockPool& pool_;
  PrefixCache* cache_;
  std::deque<std::unique_ptr<Sequence>> waiting_;
  std::vector<std::unique_ptr<Sequence>> running_;  // admission order: oldest first
  std::vector<ScheduledChunk> plan_;
  std::vector<TailCopy> copies_;
  int32_t budget_ = 0;  // tokens left in the step being planned
  SchedulerCounters counters_;
};

}  // namespace kiln::engine
