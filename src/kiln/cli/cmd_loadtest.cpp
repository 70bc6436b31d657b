// `kiln loadtest run|sweep|replay`: load tests of any OpenAI-compatible
// server (kiln, vLLM, llama.cpp, ...) with streamed requests; `sweep` runs
// several concurrency levels and recommends Cloud Run's --concurrency.
// The machinery lives in src/kiln/loadtest; this file maps flags onto it.
#include <fmt/format.h>

#include <cstdlib>
#include <memory>
#include <nlohmann/json.hpp>

#include "kiln/cli/commands.h"
#include "kiln/loadtest/client.h"
#include "kiln/loadtest/replay.h"
#include "kiln/loadtest/session.h"
#include "kiln/loadtest/workload.h"

namespace kiln::cli {
namespace {

namespace lt = kiln::loadtest;

struct LoadtestOptions {
  std::string url, model, api_key, api = "completions", preset;
  std::string prompt_len = "300", output_len = "128", prompts_file, shared_preamble;
  int preamble_len = 400;
  bool no_ignore_eos = false, no_usage = false;
  double temperature = 0;
  uint64_t seed = 1;
  double timeout_s = 600, drain_timeout_s = 120;
  std::string out_dir, json_out;
  double warmup_s = 0;
  bool quiet = false;
  // run
  int concurrency = 0;
  double rate = 0, duration_s = 30;
  int64_t max_requests = 0;
  int max_inflight = 10000;
  // sweep
  std::vector<int> levels;
  double slo_ttft = 0, slo_tpot = 0, price = 0, max_error_rate = 0.01;
  bool keep_going = false;
  std::string service = "kiln", image = "IMAGE", region;
  // replay
  std::string log;
  double speed = 1;
};

int fail(const std::string& msg) {
  fmt::print(stderr, "kiln loadtest: {}\n", msg);
  return 1;
}

// Exit status of a finished session: 1 when not one request succeeded (the
// target is down or refuses everything), so scripts notice.
int finish(const Result<lt::SessionResult>& r) {
  if (!r) return fail(r.message());
  for (const auto& l : r->levels)
    if (l.n_ok > 0) return 0;
  const auto& first = r->levels.front();
  return fail("no request succeeded" +
              (first.error_samples.empty() ? std::string() : ": " + first.error_samples.front()));
}

// The workload flags, shared by run and sweep.
void add_workload_flags(CLI::App* c, LoadtestOptions& o) {
  c->add_option("--preset", o.preset,
                "Named workload: serving (GUIDE §5: /v1/completions, 300 random words, "
                "max_tokens 128, ignore_eos, temperature 0); explicit flags override it");
  c->add_option("--api", o.api, "completions | chat (default completions)");
  c->add_option("--prompt-len", o.prompt_len,
                "Prompt length in words (≈ tokens): N, uniform:MIN:MAX, normal:MEAN:SD, exp:MEAN "
                "(default 300)");
  c->add_option("--output-len", o.output_len,
                "max_tokens per request, same forms as --prompt-len (default 128)");
  c->add_option("--prompts", o.prompts_file,
                "JSONL of prompts: {\"prompt\": ...} or {\"messages\": [...]} per line, optional "
                "\"max_tokens\"");
  c->add_option("--shared-preamble", o.shared_preamble,
                "N,M: N distinct system prompts x M questions (--prompt-len words each), to "
                "exercise prefix caching");
  c->add_option("--preamble-len", o.preamble_len, "Words per shared preamble (default 400)");
  c->add_flag("--no-ignore-eos", o.no_ignore_eos,
              "Do not send ignore_eos (for servers that reject it; outputs may then end early)");
  c->add_flag("--no-usage", o.no_usage,
              "Do not ask for stream_options.include_usage (token counts then come from events)");
  c->add_option("--temperature", o.temperature, "Sampling temperature (default 0)");
  c->add_option("--seed", o.seed, "Seed of the random prompts (default 1)");
}

void add_target_flags(CLI::App* c, LoadtestOptions& o) {
  c->add_option("--url", o.url, "Server base URL, http://HOST:PORT (plain HTTP)")->required();
  c->add_option("--model", o.model,
                "Model name to send (default: the first of the server's /v1/models, if any)");
  c->add_option("--api-key", o.api_key,
                "Bearer key (default: $KILN_API_KEY, else $OPENAI_API_KEY)");
  c->add_option("--timeout", o.timeout_s, "Seconds one request may take (default 600)");
  c->add_option("--drain-timeout", o.drain_timeout_s,
                "Seconds requests still running at the end of a level may take (default 120)");
  c->add_option("--out", o.out_dir,
                "Folder for results.json, results.csv, requests.csv (and chart.svg for sweeps)");
  c->add_option("--json-out", o.json_out, "Also write the results JSON to this file");
  c->add_option("--warmup", o.warmup_s, "Seconds of warm-up load before measuring (default 0)");
  c->add_flag("-q,--quiet", o.quiet, "No live progress line");
}

Result<lt::Workload> build_workload(const LoadtestOptions& o, CLI::App* c) {
  lt::WorkloadOptions w;
  w.model = o.model;
  w.temperature = o.temperature;
  w.seed = o.seed;
  w.include_usage = !o.no_usage;
  if (!o.preset.empty()) KILN_TRY(lt::apply_preset(o.preset, w));
  if (c->count("--api")) w.api = o.api;
  if (c->count("--prompt-len") || o.preset.empty()) {
    auto d = lt::parse_length_dist(o.prompt_len, "--prompt-len");
    if (!d) return d.error();
    w.prompt_words = *d;
  }
  if (c->count("--output-len") || o.preset.empty()) {
    auto d = lt::parse_length_dist(o.output_len, "--output-len");
    if (!d) return d.error();
    w.output_tokens = *d;
  }
  if (c->count("--temperature")) w.temperature = o.temperature;
  w.ignore_eos = !o.no_ignore_eos;
  w.prompts_file = o.prompts_file;
  if (!o.shared_preamble.empty()) {
    if (std::sscanf(o.shared_preamble.c_str(), "%d,%d", &w.n_preambles, &w.n_questions) != 2)
      return make_error("--shared-preamble '" + o.shared_preamble +
                        "': expected N,M (system prompts, questions), e.g. 4,32");
    w.preamble_words = o.preamble_len;
  }
  return lt::Workload::build(w);
}

// Fills the target part of the session; asks /v1/models for a model name
// when none was given (vLLM and others require one; kiln does not).
Result<lt::SessionOptions> base_session(LoadtestOptions& o) {
  lt::SessionOptions s;
  auto url = lt::parse_url(o.url);
  if (!url) return url.error();
  s.run.url = *url;
  if (o.api_key.empty()) {
    for (const char* env : {"KILN_API_KEY", "OPENAI_API_KEY"})
      if (const char* v = std::getenv(env); v && *v) {
        o.api_key = v;
        break;
      }
  }
  s.run.api_key = o.api_key;
  s.run.request_timeout_s = o.timeout_s;
  s.run.drain_timeout_s = o.drain_timeout_s;
  s.warmup_s = o.warmup_s;
  s.out_dir = o.out_dir;
  s.json_out = o.json_out;
  if (o.quiet) s.progress = nullptr;
  if (o.model.empty()) {
    if (auto models = lt::http_get(s.run.url, "/v1/models", 10)) {
      const auto j = nlohmann::json::parse(models->body, nullptr, false);
      if (!j.is_discarded() && j.contains("data") && j["data"].is_array() && !j["data"].empty() &&
          j["data"][0].contains("id") && j["data"][0]["id"].is_string())
        o.model = j["data"][0]["id"].get<std::string>();
    } else {
      return make_error(models.message() + "; is the server up at --url " + o.url + "?");
    }
  }
  s.meta = {{"url", o.url}, {"model", o.model}, {"api", o.api}};
  return s;
}

int run_run(LoadtestOptions& o, CLI::App* c) {
  auto s = base_session(o);
  if (!s) return fail(s.message());
  auto w = build_workload(o, c);
  if (!w) return fail(w.message());
  if ((o.concurrency > 0) == (o.rate > 0))
    return fail("give one of --concurrency C (closed loop) or --rate R (open loop, requests/s)");
  s->run.mode = o.rate > 0 ? lt::RunOptions::Mode::open : lt::RunOptions::Mode::closed;
  s->run.concurrency = o.concurrency;
  s->run.rate = o.rate;
  s->run.duration_s = o.duration_s;
  s->run.max_requests = o.max_requests;
  s->run.max_inflight = o.max_inflight;
  if (o.duration_s <= 0 && o.max_requests <= 0)
    return fail("--duration 0 needs --requests N (otherwise the run never ends)");
  s->label = o.rate > 0 ? fmt::format("{:g}/s", o.rate) : fmt::format("c={}", o.concurrency);
  s->meta["mode"] = o.rate > 0 ? "open" : "closed";
  s->meta["duration_s"] = o.duration_s;
  s->meta["workload"] = w->description();
  return finish(lt::run_single(*s, *w));
}

int run_sweep(LoadtestOptions& o, CLI::App* c) {
  auto s = base_session(o);
  if (!s) return fail(s.message());
  auto w = build_workload(o, c);
  if (!w) return fail(w.message());
  for (size_t i = 0; i < o.levels.size(); ++i)
    if (o.levels[i] <= 0 || (i && o.levels[i] <= o.levels[i - 1]))
      return fail("--concurrency: levels must be positive and increasing, e.g. 1,2,4,8,16");
  if (o.duration_s <= 0) return fail("--duration: seconds per level, more than 0");
  s->levels.assign(o.levels.begin(), o.levels.end());
  s->run.duration_s = o.duration_s;
  if (o.slo_ttft > 0) s->slo.ttft_p99_ms = o.slo_ttft;
  if (o.slo_tpot > 0) s->slo.tpot_p99_ms = o.slo_tpot;
  s->slo.max_error_rate = o.max_error_rate;
  if (o.price > 0) s->price_per_hour = o.price;
  s->keep_going = o.keep_going;
  s->deploy = {o.service, o.image, o.region};
  s->meta["mode"] = "sweep";
  s->meta["duration_s"] = o.duration_s;
  s->meta["warmup_s"] = o.warmup_s;
  s->meta["workload"] = w->description();
  s->meta["levels"] = o.levels;
  return finish(lt::run_sweep(*s, *w));
}

int run_replay(LoadtestOptions& o) {
  auto s = base_session(o);
  if (!s) return fail(s.message());
  lt::ReplayOptions ro;
  ro.model = o.model;
  ro.include_usage = !o.no_usage;
  ro.max_requests = o.max_requests;
  auto w = lt::load_request_log(o.log, ro);
  if (!w) return fail(w.message());
  if (o.speed <= 0) return fail("--speed must be more than 0 (2 = twice as fast)");
  s->run.max_requests = int64_t(w->size());
  s->run.duration_s = 0;
  if (o.concurrency > 0) {
    s->run.mode = lt::RunOptions::Mode::closed;
    s->run.concurrency = o.concurrency;
    s->label = fmt::format("c={}", o.concurrency);
  } else {
    s->run.mode = lt::RunOptions::Mode::replay;
    s->run.speed = o.speed;
    s->run.max_inflight = o.max_inflight;
    s->label = o.speed == 1 ? "replay" : fmt::format("replay x{:g}", o.speed);
  }
  s->meta["mode"] = "replay";
  s->meta["log"] = o.log;
  s->meta["workload"] = w->description();
  return finish(lt::run_single(*s, *w));
}

}  // namespace

void register_loadtest(CLI::App& root, Runner& run) {
  auto o = std::make_shared<LoadtestOptions>();
  auto* lt_cmd = root.add_subcommand(
      "loadtest",
      "Load-test an OpenAI-compatible server with streamed requests: TTFT, inter-token "
      "latency, TPOT, E2E percentiles, throughput, errors; `sweep` recommends Cloud Run's "
      "--concurrency. See docs/loadtest.md.");
  lt_cmd->require_subcommand(1);

  auto* r = lt_cmd->add_subcommand("run",
                                   "One load level: closed loop (--concurrency) or open "
                                   "loop (--rate, Poisson arrivals)");
  add_target_flags(r, *o);
  add_workload_flags(r, *o);
  r->add_option("-c,--concurrency", o->concurrency,
                "Clients, each sending one request after another");
  r->add_option("--rate", o->rate, "Open loop: requests per second (Poisson arrivals)");
  r->add_option("--duration", o->duration_s, "Seconds during which requests start (default 30)");
  r->add_option("--requests", o->max_requests, "Stop after this many requests (0: no limit)");
  r->add_option("--max-inflight", o->max_inflight,
                "Open loop: arrivals beyond this many in flight are dropped and counted");
  r->callback([o, r, &run] { run = [o, r] { return run_run(*o, r); }; });

  auto* s = lt_cmd->add_subcommand(
      "sweep",
      "Closed-loop levels, e.g. --concurrency 1,2,4,8,16; recommends the largest "
      "meeting the SLO, with cost figures and the gcloud run deploy line");
  add_target_flags(s, *o);
  add_workload_flags(s, *o);
  s->add_option("-c,--concurrency", o->levels, "Levels, increasing (comma-separated)")
      ->delimiter(',')
      ->required();
  s->add_option("--duration", o->duration_s, "Seconds per level (default 30)");
  s->add_option("--slo-ttft-p99", o->slo_ttft, "SLO: time to first token p99, ms");
  s->add_option("--slo-tpot-p99", o->slo_tpot, "SLO: time per output token p99, ms");
  s->add_option("--max-error-rate", o->max_error_rate,
                "A level with more failed requests (429 included) fails the SLO (default 0.01)");
  s->add_option("--price-per-hour", o->price,
                "Instance price in USD/hour (GPU + CPU + memory) for the cost per million tokens");
  s->add_flag("--keep-going", o->keep_going, "Run every level even after one misses the SLO");
  s->add_option("--service", o->service, "Service name in the gcloud line (default kiln)");
  s->add_option("--image", o->image, "Image in the gcloud line (default IMAGE)");
  s->add_option("--region", o->region, "Region in the gcloud line");
  s->callback([o, s, &run] { run = [o, s] { return run_sweep(*o, s); }; });

  auto* p = lt_cmd->add_subcommand(
      "replay", "Replay a `kiln serve --request-log` file (prompts, parameters, arrival times)");
  p->add_option("log", o->log, "The request log (JSON lines)")->required();
  add_target_flags(p, *o);
  p->add_flag("--no-usage", o->no_usage, "Do not ask for stream_options.include_usage");
  p->add_option("--speed", o->speed, "Arrival-time scale: 2 replays twice as fast (default 1)");
  p->add_option("-c,--concurrency", o->concurrency,
                "Ignore the log's timing: closed loop with this many clients");
  p->add_option("--requests", o->max_requests, "Replay only the first N requests");
  p->add_option("--max-inflight", o->max_inflight,
                "Arrivals beyond this many in flight are dropped");
  p->callback([o, &run] { run = [o] { return run_replay(*o); }; });
}

}  // namespace kiln::cli
