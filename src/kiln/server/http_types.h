// The HTTP edge's own request/response types, free of Boost.Beast so that the
// routes (a pure function of a request) and the tests compile without it.
// A response is either complete (status + body) or driven by a BodyProducer
// that the connection polls as engine events arrive.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace kiln::server {

struct HttpRequest {
  std::string method;                                        // "GET", "POST", ...
  std::string target;                                        // path and query, e.g. "/v1/models"
  std::vector<std::pair<std::string, std::string>> headers;  // names as received
  std::string body;
  std::string remote;  // peer address, for the request log
  // When the whole request had been read: where a request's latency
  // (TTFT, duration) starts.
  std::chrono::steady_clock::time_point received = std::chrono::steady_clock::now();

  // Case-insensitive header lookup; empty when absent.
  std::string_view header(std::string_view name) const;
  // The path without a query string.
  std::string_view path() const;
};

// An incremental response body. The connection calls poll() from its own
// strand until it returns done; between calls it waits for the waker (which
// the producer calls from any thread when it has something new) or for the
// client to go away (then cancel()).
class BodyProducer {
 public:
  enum class Poll { pending, done };
  virtual ~BodyProducer() = default;

  // true: Server-Sent Events; headers go out first, then each poll()'s bytes
  // as they come. false: the whole body is collected; status() and
  // content_type() are read after poll() returned done.
  virtual bool streaming() const = 0;
  // Appends bytes to send now to `out`.
  virtual Poll poll(std::string& out) = 0;
  // Registers the wake-up; called once, before the first poll().
  virtual void set_waker(std::function<void()> wake) = 0;
  // The client is gone (or the server gives up): stop the work it started.
  virtual void cancel() = 0;
  virtual int status() const { return 200; }
  virtual std::string content_type() const { return "application/json"; }
};

struct HttpResponse {
  int status = 200;
  std::string content_type = "application/json";
  std::vector<std::pair<std::string, std::string>> headers;  // extra headers
  std::string body;
  std::shared_ptr<BodyProducer> producer;  // when set, body is ignored
  bool close = false;                      // send Connection: close and close after

  static HttpResponse json(int status, std::string body) {
    HttpResponse r;
    r.status = status;
    r.body = std::move(body);
    return r;
  }
  static HttpResponse text(int status, std::string body,
                           std::string content_type = "text/plain; charset=utf-8") {
    HttpResponse r;
    r.status = status;
    r.content_type = std::move(content_type);
    r.body = std::move(body);
    return r;
  }
};

// The reason phrase of a status code ("Too Many Requests").
std::string_view status_reason(int status);

}  // namespace kiln::server
