// From per-request records to one level's figures: TTFT, inter-token
// latency, time per output token and end-to-end latency percentiles,
// throughput inside the measuring window, errors by status, cache share.
#pragma once

#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "kiln/loadtest/client.h"

namespace kiln::loadtest {

struct Percentiles {
  int64_t n = 0;
  double mean = 0, p50 = 0, p90 = 0, p99 = 0, max = 0;  // all 0 when n == 0
};
// Linear interpolation between closest ranks (the "R-7" definition).
Percentiles percentiles(std::vector<double> v);

struct LevelSummary {
  std::string label;        // "c=8", "rate=2/s", "replay"
  int32_t concurrency = 0;  // closed loop: the level; else 0
  double rate = 0;          // open loop: requests/s asked for
  int64_t n_requests = 0, n_ok = 0, n_errors = 0, n_429 = 0;
  std::map<int, int64_t> errors_by_status;  // 0: no HTTP status (connect, timeout, cut stream)
  std::vector<std::string> error_samples;   // a few distinct messages
  Percentiles ttft_ms, itl_ms, tpot_ms, e2e_ms;
  double window_s = 0, wall_s = 0;
  double req_s = 0;         // successful requests finished inside the window, per second
  double output_tok_s = 0;  // output tokens that arrived inside the window, per second
  int64_t output_tokens = 0, prompt_tokens = 0;
  int64_t cached_tokens = -1;  // -1: the server reported none
  double cached_share = -1;    // cached / prompt tokens; -1 unknown
  int64_t short_outputs = 0;   // successful requests with fewer tokens than max_tokens
  int64_t max_inflight = 0, dropped_arrivals = 0;
  double client_cpu_s = 0;
  double client_cpu_us_per_token = 0;  // client CPU time / output tokens received
  double error_rate() const { return n_requests ? double(n_errors) / double(n_requests) : 0; }
};

LevelSummary summarize(const RunResult& r, std::string label, int32_t concurrency, double rate);

// The summary as the JSON object of one level (docs/loadtest.md).
nlohmann::ordered_json to_json(const LevelSummary& s);

}  // namespace kiln::loadtest
