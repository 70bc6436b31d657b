// Boost.Beast HTTP/1.1 server with C++20 coroutines: the only file that
// includes Beast (it compiles slowly). Modelled on Beast's
// http_server_awaitable example: one coroutine per connection on its own
// strand, the pure handler (Router) in between.
#include "kiln/server/http_server.h"

#include <fmt/format.h>
#include <sys/socket.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http.hpp>
#include <cerrno>
#include <future>
#include <thread>

#include "kiln/engine/engine.h"
#include "kiln/server/api_error.h"
#include "kiln/server/routes.h"
#include "kiln/server/server_metrics.h"

namespace kiln::server {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = net::ip::tcp;

namespace {
constexpr auto use_nothrow = net::as_tuple(net::use_awaitable);

// Counts something for the lifetime of a scope.
struct ScopedCount {
  explicit ScopedCount(std::atomic<int64_t>& c) : c_(c) { c_.fetch_add(1); }
  ~ScopedCount() { c_.fetch_sub(1); }
  std::atomic<int64_t>& c_;
};

// Wake-ups of a connection waiting on a BodyProducer: the producer's waker
// (any thread) and the disconnect watch (the strand) cancel the timer.
struct Waiter {
  explicit Waiter(const net::any_io_executor& ex) : timer(ex) {}
  net::steady_timer timer;
  std::atomic<bool> signaled{false};
  bool peer_gone = false;  // strand only
  bool closed = false;     // strand only: the socket may be gone, don't touch it
};

// Watches the socket while a response is produced: readable with EOF or an
// error means the client went away (then the producer is cancelled, and the
// engine frees the sequence within a step); readable with data is a
// pipelined request, left alone.
void arm_watch(const std::shared_ptr<Waiter>& w, tcp::socket& sock) {
  const int fd = sock.native_handle();
  sock.async_wait(tcp::socket::wait_read, [w, fd, &sock](boost::system::error_code ec) {
    if (w->closed || ec == net::error::operation_aborted) return;
    if (!ec) {
      char c;
      const ssize_t n = ::recv(fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);
      if (n > 0) return;
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
        arm_watch(w, sock);
        return;
      }
    }
    w->peer_gone = true;
    w->timer.cancel();
  });
}

}  // namespace

struct HttpServer::Impl {
  ServerConfig cfg;
  Handler handler;
  std::function<HttpResponse()> draining_response;
  ServerMetrics* metrics = nullptr;

  std::unique_ptr<net::io_context> ioc;
  std::optional<net::executor_work_guard<net::io_context::executor_type>> work;
  std::unique_ptr<tcp::acceptor> acceptor;
  std::vector<std::thread> threads;
  std::atomic<bool> draining{false};
  std::atomic<bool> stopped{false};
  std::atomic<int64_t> in_flight{0};
  std::atomic<int64_t> connections{0};
  uint16_t port = 0;

  net::awaitable<void> accept_loop();
  net::awaitable<void> session(tcp::socket socket);
  net::awaitable<bool> write_plain(beast::tcp_stream& stream, const HttpResponse& r,
                                   unsigned version, bool keep_alive);
  net::awaitable<bool> write_produced(beast::tcp_stream& stream, HttpResponse& r, unsigned version,
                                      bool keep_alive, int& status);
  net::awaitable<void> lingering_close(beast::tcp_stream& stream);
  void count(int status) {
    if (metrics) metrics->count_response(status);
  }
};

net::awaitable<void> HttpServer::Impl::accept_loop() {
  for (;;) {
    auto [ec, sock] = co_await acceptor->async_accept(net::make_strand(*ioc), use_nothrow);
    if (ec) {
      if (ec == net::error::operation_aborted || !acceptor->is_open()) co_return;
      // Out of descriptors or similar: back off instead of spinning.
      net::steady_timer t(co_await net::this_coro::executor);
      t.expires_after(std::chrono::milliseconds(50));
      co_await t.async_wait(use_nothrow);
      continue;
    }
    boost::system::error_code ignored;
    sock.set_option(tcp::no_delay(true), ignored);  // SSE chunks go out at once
    auto ex = sock.get_executor();
    net::co_spawn(ex, session(std::move(sock)), net::detached);
  }
}

net::awaitable<bool> HttpServer::Impl::write_plain(beast::tcp_stream& stream, const HttpResponse& r,
                                                   unsigned version, bool keep_alive) {
  http::response<http::string_body> res{http::status(r.status), version};
  res.set(http::field::server, "kiln");
  res.set(http::field::content_type, r.content_type);
  for (const auto& [k, v] : r.headers) res.set(k, v);
  res.keep_alive(keep_alive && !r.close);
  res.body() = r.body;
  res.prepare_payload();
  stream.expires_after(cfg.write_timeout);
  auto [ec, n] = co_await http::async_write(stream, res, use_nothrow);
  count(r.status);
  co_return !ec;
}

net::awaitable<bool> HttpServer::Impl::write_produced(beast::tcp_stream& stream, HttpResponse& r,
                                                      unsigned version, bool keep_alive,
                                                      int& status) {
  BodyProducer& p = *r.producer;
  auto w = std::make_shared<Waiter>(co_await net::this_coro::executor);
  p.set_waker([weak = std::weak_ptr<Waiter>(w)] {
    if (auto s = weak.lock()) {
      s->signaled.store(true, std::memory_order_release);
      net::post(s->timer.get_executor(), [s] { s->timer.cancel(); });
    }
  });
  arm_watch(w, stream.socket());
  struct StopWatch {
    Waiter& w;
    beast::tcp_stream& s;
    ~StopWatch() {
      w.closed = true;
      boost::system::error_code ec;
      s.socket().cancel(ec);
    }
  } stop_watch{*w, stream};

  const bool streaming = p.streaming();
  if (streaming) {
    http::response<http::empty_body> res{http::status::ok, version};
    res.set(http::field::server, "kiln");
    res.set(http::field::content_type, "text/event-stream");
    res.set(http::field::cache_control, "no-cache");
    for (const auto& [k, v] : r.headers) res.set(k, v);
    res.keep_alive(keep_alive);
    res.chunked(true);
    http::response_serializer<http::empty_body> sr{res};
    stream.expires_after(cfg.write_timeout);
    auto [ec, n] = co_await http::async_write_header(stream, sr, use_nothrow);
    if (ec) {
      p.cancel();
      co_return false;
    }
  }
  std::string body;
  for (;;) {
    std::string out;
    const auto state = p.poll(out);
    if (streaming && !out.empty()) {
      stream.expires_after(cfg.write_timeout);
      auto [ec, n] =
          co_await net::async_write(stream, http::make_chunk(net::buffer(out)), use_nothrow);
      if (ec) {
        p.cancel();
        co_return false;
      }
    } else if (!streaming) {
      body += out;
    }
    if (state == BodyProducer::Poll::done) break;
    if (w->peer_gone) {
      p.cancel();
      co_return false;
    }
    if (!w->signaled.exchange(false, std::memory_order_acq_rel)) {
      // The waker cancels this wait; the period is only a safety net.
      w->timer.expires_after(std::chrono::milliseconds(500));
      co_await w->timer.async_wait(use_nothrow);
    }
    if (w->peer_gone) {
      p.cancel();
      co_return false;
    }
  }
  if (streaming) {
    status = 200;
    stream.expires_after(cfg.write_timeout);
    auto [ec, n] = co_await net::async_write(stream, http::make_chunk_last(), use_nothrow);
    count(200);
    co_return !ec;
  }
  HttpResponse full;
  full.status = status = p.status();
  full.content_type = p.content_type();
  full.headers = r.headers;
  full.body = std::move(body);
  co_return co_await write_plain(stream, full, version, keep_alive);
}

net::awaitable<void> HttpServer::Impl::lingering_close(beast::tcp_stream& stream) {
  // Half-close, then read what the client still sends for a moment: closing
  // with unread data makes the kernel send RST, which can destroy the error
  // response before the client reads it.
  boost::system::error_code ec;
  stream.socket().shutdown(tcp::socket::shutdown_send, ec);
  stream.expires_after(std::chrono::milliseconds(500));
  char scratch[16384];
  for (;;) {
    auto [rec, n] = co_await stream.async_read_some(net::buffer(scratch), use_nothrow);
    if (rec) break;
  }
  stream.socket().close(ec);
}

net::awaitable<void> HttpServer::Impl::session(tcp::socket socket) {
  ScopedCount conn(connections);
  std::string remote;
  {
    boost::system::error_code ec;
    auto ep = socket.remote_endpoint(ec);
    if (!ec) remote = ep.address().to_string();
  }
  beast::tcp_stream stream(std::move(socket));
  beast::flat_buffer buf;
  for (;;) {
    if (buf.size() == 0) {
      // Idle keep-alive connection: wait for the first byte of a request.
      stream.expires_after(cfg.idle_timeout);
      auto [ec, n] = co_await stream.async_read_some(buf.prepare(8192), use_nothrow);
      if (ec) break;
      buf.commit(n);
    }
    http::request_parser<http::string_body> parser;
    parser.header_limit(uint32_t(std::min<size_t>(cfg.max_header_bytes, UINT32_MAX)));
    parser.body_limit(cfg.max_body_bytes);
    // From the first byte on, the whole request must arrive within the
    // request timeout: a slow-loris client is cut off here.
    stream.expires_after(cfg.request_timeout);
    auto [ec, n] = co_await http::async_read_header(stream, buf, parser, use_nothrow);
    if (!ec && !parser.is_done()) {
      if (beast::iequals(parser.get()[http::field::expect], "100-continue")) {
        http::response<http::empty_body> cont{http::status::continue_, parser.get().version()};
        auto [wec, wn] = co_await http::async_write(stream, cont, use_nothrow);
        ec = wec;
      }
      if (!ec) std::tie(ec, n) = co_await http::async_read(stream, buf, parser, use_nothrow);
    }
    if (ec) {
      HttpResponse err;
      if (ec == http::error::header_limit)
        err = error_response({431,
                              fmt::format("request headers exceed {} bytes", cfg.max_header_bytes),
                              "invalid_request_error", "", ""});
      else if (ec == http::error::body_limit)
        err = error_response({413, fmt::format("request body exceeds {} bytes", cfg.max_body_bytes),
                              "invalid_request_error", "", ""});
      else if (ec != beast::error::timeout && ec != http::error::end_of_stream &&
               ec != net::error::eof && ec != net::error::connection_reset &&
               ec != net::error::operation_aborted && ec != http::error::partial_message)
        err = error_response(
            {400, "malformed HTTP request: " + ec.message(), "invalid_request_error", "", ""});
      if (err.status >= 400) {
        err.close = true;
        co_await write_plain(stream, err, 11, false);
        co_await lingering_close(stream);
      }
      co_return;
    }

    ScopedCount busy(in_flight);
    auto& msg = parser.get();
    const unsigned version = msg.version();
    const bool keep_alive = msg.keep_alive();
    HttpResponse res;
    if (draining.load(std::memory_order_acquire)) {
      res = draining_response();
    } else {
      HttpRequest req;  // `received` is now
      req.method = std::string(msg.method_string());
      req.target = std::string(msg.target());
      for (const auto& f : msg)
        req.headers.emplace_back(std::string(f.name_string()), std::string(f.value()));
      req.body = std::move(msg.body());
      req.remote = remote;
      try {
        res = handler(req);
      } catch (const std::exception& e) {
        // A bug, not bad input: answer 500 rather than drop the connection.
        res = error_response(
            {500, std::string("internal error: ") + e.what(), "server_error", "", ""});
      }
    }
    bool ok;
    if (res.producer) {
      int status = 0;
      ok = co_await write_produced(stream, res, version, keep_alive, status);
    } else {
      ok = co_await write_plain(stream, res, version, keep_alive);
    }
    if (!ok) co_return;  // write failed or client gone: the socket is done
    if (!keep_alive || res.close) break;
  }
  boost::system::error_code ec;
  stream.socket().shutdown(tcp::socket::shutdown_send, ec);
}

HttpServer::HttpServer(ServerConfig config, Handler handler,
                       std::function<HttpResponse()> draining_response, ServerMetrics* metrics)
    : impl_(std::make_unique<Impl>()) {
  impl_->cfg = std::move(config);
  impl_->handler = std::move(handler);
  impl_->draining_response = std::move(draining_response);
  impl_->metrics = metrics;
}

HttpServer::~HttpServer() {
  stop();
  // Destroying the io_context destroys the suspended connection coroutines
  // (and their producers, which cancel their engine requests) while the rest
  // of Impl is still alive.
  impl_->acceptor.reset();
  impl_->ioc.reset();
}

Status HttpServer::start() {
  auto& s = *impl_;
  s.ioc = std::make_unique<net::io_context>(std::max(1, s.cfg.io_threads));
  s.work.emplace(s.ioc->get_executor());
  boost::system::error_code ec;
  tcp::resolver resolver(*s.ioc);
  auto results =
      resolver.resolve(s.cfg.host, std::to_string(s.cfg.port), tcp::resolver::passive, ec);
  if (ec || results.empty())
    return make_error(fmt::format("--host {}: cannot resolve: {}", s.cfg.host, ec.message()));
  const tcp::endpoint ep = results.begin()->endpoint();
  s.acceptor = std::make_unique<tcp::acceptor>(net::make_strand(*s.ioc));
  s.acceptor->open(ep.protocol(), ec);
  if (!ec) s.acceptor->set_option(net::socket_base::reuse_address(true), ec);
  if (!ec) s.acceptor->bind(ep, ec);
  if (!ec) s.acceptor->listen(net::socket_base::max_listen_connections, ec);
  if (ec)
    return make_error(
        fmt::format("cannot listen on {}:{}: {} (is the port in use? pick another "
                    "with --port or $PORT)",
                    s.cfg.host, s.cfg.port, ec.message()));
  s.port = s.acceptor->local_endpoint().port();
  net::co_spawn(s.acceptor->get_executor(), s.accept_loop(), net::detached);
  for (int i = 0; i < std::max(1, s.cfg.io_threads); ++i)
    s.threads.emplace_back([&s] { s.ioc->run(); });
  return Status::success();
}

uint16_t HttpServer::port() const {
  return impl_->port;
}
int64_t HttpServer::requests_in_flight() const {
  return impl_->in_flight.load();
}
int64_t HttpServer::open_connections() const {
  return impl_->connections.load();
}

bool HttpServer::drain(std::chrono::milliseconds timeout) {
  auto& s = *impl_;
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  s.draining.store(true, std::memory_order_release);
  if (s.acceptor && !s.stopped) {
    std::promise<void> closed;
    net::post(s.acceptor->get_executor(), [&] {
      boost::system::error_code ec;
      s.acceptor->close(ec);
      closed.set_value();
    });
    closed.get_future().wait();
  }
  while (s.in_flight.load() > 0 && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  return s.in_flight.load() == 0;
}

void HttpServer::stop() {
  auto& s = *impl_;
  if (s.stopped.exchange(true) || !s.ioc) return;
  s.work.reset();
  s.ioc->stop();
  for (auto& t : s.threads) t.join();
  s.threads.clear();
}

bool graceful_shutdown(HttpServer& server, Router& router, engine::Engine* engine,
                       std::chrono::milliseconds timeout) {
  router.set_phase(Phase::draining);
  const bool all_done = server.drain(timeout);
  if (engine) engine->stop();
  server.stop();
  return all_done;
}

}  // namespace kiln::server
