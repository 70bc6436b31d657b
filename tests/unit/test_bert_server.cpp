// /v1/embeddings with --embedding-model over real loopback HTTP: the router,
// the EmbeddingWorker thread and the BERT encoder on the tiny reference model
// (tests/data/hf/bert-tiny.gguf), beside a scripted chat engine. Requests that
// name the embedding model get its vectors (checked against Hugging Face);
// the others still go to the served model (GUIDE's table).
#include <gtest/gtest.h>

#include <cmath>
#include <nlohmann/json.hpp>

#include "common/fake_engine.h"
#include "common/http_client.h"
#include "common/paths.h"
#include "kiln/core/assert.h"
#include "kiln/embed/bert_embedder.h"
#include "kiln/gguf/gguf.h"
#include "kiln/server/embedding_worker.h"
#include "kiln/server/http_server.h"
#include "kiln/server/openai_embeddings.h"
#include "kiln/server/routes.h"
#include "kiln/server/server_metrics.h"
#include "kiln/tokenizer/tokenizer.h"

namespace kiln::server {
namespace {

const std::string kDir = test::source_dir() + "/tests/data/hf/";

const Tokenizer& chat_vocab() {
  static const Tokenizer tok = [] {
    auto f = gguf::File::open(test::testdata("vocab/ggml-vocab-llama-bpe.gguf"));
    KILN_ASSERT(f.ok());
    auto t = Tokenizer::from_gguf(**f);
    KILN_ASSERT(t.ok());
    return *t;
  }();
  return tok;
}

struct Harness {
  Harness() {
    cfg.host = "127.0.0.1";
    cfg.port = 0;
    cfg.io_threads = 2;
    cfg.max_concurrency = 8;
    cfg.model_id = "chat";
    admission = std::make_unique<Admission>(cfg.max_concurrency);
    router = std::make_unique<Router>(cfg, metrics, *admission);
    engine::EngineConfig ec;
    ec.ctx_size = 64;
    ec.n_parallel = 4;
    engine = std::make_unique<test::FakeEngine>(ec, chat_vocab().eos_id(), [](const auto&) {
      return test::FakeEngine::Script{{}, true};
    });
    engine->start();
    embed::BertEmbedderOptions eo;
    eo.n_threads = 2;
    auto e = embed::BertEmbedder::load(kDir + "bert-tiny.gguf", eo);
    KILN_ASSERT_MSG(e.ok(), e.message().c_str());
    embedder = std::move(*e);
    worker = std::make_unique<EmbeddingWorker>(
        embedder->dim(), [this](const auto& in) { return embedder->embed_tokens(in); });
    router->attach(engine.get(), &chat_vocab(), {}, engine.get());
    router->attach_embedding_model(
        {embedder->name(), worker.get(), &embedder->tokenizer(), embedder->max_tokens()});
    router->set_phase(Phase::ready);
    server = std::make_unique<HttpServer>(
        cfg, [this](const HttpRequest& r) { return router->handle(r); },
        [] { return Router::draining_response(); }, &metrics);
    auto st = server->start();
    KILN_ASSERT_MSG(st.ok(), st.message().c_str());
  }
  ~Harness() {
    server.reset();  // before the engines: connections own producers
    worker.reset();
    engine.reset();
  }
  test::HttpReply request(const std::string& method, const std::string& path,
                          const std::string& body = "") {
    test::HttpConn c(server->port());
    EXPECT_TRUE(c.ok());
    c.send_request(method, path, body, "");
    return c.read_reply(20000);
  }

  ServerConfig cfg;
  ServerMetrics metrics;
  std::unique_ptr<Admission> admission;
  std::unique_ptr<Router> router;
  std::unique_ptr<test::FakeEngine> engine;
  std::unique_ptr<embed::BertEmbedder> embedder;
  std::unique_ptr<EmbeddingWorker> worker;
  std::unique_ptr<HttpServer> server;
};

Json body_json(const test::HttpReply& r) {
  return Json::parse(r.body);
}

// The reference case of `text` (tests/data/hf/bert-tiny.embeddings.json): its
// CLS-pooled vector, the pooling bert-tiny.gguf asks for.
std::vector<double> reference_cls(const std::string& text) {
  const auto j = Json::parse(test::read_file(kDir + "bert-tiny.embeddings.json"));
  for (const auto& c : j["cases"])
    if (c["text"] == text) return c["cls"].get<std::vector<double>>();
  ADD_FAILURE() << "no reference case for " << text;
  return {};
}

double max_abs_diff(const std::vector<float>& a, const std::vector<double>& b) {
  EXPECT_EQ(a.size(), b.size());
  double m = 0;
  for (size_t i = 0; i < std::min(a.size(), b.size()); ++i)
    m = std::max(m, std::abs(double(a[i]) - b[i]));
  return m;
}

TEST(BertServer, NamedRequestsGetTheEmbeddingModel) {
  Harness h;
  const uint64_t calls = h.embedder->n_forward_calls();
  auto r = h.request("POST", "/v1/embeddings",
                     R"({"model":"bert-tiny","input":["Hello world!",
                         "The quick brown fox jumps over the lazy dog.",""]})");
  ASSERT_EQ(r.status, 200) << r.body;
  const Json j = body_json(r);
  EXPECT_EQ(j["model"], "bert-tiny");
  ASSERT_EQ(j["data"].size(), 3u);
  int i = 0;
  for (const char* text : {"Hello world!", "The quick brown fox jumps over the lazy dog.", ""}) {
    const auto v = j["data"][i]["embedding"].get<std::vector<float>>();
    EXPECT_EQ(j["data"][i]["index"], i);
    ASSERT_EQ(v.size(), 64u);
    EXPECT_LE(max_abs_diff(v, reference_cls(text)), 1e-6) << text;
    ++i;
  }
  EXPECT_EQ(j["usage"]["prompt_tokens"], 5 + 13 + 2);  // [CLS] ... [SEP] each
  // The mechanism: one batch through the worker thread and the encoder.
  EXPECT_EQ(h.worker->n_completed(), 1u);
  EXPECT_EQ(h.embedder->n_forward_calls(), calls + 1);

  // base64 of the same little-endian floats.
  auto b = h.request("POST", "/v1/embeddings",
                     R"({"model":"bert-tiny","input":"Hello world!","encoding_format":"base64"})");
  ASSERT_EQ(b.status, 200) << b.body;
  const auto v0 = j["data"][0]["embedding"].get<std::vector<float>>();
  EXPECT_EQ(body_json(b)["data"][0]["embedding"],
            base64_encode({reinterpret_cast<const uint8_t*>(v0.data()), v0.size() * 4}));

  // Token ids are taken as given (the embedding model's vocabulary).
  auto t = h.request("POST", "/v1/embeddings", R"({"model":"bert-tiny","input":[2,117,118,5,3]})");
  ASSERT_EQ(t.status, 200) << t.body;
  EXPECT_EQ(body_json(t)["data"][0]["embedding"].get<std::vector<float>>(), v0);
}

TEST(BertServer, OtherRequestsStillGoToTheServedModel) {
  Harness h;
  for (const char* body : {R"({"model":"chat","input":"Hello world!"})",
                           R"({"model":"text-embedding-3-small","input":"Hello world!"})",
                           R"({"input":"Hello world!"})"}) {
    auto r = h.request("POST", "/v1/embeddings", body);
    ASSERT_EQ(r.status, 200) << r.body;
    const Json j = body_json(r);
    EXPECT_EQ(j["model"], "chat");
    EXPECT_EQ(j["data"][0]["embedding"].size(), 8u);  // the fake engine's size
  }
  EXPECT_EQ(h.worker->n_completed(), 0u);
}

TEST(BertServer, ErrorsNameTheField) {
  Harness h;
  std::string words;
  for (int i = 0; i < 70; ++i) words += "dog ";
  auto r = h.request("POST", "/v1/embeddings",
                     R"({"model":"bert-tiny","input":["Hello", ")" + words + R"("]})");
  ASSERT_EQ(r.status, 400) << r.body;
  Json j = body_json(r);
  EXPECT_EQ(j["error"]["param"], "input");
  EXPECT_NE(j["error"]["message"].get<std::string>().find("72 tokens, more than the 64 positions"),
            std::string::npos)
      << r.body;

  r = h.request("POST", "/v1/embeddings", R"({"model":"bert-tiny","input":[2,5000,3]})");
  ASSERT_EQ(r.status, 400) << r.body;
  EXPECT_NE(body_json(r)["error"]["message"].get<std::string>().find("[0, 167)"),
            std::string::npos);

  r = h.request("POST", "/v1/embeddings", R"({"model":"bert-tiny","input":"a","dimensions":8})");
  ASSERT_EQ(r.status, 400);
  EXPECT_EQ(body_json(r)["error"]["param"], "dimensions");
  EXPECT_EQ(
      h.request("POST", "/v1/embeddings", R"({"model":"bert-tiny","input":"a","dimensions":64})")
          .status,
      200);
  EXPECT_EQ(h.worker->n_completed(), 1u);  // only the valid request reached the model
}

TEST(BertServer, ModelsListsBoth) {
  Harness h;
  auto r = h.request("GET", "/v1/models");
  ASSERT_EQ(r.status, 200);
  const Json j = body_json(r);
  ASSERT_EQ(j["data"].size(), 2u);
  EXPECT_EQ(j["data"][0]["id"], "chat");
  EXPECT_EQ(j["data"][1]["id"], "bert-tiny");
  EXPECT_EQ(j["data"][1]["max_model_len"], 64);
}

TEST(BertServer, WorkerAnswersEveryJobOnceAtShutdown) {
  std::atomic<bool> release{false};
  std::atomic<int> ok{0}, errors{0};
  std::thread releaser;
  {
    EmbeddingWorker w(4, [&](const auto& in) -> Result<std::vector<std::vector<float>>> {
      while (!release) std::this_thread::sleep_for(std::chrono::milliseconds(1));
      return std::vector<std::vector<float>>(in.size(), std::vector<float>(4, 0.5f));
    });
    auto count = [&](Result<std::vector<std::vector<float>>> r) { ++(r.ok() ? ok : errors); };
    ASSERT_TRUE(w.submit_embeddings({{1}}, count).ok());
    ASSERT_TRUE(w.submit_embeddings({{2}}, count).ok());
    releaser = std::thread([&] {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
      release = true;
    });
  }  // the destructor fails what is still queued and waits for the running job
  releaser.join();
  EXPECT_EQ(ok + errors, 2);  // each job answered exactly once, none lost
}

}  // namespace
}  // namespace kiln::server
