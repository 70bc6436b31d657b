// Load-test sessions: warm-up, levels, table, files (see session.h).
#include "kiln/loadtest/session.h"

#include <fmt/format.h>
#include <unistd.h>

#include <filesystem>

#include "kiln/loadtest/report.h"
#include "kiln/loadtest/svg_chart.h"

namespace kiln::loadtest {
namespace {

// A live line on a terminal; a line every 5 s in logs, so CI output stays short.
std::function<void(const Progress&)> progress_printer(std::FILE* f, std::string label,
                                                      double duration_s) {
  if (!f) return {};
  const bool tty = isatty(fileno(f));
  return [f, tty, label, duration_s, last = -10.0, last_tokens = int64_t(0),
          last_t = 0.0](const Progress& p) mutable {
    const double tok_s =
        p.elapsed_s > last_t ? double(p.token_events - last_tokens) / (p.elapsed_s - last_t) : 0;
    last_tokens = p.token_events;
    last_t = p.elapsed_s;
    if (!tty && p.elapsed_s - last < 5) return;
    last = p.elapsed_s;
    const std::string when = p.draining ? fmt::format("{:5.1f} s draining", p.elapsed_s)
                                        : fmt::format("{:5.1f}/{:.0f} s", p.elapsed_s, duration_s);
    fmt::print(f, "{}  {:>8}  {}  done {}  failed {}  in flight {}  {:.0f} token events/s{}",
               tty ? "\r\033[K" : "", label, when, p.finished, p.failed, p.inflight, tok_s,
               tty ? "" : "\n");
    std::fflush(f);
  };
}

void clear_progress(std::FILE* f) {
  if (f && isatty(fileno(f))) {
    fmt::print(f, "\r\033[K");
    std::fflush(f);
  }
}

Status prepare_out_dir(const std::string& dir) {
  if (dir.empty()) return {};
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return make_error("--out " + dir + ": cannot create the folder: " + ec.message());
  return {};
}

std::string requests_csv(const std::vector<std::pair<std::string, RequestRecord>>& rows) {
  std::string s =
      "level,index,start_s,status,ttft_ms,e2e_ms,token_events,output_tokens,"
      "prompt_tokens,cached_tokens,error\n";
  for (const auto& [label, r] : rows) {
    std::string err = r.error;
    for (char& c : err)
      if (c == '"' || c == '\n' || c == '\r') c = '\'';
    s += fmt::format("{},{},{:.4f},{},{:.3f},{:.3f},{},{},{},{},\"{}\"\n", label, r.index,
                     r.start_s, r.status, r.ttft_ms, r.e2e_ms, r.token_ms.size(), r.output_tokens(),
                     r.prompt_tokens, r.cached_tokens, err);
  }
  return s;
}

struct LevelRun {
  LevelSummary summary;
  RunResult raw;
};

// `sent`: workload requests used so far in the session; the level goes on
// from there (see RunOptions::first_index).
Result<LevelRun> run_level(const SessionOptions& o, const Workload& w, RunOptions ro,
                           const std::string& label, int32_t concurrency, double rate,
                           uint64_t& sent) {
  ro.progress = progress_printer(o.progress, label, ro.duration_s);
  ro.first_index = sent;
  auto r = run_load(ro, w);
  if (r) sent += r->records.size();
  clear_progress(o.progress);
  if (!r) return r.error();
  LevelRun lr;
  lr.summary = summarize(*r, label, concurrency, rate);
  lr.raw = std::move(*r);
  return lr;
}

Status warm_up(const SessionOptions& o, const Workload& w, int32_t concurrency, uint64_t& sent) {
  if (o.warmup_s <= 0) return {};
  RunOptions ro = o.run;
  ro.mode = RunOptions::Mode::closed;
  ro.concurrency = concurrency;
  ro.duration_s = o.warmup_s;
  ro.max_requests = 0;
  auto lr = run_level(o, w, ro, "warm-up", concurrency, 0, sent);
  if (!lr) return lr.error();
  const auto& s = lr->summary;
  fmt::print(o.out, "warm-up: {} requests in {:.1f} s at concurrency {} ({} failed)\n",
             s.n_requests, s.wall_s, concurrency, s.n_errors);
  if (s.n_ok == 0 && s.n_requests > 0)
    return make_error("warm-up: every request failed (" +
                      (s.error_samples.empty() ? std::string("?") : s.error_samples.front()) +
                      "); check --url, --model and the server's log");
  return {};
}

Status write_outputs(const SessionOptions& o, const nlohmann::ordered_json& json,
                     const std::vector<LevelSummary>& levels,
                     const std::vector<std::pair<std::string, RequestRecord>>& rows,
                     const std::string* svg) {
  const std::string text = json.dump(2) + "\n";
  if (!o.out_dir.empty()) {
    const std::filesystem::path d(o.out_dir);
    KILN_TRY(write_file((d / "results.json").string(), text));
    KILN_TRY(write_file((d / "results.csv").string(), levels_csv(levels)));
    KILN_TRY(write_file((d / "requests.csv").string(), requests_csv(rows)));
    if (svg) KILN_TRY(write_file((d / "chart.svg").string(), *svg));
    fmt::print(o.out, "wrote {}/results.json, results.csv, requests.csv{}\n", o.out_dir,
               svg ? ", chart.svg" : "");
  }
  if (!o.json_out.empty()) {
    KILN_TRY(write_file(o.json_out, text));
    fmt::print(o.out, "wrote {}\n", o.json_out);
  }
  return {};
}

std::optional<KilnCapacity> read_kiln_capacity(const RunOptions& ro) {
  auto m = http_get(ro.url, "/metrics", 5);
  if (!m || m->status != 200) return std::nullopt;
  return parse_kiln_capacity(m->body);
}

void print_cpu_note(std::FILE* out, const std::vector<LevelSummary>& levels) {
  double cpu = 0;
  int64_t toks = 0;
  for (const auto& l : levels) {
    cpu += l.client_cpu_s;
    toks += l.output_tokens;
  }
  if (toks > 0)
    fmt::print(out, "client overhead: {:.1f} µs CPU per streamed token ({:.2f} s CPU in all)\n",
               cpu * 1e6 / double(toks), cpu);
}

}  // namespace

Result<SessionResult> run_sweep(const SessionOptions& o, const Workload& w) {
  if (o.levels.empty()) return make_error("--concurrency: give at least one level, e.g. 1,2,4,8");
  KILN_TRY(prepare_out_dir(o.out_dir));
  SessionResult res;
  res.kiln = read_kiln_capacity(o.run);
  fmt::print(o.out, "kiln loadtest sweep: {} | levels {} | {} s each\n", w.description(),
             fmt::join(o.levels, ","), o.run.duration_s);
  uint64_t sent = 0;
  KILN_TRY(warm_up(o, w, std::min(o.warmup_concurrency, o.levels.back()), sent));
  fmt::print(o.out, "{}", table_header());
  std::vector<std::pair<std::string, RequestRecord>> rows;
  for (int32_t c : o.levels) {
    RunOptions ro = o.run;
    ro.mode = RunOptions::Mode::closed;
    ro.concurrency = c;
    auto lr = run_level(o, w, ro, fmt::format("c={}", c), c, 0, sent);
    if (!lr) return lr.error();
    fmt::print(o.out, "{}", table_row(lr->summary, o.slo));
    std::fflush(o.out);
    for (auto& r : lr->raw.records) rows.emplace_back(lr->summary.label, std::move(r));
    res.levels.push_back(std::move(lr->summary));
    const std::string miss = slo_violation(res.levels.back(), o.slo);
    const bool has_slo = o.slo.ttft_p99_ms || o.slo.tpot_p99_ms;
    if (!miss.empty() && (has_slo || res.levels.back().n_ok == 0) && !o.keep_going &&
        c != o.levels.back()) {
      fmt::print(o.out,
                 "stopping: concurrency {} misses the SLO ({}); higher levels would too "
                 "(--keep-going runs them anyway)\n",
                 c, miss);
      break;
    }
  }
  Recommendation rec = recommend(res.levels, o.slo, o.price_per_hour);
  // Cloud Run takes 1..1000 requests per instance.
  const int32_t deploy_c = std::clamp(rec.concurrency, 1, 1000);
  const std::string gcloud = gcloud_command(o.deploy, deploy_c);
  fmt::print(o.out, "\nrecommendation: --concurrency {}{} — {}\n", rec.concurrency,
             rec.meets_slo ? "" : " (SLO NOT met)", rec.reason);
  fmt::print(o.out,
             "  per instance: {:.1f} output tokens/s, {:.2f} requests/s, {:.2f} M tokens "
             "per GPU-hour",
             rec.throughput_tok_s, rec.req_s, rec.tokens_per_gpu_hour / 1e6);
  if (rec.cost_per_million_tokens)
    fmt::print(o.out, ", ${:.3f} per million output tokens at ${:.2f}/h",
               *rec.cost_per_million_tokens, *o.price_per_hour);
  fmt::print(o.out, "\n");
  if (res.kiln) {
    const int32_t k = res.kiln->recommended;
    fmt::print(o.out,
               "  kiln's rule of thumb (target /metrics): {}{}; measured {} ({}); its "
               "--max-concurrency is {}{}\n",
               k,
               res.kiln->ideal_batch_estimated ? " (ideal batch estimated, no bench results)" : "",
               rec.concurrency,
               k == rec.concurrency ? "the same"
               : rec.concurrency > k
                   ? fmt::format("{:.1f}x higher", double(rec.concurrency) / std::max(k, 1))
                   : fmt::format("{:.1f}x lower", double(k) / std::max(rec.concurrency, 1)),
               res.kiln->max_concurrency,
               res.kiln->max_concurrency > 0 && res.kiln->max_concurrency < rec.concurrency
                   ? " — raise it to match, or the instance answers 429"
                   : "");
  } else {
    fmt::print(o.out,
               "  (no kiln_capacity_* gauges in the target's /metrics: not a kiln "
               "server, so no rule-of-thumb comparison)\n");
  }
  fmt::print(o.out, "  deploy: {}\n", gcloud);
  if (res.kiln)
    fmt::print(o.out,
               "  and start kiln with --max-concurrency {} so that it admits what Cloud "
               "Run sends\n",
               deploy_c);
  print_cpu_note(o.out, res.levels);

  const std::string svg =
      sweep_chart_svg(res.levels, o.slo, rec.concurrency,
                      fmt::format("kiln loadtest sweep: {}{}", o.run.url.host_header(),
                                  o.meta.contains("model") && o.meta["model"].is_string() &&
                                          !o.meta["model"].get<std::string>().empty()
                                      ? " — " + o.meta["model"].get<std::string>()
                                      : ""),
                      w.description());
  SweepReport rep{o.meta, res.levels, o.slo, o.price_per_hour, rec, res.kiln, gcloud};
  res.json = sweep_json(rep);
  res.rec = rec;
  KILN_TRY(write_outputs(o, res.json, res.levels, rows, &svg));
  return res;
}

Result<SessionResult> run_single(const SessionOptions& o, const Workload& w) {
  KILN_TRY(prepare_out_dir(o.out_dir));
  SessionResult res;
  fmt::print(o.out, "kiln loadtest: {}\n", w.description());
  // A replay sends the log from its first line, warm-up or not.
  uint64_t sent = 0;
  KILN_TRY(warm_up(o, w,
                   o.run.mode == RunOptions::Mode::closed
                       ? std::min(o.warmup_concurrency, o.run.concurrency)
                       : o.warmup_concurrency,
                   sent));
  if (o.run.mode == RunOptions::Mode::replay) sent = 0;
  const int32_t c = o.run.mode == RunOptions::Mode::closed ? o.run.concurrency : 0;
  const double rate = o.run.mode == RunOptions::Mode::open ? o.run.rate : 0;
  auto lr = run_level(o, w, o.run, o.label, c, rate, sent);
  if (!lr) return lr.error();
  fmt::print(o.out, "{}{}", table_header(), table_row(lr->summary, o.slo));
  const auto& s = lr->summary;
  fmt::print(o.out,
             "  TTFT ms p50/p90/p99 {:.1f}/{:.1f}/{:.1f}  ITL {:.1f}/{:.1f}/{:.1f}  TPOT "
             "{:.2f}/{:.2f}/{:.2f}  E2E {:.0f}/{:.0f}/{:.0f}\n",
             s.ttft_ms.p50, s.ttft_ms.p90, s.ttft_ms.p99, s.itl_ms.p50, s.itl_ms.p90, s.itl_ms.p99,
             s.tpot_ms.p50, s.tpot_ms.p90, s.tpot_ms.p99, s.e2e_ms.p50, s.e2e_ms.p90, s.e2e_ms.p99);
  if (!s.errors_by_status.empty()) {
    std::string by;
    for (auto [st, n] : s.errors_by_status)
      by += fmt::format(" {}: {}", st ? std::to_string(st) : "no response", n);
    fmt::print(o.out, "  errors by status:{}; e.g. {}\n", by,
               s.error_samples.empty() ? "" : s.error_samples.front());
  }
  if (s.short_outputs)
    fmt::print(o.out, "  {} requests ended before max_tokens (the server ignored ignore_eos?)\n",
               s.short_outputs);
  if (s.dropped_arrivals)
    fmt::print(o.out, "  {} arrivals dropped: more than --max-inflight requests in flight\n",
               s.dropped_arrivals);
  res.levels.push_back(lr->summary);
  print_cpu_note(o.out, res.levels);
  nlohmann::ordered_json j;
  j["schema"] = "kiln.loadtest.run/1";
  j["run"] = o.meta;
  j["levels"] = nlohmann::ordered_json::array({to_json(s)});
  res.json = j;
  std::vector<std::pair<std::string, RequestRecord>> rows;
  for (auto& r : lr->raw.records) rows.emplace_back(s.label, std::move(r));
  KILN_TRY(write_outputs(o, res.json, res.levels, rows, nullptr));
  return res;
}

}  // namespace kiln::loadtest
