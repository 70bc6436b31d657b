// The load generator's HTTP client: Asio coroutines on one thread, one
// coroutine per in-flight request, keep-alive connections, streaming SSE
// parsing as bytes arrive. One thread is deliberate: every timestamp comes
// from the thread that read the bytes, nothing needs a lock, and one core
// parses far more than 50,000 tokens/s (see tests/unit/test_loadtest_timing.cpp).
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "kiln/core/status.h"
#include "kiln/loadtest/http_parse.h"
#include "kiln/loadtest/workload.h"

namespace kiln::loadtest {

struct RequestRecord {
  uint64_t index = 0;              // which workload request (Workload::get); sent as X-Request-Id
  int status = 0;                  // HTTP status; 0: none (connect/transport error, timeout)
  std::string error;               // empty when the request succeeded
  double start_s = 0;              // when it started (connect included), from the run's start
  double ttft_ms = -1;             // first token event after start_s; -1: none came
  double e2e_ms = -1;              // start_s to the end of the response
  std::vector<float> token_ms;     // arrival of each token event, ms after start_s
  int64_t completion_tokens = -1;  // usage.completion_tokens; -1: not reported
  int64_t prompt_tokens = -1;      // usage.prompt_tokens
  int64_t cached_tokens = -1;      // usage.prompt_tokens_details.cached_tokens
  int32_t expected_tokens = 0;     // max_tokens asked for
  int retry_after_s = -1;          // the response's Retry-After (429, 503); -1: none

  bool ok() const { return status == 200 && error.empty(); }
  // Tokens received: the server's count when reported, else token events
  // (a server may put several tokens in one event).
  int64_t output_tokens() const {
    return completion_tokens >= 0 ? completion_tokens : int64_t(token_ms.size());
  }
};

struct Progress {
  double elapsed_s = 0;
  int64_t started = 0, finished = 0, failed = 0, inflight = 0;
  int64_t token_events = 0;
  bool draining = false;  // the window closed; waiting for requests in flight
};

struct RunOptions {
  Url url;
  std::string api_key;  // sent as Authorization: Bearer
  enum class Mode { closed, open, replay };
  Mode mode = Mode::closed;
  int32_t concurrency = 1;   // closed: clients each sending one request after another
  double rate = 1;           // open: requests per second, Poisson arrivals
  double speed = 1;          // replay: 2 = the log's arrivals twice as fast
  double duration_s = 10;    // requests start only within this window; 0: until max_requests
  int64_t max_requests = 0;  // 0: no limit (replay: the whole log)
  // Workload request of this run's first request: a session passes the
  // count sent so far, so that no level re-sends a prompt an earlier level
  // (or the warm-up) already put in the server's prefix cache.
  uint64_t first_index = 0;
  double drain_timeout_s = 120;    // after the window, how long requests in flight may finish
  double request_timeout_s = 600;  // one request, start to end
  int32_t max_inflight = 10000;    // open loop: arrivals beyond this are counted, not sent
  // Token times from the kernel's receive timestamps (SO_TIMESTAMPNS): the
  // client's own scheduling delays then do not count as server latency.
  // false: the time the client read the bytes.
  bool kernel_timestamps = true;
  std::function<void(const Progress&)> progress;  // called about once a second on the io thread
};

struct RunResult {
  std::vector<RequestRecord> records;  // in the order they started
  double window_s = 0;      // the measuring window: --duration, or the wall time without one
  double wall_s = 0;        // start to the last response (drain included)
  double client_cpu_s = 0;  // CPU time of the client's io thread over the run
  int64_t max_inflight_seen = 0;
  int64_t dropped_arrivals = 0;  // open loop: arrivals over max_inflight, never sent
  // The run's start on std::chrono::steady_clock (ns since its epoch): with
  // start_s it places each request on the clock other in-process code uses.
  int64_t start_steady_ns = 0;
};

// Runs the load; fails only when the target can't be resolved.
Result<RunResult> run_load(const RunOptions& o, const Workload& w);

// Raises the soft RLIMIT_NOFILE to at least `want` (capped at the hard
// limit); returns the limit now in force.
int64_t raise_open_file_limit(int64_t want);

struct HttpReply {
  int status = 0;
  std::string body;
};
// GET `path` (e.g. /metrics, /v1/models). Fails only when no response came
// (resolve, connect, timeout, malformed); any status is a reply.
Result<HttpReply> http_get(const Url& url, const std::string& path, double timeout_s = 10);

}  // namespace kiln::loadtest
