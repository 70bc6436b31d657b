// Engine lifecycle and submission: create() checks the configuration and
// allocates the KV pool; submit() validates a request on the caller's thread
// (so a request that can never run is refused at once, with the limits in the
// message) and drops it into the inbox; the engine thread sleeps on a
// condition variable while there is nothing to do.
#include <fmt/format.h>

#include <exception>

#include "kiln/core/assert.h"
#include "kiln/engine/engine_impl.h"
#include "kiln/model/model.h"
#include "kiln/tokenizer/tokenizer.h"

namespace kiln::engine {

const char* finish_reason_name(FinishReason r) {
  switch (r) {
    case FinishReason::none:
      return "none";
    case FinishReason::stop:
      return "stop";
    case FinishReason::length:
      return "length";
    case FinishReason::cancelled:
      return "cancelled";
    case FinishReason::error:
      return "error";
  }
  return "?";
}

Result<std::unique_ptr<Engine>> Engine::create(Backend& backend, const model::Model& model,
                                               const Tokenizer& tokenizer, EngineConfig cfg) {
  const model::HParams& hp = model.hparams();
  if (cfg.n_parallel < 1)
    return make_error(fmt::format("--parallel is {}; it must be at least 1", cfg.n_parallel));
  if (cfg.max_batch_tokens < cfg.n_parallel)
    return make_error(fmt::format(
        "--max-batch-tokens ({}) must be at least --parallel ({}): every running sequence "
        "decodes one token per step",
        cfg.max_batch_tokens, cfg.n_parallel));
  if (cfg.ctx_size < 1)
    return make_error(fmt::format("--ctx-size is {}; it must be at least 1", cfg.ctx_size));
  KILN_TRY(check_kv_config(hp, cfg.kv));
  KILN_TRY(backend.init_kv_cache(cfg.kv));
  return std::unique_ptr<Engine>(
      std::make_unique<EngineImpl>(backend, model, tokenizer, std::move(cfg)));
}

EngineImpl::EngineImpl(Backend& backend, const model::Model& model, const Tokenizer& tokenizer,
                       EngineConfig cfg)
    : backend_(backend),
      model_(model),
      tokenizer_(tokenizer),
      cfg_(std::move(cfg)),
      n_vocab_(model.hparams().n_vocab),
      n_embd_(model.hparams().n_embd),
      pool_(cfg_.kv.n_blocks),
      cache_(cfg_.prefix_cache ? std::make_unique<PrefixCache>(pool_, cfg_.kv.block_size)
                               : nullptr),
      sched_(SchedulerConfig{cfg_.n_parallel, cfg_.max_batch_tokens, cfg_.kv.block_size}, pool_,
             cache_.get()) {
  for (int32_t id : tokenizer.eog_ids())
    if (id >= 0 && id < n_vocab_) eog_ids_.push_back(id);
  if (cache_ && cfg_.prefix_hash_for_testing)
    cache_->set_hash_fn_for_testing(cfg_.prefix_hash_for_testing);
  batch_.tokens.reserve(size_t(cfg_.max_batch_tokens));
  batch_.seqs.reserve(size_t(cfg_.n_parallel));
  stats_.kv_blocks_total = cfg_.kv.n_blocks;
}

EngineImpl::~EngineImpl() {
  stop();
}

void EngineImpl::start() {
  std::lock_guard<std::mutex> lock(mu_);
  if (started_ || stopping_) return;
  started_ = true;
  thread_ = std::thread([this] { run(); });
}

void EngineImpl::stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_) return;
    stopping_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
  {
    std::lock_guard<std::mutex> lock(mu_);
    thread_done_ = true;
  }
  // The engine thread is gone: this thread may touch its state now.
  take_inbox(intake_);
  for (auto& s : intake_) sched_.add(std::move(s));
  intake_.clear();
  for (const auto& s : sched_.running()) end_sequence(*s, FinishReason::cancelled, "");
  for (const auto& s : sched_.waiting()) end_sequence(*s, FinishReason::cancelled, "");
  sched_.sweep();
  deliver();
}

Status EngineImpl::check_fits(std::span<const int32_t> tokens, int64_t n_total,
                              const char* what) const {
  if (tokens.empty()) return make_error(fmt::format("{} is empty: send at least one token", what));
  for (size_t i = 0; i < tokens.size(); ++i)
    if (tokens[i] < 0 || tokens[i] >= n_vocab_)
      return make_error(
          fmt::format("{}: token id {} (at index {}) is outside the vocabulary [0, {})", what,
                      tokens[i], i, n_vocab_));
  if (n_total > cfg_.ctx_size)
    return make_error(fmt::format(
        "{} needs {} positions but the context size (--ctx-size) is {} tokens per request; "
        "shorten the input or lower max_tokens",
        what, n_total, cfg_.ctx_size));
  const int64_t pool_positions = int64_t(cfg_.kv.n_blocks) * cfg_.kv.block_size;
  if (n_total > pool_positions)
    return make_error(fmt::format(
        "{} needs {} positions but the whole KV cache holds {} ({} blocks of {} tokens); "
        "shorten the input, lower max_tokens, or give the KV pool more memory (--kv-memory)",
        what, n_total, pool_positions, cfg_.kv.n_blocks, cfg_.kv.block_size));
  return Status::success();
}

Status EngineImpl::submit(GenerationRequest req, std::shared_ptr<ResultChannel> out) {
  if (!out) return make_error("submit: no result channel");
  if (req.max_tokens < 0)
    return make_error(fmt::format("max_tokens is {}; it must be 0 or more", req.max_tokens));
  if (req.n_top_logprobs < -1 || req.n_top_logprobs > 20)
    return make_error(
        fmt::format("top_logprobs is {}; it must be between 0 and 20", req.n_top_logprobs));
  KILN_TRY(validate(req.sampling, int32_t(n_vocab_)));
  const int64_t n_total = int64_t(req.prompt.size()) + req.max_tokens;
  KILN_TRY(check_fits(
      req.prompt, n_total,
      fmt::format("the prompt ({} tokens) + max_tokens ({})", req.prompt.size(), req.max_tokens)
          .c_str()));

  auto s = std::make_unique<Sequence>();
  s->n_prompt = int32_t(req.prompt.size());
  s->arrival = req.arrival;
  s->max_tokens = req.max_tokens;
  s->n_top_logprobs = req.n_top_logprobs;
  s->sampler.emplace(req.sampling, eog_ids_);
  s->sampler->add_context(req.prompt);
  s->tokens = std::move(req.prompt);
  s->tokens.reserve(size_t(n_total));
  s->channel = std::move(out);
  std::vector<std::unique_ptr<Sequence>> one;
  one.push_back(std::move(s));
  std::lock_guard<std::mutex> lock(mu_);
  if (stopping_) return make_error("the engine is shutting down; retry on another instance");
  enqueue(std::move(one));
  return Status::success();
}

Status EngineImpl::submit_embeddings(std::vector<std::vector<int32_t>> inputs, EmbeddingDone done) {
  if (!backend_.supports_hidden())
    return make_error(
        fmt::format("embeddings are not available: the {} backend does not return hidden states",
                    backend_.name()));
  if (inputs.empty()) return make_error("no inputs to embed");
  if (!done) return make_error("submit_embeddings: no completion callback");
  for (size_t i = 0; i < inputs.size(); ++i)
    KILN_TRY(check_fits(inputs[i], int64_t(inputs[i].size()),
                        fmt::format("input {} ({} tokens)", i, inputs[i].size()).c_str()));
  auto group = std::make_shared<EmbeddingGroup>();
  group->vectors.resize(inputs.size());
  group->n_left = int32_t(inputs.size());
  group->done = std::move(done);
  std::vector<std::unique_ptr<Sequence>> seqs;
  for (size_t i = 0; i < inputs.size(); ++i) {
    auto s = std::make_unique<Sequence>();
    s->n_prompt = int32_t(inputs[i].size());
    s->tokens = std::move(inputs[i]);
    s->embedding = group;
    s->embedding_index = int32_t(i);
    s->hidden_sum.assign(size_t(n_embd_), 0.0);
    seqs.push_back(std::move(s));
  }
  std::lock_guard<std::mutex> lock(mu_);
  if (stopping_) return make_error("the engine is shutting down; retry on another instance");
  enqueue(std::move(seqs));
  return Status::success();
}

// Under mu_.
void EngineImpl::enqueue(std::vector<std::unique_ptr<Sequence>> seqs) {
  for (auto& s : seqs) {
    s->id = next_id_++;
    inbox_.push_back(std::move(s));
  }
  n_inbox_.fetch_add(int64_t(seqs.size()), std::memory_order_relaxed);
  stats_.waiting.fetch_add(int64_t(seqs.size()), std::memory_order_relaxed);
  cv_.notify_one();
}

void EngineImpl::take_inbox(std::vector<std::unique_ptr<Sequence>>& into) {
  std::lock_guard<std::mutex> lock(mu_);
  for (auto& s : inbox_) into.push_back(std::move(s));
  n_inbox_.fetch_sub(int64_t(inbox_.size()), std::memory_order_relaxed);
  inbox_.clear();
}

void EngineImpl::run() {
  for (;;) {
    {
      std::unique_lock<std::mutex> lock(mu_);
      // sched_ is only ever touched by this thread; reading it here is safe.
      cv_.wait(lock, [&] { return stopping_ || !inbox_.empty() || sched_.has_work(); });
      if (stopping_) return;
      for (auto& s : inbox_) intake_.push_back(std::move(s));
      n_inbox_.fetch_sub(int64_t(inbox_.size()), std::memory_order_relaxed);
      inbox_.clear();
    }
    // Nothing may escape the engine thread: an unexpected exception (e.g.
    // out of memory) fails the requests in flight, and serving goes on.
    try {
      step();
    } catch (const std::exception& e) {
      fail_running(std::string("internal error in the engine: ") + e.what());
    } catch (...) {
      fail_running("internal error in the engine");
    }
  }
}

}  // namespace kiln::engine
