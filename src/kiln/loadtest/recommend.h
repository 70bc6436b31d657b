// Choosing the Cloud Run per-instance concurrency from a sweep: the largest
// level that meets the latency SLO without errors, what one instance then
// delivers and costs, the `gcloud run deploy` line, and kiln's own
// rule-of-thumb value read from the target's /metrics for comparison.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "kiln/loadtest/stats.h"

namespace kiln::loadtest {

struct Slo {
  std::optional<double> ttft_p99_ms, tpot_p99_ms;
  double max_error_rate = 0.01;  // a level with more failed requests (429 included) fails
};

// Why the level misses the SLO; "" when it meets it.
std::string slo_violation(const LevelSummary& s, const Slo& slo);

struct Recommendation {
  int32_t concurrency = 0;
  bool meets_slo = false;       // false: no level met it; concurrency is then the smallest level
  double throughput_tok_s = 0;  // output tokens/s of one instance at that level
  double req_s = 0;
  double tokens_per_gpu_hour = 0;
  std::optional<double> cost_per_million_tokens;  // with --price-per-hour
  std::string reason;                             // one line: how the level was chosen
};

// Levels must be closed-loop summaries in increasing concurrency. With an
// SLO: the largest level such that it and every smaller level meet it (one
// failing level stops the search: later passes are noise, not headroom).
// Without: the smallest level reaching 90% of the best throughput among
// levels without errors, the knee past which more concurrency only queues.
Recommendation recommend(std::span<const LevelSummary> levels, const Slo& slo,
                         std::optional<double> price_per_hour);

struct DeployHints {
  std::string service = "kiln";
  std::string image = "IMAGE";
  std::string region;  // "" leaves --region out
};
// The ready-to-run deploy line for an L4 instance with that concurrency.
std::string gcloud_command(const DeployHints& h, int32_t concurrency);

// kiln serve's capacity gauges (kiln_capacity_*); absent: not a kiln target.
struct KilnCapacity {
  int32_t recommended = -1;      // kiln_capacity_recommended_concurrency (GUIDE §6 rule of thumb)
  int32_t max_concurrency = -1;  // kiln_capacity_max_concurrency (--max-concurrency)
  int32_t parallel = -1;         // kiln_capacity_parallel (--parallel)
  bool ideal_batch_estimated = false;
};
std::optional<KilnCapacity> parse_kiln_capacity(std::string_view prometheus_text);

}  // namespace kiln::loadtest
