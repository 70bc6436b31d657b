// An in-process kiln edge (Router + scripted FakeEngine, no sockets) with a
// response cache attached, for the response-cache tests: each harness is one
// "instance"; two harnesses on one Redis are two instances sharing it.
#pragma once

#include <gtest/gtest.h>

#include <chrono>
#include <map>
#include <thread>

#include "common/fake_engine.h"
#include "common/paths.h"
#include "kiln/cache/response_cache.h"
#include "kiln/core/assert.h"
#include "kiln/gguf/gguf.h"
#include "kiln/server/routes.h"
#include "kiln/server/server_metrics.h"
#include "kiln/tokenizer/tokenizer.h"

namespace kiln::test {

inline const Tokenizer& cache_test_vocab() {
  static const Tokenizer tok = [] {
    auto f = gguf::File::open(testdata("vocab/ggml-vocab-llama-bpe.gguf"));
    KILN_ASSERT(f.ok());
    auto t = Tokenizer::from_gguf(**f);
    KILN_ASSERT(t.ok());
    return *t;
  }();
  return tok;
}

// A chat template of the simplest kind: enough for keys and partitions.
inline Result<std::string> cache_test_template(const server::ChatRenderInput& in) {
  std::string s;
  for (const auto& m : in.messages)
    s += "<" + m["role"].get<std::string>() + ">" +
         (m["content"].is_string() ? m["content"].get<std::string>() : "") + "\n";
  if (in.add_generation_prompt) s += "<assistant>";
  return s;
}

struct CacheReply {
  int status = 0;
  std::map<std::string, std::string> headers;
  std::string body;
  bool streamed = false;
  std::string cache() const {
    auto it = headers.find(server::kCacheHeader);
    return it == headers.end() ? "" : it->second;
  }
};

class CacheRouter {
 public:
  // The script: every request generates `reply` (then EOS).
  CacheRouter(cache::ResponseCache* cache, const std::string& reply = " Paris is the capital.",
              const std::string& fingerprint = "test-model-fp") {
    cfg_.max_concurrency = 16;
    cfg_.model_id = "toy";
    admission_ = std::make_unique<server::Admission>(cfg_.max_concurrency);
    router_ = std::make_unique<server::Router>(cfg_, metrics_, *admission_, nullptr);
    engine::EngineConfig ec;
    ec.ctx_size = 256;
    ec.n_parallel = 4;
    script_ = cache_test_vocab().encode(reply, false, false);
    engine_ = std::make_unique<FakeEngine>(ec, cache_test_vocab().eos_id(), [this](const auto&) {
      return FakeEngine::Script{script_, true};
    });
    engine_->step_ms = 1;
    engine_->start();
    router_->attach(engine_.get(), &cache_test_vocab(), cache_test_template, engine_.get());
    if (cache) router_->attach_cache({cache, fingerprint});
    router_->set_phase(server::Phase::ready);
  }
  ~CacheRouter() { engine_->stop(); }

  // Runs one request to the end, driving a producer the way a connection does.
  CacheReply post(const std::string& path, const std::string& body) {
    server::HttpRequest req;
    req.method = "POST";
    req.target = path;
    req.body = body;
    server::HttpResponse r = router_->handle(req);
    CacheReply out;
    for (const auto& [k, v] : r.headers) out.headers[k] = v;
    if (!r.producer) {
      out.status = r.status;
      out.body = r.body;
      return out;
    }
    out.streamed = r.producer->streaming();
    r.producer->set_waker([] {});
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (r.producer->poll(out.body) != server::BodyProducer::Poll::done) {
      if (std::chrono::steady_clock::now() > deadline) {
        ADD_FAILURE() << "the request did not finish";
        r.producer->cancel();
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    out.status = r.producer->status();
    return out;
  }

  size_t engine_requests() { return engine_->submitted().size(); }
  server::ServerMetrics& metrics() { return metrics_; }

 private:
  server::ServerConfig cfg_;
  server::ServerMetrics metrics_;
  std::unique_ptr<server::Admission> admission_;
  std::unique_ptr<server::Router> router_;
  std::vector<int32_t> script_;
  std::unique_ptr<FakeEngine> engine_;
};

}  // namespace kiln::test
