// The request handler: a pure function from an HttpRequest to an
// HttpResponse (plus the producers it starts), with no sockets in sight, so
// every route, status and error can be tested without a network.
#pragma once

#include <atomic>
#include <cstdint>
#include <mutex>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include "kiln/server/admission.h"
#include "kiln/server/engine_hooks.h"
#include "kiln/server/http_types.h"
#include "kiln/server/openai_common.h"
#include "kiln/server/response_caching.h"
#include "kiln/server/server_config.h"

namespace kiln {
class KnownPrefixes;
class Tokenizer;
namespace engine {
class Engine;
}
}  // namespace kiln

namespace kiln::server {

class ServerMetrics;
class RequestLog;

// What /health/ready reports. The port opens in `loading`.
enum class Phase : int { loading, warming, ready, draining };
const char* phase_name(Phase p);

class Router {
 public:
  Router(const ServerConfig& config, ServerMetrics& metrics, Admission& admission,
         RequestLog* log = nullptr);

  // The model side, once loaded; call before set_phase(ready). Everything
  // must outlive the router. `embeddings` may be null (then 501).
  void attach(engine::Engine* engine, const Tokenizer* tokenizer, ChatRenderer chat,
              EmbeddingEngine* embeddings);
  // --embedding-model: answers /v1/embeddings requests that name it and is
  // listed by /v1/models. Call before set_phase(ready); must outlive the router.
  void attach_embedding_model(EmbeddingModel m) { embedding_model_ = std::move(m); }
  // The response caches (response_caching.h); ctx.cache null: none. Call
  // before set_phase(ready); the cache must outlive the router.
  void attach_cache(CacheContext ctx) { cache_ = std::move(ctx); }
  // Texts prompts often start with (a baked artifact's warm prompts), whose
  // tokens the generation endpoints reuse. Null: none. Call before
  // set_phase(ready); must outlive the router.
  void attach_known_prefixes(const KnownPrefixes* k) { known_prefixes_ = k; }
  // What seeding needs (seed_response in response_caching.h): the same store
  // and fingerprint the routes key requests with.
  const CacheContext& cache_context() const { return cache_; }
  void set_phase(Phase p);
  Phase phase() const { return phase_.load(std::memory_order_acquire); }

  // Thread-safe; called by the connection coroutines.
  HttpResponse handle(const HttpRequest& req);

  // The answer to a request arriving on an open connection while draining.
  static HttpResponse draining_response();

  ParseLimits& limits() { return limits_; }

 private:
  HttpResponse route(const HttpRequest& req);
  HttpResponse chat_completions(const HttpRequest& req);
  HttpResponse completions(const HttpRequest& req);
  // Both generation endpoints end here: answer from the response cache, or
  // start the generation (armed to fill the cache) and say what happened.
  HttpResponse generate(GenerationSpec spec, Admission::Permit permit, const ChatView* chat);
  HttpResponse embeddings(const HttpRequest& req);
  HttpResponse tokenize(const HttpRequest& req);
  HttpResponse detokenize(const HttpRequest& req);
  HttpResponse apply_template(const HttpRequest& req);
  HttpResponse models();
  HttpResponse health_ready();

  bool authorized(const HttpRequest& req) const;
  // Parses the body as a JSON object; false with `err` set otherwise.
  bool parse_body(const HttpRequest& req, Json& out, HttpResponse& err) const;
  // 503 unless the model can serve.
  bool model_ready(HttpResponse& err) const;
  bool admit(Admission::Permit& permit, HttpResponse& err);
  std::string new_id(const char* prefix);
  uint64_t random_seed();
  void log_rejection(const std::string& endpoint, const HttpResponse& r);

  const ServerConfig& config_;
  ServerMetrics& metrics_;
  Admission& admission_;
  RequestLog* log_;
  ParseLimits limits_;

  std::atomic<Phase> phase_{Phase::loading};
  engine::Engine* engine_ = nullptr;
  const Tokenizer* tokenizer_ = nullptr;
  ChatRenderer chat_;
  EmbeddingEngine* embeddings_ = nullptr;
  EmbeddingModel embedding_model_;  // engine null: none
  CacheContext cache_;              // cache null: no response caches
  const KnownPrefixes* known_prefixes_ = nullptr;
  // Tokens of a prompt (known prefixes reused when there are some).
  std::vector<int32_t> encode_prompt(std::string_view text, bool add_special) const;
  int64_t created_ = 0;

  std::mutex rng_mu_;
  std::mt19937_64 rng_;
};

// JSON nesting depth of `body` (brackets outside strings), stopping early
// once it exceeds `limit`: checked before parsing so a hostile body cannot
// make the parser build a huge tree.
int json_depth(std::string_view body, int limit);

}  // namespace kiln::server
