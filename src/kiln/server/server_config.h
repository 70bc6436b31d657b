// Settings of the HTTP edge (kiln serve's flags that are not the engine's).
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

namespace kiln::server {

struct ServerConfig {
  std::string host = "0.0.0.0";
  uint16_t port = 8080;                     // 0: any free port (tests)
  int io_threads = 2;                       // threads running the connections
  int64_t max_concurrency = 16;             // admitted generation requests; more -> 429
  size_t max_header_bytes = 16 * 1024;      // larger -> 431
  size_t max_body_bytes = 8 * 1024 * 1024;  // larger -> 413
  int max_json_depth = 64;                  // deeper -> 400
  // A request must arrive completely this long after its first byte
  // (slow-loris clients are cut off).
  std::chrono::milliseconds request_timeout{15000};
  // An open keep-alive connection may stay silent this long.
  std::chrono::milliseconds idle_timeout{60000};
  // A write (one SSE chunk, one response) must complete in this time.
  std::chrono::milliseconds write_timeout{30000};
  std::chrono::milliseconds drain_timeout{8000};  // --drain-timeout
  std::string api_key;                            // --api-key / KILN_API_KEY; empty: no auth
  std::string model_id = "kiln";                  // the name /v1/models lists and responses echo
  // One stderr line per completion request with where its time went before
  // the engine (KILN_TRACE_STEPS=1 in kiln serve, as the engine's step trace).
  bool trace_requests = false;
};

}  // namespace kiln::server
