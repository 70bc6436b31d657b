// Prefix-cache hit share per preamble in /metrics: prompt and cached token
// counters labelled by a hash of the prompt's first tokens, the same key
// `kiln prefix-report` prints, so the report's preambles can be found in the
// server's own numbers. Label values are bounded (cardinality).
#pragma once

#include <cstdint>
#include <map>
#include <mutex>
#include <span>
#include <string>

#include "kiln/server/metrics.h"

namespace kiln::server {

// Tokens that identify a preamble: two KV blocks of 16, short enough that a
// system prompt fills it, long enough that chat-template headers alone don't.
inline constexpr size_t kPreambleKeyTokens = 32;
inline constexpr size_t kMaxPreambleLabels = 32;  // then "other"

// 16 hex digits of the first kPreambleKeyTokens tokens; "" when shorter.
std::string preamble_key(std::span<const int32_t> prompt);

class PreambleMetrics {
 public:
  explicit PreambleMetrics(MetricsRegistry& registry) : registry_(registry) {}
  // One finished prompt: its length and the tokens the prefix cache served.
  void record(std::span<const int32_t> prompt, int64_t cached_tokens);

 private:
  struct Pair {
    Counter* prompt;
    Counter* cached;
  };
  MetricsRegistry& registry_;
  std::mutex mu_;
  std::map<std::string, Pair> series_;
};

}  // namespace kiln::server
