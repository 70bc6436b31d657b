// The metrics kiln serve exports: the edge's own (admission, HTTP statuses,
// latencies, token counts) and the engine's EngineStats, read at scrape time.
#pragma once

#include <atomic>
#include <string>

#include "kiln/server/metrics.h"
#include "kiln/server/preamble_metrics.h"

namespace kiln::engine {
struct EngineStats;
}

namespace kiln::server {

class ServerMetrics {
  // First: the metric references below are initialized from it.
  MetricsRegistry registry_;

 public:
  ServerMetrics();
  ServerMetrics(const ServerMetrics&) = delete;
  ServerMetrics& operator=(const ServerMetrics&) = delete;

  MetricsRegistry& registry() { return registry_; }
  // Engine gauges read 0 until an engine is attached (it must outlive this).
  void attach_engine(const engine::EngineStats* stats) { engine_.store(stats); }

  // Counts a finished HTTP response by status code.
  void count_response(int status);
  // Start-up phase durations: phase is "load", "warmup", ...
  void set_phase_seconds(const std::string& phase, double seconds);

  std::string render() const { return registry_.render(); }

  // The edge's own metrics (registered in the constructor).
  Gauge& admitted;            // requests holding an admission slot (running + waiting)
  Counter& rejected;          // 429 over --max-concurrency
  Counter& cancelled;         // client gone before the end
  Histogram& ttft;            // seconds from arrival to the first token
  Histogram& inter_token;     // seconds between tokens of one sequence
  Histogram& e2e;             // seconds from arrival to the last byte
  Counter& prompt_tokens;     // prompt tokens of finished generation requests
  Counter& generated_tokens;  // tokens generated for finished requests
  Counter& cached_tokens;     // prompt tokens the prefix cache served (per the engine)
  Gauge& ready;               // 1 when /health/ready says 200
  PreambleMetrics preambles{registry_};  // prefix hit share per preamble (prefix-report's keys)

 private:
  std::atomic<const engine::EngineStats*> engine_{nullptr};
};

}  // namespace kiln::server
