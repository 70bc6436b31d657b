// A loopback HTTP/1.1 file server for the fetch tests (header-only, POSIX
// sockets, one thread per connection, keep-alive): serves one blob with
// Range support at any path, Cloud Storage JSON API metadata/media and a
// GCE metadata-server token, and injects the faults a real network and real
// servers produce (5xx, dropped connections, wrong lengths, corrupted bytes,
// Range ignored, stalls, per-connection throttling). Counters let the tests
// show what the client really did.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

namespace kiln::test {

struct FetchFaults {
  std::atomic<int> fail_5xx{0};           // the next N blob requests answer 503
  std::atomic<int> drop_mid_body{0};      // the next N blob bodies stop halfway, connection closed
  std::atomic<int> long_length{0};        // the next N: Content-Length 100 too big, then close
  std::atomic<int> short_length{0};       // the next N: Content-Length and body 100 bytes short
  std::atomic<int> stall_ms_once{0};      // the next blob body pauses this long halfway (once)
  std::atomic<int64_t> corrupt_at{-1};    // always flip this byte of the blob when served
  std::atomic<bool> ignore_range{false};  // answer every Range request with 200 + whole blob
  std::atomic<int> ignore_range_after{-1};       // honour N blob requests, then ignore Range
  std::atomic<int64_t> bytes_per_s_per_conn{0};  // 0: unthrottled
  std::atomic<int> not_found{0};                 // 1: every blob/metadata request answers 404
  std::atomic<int64_t> metadata_size_delta{0};   // GCS metadata lies about the size by this much
};

struct FetchCounters {
  std::atomic<int> blob_requests{0}, range_requests{0}, errors_sent{0};
  std::atomic<int> token_requests{0}, metadata_requests{0}, unauthorized{0};
  std::atomic<int64_t> body_bytes{0};
  std::atomic<int> connections{0}, open_now{0}, max_open{0};
};

class FetchTestServer {
 public:
  // GCS routes need `Authorization: Bearer <required_token>` when it is set.
  explicit FetchTestServer(std::string blob, std::string required_token = "")
      : blob_(std::move(blob)), token_(std::move(required_token)) {
    listen_fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    ::setsockopt(listen_fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ::bind(listen_fd_, reinterpret_cast<sockaddr*>(&a), sizeof a);
    ::listen(listen_fd_, 64);
    socklen_t len = sizeof a;
    ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&a), &len);
    port_ = ntohs(a.sin_port);
    accept_thread_ = std::thread([this] { accept_loop(); });
  }
  ~FetchTestServer() {
    stop_ = true;
    accept_thread_.join();
    ::close(listen_fd_);
    {
      std::lock_guard<std::mutex> lock(mu_);
      for (int fd : open_fds_) ::shutdown(fd, SHUT_RDWR);
    }
    for (auto& t : conn_threads_) t.join();
  }

  uint16_t port() const { return port_; }
  std::string base() const { return "http://127.0.0.1:" + std::to_string(port_); }
  std::string url(const std::string& path = "/models/blob.gguf") const { return base() + path; }
  const std::string& blob() const { return blob_; }

  FetchFaults faults;
  FetchCounters counters;
  // GCS object metadata: which checksums to publish (base64 as GCS does).
  std::string gcs_crc32c_b64, gcs_md5_b64;
  // Sent as `x-goog-hash` on plain blob answers when non-empty.
  std::string goog_hash_header;
  std::string etag = "\"v1\"";
  std::string metadata_token = "ya29.test-token";  // what the metadata server hands out

  // Byte ranges [first, last] asked for, in arrival order.
  std::vector<std::pair<int64_t, int64_t>> ranges_seen() {
    std::lock_guard<std::mutex> lock(mu_);
    return ranges_;
  }

 private:
  struct Request {
    std::string method, path, query;
    std::map<std::string, std::string> headers;
  };

  void accept_loop() {
    while (!stop_) {
      pollfd p{listen_fd_, POLLIN, 0};
      if (::poll(&p, 1, 50) <= 0) continue;
      const int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (fd < 0) continue;
      // Headers and 16 KiB body pieces go out as separate small writes:
      // without NODELAY, Nagle + delayed ACKs add ~40 ms stalls that would
      // make the server, not the client, the bottleneck.
      int one = 1;
      ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
      std::lock_guard<std::mutex> lock(mu_);
      open_fds_.insert(fd);
      conn_threads_.emplace_back([this, fd] { serve_connection(fd); });
    }
  }

  static bool send_all(int fd, const char* p, size_t n) {
    while (n) {
      const ssize_t w = ::send(fd, p, n, MSG_NOSIGNAL);
      if (w <= 0) return false;
      p += w;
      n -= size_t(w);
    }
    return true;
  }

  bool read_request(int fd, std::string& buf, Request& r) {
    size_t end;
    while ((end = buf.find("\r\n\r\n")) == std::string::npos) {
      char tmp[4096];
      const ssize_t n = ::recv(fd, tmp, sizeof tmp, 0);
      if (n <= 0) return false;
      buf.append(tmp, size_t(n));
    }
    const std::string head = buf.substr(0, end);
    buf.erase(0, end + 4);
    size_t line_end = head.find("\r\n");
    const std::string first = head.substr(0, line_end);
    const size_t sp1 = first.find(' '), sp2 = first.rfind(' ');
    r.method = first.substr(0, sp1);
    std::string target = first.substr(sp1 + 1, sp2 - sp1 - 1);
    const size_t q = target.find('?');
    r.path = target.substr(0, q);
    r.query = q == std::string::npos ? "" : target.substr(q + 1);
    size_t pos = line_end == std::string::npos ? head.size() : line_end + 2;
    while (pos < head.size()) {
      size_t e = head.find("\r\n", pos);
      if (e == std::string::npos) e = head.size();
      const std::string line = head.substr(pos, e - pos);
      const size_t colon = line.find(':');
      if (colon != std::string::npos) {
        std::string k = line.substr(0, colon);
        for (auto& c : k) c = char(std::tolower(static_cast<unsigned char>(c)));
        std::string v = line.substr(colon + 1);
        while (!v.empty() && v.front() == ' ') v.erase(v.begin());
        r.headers[k] = v;
      }
      pos = e + 2;
    }
    return true;
  }

  bool reply(int fd, int status, const std::string& extra, const std::string& body) {
    if (status >= 400) counters.errors_sent++;
    std::string h = "HTTP/1.1 " + std::to_string(status) +
                    " X\r\nContent-Length: " + std::to_string(body.size()) + "\r\n" + extra +
                    "\r\n";
    return send_all(fd, h.data(), h.size()) && send_all(fd, body.data(), body.size());
  }

  static bool take(std::atomic<int>& n) {
    int v = n.load();
    while (v > 0)
      if (n.compare_exchange_weak(v, v - 1)) return true;
    return false;
  }

  std::string metadata_json() const {
    std::string j = "{\"kind\":\"storage#object\",\"size\":\"" +
                    std::to_string(int64_t(blob_.size()) + faults.metadata_size_delta.load()) +
                    "\",\"generation\":\"1700000000000001\",\"etag\":\"CAE=\"";
    if (!gcs_crc32c_b64.empty()) j += ",\"crc32c\":\"" + gcs_crc32c_b64 + "\"";
    if (!gcs_md5_b64.empty()) j += ",\"md5Hash\":\"" + gcs_md5_b64 + "\"";
    return j + "}";
  }

  // Returns false when the connection must close.
  bool handle(int fd, const Request& r) {
    if (r.path == "/computeMetadata/v1/instance/service-accounts/default/token") {
      counters.token_requests++;
      auto it = r.headers.find("metadata-flavor");
      if (it == r.headers.end() || it->second != "Google") return reply(fd, 403, "", "no flavor");
      return reply(fd, 200, "Content-Type: application/json\r\n",
                   "{\"access_token\":\"" + metadata_token +
                       "\",\"expires_in\":3599,\"token_type\":\"Bearer\"}");
    }
    const bool gcs = r.path.rfind("/storage/v1/b/", 0) == 0;
    if (gcs && !token_.empty()) {
      auto it = r.headers.find("authorization");
      if (it == r.headers.end() || it->second != "Bearer " + token_) {
        counters.unauthorized++;
        return reply(fd, 401, "", "{\"error\":{\"code\":401,\"message\":\"Anonymous caller\"}}");
      }
    }
    if (faults.not_found.load()) return reply(fd, 404, "", "No such object");
    if (gcs && r.query.find("alt=media") == std::string::npos) {
      counters.metadata_requests++;
      return reply(fd, 200, "Content-Type: application/json\r\n", metadata_json());
    }
    return serve_blob(fd, r);
  }

  bool serve_blob(int fd, const Request& r) {
    const int n_req = counters.blob_requests++;
    if (take(faults.fail_5xx)) return reply(fd, 503, "Retry-After: 0\r\n", "busy");
    const int64_t size = int64_t(blob_.size());
    int64_t first = 0, last = size - 1;
    bool ranged = false;
    auto it = r.headers.find("range");
    const int after = faults.ignore_range_after.load();
    const bool ignore = faults.ignore_range.load() || (after >= 0 && n_req >= after);
    if (it != r.headers.end() && !ignore) {
      const std::string v = it->second.substr(6);  // "bytes="
      const size_t dash = v.find('-');
      first = std::stoll(v.substr(0, dash));
      last = dash + 1 < v.size() ? std::min<int64_t>(size - 1, std::stoll(v.substr(dash + 1)))
                                 : size - 1;
      if (first >= size || first > last)
        return reply(fd, 416, "Content-Range: bytes */" + std::to_string(size) + "\r\n", "");
      ranged = true;
      counters.range_requests++;
      std::lock_guard<std::mutex> lock(mu_);
      ranges_.push_back({first, last});
    }
    std::string body = blob_.substr(size_t(first), size_t(last - first + 1));
    const int64_t bad = faults.corrupt_at.load();
    if (bad >= first && bad <= last) body[size_t(bad - first)] ^= 0x5A;
    int64_t content_length = int64_t(body.size());
    size_t send_n = body.size();
    bool close_after = false;
    const bool big = body.size() > 1024;  // faults spare the one-byte probe
    if (big && take(faults.drop_mid_body)) {
      send_n = body.size() / 2;
      close_after = true;
    } else if (big && take(faults.long_length)) {
      content_length += 100;
      close_after = true;
    } else if (big && take(faults.short_length)) {
      content_length -= 100;
      send_n -= 100;
    }
    std::string h = std::string("HTTP/1.1 ") + (ranged ? "206 Partial Content" : "200 OK") +
                    "\r\nContent-Length: " + std::to_string(content_length) + "\r\nETag: " + etag +
                    "\r\nAccept-Ranges: bytes\r\n";
    if (ranged)
      h += "Content-Range: bytes " + std::to_string(first) + "-" + std::to_string(last) + "/" +
           std::to_string(size) + "\r\n";
    if (!goog_hash_header.empty()) h += "x-goog-hash: " + goog_hash_header + "\r\n";
    h += "\r\n";
    if (!send_all(fd, h.data(), h.size())) return false;
    int stall = big ? faults.stall_ms_once.exchange(0) : 0;
    const int64_t rate = faults.bytes_per_s_per_conn.load();
    const auto t0 = std::chrono::steady_clock::now();
    size_t sent = 0;
    while (sent < send_n) {
      const size_t piece = std::min<size_t>(16 << 10, send_n - sent);
      if (!send_all(fd, body.data() + sent, piece)) return false;
      sent += piece;
      counters.body_bytes += int64_t(piece);
      if (stall && sent >= send_n / 2) {
        std::this_thread::sleep_for(std::chrono::milliseconds(stall));
        stall = 0;
      }
      if (rate > 0)  // pace: `sent` bytes may not leave before sent/rate seconds
        std::this_thread::sleep_until(t0 +
                                      std::chrono::duration<double>(double(sent) / double(rate)));
    }
    return !close_after;
  }

  void serve_connection(int fd) {
    counters.connections++;
    const int now = ++counters.open_now;
    int prev = counters.max_open.load();
    while (now > prev && !counters.max_open.compare_exchange_weak(prev, now)) {
    }
    std::string buf;
    Request r;
    while (!stop_ && read_request(fd, buf, r)) {
      if (!handle(fd, r)) break;
      r = Request{};
    }
    counters.open_now--;
    std::lock_guard<std::mutex> lock(mu_);
    open_fds_.erase(fd);
    ::close(fd);
  }

  std::string blob_, token_;
  int listen_fd_ = -1;
  uint16_t port_ = 0;
  std::atomic<bool> stop_{false};
  std::thread accept_thread_;
  std::mutex mu_;
  std::set<int> open_fds_;
  std::vector<std::thread> conn_threads_;
  std::vector<std::pair<int64_t, int64_t>> ranges_;
};

}  // namespace kiln::test
