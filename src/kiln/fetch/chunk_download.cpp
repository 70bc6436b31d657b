// Validation of each ranged answer; see chunk_download.h.
#include "kiln/fetch/chunk_download.h"

#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace kiln::fetch {
namespace {

bool pwrite_all(int fd, const char* p, size_t n, uint64_t off) {
  while (n) {
    const ssize_t w = ::pwrite(fd, p, n, off_t(off));
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return false;
    p += w;
    n -= size_t(w);
    off += uint64_t(w);
  }
  return true;
}

std::string span(uint64_t first, uint64_t last) {
  return "bytes " + std::to_string(first) + "-" + std::to_string(last);
}

}  // namespace

ChunkAttempt download_chunk_once(HttpClient& client, const RemoteObject& obj,
                                 const FetchOptions& opts, const ChunkTarget& t, uint64_t& got,
                                 const std::atomic<bool>* stop) {
  using K = ChunkAttempt::Kind;
  const uint64_t first = t.offset + got, last = t.offset + t.length - 1;
  HttpRequest req;
  req.url = obj.media_url;
  req.headers = obj.headers;
  req.connect_timeout_ms = opts.connect_timeout_ms;
  req.stall_seconds = opts.stall_seconds;
  req.cancel = stop;
  if (obj.ranges) req.range = std::make_pair(first, last);

  bool checked = false;
  ChunkAttempt bad;  // set by the sink when it stops the transfer
  std::string err_body;
  auto sink = [&](const HttpHead& h, const char* d, size_t n) -> bool {
    if (!checked) {
      checked = true;
      if (h.status != 200 && h.status != 206) return true;  // error body: read below
      if (obj.ranges && h.status == 200 && !(first == 0 && last + 1 == obj.size)) {
        bad = {K::fatal,
               "the server ignored the Range header (HTTP 200 with the whole file) "
               "although it honoured one before; it cannot serve a parallel download"};
        return false;
      }
      if (h.status == 206) {
        uint64_t f = 0, l = 0, total = 0;
        bool known = false;
        const std::string cr = h.header("content-range");
        if (!parse_content_range(cr, f, l, total, known) || f != first || l != last ||
            (known && total != obj.size)) {
          bad = {K::fatal, "asked for " + span(first, last) + " of " + std::to_string(obj.size) +
                               ", the server answered Content-Range '" + cr +
                               "'; the remote file changed or the server is broken: run again"};
          return false;
        }
      }
      const std::string cl = h.header("content-length");
      const uint64_t want = h.status == 206 ? last - first + 1 : obj.size;
      if (!cl.empty() && std::strtoull(cl.c_str(), nullptr, 10) != want) {
        bad = {K::retry, "Content-Length " + cl + " for " + span(first, last) + " (" +
                             std::to_string(want) + " bytes expected)"};
        return false;
      }
    }
    if (h.status != 200 && h.status != 206) {
      if (err_body.size() < 512) err_body.append(d, std::min<size_t>(n, 512));
      return err_body.size() < 4096;
    }
    if (got + n > t.length) {
      bad = {K::retry, "the server sent more than the " + std::to_string(t.length - got) +
                           " bytes of " + span(first, last)};
      return false;
    }
    if (!pwrite_all(t.fd, d, n, t.offset + got)) {
      bad = {K::fatal, "cannot write " + t.path + ": " + std::strerror(errno) +
                           "; free disk space or choose another destination"};
      return false;
    }
    got += n;
    if (t.progress) t.progress->fetch_add(n, std::memory_order_relaxed);
    return true;
  };

  const HttpOutcome out = client.get(req, sink);
  if (out.cancelled) return {K::stopped, "cancelled"};
  if (out.sink_stopped && bad.kind != K::ok) return bad;
  const long s = out.head.status;
  if (out.curl_code == 0 && s != 200 && s != 206) {
    const std::string what = "HTTP " + std::to_string(s) + " for " + span(first, last) +
                             (err_body.empty() ? "" : " (" + err_body.substr(0, 200) + ")");
    if (retryable_status(s)) return {K::retry, what};
    if (s == 401 || s == 403)
      return {K::fatal, what + ": access denied (an expired token? run again)"};
    return {K::fatal, what};
  }
  if (out.curl_code != 0)
    return {K::retry, describe(out) + " after " + std::to_string(got) + " of " +
                          std::to_string(t.length) + " bytes of " + span(t.offset, last)};
  if (got != t.length)
    return {K::retry, "the answer ended after " + std::to_string(got) + " of " +
                          std::to_string(t.length) + " bytes of " + span(t.offset, last)};
  return {K::ok, ""};
}

}  // namespace kiln::fetch
