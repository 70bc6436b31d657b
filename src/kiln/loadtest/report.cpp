// Table, CSV and JSON output of load tests (see report.h).
#include "kiln/loadtest/report.h"

#include <fmt/format.h>

#include <cstdio>
#include <filesystem>
#include <fstream>

namespace kiln::loadtest {

std::string table_header() {
  return fmt::format("{:>7} {:>6} {:>5} {:>5} {:>9} {:>7} {:>9} {:>9} {:>8} {:>8} {:>9} {:>6} {}\n",
                     "level", "reqs", "err", "429", "out tok/s", "req/s", "TTFT p50", "TTFT p99",
                     "TPOT p50", "TPOT p99", "E2E p99", "cache", "SLO") +
         std::string(118, '-') + "\n";
}

std::string table_row(const LevelSummary& s, const Slo& slo) {
  std::string slo_txt;
  if (slo.ttft_p99_ms || slo.tpot_p99_ms) {
    const std::string why = slo_violation(s, slo);
    slo_txt = why.empty() ? "ok" : "miss: " + why;
  } else if (s.n_errors) {
    slo_txt = s.error_samples.empty() ? "" : s.error_samples.front().substr(0, 60);
  }
  const std::string cache =
      s.cached_share >= 0 ? fmt::format("{:.0f}%", 100 * s.cached_share) : "-";
  return fmt::format(
      "{:>7} {:>6} {:>5} {:>5} {:>9.1f} {:>7.2f} {:>7.0f}ms {:>7.0f}ms {:>6.1f}ms {:>6.1f}ms "
      "{:>7.0f}ms {:>6} {}\n",
      s.label, s.n_requests, s.n_errors - s.n_429, s.n_429, s.output_tok_s, s.req_s, s.ttft_ms.p50,
      s.ttft_ms.p99, s.tpot_ms.p50, s.tpot_ms.p99, s.e2e_ms.p99, cache, slo_txt);
}

std::string levels_csv(std::span<const LevelSummary> levels) {
  std::string s =
      "label,concurrency,rate,requests,ok,errors,errors_429,output_tok_s,req_s,"
      "ttft_p50_ms,ttft_p90_ms,ttft_p99_ms,tpot_p50_ms,tpot_p90_ms,tpot_p99_ms,"
      "itl_p50_ms,itl_p90_ms,itl_p99_ms,e2e_p50_ms,e2e_p90_ms,e2e_p99_ms,"
      "output_tokens,prompt_tokens,cached_share,window_s,max_inflight,client_cpu_us_per_token\n";
  for (const auto& l : levels)
    s += fmt::format(
        "{},{},{},{},{},{},{},{:.3f},{:.4f},{:.3f},{:.3f},{:.3f},{:.3f},{:.3f},{:.3f},{:.3f},"
        "{:.3f},{:.3f},{:.3f},{:.3f},{:.3f},{},{},{},{:.3f},{},{:.3f}\n",
        l.label, l.concurrency, l.rate, l.n_requests, l.n_ok, l.n_errors, l.n_429, l.output_tok_s,
        l.req_s, l.ttft_ms.p50, l.ttft_ms.p90, l.ttft_ms.p99, l.tpot_ms.p50, l.tpot_ms.p90,
        l.tpot_ms.p99, l.itl_ms.p50, l.itl_ms.p90, l.itl_ms.p99, l.e2e_ms.p50, l.e2e_ms.p90,
        l.e2e_ms.p99, l.output_tokens, l.prompt_tokens,
        l.cached_share >= 0 ? fmt::format("{:.4f}", l.cached_share) : "", l.window_s,
        l.max_inflight, l.client_cpu_us_per_token);
  return s;
}

nlohmann::ordered_json sweep_json(const SweepReport& r) {
  using Json = nlohmann::ordered_json;
  auto opt = [](const std::optional<double>& v) { return v ? Json(*v) : Json(nullptr); };
  Json j;
  j["schema"] = "kiln.loadtest.sweep/1";
  j["run"] = r.meta;
  Json rec;
  rec["concurrency"] = r.rec.concurrency;
  rec["throughput_tok_s"] = r.rec.throughput_tok_s;
  rec["slo_ttft_p99_ms"] = opt(r.slo.ttft_p99_ms);
  rec["slo_tpot_p99_ms"] = opt(r.slo.tpot_p99_ms);
  rec["meets_slo"] = r.rec.meets_slo;
  rec["req_s"] = r.rec.req_s;
  rec["tokens_per_gpu_hour"] = r.rec.tokens_per_gpu_hour;
  rec["price_per_hour_usd"] = opt(r.price_per_hour);
  rec["cost_per_million_tokens_usd"] = opt(r.rec.cost_per_million_tokens);
  rec["reason"] = r.rec.reason;
  rec["gcloud"] = r.gcloud;
  j["recommendation"] = rec;
  if (r.kiln) {
    j["kiln_rule_of_thumb"] = {{"recommended_concurrency", r.kiln->recommended},
                               {"max_concurrency", r.kiln->max_concurrency},
                               {"parallel", r.kiln->parallel},
                               {"ideal_batch_estimated", r.kiln->ideal_batch_estimated}};
  } else {
    j["kiln_rule_of_thumb"] = nullptr;
  }
  Json levels = Json::array();
  for (const auto& l : r.levels) {
    Json lj = to_json(l);
    lj["meets_slo"] = slo_violation(l, r.slo).empty();
    levels.push_back(std::move(lj));
  }
  j["levels"] = std::move(levels);
  return j;
}

Status write_file(const std::string& path, const std::string& text) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
    if (!f)
      return make_error("cannot write " + path + ": check that its folder exists and is writable");
    f << text;
    if (!f.flush()) return make_error("writing " + path + " failed (disk full?)");
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) return make_error("cannot rename " + tmp + " to " + path + ": " + ec.message());
  return {};
}

}  // namespace kiln::loadtest
