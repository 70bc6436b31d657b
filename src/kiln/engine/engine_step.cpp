// One engine step: drop cancelled sequences, plan (scheduler), build the
// batch, run the backend, then per sequence: sample and stream a token,
// finish on EOG / max_tokens, accumulate embeddings, register newly filled
// KV blocks in the prefix cache; finally publish the counters /metrics reads.
#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cmath>

#include "kiln/core/assert.h"
#include "kiln/engine/engine_impl.h"
#include "kiln/tokenizer/tokenizer.h"

namespace kiln::engine {
namespace {

template <class T>
void store_max(std::atomic<T>& a, T v) {
  T cur = a.load(std::memory_order_relaxed);
  while (v > cur && !a.compare_exchange_weak(cur, v, std::memory_order_relaxed)) {
  }
}

}  // namespace

void EngineImpl::step() {
  const auto t0 = std::chrono::steady_clock::now();
  for (auto& s : intake_) {
    if (!s->is_embedding() && s->max_tokens == 0) {  // nothing to generate: done at once
      TokenEvent ev;
      ev.finish = FinishReason::length;
      ev.cached_prompt_tokens = 0;
      pending_events_.push_back({s->channel, std::move(ev)});
      continue;
    }
    sched_.add(std::move(s));
  }
  intake_.clear();
  drop_cancelled();

  const std::vector<ScheduledChunk>& plan = sched_.schedule();
  if (plan.empty()) {
    // Cannot happen while every admitted request fits the pool alone (submit
    // checks that); never spin on it either.
    for (const auto& s : sched_.waiting())
      end_sequence(*s, FinishReason::error,
                   "the scheduler could not place this request in the KV cache");
    sched_.sweep();
    deliver();
    return;
  }

  // Step-trace timestamps (cfg_.trace_steps), not read otherwise.
  auto mark = [this] {
    return cfg_.trace_steps ? std::chrono::steady_clock::now() : std::chrono::steady_clock::time_point{};
  };
  const auto t_plan = mark();
  // Baked tails the newly admitted sequences start with (scheduler.h).
  Status st = Status::success();
  for (const TailCopy& c : sched_.tail_copies()) {
    if (st.ok()) st = backend_.copy_kv_block(c.src, c.dst);
    cache_->release(c.src);
  }
  build_batch(plan);
  const auto t_built = mark();
  if (st.ok()) st = backend_.forward(batch_);
  const auto t_enqueued = mark();
  if (st.ok()) st = backend_.synchronize();
  const auto t_synced = mark();
  if (!st.ok()) {
    // The sequences of this batch fail; their blocks (never registered in the
    // prefix cache: that happens only after a good step) go back to the pool.
    for (const auto& c : plan)
      end_sequence(*c.seq, FinishReason::error, "backend: " + st.message());
    sched_.sweep();
    deliver();
    return;
  }

  bool has_decode = false, has_prefill = false;
  for (const auto& c : plan) (c.decode ? has_decode : has_prefill) = true;
  // For the trace: the earliest arrival among the prefill rows (read now:
  // sequences that finish in this step are gone after the sweep).
  auto first_arrival = std::chrono::steady_clock::time_point::max();
  if (cfg_.trace_steps)
    for (const auto& c : plan)
      if (!c.decode) first_arrival = std::min(first_arrival, c.seq->arrival);
  const int64_t n_seqs = int64_t(plan.size());
  const int64_t n_rows = batch_.n_tokens();
  step_prompt_computed_ = 0;
  step_generated_ = 0;
  step_device_sampled_ = 0;
  process_outputs(plan);
  sched_.sweep();

  stats_.steps.fetch_add(1, std::memory_order_relaxed);
  stats_.batch_tokens.fetch_add(uint64_t(n_rows), std::memory_order_relaxed);
  stats_.prompt_tokens_computed.fetch_add(uint64_t(step_prompt_computed_),
                                          std::memory_order_relaxed);
  stats_.generated_tokens.fetch_add(uint64_t(step_generated_), std::memory_order_relaxed);
  stats_.device_sampled_tokens.fetch_add(uint64_t(step_device_sampled_), std::memory_order_relaxed);
  store_max(stats_.max_seqs_in_step, n_seqs);
  if (has_decode && has_prefill) {
    stats_.mixed_steps.fetch_add(1, std::memory_order_relaxed);
    store_max(stats_.max_seqs_in_mixed_step, n_seqs);
  }
  const auto us =
      std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - t0)
          .count();
  stats_.step_time_us_total.fetch_add(uint64_t(us), std::memory_order_relaxed);
  deliver();
  if (cfg_.trace_steps) {
    auto ms = [](auto a, auto b) { return std::chrono::duration<double, std::milli>(b - a).count(); };
    // Prefill rows: the longest a sequence waited from its arrival at the
    // edge (request read) to this step, and to its tokens delivered.
    const auto t_end = std::chrono::steady_clock::now();
    const double waited = has_prefill ? ms(first_arrival, t0) : 0.0;
    const double served = has_prefill ? ms(first_arrival, t_end) : 0.0;
    fmt::print(stderr,
               "kiln engine: step {} rows {} seqs {} | arrival->step {:.3f} intake+plan {:.3f} "
               "copies+batch {:.3f} enqueue {:.3f} gpu wait {:.3f} outputs {:.3f} | "
               "arrival->delivered {:.3f} ms\n",
               stats_.steps.load(std::memory_order_relaxed), n_rows, n_seqs, waited, ms(t0, t_plan),
               ms(t_plan, t_built), ms(t_built, t_enqueued), ms(t_enqueued, t_synced),
               ms(t_synced, t_end), served);
  }
}

// Cancelled requests (and the other inputs of a failed embedding group) end
// here, at the start of the step after the flag was raised: their blocks are
// free before anything else is scheduled.
void EngineImpl::drop_cancelled() {
  bool any = false;
  auto check = [&](Sequence& s) {
    const bool dead = s.is_embedding() ? s.embedding->failed : s.cancelled();
    if (!dead) return;
    end_sequence(s, FinishReason::cancelled, "");
    any = true;
  };
  for (const auto& s : sched_.running()) check(*s);
  for (const auto& s : sched_.waiting()) check(*s);
  if (!any) return;
  sched_.sweep();
  deliver();
}

void EngineImpl::build_batch(const std::vector<ScheduledChunk>& plan) {
  batch_.clear();
  for (const auto& c : plan) {
    const Sequence& s = *c.seq;
    const int32_t seq = batch_.add_seq(s.block_table);
    const bool emb = s.is_embedding();
    const int32_t end = c.start + c.n_tokens;
    for (int32_t p = c.start; p < end; ++p) {
      // Generation wants logits only after the sequence's last token;
      // embeddings want every row's hidden state.
      batch_.add(s.tokens[size_t(p)], p, seq, !emb && p == s.n_tokens() - 1, emb);
    }
  }
}

// The rows whose token the backend can choose on its device: the sampler
// needs only the logits and its next draw (Sampler::device_samplable) and no
// logprobs are wanted. One backend call for all of them, before any token is
// emitted; true when it was made. Rows it declines, and every other row, go
// through the host sampler as before, with the same draw (peek, not take).
bool EngineImpl::sample_on_device(const std::vector<ScheduledChunk>& plan) {
  if (!device_sampling_) return false;
  device_rows_.clear();
  int32_t i_logits = 0;
  for (const auto& c : plan) {
    const Sequence& s = *c.seq;
    if (s.is_embedding() || c.start + c.n_tokens != s.n_tokens()) continue;  // no logits row
    if (s.n_top_logprobs < 0 && s.sampler->device_samplable()) {
      const SamplingParams& p = s.sampler->params();
      device_rows_.push_back(
          {i_logits, p.top_k, p.temperature, p.top_p, p.min_p, s.sampler->peek_uniform()});
    }
    ++i_logits;
  }
  if (device_rows_.empty()) return false;
  if (!backend_.sample_rows(device_rows_).ok()) {
    // Only malformed rows fail (device errors abort): keep to the host path
    // from now on rather than asking every step.
    device_sampling_ = false;
    return false;
  }
  return true;
}

void EngineImpl::process_outputs(const std::vector<ScheduledChunk>& plan) {
  const int32_t bs = cfg_.kv.block_size;
  const bool on_device = sample_on_device(plan);
  int32_t i_logits = 0, i_hidden = 0;
  for (const auto& c : plan) {
    Sequence& s = *c.seq;
    KILN_ASSERT(c.start == s.n_computed);
    s.n_computed += c.n_tokens;
    step_prompt_computed_ += std::max(0, std::min(s.n_computed, s.n_prompt) - c.start);
    // Newly filled blocks become shareable before the sequence may finish
    // and release them (the cache keeps them until evicted).
    if (cache_) cache_->insert(s.tokens, s.block_table, s.n_computed / bs, s.chain);
    if (s.is_embedding()) {
      for (int32_t r = 0; r < c.n_tokens; ++r) {
        const std::span<const float> h = backend_.hidden(i_hidden++);
        for (int64_t e = 0; e < n_embd_; ++e) s.hidden_sum[size_t(e)] += double(h[size_t(e)]);
      }
      if (s.n_computed == s.n_tokens()) finish_embedding(s);
    } else if (s.n_computed == s.n_tokens()) {
      // Greedy without logprobs: the backend's argmax; sampled on the device:
      // its token. Neither reads the row.
      int32_t t =
          s.n_top_logprobs < 0 && s.sampler->plain_argmax() ? backend_.argmax(i_logits) : -1;
      if (t >= 0) {
        emit_chosen(s, t);
      } else if (on_device && (t = backend_.sampled(i_logits)) >= 0) {
        s.sampler->accept_drawn(t);
        ++step_device_sampled_;
        emit_event(s, t, TokenEvent{});
      } else {
        emit_token(s, backend_.logits(i_logits));
      }
      ++i_logits;
    }
  }
  KILN_ASSERT(i_logits == backend_.n_logits());
}

void EngineImpl::emit_chosen(Sequence& s, int32_t token) {
  s.sampler->accept(token);
  emit_event(s, token, TokenEvent{});
}

void EngineImpl::emit_token(Sequence& s, std::span<const float> logits) {
  const int32_t token = s.sampler->sample(logits, int32_t(n_vocab_));
  TokenEvent ev;
  if (s.n_top_logprobs >= 0)
    ev.logprobs = compute_logprobs(logits, int32_t(n_vocab_), token, s.n_top_logprobs);
  emit_event(s, token, std::move(ev));
}

void EngineImpl::emit_event(Sequence& s, int32_t token, TokenEvent ev) {
  ev.token = token;
  if (!s.first_event_sent) {
    ev.cached_prompt_tokens = s.n_cached_prompt;
    s.first_event_sent = true;
  }
  s.tokens.push_back(token);
  ++step_generated_;
  const bool eog = std::find(eog_ids_.begin(), eog_ids_.end(), token) != eog_ids_.end();
  if (eog && !s.sampler->params().ignore_eos)
    ev.finish = FinishReason::stop;
  else if (s.n_generated() >= s.max_tokens)
    ev.finish = FinishReason::length;
  if (ev.finish != FinishReason::none) {
    keep_prompt_tail(s);
    sched_.finish(s);
  }
  pending_events_.push_back({s.channel, std::move(ev)});
}

// The prompt's partial last block becomes a cached tail of its own block (a
// copy: the sequence's block may also hold generated tokens and may be
// cached as a full block). Best effort: no free block, no tail.
void EngineImpl::keep_prompt_tail(const Sequence& s) {
  const int32_t bs = cfg_.kv.block_size;
  const int32_t n_full = s.n_prompt / bs, n_tail = s.n_prompt % bs;
  if (!cache_ || !cfg_.cache_prompt_tails || n_tail == 0 || s.n_computed < s.n_prompt ||
      int32_t(s.block_table.size()) <= n_full)
    return;
  const std::span<const int32_t> prompt(s.tokens.data(), size_t(s.n_prompt));
  PrefixChain chain;  // where the prompt's full blocks end in the cache
  for (int32_t i = 0; i < n_full; ++i)
    if (!cache_->follow(prompt.subspan(size_t(i) * size_t(bs), size_t(bs)), chain)) return;
  const auto tail = prompt.subspan(size_t(n_full) * size_t(bs));
  if (cache_->peek_tail(tail, chain) >= 0) return;  // kept already
  std::vector<int32_t> one;
  if (!pool_.grow(one, bs, bs)) return;
  if (!backend_.copy_kv_block(s.block_table[size_t(n_full)], one[0]).ok() ||
      !cache_->adopt_tail(tail, one[0], chain))
    pool_.release(one[0]);
}

void EngineImpl::finish_embedding(Sequence& s) {
  EmbeddingGroup& g = *s.embedding;
  const double inv_n = 1.0 / double(s.n_tokens());
  double norm2 = 0.0;
  for (double v : s.hidden_sum) norm2 += (v * inv_n) * (v * inv_n);
  const double scale = norm2 > 0.0 ? inv_n / std::sqrt(norm2) : 0.0;
  std::vector<float>& out = g.vectors[size_t(s.embedding_index)];
  out.resize(s.hidden_sum.size());
  for (size_t e = 0; e < out.size(); ++e) out[e] = float(s.hidden_sum[e] * scale);
  stats_.embedding_inputs.fetch_add(1, std::memory_order_relaxed);
  stats_.embedding_tokens.fetch_add(uint64_t(s.n_tokens()), std::memory_order_relaxed);
  sched_.finish(s);
  if (--g.n_left == 0 && !g.failed) {
    pending_done_.emplace_back(std::move(g.done), std::move(g.vectors));
    g.done = nullptr;
  }
}

void EngineImpl::end_sequence(Sequence& s, FinishReason why, const std::string& error) {
  if (s.phase == SeqPhase::finished) return;
  sched_.finish(s);
  if (s.is_embedding()) {
    EmbeddingGroup& g = *s.embedding;
    if (g.failed) return;
    g.failed = true;
    pending_done_.emplace_back(
        std::move(g.done),
        make_error(why == FinishReason::cancelled ? "embedding cancelled: the engine stopped"
                                                  : error));
    g.done = nullptr;
    return;
  }
  TokenEvent ev;
  ev.finish = why;
  ev.error = error;
  if (!s.first_event_sent) {
    ev.cached_prompt_tokens = s.n_cached_prompt;
    s.first_event_sent = true;
  }
  pending_events_.push_back({s.channel, std::move(ev)});
}

void EngineImpl::fail_running(const std::string& error) {
  for (const auto& s : sched_.running()) end_sequence(*s, FinishReason::error, error);
  sched_.sweep();
  deliver();
}

// Results leave the engine only after the counters include the step that
// produced them: a client that has seen its last token also sees its blocks
// freed and its tokens counted in /metrics.
void EngineImpl::deliver() {
  publish_stats();
  for (auto& p : pending_events_) p.channel->push(std::move(p.event));
  pending_events_.clear();
  for (auto& [done, result] : pending_done_) done(std::move(result));
  pending_done_.clear();
}

void EngineImpl::publish_stats() {
  const auto r = std::memory_order_relaxed;
  // Sequences that finished this step leave running_ at the sweep; the
  // gauge must not count them meanwhile (the edge may read it right away).
  int64_t running = 0;
  for (const auto& s : sched_.running()) running += s->phase == SeqPhase::running ? 1 : 0;
  stats_.running.store(running, r);
  int64_t waiting = int64_t(intake_.size()) + n_inbox_.load(r);
  for (const auto& s : sched_.waiting()) waiting += s->phase == SeqPhase::waiting ? 1 : 0;
  stats_.waiting.store(waiting, r);
  const int32_t cached = cache_ ? cache_->n_evictable() : 0;
  stats_.kv_blocks_cached.store(cached, r);
  stats_.kv_blocks_used.store(int64_t(pool_.n_blocks() - pool_.n_free() - cached), r);
  const SchedulerCounters& c = sched_.counters();
  stats_.preemptions.store(c.preemptions, r);
  stats_.prefix_lookups.store(c.prefix_lookups, r);
  stats_.prefix_hits.store(c.prefix_hits, r);
  stats_.prompt_tokens.store(c.prompt_tokens, r);
  stats_.prompt_tokens_cached.store(c.prompt_tokens_cached, r);
  if (cache_) stats_.prefix_collisions.store(cache_->collisions(), r);
}

}  // namespace kiln::engine
