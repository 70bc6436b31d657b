// Aggregation of load-test records (see stats.h).
#include "kiln/loadtest/stats.h"

#include <algorithm>
#include <cmath>
#include <set>

namespace kiln::loadtest {

Percentiles percentiles(std::vector<double> v) {
  Percentiles p;
  p.n = int64_t(v.size());
  if (v.empty()) return p;
  std::sort(v.begin(), v.end());
  auto at = [&](double q) {
    const double pos = q * double(v.size() - 1);
    const size_t lo = size_t(std::floor(pos));
    const size_t hi = std::min(lo + 1, v.size() - 1);
    return v[lo] + (v[hi] - v[lo]) * (pos - double(lo));
  };
  double sum = 0;
  for (double x : v) sum += x;
  p.mean = sum / double(v.size());
  p.p50 = at(0.50);
  p.p90 = at(0.90);
  p.p99 = at(0.99);
  p.max = v.back();
  return p;
}

LevelSummary summarize(const RunResult& r, std::string label, int32_t concurrency, double rate) {
  LevelSummary s;
  s.label = std::move(label);
  s.concurrency = concurrency;
  s.rate = rate;
  s.window_s = r.window_s;
  s.wall_s = r.wall_s;
  s.max_inflight = r.max_inflight_seen;
  s.dropped_arrivals = r.dropped_arrivals;
  s.client_cpu_s = r.client_cpu_s;
  std::vector<double> ttft, itl, tpot, e2e;
  std::set<std::string> seen_errors;
  double window_tokens = 0;
  int64_t window_requests = 0, all_tokens = 0, prompt_known = 0, cached_sum = 0;
  bool any_cached = false;
  for (const auto& rec : r.records) {
    ++s.n_requests;
    all_tokens += rec.output_tokens();
    if (!rec.ok()) {
      ++s.n_errors;
      ++s.errors_by_status[rec.status];
      if (rec.status == 429) ++s.n_429;
      if (s.error_samples.size() < 3 && seen_errors.insert(rec.error).second)
        s.error_samples.push_back(rec.error);
      continue;
    }
    ++s.n_ok;
    const int64_t n_out = rec.output_tokens();
    s.output_tokens += n_out;
    if (rec.expected_tokens > 0 && n_out < rec.expected_tokens) ++s.short_outputs;
    if (rec.prompt_tokens >= 0) {
      s.prompt_tokens += rec.prompt_tokens;
      if (rec.cached_tokens >= 0) {
        any_cached = true;
        cached_sum += rec.cached_tokens;
        prompt_known += rec.prompt_tokens;
      }
    }
    e2e.push_back(rec.e2e_ms);
    if (rec.start_s + rec.e2e_ms * 1e-3 <= r.window_s) ++window_requests;
    if (rec.token_ms.empty()) continue;
    ttft.push_back(rec.ttft_ms);
    for (size_t i = 1; i < rec.token_ms.size(); ++i)
      itl.push_back(double(rec.token_ms[i]) - double(rec.token_ms[i - 1]));
    if (n_out > 1) tpot.push_back((double(rec.token_ms.back()) - rec.ttft_ms) / double(n_out - 1));
    // Tokens per event: 1 unless the server batches tokens into one event.
    const double per_event = double(n_out) / double(rec.token_ms.size());
    const double window_ms = (r.window_s - rec.start_s) * 1e3;
    const auto inside =
        std::upper_bound(rec.token_ms.begin(), rec.token_ms.end(), float(window_ms)) -
        rec.token_ms.begin();
    window_tokens += double(inside) * per_event;
  }
  s.ttft_ms = percentiles(std::move(ttft));
  s.itl_ms = percentiles(std::move(itl));
  s.tpot_ms = percentiles(std::move(tpot));
  s.e2e_ms = percentiles(std::move(e2e));
  if (r.window_s > 0) {
    s.output_tok_s = window_tokens / r.window_s;
    s.req_s = double(window_requests) / r.window_s;
  }
  if (any_cached) {
    s.cached_tokens = cached_sum;
    s.cached_share = prompt_known > 0 ? double(cached_sum) / double(prompt_known) : 0;
  }
  s.client_cpu_us_per_token = all_tokens > 0 ? r.client_cpu_s * 1e6 / double(all_tokens) : 0;
  return s;
}

namespace {
nlohmann::ordered_json pct_json(const Percentiles& p) {
  return {{"n", p.n},     {"mean", p.mean}, {"p50", p.p50},
          {"p90", p.p90}, {"p99", p.p99},   {"max", p.max}};
}
nlohmann::ordered_json num_or_null(double v, bool known) {
  return known ? nlohmann::ordered_json(v) : nlohmann::ordered_json(nullptr);
}
}  // namespace

nlohmann::ordered_json to_json(const LevelSummary& s) {
  nlohmann::ordered_json j;
  j["label"] = s.label;
  j["concurrency"] = s.concurrency;
  if (s.rate > 0) j["rate"] = s.rate;
  j["requests"] = s.n_requests;
  j["ok"] = s.n_ok;
  j["errors"] = s.n_errors;
  j["errors_429"] = s.n_429;
  nlohmann::ordered_json by = nlohmann::ordered_json::object();
  for (auto [st, n] : s.errors_by_status) by[st ? std::to_string(st) : "none"] = n;
  j["errors_by_status"] = by;
  j["error_samples"] = s.error_samples;
  // Flat p50/p90/p99 keys first: the fields other tools (kiln plan) read.
  j["ttft_p50_ms"] = s.ttft_ms.p50;
  j["ttft_p90_ms"] = s.ttft_ms.p90;
  j["ttft_p99_ms"] = s.ttft_ms.p99;
  j["tpot_p50_ms"] = s.tpot_ms.p50;
  j["tpot_p90_ms"] = s.tpot_ms.p90;
  j["tpot_p99_ms"] = s.tpot_ms.p99;
  j["itl_p50_ms"] = s.itl_ms.p50;
  j["itl_p90_ms"] = s.itl_ms.p90;
  j["itl_p99_ms"] = s.itl_ms.p99;
  j["e2e_p50_ms"] = s.e2e_ms.p50;
  j["e2e_p90_ms"] = s.e2e_ms.p90;
  j["e2e_p99_ms"] = s.e2e_ms.p99;
  j["output_tok_s"] = s.output_tok_s;
  j["req_s"] = s.req_s;
  j["output_tokens"] = s.output_tokens;
  j["prompt_tokens"] = s.prompt_tokens;
  j["cached_tokens"] = num_or_null(double(s.cached_tokens), s.cached_tokens >= 0);
  j["cached_share"] = num_or_null(s.cached_share, s.cached_share >= 0);
  j["short_outputs"] = s.short_outputs;
  j["window_s"] = s.window_s;
  j["wall_s"] = s.wall_s;
  j["max_inflight"] = s.max_inflight;
  j["dropped_arrivals"] = s.dropped_arrivals;
  j["client_cpu_us_per_token"] = s.client_cpu_us_per_token;
  j["ttft_ms"] = pct_json(s.ttft_ms);
  j["tpot_ms"] = pct_json(s.tpot_ms);
  j["itl_ms"] = pct_json(s.itl_ms);
  j["e2e_ms"] = pct_json(s.e2e_ms);
  return j;
}

}  // namespace kiln::loadtest
