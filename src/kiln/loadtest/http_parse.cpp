// HTTP/1.1 response parsing for the load generator (see http_parse.h).
#include "kiln/loadtest/http_parse.h"

#include <algorithm>
#include <cctype>
#include <charconv>

namespace kiln::loadtest {
namespace {

bool iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) ==
                  std::tolower(static_cast<unsigned char>(y));
         });
}
bool icontains(std::string_view hay, std::string_view needle) {
  if (needle.size() > hay.size()) return false;
  for (size_t i = 0; i + needle.size() <= hay.size(); ++i)
    if (iequals(hay.substr(i, needle.size()), needle)) return true;
  return false;
}
std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r'))
    s.remove_suffix(1);
  return s;
}

}  // namespace

std::string Url::host_header() const {
  return port == 80 ? host : host + ":" + std::to_string(port);
}

Result<Url> parse_url(const std::string& s) {
  std::string_view v = s;
  if (v.starts_with("https://"))
    return make_error("--url " + s +
                      ": https is not supported by the load generator; point it at plain HTTP "
                      "(the instance's own address, or `gcloud run services proxy SERVICE "
                      "--port 8080` and --url http://127.0.0.1:8080)");
  if (!v.starts_with("http://"))
    return make_error("--url " + s + ": expected http://HOST[:PORT], e.g. http://127.0.0.1:8080");
  v.remove_prefix(7);
  Url u;
  const size_t slash = v.find('/');
  std::string_view hostport = v.substr(0, slash);
  if (slash != std::string_view::npos) {
    u.prefix = std::string(v.substr(slash));
    while (!u.prefix.empty() && u.prefix.back() == '/') u.prefix.pop_back();
    // Users often paste the OpenAI base URL (…/v1): the endpoints add it.
    if (u.prefix.ends_with("/v1")) u.prefix.resize(u.prefix.size() - 3);
  }
  const size_t colon = hostport.rfind(':');
  if (colon != std::string_view::npos && hostport.find(']') == std::string_view::npos) {
    unsigned p = 0;
    auto port = hostport.substr(colon + 1);
    auto [ptr, ec] = std::from_chars(port.data(), port.data() + port.size(), p);
    if (ec != std::errc() || ptr != port.data() + port.size() || p == 0 || p > 65535)
      return make_error("--url " + s + ": bad port '" + std::string(port) + "'");
    u.port = uint16_t(p);
    hostport = hostport.substr(0, colon);
  }
  if (hostport.empty()) return make_error("--url " + s + ": no host");
  u.host = std::string(hostport);
  return u;
}

bool HttpResponseParser::fail(std::string msg) {
  state_ = State::failed;
  error_ = std::move(msg);
  return false;
}

void HttpResponseParser::end_headers() {
  // 1xx responses are followed by the real one.
  if (status_ >= 100 && status_ < 200) {
    state_ = State::status_line;
    return;
  }
  if (status_ == 204 || status_ == 304) {
    state_ = State::done;
  } else if (chunked_) {
    state_ = State::chunk_size;
  } else if (content_length_ >= 0) {
    remaining_ = content_length_;
    state_ = remaining_ == 0 ? State::done : State::body_length;
  } else {
    keep_alive_ = false;  // the body ends when the server closes
    state_ = State::body_until_close;
  }
}

bool HttpResponseParser::on_line(std::string_view line) {
  if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
  switch (state_) {
    case State::status_line: {
      // HTTP/1.x NNN reason
      if (line.size() < 12 || !line.starts_with("HTTP/1."))
        return fail("not an HTTP/1.x status line: '" + std::string(line.substr(0, 80)) + "'");
      http_minor_ = line[7] - '0';
      keep_alive_ = http_minor_ >= 1;
      auto [p, ec] = std::from_chars(line.data() + 9, line.data() + 12, status_);
      if (ec != std::errc() || p != line.data() + 12)
        return fail("bad status code in '" + std::string(line.substr(0, 80)) + "'");
      chunked_ = false;
      event_stream_ = false;
      retry_after_s_ = -1;
      content_length_ = -1;
      state_ = State::headers;
      return true;
    }
    case State::headers: {
      if (line.empty()) {
        end_headers();
        return true;
      }
      const size_t c = line.find(':');
      if (c == std::string_view::npos)
        return fail("malformed header line '" + std::string(line.substr(0, 80)) + "'");
      const std::string_view name = trim(line.substr(0, c)), value = trim(line.substr(c + 1));
      if (iequals(name, "content-length")) {
        auto [p, ec] = std::from_chars(value.data(), value.data() + value.size(), content_length_);
        if (ec != std::errc() || content_length_ < 0)
          return fail("bad Content-Length '" + std::string(value) + "'");
      } else if (iequals(name, "transfer-encoding")) {
        chunked_ = icontains(value, "chunked");
      } else if (iequals(name, "connection")) {
        if (icontains(value, "close")) keep_alive_ = false;
        if (icontains(value, "keep-alive")) keep_alive_ = true;
      } else if (iequals(name, "retry-after")) {
        // Seconds only: the HTTP-date form is left alone (-1).
        int v = -1;
        auto [p, ec] = std::from_chars(value.data(), value.data() + value.size(), v);
        retry_after_s_ = ec == std::errc() && v >= 0 ? v : -1;
      } else if (iequals(name, "content-type")) {
        event_stream_ = icontains(value, "text/event-stream");
      }
      return true;
    }
    case State::chunk_size: {
      const size_t semi = line.find(';');  // chunk extensions are ignored
      const std::string_view hex = trim(line.substr(0, semi));
      uint64_t n = 0;
      auto [p, ec] = std::from_chars(hex.data(), hex.data() + hex.size(), n, 16);
      if (hex.empty() || ec != std::errc() || p != hex.data() + hex.size())
        return fail("bad chunk size line '" + std::string(line.substr(0, 80)) + "'");
      remaining_ = int64_t(n);
      state_ = n == 0 ? State::trailers : State::chunk_data;
      return true;
    }
    case State::chunk_crlf:
      if (!line.empty()) return fail("chunk data not followed by CRLF");
      state_ = State::chunk_size;
      return true;
    case State::trailers:
      if (line.empty()) state_ = State::done;
      return true;
    default:
      return fail("internal: line in a body state");
  }
}

bool HttpResponseParser::feed(std::string_view data, const BodySink& sink) {
  while (!data.empty()) {
    switch (state_) {
      case State::done:
        return true;
      case State::failed:
        return false;
      case State::body_until_close:
        sink(data);
        return true;
      case State::body_length:
      case State::chunk_data: {
        const size_t n = size_t(std::min<int64_t>(remaining_, int64_t(data.size())));
        sink(data.substr(0, n));
        data.remove_prefix(n);
        remaining_ -= int64_t(n);
        if (remaining_ == 0)
          state_ = state_ == State::body_length ? State::done : State::chunk_crlf;
        break;
      }
      default: {  // line-based states
        const size_t nl = data.find('\n');
        if (nl == std::string_view::npos) {
          line_.append(data);
          if (line_.size() > 65536) return fail("header or chunk line longer than 64 KiB");
          return true;
        }
        bool ok;
        if (line_.empty()) {
          ok = on_line(data.substr(0, nl));
        } else {
          line_.append(data.substr(0, nl));
          ok = on_line(line_);
          line_.clear();
        }
        if (!ok) return false;
        data.remove_prefix(nl + 1);
      }
    }
  }
  return state_ != State::failed;
}

bool HttpResponseParser::finish_eof() {
  if (state_ == State::body_until_close) state_ = State::done;
  if (state_ == State::done) return true;
  if (state_ != State::failed)
    fail(status_ ? "connection closed in the middle of the response body"
                 : "connection closed before a response");
  return false;
}

}  // namespace kiln::loadtest
