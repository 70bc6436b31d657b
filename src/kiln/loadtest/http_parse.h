// Incremental parsing of what the load generator reads back: the target URL
// and HTTP/1.1 responses (status, headers, Content-Length / chunked /
// read-until-close bodies) fed in whatever pieces the socket delivers, so a
// streamed body reaches the SSE parser the moment its bytes arrive.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>

#include "kiln/core/status.h"

namespace kiln::loadtest {

struct Url {
  std::string host;
  uint16_t port = 80;
  std::string prefix;  // path before /v1/... ("" for http://host:port)
  std::string host_header() const;
};

// http://host[:port][/prefix]. https is refused with a way around it: the
// client speaks plain HTTP (loopback, a VPC address, or `gcloud run services
// proxy`, which serves a Cloud Run service on localhost).
Result<Url> parse_url(const std::string& s);

class HttpResponseParser {
 public:
  using BodySink = std::function<void(std::string_view)>;

  // Consumes `data`, passing body bytes (de-chunked) to `sink`. Returns false
  // on a malformed response (error() says what). Bytes after the end of the
  // response are ignored: the client never pipelines.
  bool feed(std::string_view data, const BodySink& sink);
  // The connection closed: ends a read-until-close body; false when the
  // response was cut short.
  bool finish_eof();

  bool headers_done() const { return state_ > State::headers; }
  bool done() const { return state_ == State::done; }
  int status() const { return status_; }
  bool keep_alive() const { return keep_alive_; }
  bool event_stream() const { return event_stream_; }
  int retry_after_s() const { return retry_after_s_; }  // Retry-After in seconds; -1: none
  const std::string& error() const { return error_; }

 private:
  enum class State {
    status_line,
    headers,
    body_length,
    chunk_size,
    chunk_data,
    chunk_crlf,
    trailers,
    body_until_close,
    done,
    failed
  };
  bool fail(std::string msg);
  bool on_line(std::string_view line);  // status line, header, chunk size or trailer
  void end_headers();

  State state_ = State::status_line;
  std::string line_;  // a line split across reads
  int status_ = 0;
  int http_minor_ = 1;
  bool keep_alive_ = true;
  bool chunked_ = false;
  bool event_stream_ = false;
  int retry_after_s_ = -1;
  int64_t content_length_ = -1;
  int64_t remaining_ = 0;  // of the body or the current chunk
  std::string error_;
};

}  // namespace kiln::loadtest
