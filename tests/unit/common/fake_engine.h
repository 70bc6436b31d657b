// A scripted stand-in for engine::Engine, for unit tests of the HTTP edge
// only: each submitted request gets a fixed token script, one token per
// step on the fake's own thread, honouring cancel() the way the real engine
// must (a cancelled sequence is dropped at the next step). It also counts
// what happened, so tests assert on mechanism (e.g. that a disconnect reached
// cancel()), not on timing.
#pragma once

#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <functional>
#include <list>
#include <mutex>
#include <thread>
#include <vector>

#include "kiln/engine/engine.h"
#include "kiln/server/engine_hooks.h"

namespace kiln::test {

class FakeEngine final : public engine::Engine, public server::EmbeddingEngine {
 public:
  struct Script {
    std::vector<int32_t> tokens;  // generated in order (cut at max_tokens)
    bool end_with_eos = true;     // finish "stop" with eos_id after the tokens
  };
  using ScriptFn = std::function<Script(const engine::GenerationRequest&)>;

  FakeEngine(engine::EngineConfig cfg, int32_t eos_id, ScriptFn script)
      : cfg_(cfg), eos_(eos_id), script_(std::move(script)) {
    stats_.kv_blocks_total = 64;
  }
  ~FakeEngine() override { stop(); }

  void start() override {
    running_ = true;
    thread_ = std::thread([this] { loop(); });
  }
  void stop() override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (!running_) return;
      running_ = false;
    }
    cv_.notify_all();
    if (thread_.joinable()) thread_.join();
    std::lock_guard<std::mutex> lock(mu_);
    for (auto& s : seqs_) s.ch->push({-1, std::nullopt, engine::FinishReason::cancelled, "", -1});
    seqs_.clear();
  }

  Status submit(engine::GenerationRequest req,
                std::shared_ptr<engine::ResultChannel> out) override {
    if (int64_t(req.prompt.size()) + req.max_tokens > cfg_.ctx_size)
      return make_error("prompt + max_tokens exceed the context");
    std::lock_guard<std::mutex> lock(mu_);
    if (!running_) return make_error("engine stopped");
    Seq s;
    s.script = script_(req);
    s.req = std::move(req);
    s.ch = std::move(out);
    submitted_.push_back(s.req);
    seqs_.push_back(std::move(s));
    stats_.waiting = int64_t(seqs_.size());
    return Status::success();
  }

  const engine::EngineConfig& config() const override { return cfg_; }
  const engine::EngineStats& stats() const override { return stats_; }

  // EmbeddingEngine: a deterministic unit vector per input.
  int32_t n_embd() const override { return 8; }
  Status submit_embeddings(std::vector<std::vector<int32_t>> inputs, Done done) override {
    std::vector<std::vector<float>> out;
    for (const auto& in : inputs) {
      std::vector<float> v(8);
      double norm = 0;
      for (int i = 0; i < 8; ++i) {
        v[size_t(i)] = float((in.size() + size_t(i) * 7) % 5) - 1.5f + 0.25f * float(i);
        norm += double(v[size_t(i)]) * v[size_t(i)];
      }
      for (auto& x : v) x = float(x / std::sqrt(norm));
      out.push_back(std::move(v));
    }
    std::thread([done, out]() mutable { done(std::move(out)); }).detach();
    return Status::success();
  }

  // Test knobs and observations.
  std::atomic<int> step_ms{5};
  std::atomic<int> cancels_seen{0};  // sequences dropped because of cancel()
  std::atomic<int> finished{0};
  std::vector<engine::GenerationRequest> submitted() {
    std::lock_guard<std::mutex> lock(mu_);
    return submitted_;
  }
  size_t active() {
    std::lock_guard<std::mutex> lock(mu_);
    return seqs_.size();
  }

 private:
  struct Seq {
    engine::GenerationRequest req;
    Script script;
    std::shared_ptr<engine::ResultChannel> ch;
    size_t next = 0;
  };

  void loop() {
    std::unique_lock<std::mutex> lock(mu_);
    while (running_) {
      cv_.wait_for(lock, std::chrono::milliseconds(step_ms.load()));
      if (!running_) break;
      int n = 0;
      for (auto it = seqs_.begin(); it != seqs_.end() && n < cfg_.n_parallel; ++n) {
        Seq& s = *it;
        if (s.ch->cancelled()) {
          s.ch->push({-1, std::nullopt, engine::FinishReason::cancelled, "", -1});
          ++cancels_seen;
          it = seqs_.erase(it);
          continue;
        }
        engine::TokenEvent ev;
        if (s.next == 0) ev.cached_prompt_tokens = int32_t(s.req.prompt.size() / 2);
        const bool at_max = int32_t(s.next) + 1 >= s.req.max_tokens;
        if (s.next < s.script.tokens.size()) {
          ev.token = s.script.tokens[s.next];
          if (at_max)
            ev.finish = engine::FinishReason::length;
          else if (s.next + 1 == s.script.tokens.size() && !s.script.end_with_eos)
            ev.finish = engine::FinishReason::length;
        } else {
          ev.token = eos_;
          ev.finish = engine::FinishReason::stop;
        }
        if (s.req.n_top_logprobs >= 0) {
          engine::Logprobs lp;
          lp.chosen = {ev.token, -0.5f};
          for (int k = 0; k < s.req.n_top_logprobs; ++k)
            lp.top.push_back({ev.token + k, -0.5f - k});
          ev.logprobs = lp;
        }
        ++s.next;
        stats_.generated_tokens++;
        const bool done = ev.finish != engine::FinishReason::none;
        s.ch->push(std::move(ev));
        if (done) {
          ++finished;
          it = seqs_.erase(it);
        } else {
          ++it;
        }
      }
      stats_.steps++;
      stats_.running = std::min<int64_t>(int64_t(seqs_.size()), cfg_.n_parallel);
      stats_.waiting = int64_t(seqs_.size()) - stats_.running;
    }
  }

  engine::EngineConfig cfg_;
  engine::EngineStats stats_;
  int32_t eos_;
  ScriptFn script_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool running_ = false;
  std::thread thread_;
  std::list<Seq> seqs_;
  std::vector<engine::GenerationRequest> submitted_;
};

}  // namespace kiln::test
