// The load generator's Asio client (see client.h). All state lives on the
// one io thread; connections are reused when the server keeps them alive.
#include "kiln/loadtest/client.h"

#include <fmt/format.h>
#include <netinet/tcp.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/connect.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <deque>
#include <memory>
#include <nlohmann/json.hpp>
#include <random>
#include <unordered_set>

#include "kiln/loadtest/sse.h"

namespace kiln::loadtest {
namespace {

namespace net = boost::asio;
using tcp = net::ip::tcp;
using Clock = std::chrono::steady_clock;
constexpr auto use_nothrow = net::as_tuple(net::use_awaitable);

double thread_cpu_seconds() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return double(ts.tv_sec) + double(ts.tv_nsec) * 1e-9;
}

// The message of an OpenAI error body, else its first 200 bytes.
std::string error_summary(int status, const std::string& body) {
  std::string msg;
  const auto j = nlohmann::json::parse(body, nullptr, false);
  if (!j.is_discarded() && j.is_object() && j.contains("error")) {
    const auto& e = j["error"];
    msg = e.is_object() && e.contains("message") && e["message"].is_string()
              ? e["message"].get<std::string>()
              : e.dump();
  } else {
    msg = body.substr(0, 200);
  }
  return fmt::format("HTTP {}: {}", status, msg);
}

// CLOCK_REALTIME minus steady_clock, in ns: kernel receive timestamps come
// on the real-time clock; the smallest of a few back-to-back readings
// bounds the error by the gap between two clock reads (well under 1 µs).
int64_t realtime_minus_steady_ns() {
  int64_t best = 0, best_gap = INT64_MAX;
  for (int i = 0; i < 5; ++i) {
    const auto s0 = Clock::now();
    timespec rt{};
    clock_gettime(CLOCK_REALTIME, &rt);
    const auto s1 = Clock::now();
    const int64_t gap = std::chrono::duration_cast<std::chrono::nanoseconds>(s1 - s0).count();
    if (gap < best_gap) {
      best_gap = gap;
      const int64_t mid =
          std::chrono::duration_cast<std::chrono::nanoseconds>(s0.time_since_epoch()).count() +
          gap / 2;
      best = int64_t(rt.tv_sec) * 1'000'000'000 + rt.tv_nsec - mid;
    }
  }
  return best;
}

struct Conn {
  explicit Conn(net::io_context& ioc) : sock(ioc) {}
  tcp::socket sock;
  bool open = false;
  Clock::time_point deadline{};
  RequestRecord* rec = nullptr;  // the request it carries now
  char buf[16384];
};

class Runner {
 public:
  Runner(const RunOptions& o, const Workload& w, tcp::resolver::results_type eps)
      : o_(o), w_(w), endpoints_(std::move(eps)), rng_(0x6b696c6e) {}

  RunResult run() {
    start_ = Clock::now();
    const double cpu0 = thread_cpu_seconds();
    if (o_.mode == RunOptions::Mode::closed) {
      producers_left_ = o_.concurrency;
      for (int32_t i = 0; i < o_.concurrency; ++i)
        net::co_spawn(ioc_, closed_worker(), net::detached);
    } else {
      producers_left_ = 1;
      net::co_spawn(ioc_, arrivals(), net::detached);
    }
    net::co_spawn(ioc_, controller(), net::detached);
    ioc_.run();
    RunResult r;
    r.client_cpu_s = thread_cpu_seconds() - cpu0;
    r.wall_s = seconds_since_start();
    // A run that ended by --requests (or a replay) has no window of its own.
    r.window_s = window_end_s_ > 0 ? window_end_s_ : r.wall_s;
    r.max_inflight_seen = max_inflight_;
    r.dropped_arrivals = dropped_;
    r.start_steady_ns =
        std::chrono::duration_cast<std::chrono::nanoseconds>(start_.time_since_epoch()).count();
    r.records.reserve(records_.size());
    for (auto& rec : records_) r.records.push_back(std::move(rec));
    return r;
  }

 private:
  double seconds_since_start() const {
    return std::chrono::duration<double>(Clock::now() - start_).count();
  }
  bool may_start() const {
    if (stop_new_) return false;
    if (o_.duration_s > 0 && seconds_since_start() >= o_.duration_s) return false;
    if (o_.max_requests > 0 && next_index_ >= uint64_t(o_.max_requests)) return false;
    return true;
  }

  // A closed-loop client. After a failure it pauses before its next
  // request, as real clients do: Retry-After on 429/503 (kiln sends 1 s),
  // else 100 ms, so that a refused level does not turn into a busy loop of
  // instant refusals that measures nothing but the refusal path.
  net::awaitable<void> closed_worker() {
    Conn c(ioc_);
    net::steady_timer pause(ioc_);
    while (may_start()) {
      const uint64_t idx = next_index_++;
      const RequestRecord& rec = *co_await request(c, idx);
      if (rec.ok()) continue;
      double wait_s = rec.retry_after_s >= 0 ? std::min(rec.retry_after_s, 5) : 0.1;
      if (o_.duration_s > 0) wait_s = std::min(wait_s, o_.duration_s - seconds_since_start());
      if (wait_s <= 0) continue;
      pause.expires_after(
          std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(wait_s)));
      co_await pause.async_wait(use_nothrow);
    }
    close(c);
    --producers_left_;
  }

  // Open loop (Poisson) or replay (the log's own arrival times).
  net::awaitable<void> arrivals() {
    std::exponential_distribution<double> gap(o_.mode == RunOptions::Mode::open ? o_.rate : 1.0);
    net::steady_timer timer(ioc_);
    double t = 0;
    const bool replay = o_.mode == RunOptions::Mode::replay;
    const double t0 = replay && w_.size() ? w_.get(0).at_s : 0;
    while (may_start()) {
      const uint64_t idx = next_index_;
      if (replay) {
        if (idx >= w_.size()) break;
        t = std::max(0.0, (w_.get(idx).at_s - t0)) / o_.speed;
      } else {
        t += gap(rng_);
      }
      if (o_.duration_s > 0 && t >= o_.duration_s) break;
      timer.expires_at(
          start_ + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(t)));
      co_await timer.async_wait(use_nothrow);
      if (!may_start()) break;
      ++next_index_;
      if (inflight_ >= o_.max_inflight) {
        ++dropped_;
        continue;
      }
      Conn* c;
      if (!idle_.empty()) {
        c = idle_.back();
        idle_.pop_back();
      } else {
        pool_.push_back(std::make_unique<Conn>(ioc_));
        c = pool_.back().get();
      }
      net::co_spawn(ioc_, pooled_request(c, idx), net::detached);
    }
    --producers_left_;
  }

  net::awaitable<void> pooled_request(Conn* c, uint64_t idx) {
    co_await request(*c, idx);
    idle_.push_back(c);
  }

  void close(Conn& c) {
    boost::system::error_code ec;
    c.sock.close(ec);
    c.open = false;
  }

  std::string http_request(const RequestSpec& spec, uint64_t idx) const {
    std::string r = fmt::format(
        "POST {}{} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n"
        "Accept: text/event-stream\r\nContent-Length: {}\r\nX-Request-Id: {}\r\n",
        o_.url.prefix, spec.path, o_.url.host_header(), spec.body.size(), idx);
    if (!o_.api_key.empty()) r += "Authorization: Bearer " + o_.api_key + "\r\n";
    r += "\r\n";
    r += spec.body;
    return r;
  }

  // One read, with the time its bytes reached this host. With SO_TIMESTAMPNS
  // the kernel stamps each packet on arrival, so the client's own queueing
  // (a burst from 1,000 streams waits its turn on this one thread) does not
  // inflate the latencies it measures; without a stamp, the read time.
  // TCP reports the stamp of the last packet read: exact whenever the client
  // keeps up within one inter-token gap, which it does by a wide margin.
  struct StampedRead {
    boost::system::error_code ec;
    size_t n = 0;
    Clock::time_point at;
  };
  net::awaitable<StampedRead> read_stamped(Conn& c) {
    const int fd = c.sock.native_handle();
    for (;;) {
      iovec iov{c.buf, sizeof c.buf};
      alignas(cmsghdr) char control[CMSG_SPACE(sizeof(timespec)) * 2];
      msghdr msg{};
      msg.msg_iov = &iov;
      msg.msg_iovlen = 1;
      msg.msg_control = control;
      msg.msg_controllen = sizeof control;
      const ssize_t n = ::recvmsg(fd, &msg, MSG_DONTWAIT);
      const auto now = Clock::now();
      if (n > 0) {
        StampedRead r{{}, size_t(n), now};
        for (cmsghdr* cm = CMSG_FIRSTHDR(&msg); cm; cm = CMSG_NXTHDR(&msg, cm)) {
          if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_TIMESTAMPNS) continue;
          timespec ts;
          std::memcpy(&ts, CMSG_DATA(cm), sizeof ts);
          const int64_t real_ns = int64_t(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
          const auto at = Clock::time_point(std::chrono::duration_cast<Clock::duration>(
              std::chrono::nanoseconds(real_ns - realtime_offset_ns_)));
          // A stamp from the future, or far in the past, means the real-time
          // clock was stepped during the run: keep the read time then.
          if (at <= now && now - at < std::chrono::seconds(5)) r.at = at;
        }
        co_return r;
      }
      if (n == 0) co_return StampedRead{net::error::eof, 0, now};
      if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
        co_return StampedRead{boost::system::error_code(errno, boost::system::system_category()), 0,
                              now};
      auto [ec] = co_await c.sock.async_wait(tcp::socket::wait_read, use_nothrow);
      if (ec) co_return StampedRead{ec, 0, Clock::now()};
    }
  }

  // Sends workload request `idx` on `c` and reads the whole response; the
  // record it returns stays valid (records_ is a deque).
  net::awaitable<RequestRecord*> request(Conn& c, uint64_t idx) {
    const RequestSpec& spec = w_.get(o_.first_index + idx);
    records_.emplace_back();
    RequestRecord& rec = records_.back();
    rec.index = o_.first_index + idx;
    rec.expected_tokens = spec.max_tokens;
    if (rec.expected_tokens > 0) rec.token_ms.reserve(size_t(rec.expected_tokens) + 2);
    const auto t_start = Clock::now();
    rec.start_s = std::chrono::duration<double>(t_start - start_).count();
    ++started_;
    ++inflight_;
    max_inflight_ = std::max(max_inflight_, inflight_);
    c.deadline = t_start + std::chrono::duration_cast<Clock::duration>(
                               std::chrono::duration<double>(o_.request_timeout_s));
    c.rec = &rec;
    active_.insert(&c);
    const std::string req = http_request(spec, rec.index);

    HttpResponseParser hp;
    SseParser sse;
    std::string err_body;
    bool got_bytes = false;
    double now_ms = 0;  // when the bytes being parsed arrived
    const SseParser::EventSink on_event = [&](std::string_view data) {
      bool also_token = false;
      const StreamEvent ev = classify_event(data, &also_token);
      if (ev.kind == StreamEvent::Kind::token || also_token) {
        if (rec.token_ms.empty()) rec.ttft_ms = now_ms;
        rec.token_ms.push_back(float(now_ms));
      }
      if (ev.kind == StreamEvent::Kind::usage) {
        rec.completion_tokens = ev.completion_tokens;
        rec.prompt_tokens = ev.prompt_tokens;
        rec.cached_tokens = ev.cached_tokens;
      } else if (ev.kind == StreamEvent::Kind::error && rec.error.empty()) {
        rec.error = "error event in the stream: " + ev.error;
      }
    };
    const HttpResponseParser::BodySink on_body = [&](std::string_view b) {
      if (hp.status() == 200 && hp.event_stream())
        sse.feed(b, on_event);
      else if (err_body.size() < 4096)
        err_body.append(b.substr(0, 4096 - err_body.size()));
    };

    // A reused keep-alive connection may have been closed by the server
    // while idle: then (no response byte yet) reconnect once and resend.
    for (int attempt = 0; attempt < 2; ++attempt) {
      const bool reused = c.open;
      hp = HttpResponseParser{};
      bool stale = false;  // a reused connection that gave no byte back
      if (!c.open) {
        auto [ec, ep] = co_await net::async_connect(c.sock, endpoints_, use_nothrow);
        if (ec) {
          rec.error = rec.error.empty() ? "connect: " + ec.message() : rec.error;
          close(c);
          break;
        }
        c.sock.set_option(tcp::no_delay(true), ec);
        if (o_.kernel_timestamps) {
          const int on = 1;
          ::setsockopt(c.sock.native_handle(), SOL_SOCKET, SO_TIMESTAMPNS, &on, sizeof on);
        }
        c.open = true;
      }
      auto [wec, wn] = co_await net::async_write(c.sock, net::buffer(req), use_nothrow);
      if (wec) {
        close(c);
        if (reused) continue;
        rec.error = rec.error.empty() ? "send: " + wec.message() : rec.error;
        break;
      }
      while (!hp.done()) {
        const StampedRead rd = co_await read_stamped(c);
        const auto& ec = rd.ec;
        const size_t n = rd.n;
        now_ms = std::chrono::duration<double, std::milli>(rd.at - t_start).count();
        if (ec) {
          if (ec == net::error::eof && hp.finish_eof()) break;
          if (!rec.error.empty()) break;  // closed by the timeout watchdog
          if (reused && !got_bytes) {
            stale = true;
            break;
          }
          rec.error = ec == net::error::eof ? hp.error() : "receive: " + ec.message();
          break;
        }
        got_bytes = true;
        if (!hp.feed(std::string_view(c.buf, n), on_body)) {
          rec.error = "bad HTTP response: " + hp.error();
          break;
        }
      }
      if (stale) {
        close(c);
        continue;
      }
      break;
    }
    rec.status = hp.status();
    rec.retry_after_s = hp.retry_after_s();
    rec.e2e_ms = std::chrono::duration<double, std::milli>(Clock::now() - t_start).count();
    if (rec.error.empty() && rec.status != 200) rec.error = error_summary(rec.status, err_body);
    if (rec.error.empty() && rec.status == 200 && !hp.event_stream())
      rec.error = "HTTP 200 without text/event-stream: the server did not stream";
    if (!(hp.done() && hp.keep_alive() && rec.error.empty())) close(c);
    active_.erase(&c);
    c.rec = nullptr;
    --inflight_;
    ++finished_;
    if (!rec.ok()) ++failed_;
    token_events_ += int64_t(rec.token_ms.size());
    co_return &rec;
  }

  // Ends the window, enforces timeouts, reports progress, and closes what
  // is left at the drain deadline.
  net::awaitable<void> controller() {
    net::steady_timer timer(ioc_);
    double next_progress = 1.0, drain_deadline = 0;
    for (;;) {
      // 50 ms: timeouts and progress need no more, and each tick is a
      // wake-up of the thread that times the tokens.
      timer.expires_after(std::chrono::milliseconds(50));
      co_await timer.async_wait(use_nothrow);
      const double t = seconds_since_start();
      if (!stop_new_ && o_.duration_s > 0 && t >= o_.duration_s) {
        stop_new_ = true;
        window_end_s_ = o_.duration_s;
      }
      const bool draining = stop_new_ || producers_left_ == 0;
      if (draining && drain_deadline == 0) drain_deadline = t + o_.drain_timeout_s;
      const auto now = Clock::now();
      std::vector<Conn*> expired;
      for (Conn* c : active_)
        if (now >= c->deadline || (drain_deadline > 0 && t >= drain_deadline)) expired.push_back(c);
      for (Conn* c : expired) {
        if (c->rec && c->rec->error.empty())
          c->rec->error = now >= c->deadline
                              ? fmt::format("timeout after {} s (--timeout)", o_.request_timeout_s)
                              : "still running at the drain timeout";
        close(*c);
      }
      if (o_.progress && t >= next_progress) {
        next_progress += 1.0;
        o_.progress({t, int64_t(started_), finished_, failed_, inflight_,
                     token_events_ + live_events(), draining});
      }
      if (producers_left_ == 0 && inflight_ == 0) break;
    }
    for (auto& c : pool_) close(*c);
  }

  int64_t live_events() const {
    int64_t n = 0;
    for (const Conn* c : active_)
      if (c->rec) n += int64_t(c->rec->token_ms.size());
    return n;
  }

  const RunOptions& o_;
  const Workload& w_;
  tcp::resolver::results_type endpoints_;
  net::io_context ioc_{1};
  std::mt19937_64 rng_;
  Clock::time_point start_;
  int64_t realtime_offset_ns_ = realtime_minus_steady_ns();
  std::deque<RequestRecord> records_;  // a deque: references stay valid as it grows
  std::unordered_set<Conn*> active_;
  std::vector<std::unique_ptr<Conn>> pool_;  // open-loop connections
  std::vector<Conn*> idle_;
  uint64_t next_index_ = 0;
  int64_t started_ = 0, finished_ = 0, failed_ = 0, inflight_ = 0, max_inflight_ = 0;
  int64_t token_events_ = 0, dropped_ = 0;
  int32_t producers_left_ = 0;
  bool stop_new_ = false;
  double window_end_s_ = 0;
};

}  // namespace

int64_t raise_open_file_limit(int64_t want) {
  rlimit rl{};
  if (getrlimit(RLIMIT_NOFILE, &rl) != 0) return -1;
  if (rl.rlim_cur != RLIM_INFINITY && int64_t(rl.rlim_cur) < want) {
    rlim_t target = rlim_t(want);
    if (rl.rlim_max != RLIM_INFINITY && target > rl.rlim_max) target = rl.rlim_max;
    rl.rlim_cur = target;
    setrlimit(RLIMIT_NOFILE, &rl);
    getrlimit(RLIMIT_NOFILE, &rl);
  }
  return rl.rlim_cur == RLIM_INFINITY ? INT64_MAX : int64_t(rl.rlim_cur);
}

Result<RunResult> run_load(const RunOptions& o, const Workload& w) {
  if (w.size() == 0) return make_error("the workload has no requests");
  const int64_t need = (o.mode == RunOptions::Mode::closed ? o.concurrency : o.max_inflight) + 64;
  const int64_t have = raise_open_file_limit(need);
  if (have < need && o.mode == RunOptions::Mode::closed)
    return make_error(fmt::format(
        "--concurrency {} needs about {} open files but the limit is {} (hard limit reached); "
        "raise it with `ulimit -n {}` (as root, or in the container's settings)",
        o.concurrency, need, have, need));
  net::io_context tmp;
  tcp::resolver resolver(tmp);
  boost::system::error_code ec;
  auto eps = resolver.resolve(o.url.host, std::to_string(o.url.port), ec);
  if (ec) return make_error("cannot resolve " + o.url.host + ": " + ec.message() + "; check --url");
  Runner r(o, w, std::move(eps));
  return r.run();
}

Result<HttpReply> http_get(const Url& url, const std::string& path, double timeout_s) {
  net::io_context ioc;
  std::string body, err;
  int status = 0;
  bool finished = false;
  auto task = [&]() -> net::awaitable<void> {
    tcp::resolver resolver(ioc);
    auto [rec, eps] =
        co_await resolver.async_resolve(url.host, std::to_string(url.port), use_nothrow);
    if (rec) {
      err = "cannot resolve " + url.host + ": " + rec.message();
      co_return;
    }
    tcp::socket sock(ioc);
    auto [cec, ep] = co_await net::async_connect(sock, eps, use_nothrow);
    if (cec) {
      err = "cannot connect to " + url.host_header() + ": " + cec.message();
      co_return;
    }
    const std::string req = "GET " + url.prefix + path + " HTTP/1.1\r\nHost: " + url.host_header() +
                            "\r\nConnection: close\r\n\r\n";
    auto [wec, wn] = co_await net::async_write(sock, net::buffer(req), use_nothrow);
    if (wec) {
      err = "send: " + wec.message();
      co_return;
    }
    HttpResponseParser hp;
    char buf[16384];
    const HttpResponseParser::BodySink sink = [&](std::string_view b) { body.append(b); };
    while (!hp.done()) {
      auto [ec, n] = co_await sock.async_read_some(net::buffer(buf), use_nothrow);
      if (ec) {
        if (ec == net::error::eof && hp.finish_eof()) break;
        err = ec == net::error::eof ? hp.error() : "receive: " + ec.message();
        co_return;
      }
      if (!hp.feed(std::string_view(buf, n), sink)) {
        err = "bad HTTP response: " + hp.error();
        co_return;
      }
    }
    status = hp.status();
    finished = true;
  };
  net::co_spawn(ioc, task(), net::detached);
  ioc.run_for(std::chrono::duration_cast<std::chrono::milliseconds>(
      std::chrono::duration<double>(timeout_s)));
  const std::string what = "GET " + url.host_header() + url.prefix + path;
  if (!err.empty()) return make_error(what + ": " + err);
  if (!finished) return make_error(fmt::format("{}: no answer within {} s", what, timeout_s));
  return HttpReply{status, std::move(body)};
}

}  // namespace kiln::loadtest
