// A thin layer over libcurl's easy interface: one handle per connection
// (kept across requests so the TCP/TLS connection is reused), the response
// head parsed before the first body byte, the body streamed to a sink.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "kiln/core/status.h"

namespace kiln::fetch {

struct HttpHead {
  long status = 0;
  std::map<std::string, std::string> headers;  // lower-case names; repeats joined by ", "
  std::string header(const std::string& lower_name) const {
    auto it = headers.find(lower_name);
    return it == headers.end() ? std::string() : it->second;
  }
};

struct HttpRequest {
  std::string url;
  std::vector<std::string> headers;  // "Name: value"
  // Inclusive byte range [first, last]: sends `Range: bytes=first-last`.
  std::optional<std::pair<uint64_t, uint64_t>> range;
  long connect_timeout_ms = 10000;
  // A transfer that delivers nothing, or less than `stall_bytes_per_s`, for
  // `stall_seconds` is cut off (and retried): a stalled connection must not
  // hang a pull forever.
  long stall_bytes_per_s = 1024;
  long stall_seconds = 30;
  long total_timeout_ms = 0;  // 0: none (large bodies take as long as they take)
  const std::atomic<bool>* cancel = nullptr;
};

// How a transfer ended. `curl_code` 0 is a complete body; otherwise
// `curl_error` says why (connection reset, timeout, body shorter than its
// Content-Length, aborted by the sink or by `cancel`).
struct HttpOutcome {
  int curl_code = 0;
  std::string curl_error;
  HttpHead head;
  bool sink_stopped = false;  // the sink returned false
  bool cancelled = false;
  bool stalled = false;  // no byte for stall_seconds: cut off, worth a retry
  uint64_t body_bytes = 0;
};

// Called with each piece of the body; `head` is complete from the first call
// on. Return false to stop the transfer.
using BodySink = std::function<bool(const HttpHead& head, const char* data, size_t n)>;

class HttpClient {
 public:
  HttpClient();
  ~HttpClient();
  HttpClient(const HttpClient&) = delete;
  HttpClient& operator=(const HttpClient&) = delete;

  HttpOutcome get(const HttpRequest& req, const BodySink& sink);

  // A GET of a small body (JSON metadata, a token): fails on transport
  // errors and bodies over `max_body` bytes; any status is returned.
  Result<std::pair<HttpHead, std::string>> get_small(const HttpRequest& req,
                                                     size_t max_body = 1 << 20);

 private:
  void* curl_;  // CURL*
};

// "HTTP 503" / "connection reset (curl: ...)" for error messages.
std::string describe(const HttpOutcome& o);

}  // namespace kiln::fetch
