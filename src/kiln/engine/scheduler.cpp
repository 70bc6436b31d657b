// Scheduler: waiting FIFO, running set, per-step plan, block allocation and
// preemption (see scheduler.h).
#include "kiln/engine/scheduler.h"

#include <algorithm>

#include "kiln/core/assert.h"

namespace kiln::engine {

Scheduler::Scheduler(const SchedulerConfig& cfg, KvBlockPool& pool, PrefixCache* cache)
    : cfg_(cfg), pool_(pool), cache_(cache) {
  KILN_ASSERT(cfg.n_parallel >= 1 && cfg.max_batch_tokens >= cfg.n_parallel && cfg.block_size >= 1);
  running_.reserve(size_t(cfg.n_parallel));
  plan_.reserve(size_t(cfg.n_parallel));
}

void Scheduler::add(std::unique_ptr<Sequence> seq) {
  seq->phase = SeqPhase::waiting;
  waiting_.push_back(std::move(seq));
}

int32_t Scheduler::n_available_blocks() const {
  return pool_.n_free() + (cache_ ? cache_->n_evictable() : 0);
}

// Most tokens (<= want) of s's next chunk that the blocks it holds plus the
// available ones can cover.
int32_t Scheduler::fit(const Sequence& s, int32_t want) const {
  const int64_t max_pos =
      (int64_t(s.block_table.size()) + n_available_blocks()) * int64_t(cfg_.block_size);
  return int32_t(std::min<int64_t>(want, max_pos - s.n_computed));
}

bool Scheduler::reserve(Sequence& s, int64_t n_positions) {
  const int32_t need =
      KvBlockPool::blocks_for(n_positions, cfg_.block_size) - int32_t(s.block_table.size());
  if (need > pool_.n_free() && cache_) cache_->evict(need - pool_.n_free());
  return pool_.grow(s.block_table, n_positions, cfg_.block_size);
}

void Scheduler::release_blocks(Sequence& s) {
  if (cache_)
    cache_->release_all(s.block_table);
  else
    pool_.release_all(s.block_table);
}

void Scheduler::reset_for_recompute(Sequence& s) {
  release_blocks(s);
  s.n_computed = 0;
  s.chain = PrefixChain{};
  std::fill(s.hidden_sum.begin(), s.hidden_sum.end(), 0.0);
}

void Scheduler::finish(Sequence& s) {
  release_blocks(s);
  s.phase = SeqPhase::finished;
}

void Scheduler::sweep() {
  auto done = [](const std::unique_ptr<Sequence>& s) { return s->phase == SeqPhase::finished; };
  std::erase_if(running_, done);
  std::erase_if(waiting_, done);
}

// The most recently admitted running sequence gives its blocks back and
// waits at the front of the queue (it keeps its tokens and sampler state, so
// its output is unchanged; only the K/V is recomputed).
void Scheduler::preempt_newest() {
  KILN_ASSERT(!running_.empty());
  std::unique_ptr<Sequence> v = std::move(running_.back());
  running_.pop_back();
  for (auto it = plan_.begin(); it != plan_.end(); ++it)
    if (it->seq == v.get()) {
      budget_ += it->n_tokens;
      plan_.erase(it);
      break;
    }
  reset_for_recompute(*v);
  v->phase = SeqPhase::waiting;
  waiting_.push_front(std::move(v));
  ++counters_.preemptions;
}

// Schedules up to `want` tokens of running_[index], preempting newer
// sequences while not even one token fits. False when the sequence itself
// had to be preempted.
bool Scheduler::place_running(size_t index, int32_t want, bool decode) {
  Sequence* s = running_[index].get();
  for (;;) {
    const int32_t n = fit(*s, want);
    if (n >= 1) {
      const bool ok = reserve(*s, int64_t(s->n_computed) + n);
      KILN_ASSERT(ok);
      plan_.push_back({s, s->n_computed, n, decode});
      budget_ -= n;
      return true;
    }
    const bool self = running_.back().get() == s;
    preempt_newest();
    if (self) return false;
  }
}

// Admits the head of the queue if at least one token of it fits without
// preempting anyone (admission never evicts running work).
bool Scheduler::admit_front() {
  Sequence* s = waiting_.front().get();
  const int32_t bs = cfg_.block_size;
  int32_t looked = 0, matched = 0;
  PrefixCache::TailHit tail;
  if (cache_ && !s->is_embedding() && s->n_computed == 0) {
    // Keep at least the last token to compute: its logits give the next token.
    looked = (s->n_tokens() - 1) / bs;
    matched = cache_->match(s->tokens, looked, s->block_table, s->chain);
    s->n_computed = matched * bs;
    // Then a baked prompt's partial last block, copied into our own block.
    tail = cache_->match_tail(std::span<const int32_t>(s->tokens).subspan(size_t(s->n_computed)),
                              s->n_tokens() - 1 - s->n_computed, s->chain);
    s->n_computed += tail.n_tokens;
  }
  const int32_t n = fit(*s, std::min(s->n_remaining(), budget_));
  if (n < 1) {
    if (tail.block >= 0) cache_->release(tail.block);
    reset_for_recompute(*s);  // hand the matched blocks back (evictable again)
    return false;
  }
  const bool ok = reserve(*s, int64_t(s->n_computed) + n);
  KILN_ASSERT(ok);
  if (tail.block >= 0) copies_.push_back({tail.block, s->block_table[size_t(matched)]});
  counters_.prefix_lookups += uint64_t(looked);
  counters_.prefix_hits += uint64_t(matched);
  if (!s->admitted_once) {
    s->admitted_once = true;
    s->n_cached_prompt = std::min(matched * bs + tail.n_tokens, s->n_prompt);
    counters_.prompt_tokens += uint64_t(s->n_prompt);
    counters_.prompt_tokens_cached += uint64_t(s->n_cached_prompt);
  }
  s->phase = SeqPhase::running;
  running_.push_back(std::move(waiting_.front()));
  waiting_.pop_front();
  plan_.push_back({s, s->n_computed, n, false});
  budget_ -= n;
  return true;
}

const std::vector<ScheduledChunk>& Scheduler::schedule() {
  plan_.clear();
  copies_.clear();
  budget_ = cfg_.max_batch_tokens;
  // 1. One token for each sequence with a single token left to run (the
  //    decode rows), oldest first: they go first so streams never stall
  //    behind long prompts.
  for (size_t i = 0; i < running_.size() && budget_ > 0; ++i) {
    Sequence& s = *running_[i];
    if (s.n_remaining() == 1) place_running(i, 1, s.n_generated() > 0);
  }
  // 2. The next chunk of each sequence still prefilling (chunked prefill, or
  //    recompute after preemption).
  for (size_t i = 0; i < running_.size() && budget_ > 0; ++i) {
    Sequence& s = *running_[i];
    if (s.n_remaining() > 1) place_running(i, std::min(s.n_remaining(), budget_), false);
  }
  // 3. New (or preempted) sequences from the queue, in order, while slots,
  //    budget and blocks last.
  while (budget_ > 0 && !waiting_.empty() && int32_t(running_.size()) < cfg_.n_parallel)
    if (!admit_front()) break;
  return plan_;
}

}  // namespace kiln::engine
