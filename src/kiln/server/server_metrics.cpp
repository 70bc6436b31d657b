// Registration of kiln serve's metrics; engine stats become callback series.
#include "kiln/server/server_metrics.h"

#include "kiln/engine/engine.h"

namespace kiln::server {
namespace {

// Latency buckets from 5 ms to 2 min: TTFT under load reaches seconds.
std::vector<double> latency_buckets() {
  return {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120};
}
std::vector<double> token_gap_buckets() {
  return {0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 1, 2.5};
}

}  // namespace

ServerMetrics::ServerMetrics()
    : admitted(registry_.gauge("kiln_requests_admitted",
                               "Requests holding an admission slot (running + waiting), at most "
                               "--max-concurrency")),
      rejected(
          registry_.counter("kiln_requests_rejected_total",
                            "Requests refused with 429 because --max-concurrency was reached")),
      cancelled(registry_.counter("kiln_requests_cancelled_total",
                                  "Generation requests whose client went away before the end")),
      ttft(registry_.histogram("kiln_time_to_first_token_seconds",
                               "Seconds from a request's arrival to its first generated token",
                               latency_buckets())),
      inter_token(registry_.histogram("kiln_inter_token_latency_seconds",
                                      "Seconds between consecutive tokens of one sequence, as "
                                      "delivered to the edge",
                                      token_gap_buckets())),
      e2e(registry_.histogram("kiln_request_duration_seconds",
                              "Seconds from a generation request's arrival to its last byte",
                              latency_buckets())),
      prompt_tokens(registry_.counter("kiln_prompt_tokens_total",
                                      "Prompt tokens of finished generation requests")),
      generated_tokens(registry_.counter("kiln_generation_tokens_total",
                                         "Tokens generated for finished requests")),
      cached_tokens(registry_.counter("kiln_prompt_tokens_cached_total",
                                      "Prompt tokens of finished requests that the prefix cache "
                                      "served")),
      ready(registry_.gauge("kiln_ready", "1 when the model can serve (/health/ready is 200)")) {
  auto eng = [this](auto get) {
    return [this, get]() -> double {
      const engine::EngineStats* s = engine_.load();
      return s ? double(get(*s)) : 0.0;
    };
  };
  using S = engine::EngineStats;
  registry_.callback("kiln_requests_running", "Sequences holding an engine slot (<= --parallel)",
                     "gauge", eng([](const S& s) { return s.running.load(); }));
  registry_.callback("kiln_requests_waiting",
                     "Requests submitted to the engine and not yet scheduled (FIFO)", "gauge",
                     eng([](const S& s) { return s.waiting.load(); }));
  registry_.callback("kiln_kv_blocks_used", "KV cache blocks held by running sequences", "gauge",
                     eng([](const S& s) { return s.kv_blocks_used.load(); }));
  registry_.callback("kiln_kv_blocks_cached",
                     "KV cache blocks held only by the prefix cache (reclaimable)", "gauge",
                     eng([](const S& s) { return s.kv_blocks_cached.load(); }));
  registry_.callback("kiln_kv_blocks_free", "KV cache blocks neither used nor cached", "gauge",
                     eng([](const S& s) {
                       return s.kv_blocks_total.load() - s.kv_blocks_used.load() -
                              s.kv_blocks_cached.load();
                     }));
  registry_.callback("kiln_kv_blocks_total", "KV cache blocks in the pool", "gauge",
                     eng([](const S& s) { return s.kv_blocks_total.load(); }));
  registry_.callback("kiln_engine_steps_total", "Engine steps run", "counter",
                     eng([](const S& s) { return s.steps.load(); }));
  registry_.callback("kiln_engine_step_seconds_total", "Seconds spent in engine steps", "counter",
                     eng([](const S& s) { return double(s.step_time_us_total.load()) * 1e-6; }));
  registry_.callback("kiln_engine_step_seconds_avg", "Mean seconds per engine step so far", "gauge",
                     eng([](const S& s) {
                       const double n = double(s.steps.load());
                       return n > 0 ? double(s.step_time_us_total.load()) * 1e-6 / n : 0.0;
                     }));
  registry_.callback("kiln_engine_max_seqs_in_step", "Most sequences in one engine step so far",
                     "gauge", eng([](const S& s) { return s.max_seqs_in_step.load(); }));
  registry_.callback("kiln_engine_max_seqs_in_mixed_step",
                     "Most sequences in one step that mixed prefill chunks and decode tokens",
                     "gauge", eng([](const S& s) { return s.max_seqs_in_mixed_step.load(); }));
  registry_.callback("kiln_prefix_cache_collisions_total",
                     "Prefix-cache hash matches rejected by token verification", "counter",
                     eng([](const S& s) { return s.prefix_collisions.load(); }));
  registry_.callback("kiln_engine_mixed_steps_total",
                     "Engine steps that mixed prefill chunks and decode tokens", "counter",
                     eng([](const S& s) { return s.mixed_steps.load(); }));
  registry_.callback("kiln_engine_prompt_tokens_total", "Prompt tokens of admitted requests",
                     "counter", eng([](const S& s) { return s.prompt_tokens.load(); }));
  registry_.callback("kiln_engine_prompt_tokens_computed_total",
                     "Prompt tokens actually run through the model", "counter",
                     eng([](const S& s) { return s.prompt_tokens_computed.load(); }));
  registry_.callback("kiln_engine_prompt_tokens_cached_total",
                     "Prompt tokens served from the prefix cache", "counter",
                     eng([](const S& s) { return s.prompt_tokens_cached.load(); }));
  registry_.callback("kiln_engine_generated_tokens_total", "Tokens generated by the engine",
                     "counter", eng([](const S& s) { return s.generated_tokens.load(); }));
  registry_.callback("kiln_engine_device_sampled_tokens_total",
                     "Generated tokens sampled on the GPU (temperature / top-k / top-p / min-p)",
                     "counter", eng([](const S& s) { return s.device_sampled_tokens.load(); }));
  registry_.callback("kiln_engine_preemptions_total",
                     "Sequences preempted for lack of KV blocks (recomputed later)", "counter",
                     eng([](const S& s) { return s.preemptions.load(); }));
  registry_.callback("kiln_prefix_cache_lookups_total", "Full prompt blocks looked up", "counter",
                     eng([](const S& s) { return s.prefix_lookups.load(); }));
  registry_.callback("kiln_prefix_cache_hits_total", "Full prompt blocks found and verified",
                     "counter", eng([](const S& s) { return s.prefix_hits.load(); }));
  registry_.callback("kiln_prefix_cache_hit_rate",
                     "Prefix cache hits / lookups over the process lifetime (0 before any lookup)",
                     "gauge", eng([](const S& s) {
                       const double n = double(s.prefix_lookups.load());
                       return n > 0 ? double(s.prefix_hits.load()) / n : 0.0;
                     }));
}

void ServerMetrics::count_response(int status) {
  registry_
      .counter("kiln_http_responses_total", "HTTP responses by status code",
               "code=\"" + std::to_string(status) + "\"")
      .inc();
}

void ServerMetrics::set_phase_seconds(const std::string& phase, double seconds) {
  registry_
      .gauge("kiln_startup_phase_seconds", "Seconds each start-up phase took",
             "phase=\"" + phase + "\"")
      .set(seconds);
}

}  // namespace kiln::server
