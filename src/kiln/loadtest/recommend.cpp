// Concurrency recommendation, costs and the deploy line (see recommend.h).
#include "kiln/loadtest/recommend.h"

#include <fmt/format.h>

#include <charconv>
#include <cstdlib>

namespace kiln::loadtest {

std::string slo_violation(const LevelSummary& s, const Slo& slo) {
  if (s.n_ok == 0) return "no request succeeded";
  if (s.error_rate() > slo.max_error_rate)
    return fmt::format("{:.1f}% of requests failed ({} with 429)", 100 * s.error_rate(), s.n_429);
  if (slo.ttft_p99_ms && s.ttft_ms.p99 > *slo.ttft_p99_ms)
    return fmt::format("TTFT p99 {:.0f} ms > {:.0f} ms", s.ttft_ms.p99, *slo.ttft_p99_ms);
  if (slo.tpot_p99_ms && s.tpot_ms.p99 > *slo.tpot_p99_ms)
    return fmt::format("TPOT p99 {:.1f} ms > {:.1f} ms", s.tpot_ms.p99, *slo.tpot_p99_ms);
  return "";
}

Recommendation recommend(std::span<const LevelSummary> levels, const Slo& slo,
                         std::optional<double> price_per_hour) {
  Recommendation rec;
  if (levels.empty()) {
    rec.reason = "no level was measured";
    return rec;
  }
  const LevelSummary* pick = nullptr;
  if (slo.ttft_p99_ms || slo.tpot_p99_ms) {
    for (const auto& l : levels) {
      const std::string why = slo_violation(l, slo);
      if (!why.empty()) {
        rec.reason = fmt::format("concurrency {} misses the SLO: {}", l.concurrency, why);
        break;
      }
      pick = &l;
    }
    if (pick) {
      rec.reason = pick == &levels.back()
                       ? fmt::format(
                             "every level met the SLO; {} is the largest tested (sweep "
                             "higher to find the limit)",
                             pick->concurrency)
                       : fmt::format("largest level meeting the SLO; {}", rec.reason);
    }
  } else {
    double best = 0;
    for (const auto& l : levels)
      if (slo_violation(l, slo).empty()) best = std::max(best, l.output_tok_s);
    for (const auto& l : levels)
      if (slo_violation(l, slo).empty() && l.output_tok_s >= 0.9 * best) {
        pick = &l;
        break;
      }
    if (pick)
      rec.reason = fmt::format(
          "no SLO given: smallest level reaching 90% of the best throughput ({:.1f} tok/s); "
          "pass --slo-ttft-p99 / --slo-tpot-p99 to bound latency",
          best);
  }
  rec.meets_slo = pick != nullptr;
  if (!pick) {
    pick = &levels.front();
    rec.reason = fmt::format(
        "no level met the SLO ({}); smallest level shown: lower the "
        "concurrency, relax the SLO or use a faster instance",
        slo_violation(levels.front(), slo));
  }
  rec.concurrency = pick->concurrency;
  rec.throughput_tok_s = pick->output_tok_s;
  rec.req_s = pick->req_s;
  rec.tokens_per_gpu_hour = pick->output_tok_s * 3600;
  if (price_per_hour && rec.tokens_per_gpu_hour > 0)
    rec.cost_per_million_tokens = *price_per_hour / (rec.tokens_per_gpu_hour / 1e6);
  return rec;
}

std::string gcloud_command(const DeployHints& h, int32_t concurrency) {
  // L4 needs at least 4 vCPU and 16 GiB (GUIDE §6); kiln's CPU work (HTTP,
  // tokenizer, sampling) runs beside the GPU, so CPU stays always allocated.
  std::string s = fmt::format(
      "gcloud run deploy {} --image {} --concurrency {} --gpu 1 --gpu-type nvidia-l4 "
      "--cpu 8 --memory 32Gi --no-cpu-throttling",
      h.service, h.image, concurrency);
  if (!h.region.empty()) s += " --region " + h.region;
  return s;
}

std::optional<KilnCapacity> parse_kiln_capacity(std::string_view text) {
  KilnCapacity k;
  bool found = false;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t e = text.find('\n', pos);
    if (e == std::string_view::npos) e = text.size();
    std::string_view line = text.substr(pos, e - pos);
    pos = e + 1;
    if (line.empty() || line.front() == '#') continue;
    const size_t sp = line.rfind(' ');
    if (sp == std::string_view::npos) continue;
    const std::string_view name = line.substr(0, line.find_first_of(" {"));
    const double v = std::strtod(std::string(line.substr(sp + 1)).c_str(), nullptr);
    if (name == "kiln_capacity_recommended_concurrency") {
      k.recommended = int32_t(v);
      found = true;
    } else if (name == "kiln_capacity_max_concurrency") {
      k.max_concurrency = int32_t(v);
    } else if (name == "kiln_capacity_parallel") {
      k.parallel = int32_t(v);
    } else if (name == "kiln_capacity_ideal_batch_estimated") {
      k.ideal_batch_estimated = v != 0;
    }
  }
  if (!found) return std::nullopt;
  return k;
}

}  // namespace kiln::loadtest
