// kiln loadtest's clock against a server's: an in-process fake OpenAI
// server streams tokens on a fixed schedule (controlled TTFT and gaps) and
// records when it sent each one; the client's measured TTFT and
// inter-token latencies must match those send times (median |diff| <= 1 ms,
// p99 <= 5 ms) at 1 stream and at 1,000 simultaneous streams. Also reports
// the client's CPU time per streamed token (a figure, not a timed test).
#include <gtest/gtest.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <chrono>
#include <cstdio>
#include <map>
#include <mutex>
#include <thread>

#include "kiln/loadtest/client.h"
#include "kiln/loadtest/stats.h"
#include "kiln/loadtest/workload.h"

namespace kiln::loadtest {
namespace {

namespace net = boost::asio;
using tcp = net::ip::tcp;
using Clock = std::chrono::steady_clock;
constexpr auto nothrow = net::as_tuple(net::use_awaitable);

int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch())
      .count();
}

struct Served {
  int64_t arrival_ns = 0;
  std::vector<int64_t> send_ns;  // when each token's bytes were handed to the socket
};

// A streaming /v1/completions server with a fixed schedule: first token
// ttft after the request arrived, then one every gap; max_tokens tokens
// (one SSE event each), then usage and [DONE]. Keep-alive, chunked bodies,
// its own io thread.
class FakeOpenAiServer {
 public:
  // spread_ms: request ids are spread evenly over that much extra TTFT, so
  // that 1,000 streams do not all send at the same instant.
  FakeOpenAiServer(double ttft_ms, double gap_ms, double spread_ms = 0)
      : ttft_ms_(ttft_ms), gap_ms_(gap_ms), spread_ms_(spread_ms) {
    acceptor_.open(tcp::v4());
    acceptor_.set_option(tcp::acceptor::reuse_address(true));
    acceptor_.bind(tcp::endpoint(net::ip::make_address("127.0.0.1"), 0));
    acceptor_.listen(4096);
    net::co_spawn(ioc_, accept_loop(), net::detached);
    thread_ = std::thread([this] { ioc_.run(); });
  }
  ~FakeOpenAiServer() {
    ioc_.stop();
    thread_.join();
  }
  uint16_t port() const { return acceptor_.local_endpoint().port(); }
  int64_t max_active() const { return max_active_.load(); }
  std::map<uint64_t, Served> served() {
    std::lock_guard lk(mu_);
    return served_;
  }

 private:
  net::awaitable<void> accept_loop() {
    for (;;) {
      auto [ec, sock] = co_await acceptor_.async_accept(nothrow);
      if (ec) co_return;
      net::co_spawn(ioc_, session(std::move(sock)), net::detached);
    }
  }

  static std::string header_value(const std::string& head, const std::string& lower_name) {
    std::string lower = head;
    for (char& c : lower) c = char(std::tolower(static_cast<unsigned char>(c)));
    const size_t k = lower.find("\r\n" + lower_name + ":");
    if (k == std::string::npos) return "";
    const size_t v = k + 3 + lower_name.size();
    return head.substr(v, head.find("\r\n", v) - v);
  }

  static std::string chunk(const std::string& payload) {
    char hex[16];
    std::snprintf(hex, sizeof hex, "%zx\r\n", payload.size());
    return hex + payload + "\r\n";
  }

  net::awaitable<void> session(tcp::socket s) {
    boost::system::error_code ec;
    s.set_option(tcp::no_delay(true), ec);
    std::string buf;
    char tmp[8192];
    net::steady_timer timer(ioc_);
    for (;;) {
      size_t hdr_end;
      while ((hdr_end = buf.find("\r\n\r\n")) == std::string::npos) {
        auto [rec, n] = co_await s.async_read_some(net::buffer(tmp), nothrow);
        if (rec) co_return;
        buf.append(tmp, n);
      }
      const std::string head = buf.substr(0, hdr_end);
      const size_t body_len = std::stoul(header_value(head, "content-length"));
      while (buf.size() < hdr_end + 4 + body_len) {
        auto [rec, n] = co_await s.async_read_some(net::buffer(tmp), nothrow);
        if (rec) co_return;
        buf.append(tmp, n);
      }
      const auto arrival = Clock::now();
      const std::string body = buf.substr(hdr_end + 4, body_len);
      buf.erase(0, hdr_end + 4 + body_len);
      const uint64_t id = std::stoull(header_value(head, "x-request-id"));
      const size_t mt = body.find("\"max_tokens\":");
      const int n_tokens = mt == std::string::npos ? 16 : std::stoi(body.substr(mt + 13));

      max_active_.store(std::max(max_active_.load(), ++active_));
      Served rec;
      rec.arrival_ns = now_ns();
      std::string out =
          "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: "
          "chunked\r\n\r\n";
      auto [wec, wn] = co_await net::async_write(s, net::buffer(out), nothrow);
      const double first_ms = ttft_ms_ + spread_ms_ * double(id % 16) / 16;
      for (int k = 0; k < n_tokens && !wec; ++k) {
        timer.expires_at(arrival +
                         std::chrono::microseconds(int64_t((first_ms + gap_ms_ * k) * 1000)));
        co_await timer.async_wait(nothrow);
        rec.send_ns.push_back(now_ns());
        std::tie(wec, wn) = co_await net::async_write(s, net::buffer(token_chunk_), nothrow);
      }
      out = chunk("data: {\"choices\":[],\"usage\":{\"prompt_tokens\":10,\"completion_tokens\":" +
                  std::to_string(n_tokens) +
                  ",\"total_tokens\":0,\"prompt_tokens_details\":{\"cached_tokens\":4}}}\n\n"
                  "data: [DONE]\n\n") +
            "0\r\n\r\n";
      {
        // Before the last write: once the client has it, the test may look.
        std::lock_guard lk(mu_);
        served_[id] = std::move(rec);
      }
      --active_;
      if (!wec) std::tie(wec, wn) = co_await net::async_write(s, net::buffer(out), nothrow);
      if (wec) co_return;
    }
  }

  double ttft_ms_, gap_ms_, spread_ms_;
  // One token's chunk, the same for every token: built once, so the server
  // spends its CPU on sending, leaving the shared cores to the client.
  const std::string token_chunk_ = chunk(
      "data: {\"id\":\"cmpl-1\",\"object\":\"text_completion\",\"choices\":[{\"index\":0,"
      "\"text\":\" tok\",\"logprobs\":null,\"finish_reason\":null}],\"usage\":null}\n\n");
  net::io_context ioc_{1};
  tcp::acceptor acceptor_{ioc_};
  std::thread thread_;
  int64_t active_ = 0;  // io thread only
  std::atomic<int64_t> max_active_{0};
  std::mutex mu_;
  std::map<uint64_t, Served> served_;
};

Workload fixed_workload(int max_tokens) {
  WorkloadOptions o;
  o.prompt_words = {LengthDist::Kind::fixed, 20, 0};
  o.output_tokens = {LengthDist::Kind::fixed, double(max_tokens), 0};
  o.pool_size = 16;
  auto w = Workload::build(o);
  EXPECT_TRUE(w.ok());
  return std::move(*w);
}

struct Accuracy {
  Percentiles ttft_diff_ms, itl_diff_ms;  // |client - server|
  double cpu_us_per_token = 0;
  int64_t tokens = 0;
};

Accuracy measure(FakeOpenAiServer& server, const RunResult& r, int n_tokens) {
  auto served = server.served();
  std::vector<double> ttft_d, itl_d;
  Accuracy a;
  for (const auto& rec : r.records) {
    EXPECT_TRUE(rec.ok()) << rec.error;
    auto it = served.find(rec.index);
    EXPECT_NE(it, served.end()) << "the server never saw request " << rec.index;
    if (it == served.end() || !rec.ok()) continue;
    const auto& send = it->second.send_ns;
    EXPECT_EQ(rec.completion_tokens, n_tokens);
    EXPECT_EQ(rec.cached_tokens, 4);
    EXPECT_EQ(rec.token_ms.size(), send.size());
    if (rec.token_ms.size() != send.size() || send.empty()) continue;
    const double start_ns = double(r.start_steady_ns) + rec.start_s * 1e9;
    // TTFT the server caused: its first send, from the client's start.
    const double server_ttft_ms = (double(send[0]) - start_ns) * 1e-6;
    ttft_d.push_back(std::abs(rec.ttft_ms - server_ttft_ms));
    for (size_t k = 1; k < send.size(); ++k) {
      const double client_gap = double(rec.token_ms[k]) - double(rec.token_ms[k - 1]);
      const double server_gap = double(send[k] - send[k - 1]) * 1e-6;
      itl_d.push_back(std::abs(client_gap - server_gap));
    }
    a.tokens += rec.output_tokens();
  }
  a.ttft_diff_ms = percentiles(std::move(ttft_d));
  a.itl_diff_ms = percentiles(std::move(itl_d));
  a.cpu_us_per_token = a.tokens ? r.client_cpu_s * 1e6 / double(a.tokens) : 0;
  return a;
}

void report(const char* what, const Accuracy& a, const RunResult& r) {
  std::printf(
      "[ figure ] %s: |TTFT client - server| median %.3f ms p99 %.3f ms (n=%lld); "
      "|ITL client - server| median %.3f ms p99 %.3f ms (n=%lld); client CPU %.2f us per "
      "streamed token (%lld tokens, %.3f s CPU, %.2f s wall)\n",
      what, a.ttft_diff_ms.p50, a.ttft_diff_ms.p99, (long long)a.ttft_diff_ms.n, a.itl_diff_ms.p50,
      a.itl_diff_ms.p99, (long long)a.itl_diff_ms.n, a.cpu_us_per_token, (long long)a.tokens,
      r.client_cpu_s, r.wall_s);
}

RunOptions closed(uint16_t port, int concurrency, int64_t requests) {
  RunOptions o;
  o.url.host = "127.0.0.1";
  o.url.port = port;
  o.mode = RunOptions::Mode::closed;
  o.concurrency = concurrency;
  o.duration_s = 0;
  o.max_requests = requests;
  o.request_timeout_s = 60;
  return o;
}

TEST(LoadtestTiming, OneStreamMatchesServerSendTimes) {
  FakeOpenAiServer server(/*ttft_ms=*/40, /*gap_ms=*/20);
  const int n_tokens = 20;
  const Workload w = fixed_workload(n_tokens);
  auto r = run_load(closed(server.port(), 1, 5), w);
  ASSERT_TRUE(r.ok()) << r.message();
  ASSERT_EQ(r->records.size(), 5u);
  const Accuracy a = measure(server, *r, n_tokens);
  report("1 stream", a, *r);
  ASSERT_EQ(a.ttft_diff_ms.n, 5);
  ASSERT_EQ(a.itl_diff_ms.n, 5 * (n_tokens - 1));
  EXPECT_LE(a.ttft_diff_ms.p50, 1.0);
  EXPECT_LE(a.ttft_diff_ms.p99, 5.0);
  EXPECT_LE(a.itl_diff_ms.p50, 1.0);
  EXPECT_LE(a.itl_diff_ms.p99, 5.0);
  // The schedule itself shows through: TTFT ≥ 40 ms, gaps ≈ 20 ms.
  const LevelSummary s = summarize(*r, "c=1", 1, 0);
  EXPECT_GE(s.ttft_ms.p50, 40);
  EXPECT_NEAR(s.itl_ms.p50, 20, 2);
  EXPECT_NEAR(s.tpot_ms.p50, 20, 2);
}

TEST(LoadtestTiming, ThousandStreamsMatchServerSendTimes) {
  // 1,000 requests at once, each held 400-500 ms before its first token (so
  // all are open together) and then 100 ms between tokens. Why 100 and not
  // 20: kernel stamps are per packet, but TCP keeps only the newest stamp of
  // the packets one read returns, so a client thread starved for longer than
  // a gap blurs the earlier tokens, and on the shared 2-core development
  // machine (load 13-17 while a dozen compilers run) stalls of 50-80 ms
  // were seen. The 16 first-token phases spread the load over each gap.
  const int n_streams = 1000, n_tokens = 8;
  FakeOpenAiServer server(/*ttft_ms=*/400, /*gap_ms=*/100, /*spread_ms=*/100);
  const Workload w = fixed_workload(n_tokens);
  auto r = run_load(closed(server.port(), n_streams, n_streams), w);
  ASSERT_TRUE(r.ok()) << r.message();
  ASSERT_EQ(r->records.size(), size_t(n_streams));
  EXPECT_GE(server.max_active(), n_streams) << "the server never held 1,000 streams at once";
  EXPECT_GE(r->max_inflight_seen, n_streams);
  const Accuracy a = measure(server, *r, n_tokens);
  report("1000 streams", a, *r);
  ASSERT_EQ(a.ttft_diff_ms.n, n_streams);
  EXPECT_LE(a.ttft_diff_ms.p50, 1.0);
  EXPECT_LE(a.ttft_diff_ms.p99, 5.0);
  EXPECT_LE(a.itl_diff_ms.p50, 1.0);
  EXPECT_LE(a.itl_diff_ms.p99, 5.0);

  // The same load timed when the client thread reads the bytes instead of
  // when the kernel received them: reported only, to show what the kernel
  // stamps remove (on a busy 2-core machine, several ms of client queueing).
  FakeOpenAiServer server2(/*ttft_ms=*/400, /*gap_ms=*/100, /*spread_ms=*/100);
  RunOptions ro = closed(server2.port(), n_streams, n_streams);
  ro.kernel_timestamps = false;
  auto r2 = run_load(ro, w);
  ASSERT_TRUE(r2.ok()) << r2.message();
  report("1000 streams, read-time stamps (not asserted)", measure(server2, *r2, n_tokens), *r2);
}

TEST(LoadtestTiming, ClientCpuPerStreamedToken) {
  // Many tokens per request so connection set-up does not dominate: the
  // steady streaming cost. Reported, with only a generous bound asserted
  // (target ≤ 20 µs; CI machines are shared and noisy).
  const int n_streams = 64, n_tokens = 300;
  FakeOpenAiServer server(/*ttft_ms=*/5, /*gap_ms=*/4);
  const Workload w = fixed_workload(n_tokens);
  auto r = run_load(closed(server.port(), n_streams, n_streams), w);
  ASSERT_TRUE(r.ok()) << r.message();
  const Accuracy a = measure(server, *r, n_tokens);
  report("cpu: 64 streams x 300 tokens", a, *r);
  EXPECT_EQ(a.tokens, int64_t(n_streams) * n_tokens);
  EXPECT_LT(a.cpu_us_per_token, 200.0);
}

}  // namespace
}  // namespace kiln::loadtest
