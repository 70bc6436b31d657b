// Per-preamble prompt/cached token counters.
#include "kiln/server/preamble_metrics.h"

#include <fmt/format.h>

namespace kiln::server {

std::string preamble_key(std::span<const int32_t> prompt) {
  if (prompt.size() < kPreambleKeyTokens) return "";
  uint64_t h = 1469598103934665603ull;  // FNV-1a over the token ids
  for (size_t i = 0; i < kPreambleKeyTokens; ++i)
    h = (h ^ uint64_t(uint32_t(prompt[i]))) * 1099511628211ull;
  return fmt::format("{:016x}", h);
}

void PreambleMetrics::record(std::span<const int32_t> prompt, int64_t cached_tokens) {
  std::string key = preamble_key(prompt);
  if (key.empty()) key = "short";
  Pair p;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = series_.find(key);
    if (it == series_.end()) {
      if (series_.size() >= kMaxPreambleLabels) key = "other";
      it = series_.find(key);
    }
    if (it == series_.end()) {
      const std::string labels = fmt::format("preamble=\"{}\"", key);
      Pair np{&registry_.counter("kiln_preamble_prompt_tokens_total",
                                 "Prompt tokens per preamble (hash of the first 32 prompt tokens, "
                                 "as kiln prefix-report prints it)",
                                 labels),
              &registry_.counter("kiln_preamble_cached_tokens_total",
                                 "Prompt tokens the prefix cache served, per preamble", labels)};
      it = series_.emplace(key, np).first;
    }
    p = it->second;
  }
  p.prompt->inc(double(prompt.size()));
  p.cached->inc(double(cached_tokens));
}

}  // namespace kiln::server
