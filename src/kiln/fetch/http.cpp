// libcurl easy-interface plumbing for kiln's fetcher. Each HttpClient owns
// one CURL handle; a worker thread keeps its own so connections persist.
#include "kiln/fetch/http.h"

#include <curl/curl.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <mutex>

#include "kiln/core/assert.h"

namespace kiln::fetch {
namespace {

void global_init() {
  // curl_global_init is not thread-safe on every libcurl build; once is enough.
  static std::once_flag once;
  std::call_once(once, [] { KILN_ASSERT(curl_global_init(CURL_GLOBAL_DEFAULT) == CURLE_OK); });
}

struct TransferCtx {
  const BodySink* sink = nullptr;
  HttpOutcome* out = nullptr;
  const std::atomic<bool>* cancel = nullptr;
  long stall_seconds = 0;
  curl_off_t last_now = -1;
  std::chrono::steady_clock::time_point last_change = std::chrono::steady_clock::now();
};

std::string trim(std::string s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.pop_back();
  size_t i = 0;
  while (i < s.size() && std::isspace(static_cast<unsigned char>(s[i]))) ++i;
  return s.substr(i);
}

size_t on_header(char* data, size_t size, size_t n, void* user) {
  auto* ctx = static_cast<TransferCtx*>(user);
  const std::string line(data, size * n);
  HttpHead& h = ctx->out->head;
  if (line.rfind("HTTP/", 0) == 0) {
    // A new status line (after a redirect or a 100 Continue): start over.
    h = HttpHead{};
    const size_t sp = line.find(' ');
    if (sp != std::string::npos) h.status = std::atol(line.c_str() + sp + 1);
    return size * n;
  }
  const size_t colon = line.find(':');
  if (colon != std::string::npos) {
    std::string name = line.substr(0, colon);
    std::transform(name.begin(), name.end(), name.begin(),
                   [](unsigned char c) { return char(std::tolower(c)); });
    std::string value = trim(line.substr(colon + 1));
    auto [it, fresh] = h.headers.emplace(name, value);
    if (!fresh) it->second += ", " + value;
  }
  return size * n;
}

size_t on_body(char* data, size_t size, size_t n, void* user) {
  auto* ctx = static_cast<TransferCtx*>(user);
  const size_t bytes = size * n;
  if (!(*ctx->sink)(ctx->out->head, data, bytes)) {
    ctx->out->sink_stopped = true;
    return 0;  // any count but `bytes` fails the transfer (CURL_WRITEFUNC_ERROR is 7.87+)
  }
  ctx->out->body_bytes += bytes;
  return bytes;
}

int on_progress(void* user, curl_off_t, curl_off_t now, curl_off_t, curl_off_t) {
  auto* ctx = static_cast<TransferCtx*>(user);
  if (ctx->cancel && ctx->cancel->load(std::memory_order_relaxed)) {
    ctx->out->cancelled = true;
    return 1;
  }
  // curl's own low-speed check averages over a window, so a burst followed
  // by silence goes unnoticed for a long time; a connection that delivers
  // nothing at all for stall_seconds is cut here (curl calls this at least
  // once a second while a transfer waits).
  const auto t = std::chrono::steady_clock::now();
  if (now != ctx->last_now) {
    ctx->last_now = now;
    ctx->last_change = t;
  } else if (ctx->stall_seconds > 0 &&
             t - ctx->last_change > std::chrono::seconds(ctx->stall_seconds)) {
    ctx->out->stalled = true;
    return 1;
  }
  return 0;
}

}  // namespace

HttpClient::HttpClient() {
  global_init();
  curl_ = curl_easy_init();
  KILN_ASSERT(curl_ != nullptr);
}

HttpClient::~HttpClient() {
  curl_easy_cleanup(static_cast<CURL*>(curl_));
}

HttpOutcome HttpClient::get(const HttpRequest& req, const BodySink& sink) {
  CURL* c = static_cast<CURL*>(curl_);
  curl_easy_reset(c);  // keeps the connection cache, drops the last request's options
  HttpOutcome out;
  TransferCtx ctx;
  ctx.sink = &sink;
  ctx.out = &out;
  ctx.cancel = req.cancel;
  ctx.stall_seconds = req.stall_seconds;
  char errbuf[CURL_ERROR_SIZE] = {0};
  curl_easy_setopt(c, CURLOPT_URL, req.url.c_str());
  curl_easy_setopt(c, CURLOPT_ERRORBUFFER, errbuf);
  curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);  // no SIGALRM timeouts in a threaded process
  curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 1L);
  curl_easy_setopt(c, CURLOPT_MAXREDIRS, 5L);
  curl_easy_setopt(c, CURLOPT_USERAGENT, "kiln/0.1");
  curl_easy_setopt(c, CURLOPT_TCP_KEEPALIVE, 1L);
  curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, req.connect_timeout_ms);
  if (req.total_timeout_ms > 0) curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, req.total_timeout_ms);
  curl_easy_setopt(c, CURLOPT_LOW_SPEED_LIMIT, req.stall_bytes_per_s);
  curl_easy_setopt(c, CURLOPT_LOW_SPEED_TIME, req.stall_seconds);
  // Large receive buffer: fewer callbacks and pwrite calls per MiB.
  curl_easy_setopt(c, CURLOPT_BUFFERSIZE, 512L * 1024);
  curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
  curl_easy_setopt(c, CURLOPT_HEADERDATA, &ctx);
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
  curl_easy_setopt(c, CURLOPT_WRITEDATA, &ctx);
  curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
  curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, on_progress);
  curl_easy_setopt(c, CURLOPT_XFERINFODATA, &ctx);
  std::string range;
  if (req.range) {
    range = std::to_string(req.range->first) + "-" + std::to_string(req.range->second);
    curl_easy_setopt(c, CURLOPT_RANGE, range.c_str());
  }
  curl_slist* hdrs = nullptr;
  for (const auto& h : req.headers) hdrs = curl_slist_append(hdrs, h.c_str());
  if (hdrs) curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdrs);

  const CURLcode rc = curl_easy_perform(c);
  if (hdrs) curl_slist_free_all(hdrs);
  long status = 0;
  curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
  if (status) out.head.status = status;
  out.curl_code = int(rc);
  if (rc != CURLE_OK) out.curl_error = errbuf[0] ? errbuf : curl_easy_strerror(rc);
  return out;
}

Result<std::pair<HttpHead, std::string>> HttpClient::get_small(const HttpRequest& req,
                                                               size_t max_body) {
  std::string body;
  bool too_big = false;
  auto out = get(req, [&](const HttpHead&, const char* d, size_t n) {
    if (body.size() + n > max_body) {
      too_big = true;
      return false;
    }
    body.append(d, n);
    return true;
  });
  if (too_big)
    return make_error(req.url + ": the response is larger than " + std::to_string(max_body) +
                      " bytes, not the small JSON document expected");
  if (out.curl_code != 0) return make_error(req.url + ": " + describe(out));
  return std::make_pair(std::move(out.head), std::move(body));
}

std::string describe(const HttpOutcome& o) {
  if (o.cancelled) return "cancelled";
  if (o.stalled) return "the connection stalled (no data)";
  if (o.curl_code != 0) return o.curl_error + " (curl error " + std::to_string(o.curl_code) + ")";
  return "HTTP " + std::to_string(o.head.status);
}

}  // namespace kiln::fetch
