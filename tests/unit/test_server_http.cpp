// The HTTP edge in-process on loopback with a scripted fake engine: real
// sockets, real Beast server, real routes. Covers keep-alive, limits
// (413/431), bad JSON, slow-loris cut-off, disconnect -> cancel(), 429, 401,
// SSE shapes and the SIGTERM drain path.
#include <gtest/gtest.h>

#include <fstream>
#include <thread>

#include "common/fake_engine.h"
#include "common/http_client.h"
#include "common/paths.h"
#include "kiln/core/assert.h"
#include "kiln/gguf/gguf.h"
#include "kiln/server/http_server.h"
#include "kiln/server/openai_embeddings.h"
#include "kiln/server/request_log.h"
#include "kiln/server/routes.h"
#include "kiln/server/server_metrics.h"
#include "kiln/server/text_stream.h"
#include "kiln/tokenizer/tokenizer.h"

namespace kiln::server {
namespace {

using test::HttpConn;
using test::HttpReply;
using namespace std::chrono_literals;

const Tokenizer& vocab() {
  static const Tokenizer tok = [] {
    auto f = gguf::File::open(test::testdata("vocab/ggml-vocab-llama-bpe.gguf"));
    KILN_ASSERT(f.ok());
    auto t = Tokenizer::from_gguf(**f);
    KILN_ASSERT(t.ok());
    return *t;
  }();
  return tok;
}

const std::string kScriptText = " Hello world, this is kiln. \xE2\x82\xAC done";

// A conversation rendered the simplest way; enough to test the edge.
Result<std::string> toy_template(const ChatRenderInput& in) {
  std::string s;
  for (const auto& m : in.messages) {
    const std::string c = m["content"].is_string() ? m["content"].get<std::string>() : "";
    if (c == "FAIL") return make_error("raise_exception: the template refused");
    s += "<" + m["role"].get<std::string>() + ">" + c + "\n";
  }
  if (in.add_generation_prompt) s += "<assistant>";
  return s;
}

struct Harness {
  explicit Harness(std::function<void(ServerConfig&)> tweak = {}, int n_tokens = -1,
                   std::string request_log = "")
      : log_path(std::move(request_log)) {
    cfg.host = "127.0.0.1";
    cfg.port = 0;
    cfg.io_threads = 2;
    cfg.max_concurrency = 8;
    cfg.model_id = "toy";
    if (tweak) tweak(cfg);
    admission = std::make_unique<Admission>(cfg.max_concurrency);
    if (!log_path.empty()) {
      auto l = RequestLog::open(log_path);
      KILN_ASSERT(l.ok());
      log = std::move(*l);
    }
    router = std::make_unique<Router>(cfg, metrics, *admission, log.get());
    engine::EngineConfig ec;
    ec.ctx_size = 64;
    ec.n_parallel = 4;
    script = vocab().encode(kScriptText, false, false);
    if (n_tokens > 0) {
      std::vector<int32_t> longer;
      while (int(longer.size()) < n_tokens)
        longer.insert(longer.end(), script.begin(), script.end());
      longer.resize(size_t(n_tokens));
      script = longer;
    }
    engine = std::make_unique<test::FakeEngine>(ec, vocab().eos_id(), [this](const auto&) {
      return test::FakeEngine::Script{script, true};
    });
    engine->start();
    metrics.attach_engine(&engine->stats());
    router->attach(engine.get(), &vocab(), toy_template, engine.get());
    router->set_phase(Phase::ready);
    server = std::make_unique<HttpServer>(
        cfg, [this](const HttpRequest& r) { return router->handle(r); },
        [] { return Router::draining_response(); }, &metrics);
    auto st = server->start();
    KILN_ASSERT_MSG(st.ok(), st.message().c_str());
  }
  ~Harness() {
    server.reset();  // before the engine: connections own producers
    engine.reset();
  }
  uint16_t port() const { return server->port(); }
  HttpReply request(const std::string& method, const std::string& path,
                    const std::string& body = "", const std::string& headers = "") {
    HttpConn c(port());
    EXPECT_TRUE(c.ok());
    c.send_request(method, path, body, headers);
    return c.read_reply();
  }

  std::string log_path;
  ServerConfig cfg;
  ServerMetrics metrics;
  std::unique_ptr<Admission> admission;
  std::unique_ptr<RequestLog> log;
  std::unique_ptr<Router> router;
  std::vector<int32_t> script;
  std::unique_ptr<test::FakeEngine> engine;
  std::unique_ptr<HttpServer> server;
};

Json body_json(const HttpReply& r) {
  return Json::parse(r.body);
}

// The JSON events of an SSE body, and whether it ended with [DONE].
std::vector<Json> sse_events(const std::string& body, bool* done) {
  std::vector<Json> out;
  *done = false;
  size_t pos = 0;
  while (pos < body.size()) {
    size_t end = body.find("\n\n", pos);
    if (end == std::string::npos) break;
    std::string ev = body.substr(pos, end - pos);
    pos = end + 2;
    EXPECT_EQ(ev.rfind("data: ", 0), 0u) << ev;
    ev = ev.substr(6);
    if (ev == "[DONE]") {
      *done = true;
      EXPECT_EQ(pos, body.size()) << "[DONE] must be the last event";
      continue;
    }
    out.push_back(Json::parse(ev));
  }
  return out;
}

// Waits for a condition with a deadline (no fixed sleeps in assertions).
template <class F>
bool eventually(F f, std::chrono::milliseconds limit = 3000ms) {
  const auto end = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < end) {
    if (f()) return true;
    std::this_thread::sleep_for(5ms);
  }
  return f();
}

TEST(ServerHttp, HealthPhasesAndNotReady) {
  Harness h;
  h.router->set_phase(Phase::loading);
  auto r = h.request("GET", "/health/ready");
  EXPECT_EQ(r.status, 503);
  EXPECT_EQ(body_json(r)["status"], "loading");
  h.router->set_phase(Phase::warming);
  EXPECT_EQ(body_json(h.request("GET", "/health/ready"))["status"], "warming");
  EXPECT_EQ(h.request("GET", "/health/live").status, 200);
  auto c = h.request("POST", "/v1/completions", R"({"prompt":"hi"})");
  EXPECT_EQ(c.status, 503);
  EXPECT_NE(c.body.find("warming"), std::string::npos);
  h.router->set_phase(Phase::ready);
  r = h.request("GET", "/health/ready");
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(body_json(r)["status"], "ready");
  EXPECT_EQ(h.request("GET", "/nope").status, 404);
  EXPECT_EQ(h.request("GET", "/v1/completions").status, 405);
}

TEST(ServerHttp, KeepAliveCompletionShapes) {
  Harness h;
  HttpConn c(h.port());
  ASSERT_TRUE(c.ok());
  c.send_request("POST", "/v1/completions",
                 R"({"prompt":"Say hi","max_tokens":4,"temperature":0})");
  auto r = c.read_reply();
  ASSERT_EQ(r.status, 200) << r.body;
  auto j = body_json(r);
  EXPECT_EQ(j["object"], "text_completion");
  EXPECT_EQ(j["model"], "toy");
  EXPECT_EQ(j["id"].get<std::string>().rfind("cmpl-", 0), 0u);
  ASSERT_EQ(j["choices"].size(), 1u);
  const std::vector<int32_t> first4(h.script.begin(), h.script.begin() + 4);
  EXPECT_EQ(j["choices"][0]["text"], vocab().decode(first4));
  EXPECT_EQ(j["choices"][0]["finish_reason"], "length");
  EXPECT_TRUE(j["choices"][0]["logprobs"].is_null());
  const int64_t n_prompt = int64_t(vocab().encode("Say hi", true, true).size());
  EXPECT_EQ(j["usage"]["prompt_tokens"], n_prompt);
  EXPECT_EQ(j["usage"]["completion_tokens"], 4);
  EXPECT_EQ(j["usage"]["total_tokens"], n_prompt + 4);
  EXPECT_EQ(j["usage"]["prompt_tokens_details"]["cached_tokens"], n_prompt / 2);
  // The engine got the tokenized prompt and the sampling fields.
  auto sub = h.engine->submitted();
  ASSERT_EQ(sub.size(), 1u);
  EXPECT_EQ(sub[0].max_tokens, 4);
  EXPECT_EQ(sub[0].sampling.temperature, 0.0f);

  // Same connection, next request.
  c.send_request("GET", "/v1/models", "");
  auto m = c.read_reply();
  ASSERT_EQ(m.status, 200);
  EXPECT_EQ(body_json(m)["data"][0]["id"], "toy");
  EXPECT_EQ(body_json(m)["data"][0]["object"], "model");
  // Runs to the end of the script: "stop", and the full text, € intact.
  c.send_request("POST", "/v1/completions", R"({"prompt":[1,2,3],"max_tokens":40})");
  auto full = c.read_reply();
  ASSERT_EQ(full.status, 200) << full.body;
  EXPECT_EQ(body_json(full)["choices"][0]["text"], kScriptText);
  EXPECT_EQ(body_json(full)["choices"][0]["finish_reason"], "stop");
  EXPECT_EQ(body_json(full)["usage"]["prompt_tokens"], 3);
}

TEST(ServerHttp, ChatStreamingWithUsage) {
  Harness h;
  auto r = h.request("POST", "/v1/chat/completions",
                     R"({"messages":[{"role":"user","content":"hi"}],"stream":true,
                         "stream_options":{"include_usage":true},"max_tokens":50})");
  ASSERT_EQ(r.status, 200);
  EXPECT_EQ(r.header("content-type"), "text/event-stream");
  EXPECT_EQ(r.header("transfer-encoding"), "chunked");
  bool done = false;
  auto evs = sse_events(r.body, &done);
  ASSERT_TRUE(done);
  ASSERT_GE(evs.size(), 4u);
  EXPECT_EQ(evs[0]["object"], "chat.completion.chunk");
  EXPECT_EQ(evs[0]["choices"][0]["delta"]["role"], "assistant");
  std::string text;
  std::string finish;
  for (size_t i = 0; i + 1 < evs.size(); ++i) {
    EXPECT_TRUE(evs[i]["usage"].is_null());
    const auto& ch = evs[i]["choices"][0];
    if (ch["delta"].contains("content")) text += ch["delta"]["content"].get<std::string>();
    if (!ch["finish_reason"].is_null()) finish = ch["finish_reason"];
  }
  EXPECT_EQ(text, kScriptText);
  EXPECT_EQ(finish, "stop");
  const Json& last = evs.back();
  EXPECT_TRUE(last["choices"].empty());
  const int64_t n_prompt = int64_t(vocab().encode("<user>hi\n<assistant>", false, true).size());
  EXPECT_EQ(last["usage"]["prompt_tokens"], n_prompt);
  EXPECT_EQ(last["usage"]["completion_tokens"], int64_t(h.script.size()) + 1);  // + EOS
  EXPECT_EQ(last["usage"]["prompt_tokens_details"]["cached_tokens"], n_prompt / 2);
  // All ids equal.
  for (const auto& e : evs) EXPECT_EQ(e["id"], evs[0]["id"]);
}

TEST(ServerHttp, ChatNonStreamingAndTemplateErrors) {
  Harness h;
  auto r = h.request("POST", "/v1/chat/completions",
                     R"({"messages":[{"role":"user","content":"hi"}],"logprobs":true,
                         "top_logprobs":2,"max_tokens":3,"n":2})");
  ASSERT_EQ(r.status, 200) << r.body;
  auto j = body_json(r);
  EXPECT_EQ(j["object"], "chat.completion");
  ASSERT_EQ(j["choices"].size(), 2u);
  EXPECT_EQ(j["choices"][1]["index"], 1);
  EXPECT_EQ(j["choices"][0]["message"]["role"], "assistant");
  const auto& lp = j["choices"][0]["logprobs"]["content"];
  ASSERT_EQ(lp.size(), 3u);
  EXPECT_EQ(lp[0]["top_logprobs"].size(), 2u);
  EXPECT_TRUE(lp[0]["bytes"].is_array());
  EXPECT_FLOAT_EQ(lp[0]["logprob"].get<float>(), -0.5f);
  EXPECT_EQ(j["usage"]["completion_tokens"], 6);
  // Two choices, two different seeds.
  auto sub = h.engine->submitted();
  ASSERT_EQ(sub.size(), 2u);
  EXPECT_NE(sub[0].sampling.seed, sub[1].sampling.seed);

  auto bad = h.request("POST", "/v1/chat/completions",
                       R"({"messages":[{"role":"user","content":"FAIL"}]})");
  EXPECT_EQ(bad.status, 400);
  EXPECT_EQ(body_json(bad)["error"]["param"], "messages");
  auto tmpl =
      h.request("POST", "/apply-template",
                R"({"messages":[{"role":"user","content":"hi"}],"add_generation_prompt":false})");
  ASSERT_EQ(tmpl.status, 200);
  EXPECT_EQ(body_json(tmpl)["prompt"], "<user>hi\n");
}

TEST(ServerHttp, CompletionLogprobsLegacyShape) {
  Harness h;
  auto r = h.request("POST", "/v1/completions", R"({"prompt":"x","max_tokens":3,"logprobs":2})");
  ASSERT_EQ(r.status, 200);
  auto lp = body_json(r)["choices"][0]["logprobs"];
  EXPECT_EQ(lp["tokens"].size(), 3u);
  EXPECT_EQ(lp["token_logprobs"].size(), 3u);
  EXPECT_EQ(lp["top_logprobs"].size(), 3u);
  EXPECT_TRUE(lp["top_logprobs"][0].is_object());
  EXPECT_EQ(lp["text_offset"][0], 0);
  EXPECT_EQ(lp["text_offset"][1], utf8_length(vocab().token_to_piece(h.script[0])));
}

TEST(ServerHttp, StopStringNeverStreamedAndCancelsTheSequence) {
  Harness h;
  auto r = h.request("POST", "/v1/completions",
                     R"({"prompt":"x","max_tokens":40,"stream":true,"stop":["this is"]})");
  ASSERT_EQ(r.status, 200);
  bool done = false;
  auto evs = sse_events(r.body, &done);
  ASSERT_TRUE(done);
  std::string text;
  for (const auto& e : evs) {
    const std::string t = e["choices"][0]["text"];
    EXPECT_EQ(t.find("this"), std::string::npos) << "stop text leaked: " << t;
    text += t;
  }
  EXPECT_EQ(text, " Hello world, ");
  EXPECT_EQ(evs.back()["choices"][0]["finish_reason"], "stop");
  EXPECT_TRUE(eventually([&] { return h.engine->cancels_seen.load() == 1; }));
}

TEST(ServerHttp, ContextLimitsAndVocabulary) {
  Harness h;  // ctx 64
  std::string long_prompt = "[";
  for (int i = 0; i < 70; ++i) long_prompt += std::to_string(i) + (i < 69 ? "," : "]");
  auto r = h.request("POST", "/v1/completions", R"({"prompt":)" + long_prompt + "}");
  EXPECT_EQ(r.status, 400);
  EXPECT_EQ(body_json(r)["error"]["param"], "prompt");
  EXPECT_NE(body_json(r)["error"]["message"].get<std::string>().find("64"), std::string::npos);
  r = h.request("POST", "/v1/completions", R"({"prompt":[1,2],"max_tokens":63})");
  EXPECT_EQ(r.status, 400);
  EXPECT_EQ(body_json(r)["error"]["param"], "max_tokens");
  EXPECT_NE(body_json(r)["error"]["message"].get<std::string>().find("at most 62"),
            std::string::npos);
  r = h.request("POST", "/v1/completions", R"({"prompt":[1,99999999]})");
  EXPECT_EQ(r.status, 400);
  EXPECT_NE(r.body.find("outside the vocabulary"), std::string::npos);
  r = h.request("POST", "/v1/completions", R"({"prompt":"x","max_tokens":-1})");
  EXPECT_EQ(r.status, 400);
  EXPECT_EQ(body_json(r)["error"]["param"], "max_tokens");
  r = h.request("POST", "/v1/chat/completions", R"({"messages":[]})");
  EXPECT_EQ(r.status, 400);
  EXPECT_TRUE(h.engine->submitted().empty());
}

TEST(ServerHttp, BadBodiesAndTheConnectionSurvives) {
  Harness h;
  HttpConn c(h.port());
  c.send_request("POST", "/v1/completions", R"({"prompt": "x",)");
  auto r = c.read_reply();
  EXPECT_EQ(r.status, 400);
  EXPECT_EQ(body_json(r)["error"]["type"], "invalid_request_error");
  EXPECT_NE(r.body.find("not valid JSON"), std::string::npos);
  c.send_request("POST", "/v1/completions", "{\"prompt\": \"bad \xC3\x28 utf8\"}");
  r = c.read_reply();
  EXPECT_EQ(r.status, 400);
  EXPECT_NE(r.body.find("UTF-8"), std::string::npos) << r.body;
  c.send_request("POST", "/v1/completions", std::string(5000, '[') + std::string(5000, ']'));
  r = c.read_reply();
  EXPECT_EQ(r.status, 400);
  EXPECT_NE(r.body.find("deeper"), std::string::npos);
  c.send_request("POST", "/v1/completions", "[1,2]");
  EXPECT_EQ(c.read_reply().status, 400);
  c.send_request("POST", "/v1/completions", R"({"prompt":"x","max_tokens":2})");
  EXPECT_EQ(c.read_reply().status, 200);
  // A request line that isn't HTTP: 400 and the connection closes.
  HttpConn g(h.port());
  g.send_raw("HELLO THERE\r\n\r\n");
  EXPECT_EQ(g.read_reply().status, 400);
}

TEST(ServerHttp, BodyAndHeaderLimits) {
  Harness h([](ServerConfig& c) {
    c.max_body_bytes = 4096;
    c.max_header_bytes = 2048;
  });
  HttpConn big(h.port());
  big.send_request("POST", "/v1/completions", R"({"prompt":")" + std::string(10000, 'a') + R"("})");
  auto r = big.read_reply();
  EXPECT_EQ(r.status, 413);
  EXPECT_EQ(r.header("connection"), "close");
  HttpConn hdr(h.port());
  hdr.send_request("GET", "/v1/models", "", "X-Junk: " + std::string(4000, 'x') + "\r\n");
  EXPECT_EQ(hdr.read_reply().status, 431);
  EXPECT_EQ(h.request("GET", "/v1/models").status, 200);
}

TEST(ServerHttp, SlowLorisIsCutOff) {
  Harness h([](ServerConfig& c) { c.request_timeout = 300ms; });
  HttpConn c(h.port());
  const auto t0 = std::chrono::steady_clock::now();
  ASSERT_TRUE(c.send_raw("POST /v1/completions HTTP/1.1\r\nHost: x\r\n"));
  bool closed = false;
  for (int i = 0; i < 40 && !closed; ++i) {
    if (!c.send_raw("X-Slow-" + std::to_string(i) + ": y\r\n")) break;
    closed = c.closed_by_peer(100);
  }
  if (!closed) closed = c.closed_by_peer(1000);
  const auto waited = std::chrono::steady_clock::now() - t0;
  EXPECT_TRUE(closed);
  EXPECT_GE(waited, 250ms);
  EXPECT_LT(waited, 2500ms);
  // An idle connection that never sends a byte is closed after idle_timeout.
  Harness idle([](ServerConfig& c) { c.idle_timeout = 200ms; });
  HttpConn quiet(idle.port());
  EXPECT_TRUE(quiet.closed_by_peer(2000));
  EXPECT_EQ(h.request("GET", "/health/live").status, 200);
}

TEST(ServerHttp, ClientDisconnectMidStreamCancels) {
  Harness h({}, 60);
  h.engine->step_ms = 20;
  HttpConn c(h.port());
  c.send_request("POST", "/v1/completions", R"({"prompt":"x","max_tokens":60,"stream":true})");
  std::string got;
  ASSERT_TRUE(c.read_until("\"text\":\" Hello\"", got));
  c.abort();
  EXPECT_TRUE(eventually([&] { return h.engine->cancels_seen.load() == 1; }, 2000ms));
  EXPECT_TRUE(eventually([&] { return h.engine->active() == 0; }));
  EXPECT_LT(h.engine->finished.load(), 1);
  EXPECT_EQ(h.metrics.cancelled.value(), 1.0);
  // Non-streaming too: the client leaves while the engine works.
  HttpConn d(h.port());
  d.send_request("POST", "/v1/completions", R"({"prompt":"x","max_tokens":60})");
  std::this_thread::sleep_for(60ms);
  d.close();
  EXPECT_TRUE(eventually([&] { return h.engine->cancels_seen.load() == 2; }, 2000ms));
  EXPECT_TRUE(eventually([&] { return h.admission->in_use() == 0; }));
}

TEST(ServerHttp, AdmissionReturns429WithRetryAfter) {
  Harness h([](ServerConfig& c) { c.max_concurrency = 2; }, 60);
  h.engine->step_ms = 10;
  HttpConn a(h.port()), b(h.port());
  a.send_request("POST", "/v1/completions", R"({"prompt":"x","max_tokens":60,"stream":true})");
  b.send_request("POST", "/v1/completions", R"({"prompt":"x","max_tokens":60,"stream":true})");
  ASSERT_TRUE(eventually([&] { return h.admission->in_use() == 2; }));
  auto r =
      h.request("POST", "/v1/chat/completions", R"({"messages":[{"role":"user","content":"x"}]})");
  EXPECT_EQ(r.status, 429);
  EXPECT_EQ(r.header("retry-after"), "1");
  EXPECT_EQ(body_json(r)["error"]["code"], "max_concurrency");
  EXPECT_EQ(h.metrics.rejected.value(), 1.0);
  // Non-generation routes are not admission-controlled.
  EXPECT_EQ(h.request("POST", "/tokenize", R"({"content":"a"})").status, 200);
  EXPECT_EQ(a.read_reply(10000).status, 200);
  EXPECT_EQ(b.read_reply(10000).status, 200);
  EXPECT_TRUE(eventually([&] { return h.admission->in_use() == 0; }));
  EXPECT_EQ(h.request("POST", "/v1/completions", R"({"prompt":"x","max_tokens":1})").status, 200);
  EXPECT_NE(h.metrics.render().find("kiln_requests_rejected_total 1"), std::string::npos);
}

TEST(ServerHttp, ApiKey) {
  Harness h([](ServerConfig& c) { c.api_key = "s3cret"; });
  EXPECT_EQ(h.request("GET", "/v1/models").status, 401);
  auto r = h.request("GET", "/v1/models", "", "Authorization: Bearer wrong\r\n");
  EXPECT_EQ(r.status, 401);
  EXPECT_EQ(body_json(r)["error"]["code"], "invalid_api_key");
  EXPECT_EQ(h.request("GET", "/v1/models", "", "Authorization: Bearer s3cret\r\n").status, 200);
  EXPECT_EQ(h.request("POST", "/v1/completions", R"({"prompt":"x","max_tokens":1})").status, 401);
  EXPECT_EQ(h.request("GET", "/metrics").status, 401);
  EXPECT_EQ(h.request("GET", "/health/live").status, 200);
  EXPECT_EQ(h.request("GET", "/health/ready").status, 200);
}

TEST(ServerHttp, EmbeddingsFloatAndBase64Agree) {
  Harness h;
  auto f =
      h.request("POST", "/v1/embeddings", R"({"input":["ab","cde"],"encoding_format":"float"})");
  ASSERT_EQ(f.status, 200) << f.body;
  auto b =
      h.request("POST", "/v1/embeddings", R"({"input":["ab","cde"]","encoding_format":"base64"})");
  EXPECT_EQ(b.status, 400);  // malformed on purpose
  b = h.request("POST", "/v1/embeddings", R"({"input":["ab","cde"],"encoding_format":"base64"})");
  ASSERT_EQ(b.status, 200);
  auto fj = body_json(f), bj = body_json(b);
  ASSERT_EQ(fj["data"].size(), 2u);
  for (int i = 0; i < 2; ++i) {
    std::vector<float> v = fj["data"][i]["embedding"].get<std::vector<float>>();
    ASSERT_EQ(v.size(), 8u);
    const std::string enc = bj["data"][i]["embedding"];
    EXPECT_EQ(enc, base64_encode({reinterpret_cast<const uint8_t*>(v.data()), v.size() * 4}));
  }
  EXPECT_GT(fj["usage"]["prompt_tokens"].get<int>(), 0);
  auto d = h.request("POST", "/v1/embeddings", R"({"input":"ab","dimensions":4})");
  EXPECT_EQ(d.status, 400);
  EXPECT_EQ(body_json(d)["error"]["param"], "dimensions");
  EXPECT_EQ(h.request("POST", "/v1/embeddings", R"({"input":"ab","dimensions":8})").status, 200);
}

TEST(ServerHttp, TokenizeDetokenizeMetrics) {
  Harness h;
  auto t = h.request("POST", "/tokenize", R"({"content":"Hello world","add_special":true})");
  ASSERT_EQ(t.status, 200);
  auto ids = body_json(t)["tokens"].get<std::vector<int32_t>>();
  EXPECT_EQ(ids, vocab().encode("Hello world", true, true));
  auto d = h.request("POST", "/detokenize", Json{{"tokens", ids}}.dump());
  ASSERT_EQ(d.status, 200);
  EXPECT_EQ(body_json(d)["content"], vocab().decode(ids));
  EXPECT_EQ(h.request("POST", "/detokenize", R"({"tokens":[-1]})").status, 400);
  EXPECT_EQ(h.request("POST", "/tokenize", R"({"content":5})").status, 400);

  ASSERT_EQ(h.request("POST", "/v1/completions", R"({"prompt":"x","max_tokens":3})").status, 200);
  auto m = h.request("GET", "/metrics");
  ASSERT_EQ(m.status, 200);
  EXPECT_EQ(m.header("content-type").rfind("text/plain; version=0.0.4", 0), 0u);
  for (const char* name :
       {"kiln_requests_running ", "kiln_requests_waiting ", "kiln_requests_rejected_total ",
        "kiln_time_to_first_token_seconds_count 1", "kiln_inter_token_latency_seconds_count 2",
        "kiln_request_duration_seconds_count 1", "kiln_prompt_tokens_total ",
        "kiln_generation_tokens_total 3", "kiln_kv_blocks_used ", "kiln_kv_blocks_free 64",
        "kiln_prefix_cache_hit_rate ", "kiln_engine_step_seconds_avg ",
        "kiln_http_responses_total{code=\"200\"}", "kiln_ready 1"})
    EXPECT_NE(m.body.find(name), std::string::npos) << name;
}

TEST(ServerHttp, RequestLogLines) {
  const std::string path = ::testing::TempDir() + "kiln_request_log.jsonl";
  std::remove(path.c_str());
  {
    Harness h({}, -1, path);
    ASSERT_EQ(h.request("POST", "/v1/completions",
                        R"({"prompt":"hello","max_tokens":2,"seed":7,"user":"u1"})")
                  .status,
              200);
    ASSERT_EQ(h.request("POST", "/v1/completions", R"({"prompt":"hello","top_p":5})").status, 400);
  }
  std::ifstream in(path);
  std::string line1, line2;
  ASSERT_TRUE(std::getline(in, line1));
  ASSERT_TRUE(std::getline(in, line2));
  auto a = Json::parse(line1), b = Json::parse(line2);
  EXPECT_EQ(a["endpoint"], "/v1/completions");
  EXPECT_EQ(a["prompt"], "hello");
  EXPECT_EQ(a["params"]["max_tokens"], 2);
  EXPECT_EQ(a["params"]["seed"], 7);
  EXPECT_EQ(a["user"], "u1");
  EXPECT_EQ(a["completion_tokens"], 2);
  EXPECT_TRUE(a["ttft_ms"].is_number());
  EXPECT_TRUE(a["duration_ms"].is_number());
  EXPECT_EQ(a["status"], 200);
  EXPECT_TRUE(a.contains("cached_tokens"));
  EXPECT_TRUE(a.contains("time"));
  EXPECT_EQ(b["status"], 400);
}

TEST(ServerHttp, GracefulShutdownDrains) {
  Harness h({}, 40);
  h.engine->step_ms = 10;
  HttpConn keep(h.port());
  keep.send_request("GET", "/health/live", "");
  ASSERT_EQ(keep.read_reply().status, 200);
  HttpConn stream(h.port());
  stream.send_request("POST", "/v1/completions", R"({"prompt":"x","max_tokens":40,"stream":true})");
  std::string got;
  ASSERT_TRUE(stream.read_until("data: ", got));

  bool all_done = false;
  std::thread t(
      [&] { all_done = graceful_shutdown(*h.server, *h.router, h.engine.get(), 5000ms); });
  // The listener closes: new connections are refused.
  EXPECT_TRUE(eventually([&] { return !HttpConn(h.port()).ok(); }));
  EXPECT_EQ(h.router->phase(), Phase::draining);
  // A request on the already-open keep-alive connection: 503 + close.
  keep.send_request("GET", "/v1/models", "");
  auto r = keep.read_reply();
  EXPECT_EQ(r.status, 503);
  EXPECT_EQ(r.header("connection"), "close");
  EXPECT_EQ(body_json(r)["status"], "draining");
  // The in-flight stream runs to its end.
  std::string all;
  EXPECT_TRUE(stream.read_until("data: [DONE]", all, 5000));
  t.join();
  EXPECT_TRUE(all_done);
  EXPECT_EQ(h.engine->finished.load(), 1);
}

}  // namespace
}  // namespace kiln::server
