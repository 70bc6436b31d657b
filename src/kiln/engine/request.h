// The contract between the HTTP edge and the engine thread: a request in
// native form (JSON is parsed at the edge), and a per-request channel the
// engine pushes results into. The engine thread never blocks on a client and
// never touches JSON or sockets; the edge never touches the model or the KV
// cache. Cancellation is a flag the engine polls every step.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "kiln/engine/sampler.h"

namespace kiln::engine {

enum class FinishReason : uint8_t {
  none,       // still running
  stop,       // end-of-generation token (or a stop string, decided at the edge)
  length,     // max_tokens reached
  cancelled,  // client gone or request cancelled
  error,      // failed inside the engine (message in the event)
};
const char* finish_reason_name(FinishReason r);  // OpenAI spelling: "stop", "length", ...

struct GenerationRequest {
  std::vector<int32_t> prompt;   // token ids, BOS included when the template/tokenizer adds one
  SamplingParams sampling;
  int32_t max_tokens = 16;       // new tokens at most (the edge bounds it by the context)
  int32_t n_top_logprobs = -1;   // -1: no logprobs; 0..20: chosen token (+ that many alternatives)
  std::chrono::steady_clock::time_point arrival = std::chrono::steady_clock::now();
};

// One engine -> edge message. A request's events arrive in order; the last one
// has finish != none.
struct TokenEvent {
  int32_t token = -1;                  // -1 for a final event that carries no token
  std::optional<Logprobs> logprobs;    // when requested
  FinishReason finish = FinishReason::none;
  std::string error;                   // with FinishReason::error
  // Set on the first event: prompt tokens served from the prefix cache.
  int32_t cached_prompt_tokens = -1;
};

// Single producer (engine) / single consumer (edge) queue with a wake-up hook.
// The engine pushes and calls the notifier; the edge drains from its own
// thread. A cancelled flag goes the other way.
class ResultChannel {
 public:
  void push(TokenEvent ev) {
    std::function<void()> notify;
    {
      std::lock_guard<std::mutex> lock(mu_);
      events_.push_back(std::move(ev));
      notify = notifier_;
    }
    if (notify) notify();
  }
  // Moves all pending events into `out` (appending); returns how many.
  size_t drain(std::vector<TokenEvent>& out) {
    std::lock_guard<std::mutex> lock(mu_);
    const size_t n = events_.size();
    for (auto& e : events_) out.push_back(std::move(e));
    events_.clear();
    return n;
  }
  // Called (from the engine thread) after each push; must not block.
  void set_notifier(std::function<void()> fn) {
    std::lock_guard<std::mutex> lock(mu_);
    notifier_ = std::move(fn);
  }
  void cancel() { cancelled_.store(true, std::memory_order_relaxed); }
  bool cancelled() const { return cancelled_.load(std::memory_order_relaxed); }

 private:
  std::mutex mu_;
  std::deque<TokenEvent> events_;
  std::function<void()> notifier_;
  std::atomic<bool> cancelled_{false};
};

}  // namespace kiln::engine
