// The HTTP/1.1 server: Boost.Beast over Asio with C++20 coroutines, one
// coroutine per connection (keep-alive, read/idle/write timeouts, header and
// body limits), N io threads. Beast stays inside http_server.cpp; this header
// is plain C++ so that cmd_serve and the tests compile fast.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>

#include "kiln/core/status.h"
#include "kiln/server/http_types.h"
#include "kiln/server/server_config.h"

namespace kiln::engine {
class Engine;
}

namespace kiln::server {

class ServerMetrics;
class Router;

class HttpServer {
 public:
  using Handler = std::function<HttpResponse(const HttpRequest&)>;
  // `draining_response` answers requests that arrive on open connections
  // once drain() began. `metrics` may be null.
  HttpServer(ServerConfig config, Handler handler, std::function<HttpResponse()> draining_response,
             ServerMetrics* metrics);
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // Binds and listens (the port opens now, before the model is loaded) and
  // starts the io threads.
  Status start();
  uint16_t port() const;

  // Closes the listener (new connections are refused), makes open
  // connections answer new requests with 503 + Connection: close, and waits
  // until no request is in flight or `timeout` passed. true: all finished.
  bool drain(std::chrono::milliseconds timeout);
  // Stops the io threads and closes every connection (cancelling what still runs).
  void stop();

  int64_t requests_in_flight() const;
  int64_t open_connections() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// SIGTERM/SIGINT path, shared by kiln serve and its tests: phase -> draining,
// drain the server up to `timeout`, stop the engine (requests still queued
// end as cancelled), stop the server. Returns true when every in-flight
// request finished in time.
bool graceful_shutdown(HttpServer& server, Router& router, engine::Engine* engine,
                       std::chrono::milliseconds timeout);

}  // namespace kiln::server
