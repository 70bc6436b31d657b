// Routes of kiln serve: OpenAI endpoints, tokenizer endpoints, health, metrics.
#include "kiln/server/routes.h"

#include <fmt/format.h>

#include <chrono>

#include "kiln/engine/engine.h"
#include "kiln/server/generation.h"
#include "kiln/server/openai_chat.h"
#include "kiln/server/openai_completions.h"
#include "kiln/server/openai_embeddings.h"
#include "kiln/server/request_log.h"
#include "kiln/server/server_metrics.h"
#include "kiln/server/text_stream.h"
#include "kiln/tokenizer/known_prefixes.h"
#include "kiln/tokenizer/tokenizer.h"

namespace kiln::server {

const char* phase_name(Phase p) {
  switch (p) {
    case Phase::loading:
      return "loading";
    case Phase::warming:
      return "warming";
    case Phase::ready:
      return "ready";
    case Phase::draining:
      return "draining";
  }
  return "unknown";
}

int json_depth(std::string_view body, int limit) {
  int depth = 0, max_depth = 0;
  bool in_string = false, escaped = false;
  for (char c : body) {
    if (in_string) {
      if (escaped)
        escaped = false;
      else if (c == '\\')
        escaped = true;
      else if (c == '"')
        in_string = false;
      continue;
    }
    if (c == '"')
      in_string = true;
    else if (c == '[' || c == '{') {
      max_depth = std::max(max_depth, ++depth);
      if (max_depth > limit) return max_depth;
    } else if (c == ']' || c == '}') {
      --depth;
    }
  }
  return max_depth;
}

Router::Router(const ServerConfig& config, ServerMetrics& metrics, Admission& admission,
               RequestLog* log)
    : config_(config),
      metrics_(metrics),
      admission_(admission),
      log_(log),
      rng_(std::random_device{}()) {
  created_ = std::chrono::duration_cast<std::chrono::seconds>(
                 std::chrono::system_clock::now().time_since_epoch())
                 .count();
}

void Router::attach(engine::Engine* engine, const Tokenizer* tokenizer, ChatRenderer chat,
                    EmbeddingEngine* embeddings) {
  engine_ = engine;
  tokenizer_ = tokenizer;
  chat_ = std::move(chat);
  embeddings_ = embeddings;
}

void Router::set_phase(Phase p) {
  phase_.store(p, std::memory_order_release);
  metrics_.ready.set(p == Phase::ready ? 1.0 : 0.0);
}

HttpResponse Router::draining_response() {
  HttpResponse r = error_response(
      {503, "kiln is shutting down; retry on another instance", "server_error", "", ""});
  r.body.pop_back();  // add the phase beside the error object
  r.body += ",\"status\":\"draining\"}";
  r.close = true;
  return r;
}

bool Router::authorized(const HttpRequest& req) const {
  if (config_.api_key.empty()) return true;
  const std::string expected = "Bearer " + config_.api_key;
  const std::string_view got = req.header("Authorization");
  // Constant-time compare: the time must not tell how much of a key matched.
  unsigned diff = unsigned(got.size() != expected.size());
  for (size_t i = 0; i < expected.size(); ++i)
    diff |= unsigned(uint8_t(expected[i]) ^ uint8_t(i < got.size() ? got[i] : 0));
  return diff == 0;
}

bool Router::parse_body(const HttpRequest& req, Json& out, HttpResponse& err) const {
  if (json_depth(req.body, config_.max_json_depth) > config_.max_json_depth) {
    err = error_response(bad_field(
        "", fmt::format("the JSON body nests deeper than {} levels", config_.max_json_depth)));
    return false;
  }
  try {
    out = Json::parse(req.body);
  } catch (const Json::parse_error& e) {
    err = error_response(bad_field("", fmt::format("the body is not valid JSON: {}", e.what())));
    return false;
  }
  if (!out.is_object()) {
    err = error_response(
        bad_field("", "the request body must be a JSON object, got " + json_type_name(out)));
    return false;
  }
  return true;
}

bool Router::model_ready(HttpResponse& err) const {
  const Phase p = phase();
  if (p == Phase::ready || p == Phase::draining) return true;
  err = error_response({503, fmt::format("the model is not ready yet (phase: {})", phase_name(p)),
                        "server_error", "", ""});
  err.headers.emplace_back("Retry-After", "1");
  return false;
}

bool Router::admit(Admission::Permit& permit, HttpResponse& err) {
  permit = admission_.try_acquire();
  if (permit) return true;
  metrics_.rejected.inc();
  err = error_response({429,
                        fmt::format("kiln is at --max-concurrency ({} requests admitted); retry "
                                    "after {} s",
                                    admission_.max_concurrency(), admission_.retry_after_s()),
                        "rate_limit_error", "", "max_concurrency"});
  err.headers.emplace_back("Retry-After", std::to_string(admission_.retry_after_s()));
  return false;
}

std::string Router::new_id(const char* prefix) {
  std::lock_guard<std::mutex> lock(rng_mu_);
  return fmt::format("{}{:016x}{:08x}", prefix, rng_(), uint32_t(rng_()));
}

uint64_t Router::random_seed() {
  std::lock_guard<std::mutex> lock(rng_mu_);
  return rng_();
}

void Router::log_rejection(const std::string& endpoint, const HttpResponse& r) {
  if (!log_ || r.producer) return;
  Json e;
  e["time"] = utc_now_iso8601();
  e["endpoint"] = endpoint;
  e["status"] = r.status;
  auto body = Json::parse(r.body, nullptr, false);
  if (body.is_object() && body.contains("error")) e["error"] = body["error"]["message"];
  log_->write(e);
}

HttpResponse Router::handle(const HttpRequest& req) {
  HttpResponse r = route(req);
  const std::string_view p = req.path();
  if (r.status >= 400 &&
      (p == "/v1/chat/completions" || p == "/v1/completions" || p == "/v1/embeddings"))
    log_rejection(std::string(p), r);
  return r;
}

HttpResponse Router::route(const HttpRequest& req) {
  const std::string_view path = req.path();
  const bool get = req.method == "GET", post = req.method == "POST";
  if (path == "/health/live") {
    if (!get) return error_response({405, "use GET", "invalid_request_error", "", ""});
    return HttpResponse::json(200, "{\"status\":\"alive\"}");
  }
  if (path == "/health/ready") {
    if (!get) return error_response({405, "use GET", "invalid_request_error", "", ""});
    return health_ready();
  }
  struct Route {
    const char* path;
    bool post;
  };
  static constexpr Route kRoutes[] = {{"/v1/chat/completions", true}, {"/v1/completions", true},
                                      {"/v1/embeddings", true},       {"/tokenize", true},
                                      {"/detokenize", true},          {"/apply-template", true},
                                      {"/v1/models", false},          {"/metrics", false}};
  const Route* found = nullptr;
  for (const auto& r : kRoutes)
    if (path == r.path) found = &r;
  if (!found)
    return error_response({404, fmt::format("no route {} {}", req.method, std::string(path)),
                           "invalid_request_error", "", "not_found"});
  if (!authorized(req))
    return error_response({401,
                           "missing or wrong API key: send the header 'Authorization: Bearer "
                           "<key>' with the key kiln was started with (--api-key / KILN_API_KEY)",
                           "invalid_request_error", "", "invalid_api_key"});
  if ((found->post && !post) || (!found->post && !get))
    return error_response(
        {405, fmt::format("use {} for {}", found->post ? "POST" : "GET", std::string(path)),
         "invalid_request_error", "", ""});
  if (path == "/metrics")
    return HttpResponse::text(200, metrics_.render(), "text/plain; version=0.0.4; charset=utf-8");
  if (path == "/v1/models") return models();
  HttpResponse err;
  if (!model_ready(err)) return err;
  if (path == "/v1/chat/completions") return chat_completions(req);
  if (path == "/v1/completions") return completions(req);
  if (path == "/v1/embeddings") return embeddings(req);
  if (path == "/tokenize") return tokenize(req);
  if (path == "/detokenize") return detokenize(req);
  return apply_template(req);
}

HttpResponse Router::health_ready() {
  const Phase p = phase();
  Json j = {{"status", phase_name(p)}};
  return HttpResponse::json(p == Phase::ready ? 200 : 503, j.dump());
}

HttpResponse Router::models() {
  Json m;
  m["id"] = config_.model_id;
  m["object"] = "model";
  m["created"] = created_;
  m["owned_by"] = "kiln";
  if (phase() == Phase::ready && engine_) m["max_model_len"] = engine_->config().ctx_size;
  Json j;
  j["object"] = "list";
  j["data"] = Json::array({m});
  if (embedding_model_.engine) {
    Json e = m;
    e["id"] = embedding_model_.id;
    e["max_model_len"] = embedding_model_.max_tokens;
    j["data"].push_back(std::move(e));
  }
  return HttpResponse::json(200, j.dump());
}

namespace {

Json params_for_log(const GenerationOptions& g) {
  Json p;
  p["max_tokens"] = g.max_tokens ? Json(*g.max_tokens) : Json(nullptr);
  p["temperature"] = g.sampling.temperature;
  p["top_p"] = g.sampling.top_p;
  p["top_k"] = g.sampling.top_k;
  p["min_p"] = g.sampling.min_p;
  p["presence_penalty"] = g.sampling.presence_penalty;
  p["frequency_penalty"] = g.sampling.frequency_penalty;
  p["seed"] = g.seed_given ? Json(int64_t(g.sampling.seed)) : Json(nullptr);
  p["stop"] = g.stop;
  p["n"] = g.n;
  p["stream"] = g.stream;
  p["logprobs"] = g.n_top_logprobs;
  p["ignore_eos"] = g.sampling.ignore_eos;
  return p;
}

HttpResponse producer_response(std::variant<std::shared_ptr<BodyProducer>, ApiError> r) {
  if (auto* e = std::get_if<ApiError>(&r)) return error_response(*e);
  HttpResponse res;
  res.producer = std::get<std::shared_ptr<BodyProducer>>(std::move(r));
  if (res.producer->streaming()) res.content_type = "text/event-stream";
  return res;
}

}  // namespace

HttpResponse Router::chat_completions(const HttpRequest& req) {
  HttpResponse err;
  Admission::Permit permit;
  if (!admit(permit, err)) return err;
  Json body;
  if (!parse_body(req, body, err)) return err;
  ChatRequest cr;
  if (auto e = parse_chat_request(body, limits_, cr)) return error_response(*e);
  if (!chat_)
    return error_response(bad_field("messages",
                                    "this model has no chat template: start kiln with "
                                    "--chat-template FILE, or use /v1/completions"));
  auto text =
      chat_(ChatRenderInput{cr.messages, cr.tools, cr.add_generation_prompt, cr.template_vars});
  if (!text) return error_response(bad_field("messages", "chat template: " + text.message()));
  GenerationSpec spec;
  spec.arrival = req.received;  // parsing, templating and tokenizing count in its latency
  spec.api = Api::chat;
  spec.id = new_id("chatcmpl-");
  spec.created = std::chrono::duration_cast<std::chrono::seconds>(
                     std::chrono::system_clock::now().time_since_epoch())
                     .count();
  spec.model = config_.model_id;
  // The template writes BOS itself where the model wants one (as transformers'
  // apply_chat_template, which tokenizes without adding special tokens).
  spec.prompts.push_back(encode_prompt(*text, /*add_special=*/false));
  spec.prompt_param = "messages";
  spec.gen = std::move(cr.gen);
  spec.random_seed = random_seed();
  spec.log_entry["endpoint"] = "/v1/chat/completions";
  spec.log_entry["model"] = cr.model;
  spec.log_entry["messages"] = cr.messages;
  spec.log_entry["params"] = params_for_log(spec.gen);
  spec.log_entry["user"] = spec.gen.user;
  const ChatView view{cr.messages, cr.tools, cr.template_vars, cr.add_generation_prompt};
  return generate(std::move(spec), std::move(permit), &view);
}

HttpResponse Router::completions(const HttpRequest& req) {
  HttpResponse err;
  Admission::Permit permit;
  if (!admit(permit, err)) return err;
  Json body;
  if (!parse_body(req, body, err)) return err;
  CompletionRequest cr;
  if (auto e = parse_completion_request(body, limits_, cr)) return error_response(*e);
  GenerationSpec spec;
  spec.arrival = req.received;  // parsing and tokenizing count in its latency
  spec.api = Api::completions;
  spec.id = new_id("cmpl-");
  spec.created = std::chrono::duration_cast<std::chrono::seconds>(
                     std::chrono::system_clock::now().time_since_epoch())
                     .count();
  spec.model = config_.model_id;
  const auto t_parsed = config_.trace_requests ? std::chrono::steady_clock::now()
                                               : std::chrono::steady_clock::time_point{};
  Json logged = Json::array();
  for (auto& p : cr.prompts) {
    if (p.is_tokens) {
      logged.push_back(p.tokens);
      spec.prompts.push_back(std::move(p.tokens));
    } else {
      logged.push_back(p.text);
      spec.prompts.push_back(encode_prompt(p.text, /*add_special=*/true));
    }
  }
  spec.gen = std::move(cr.gen);
  spec.random_seed = random_seed();
  spec.log_entry["endpoint"] = "/v1/completions";
  spec.log_entry["model"] = cr.model;
  spec.log_entry["prompt"] = logged.size() == 1 ? logged[0] : logged;
  spec.log_entry["params"] = params_for_log(spec.gen);
  spec.log_entry["user"] = spec.gen.user;
  if (!config_.trace_requests) return generate(std::move(spec), std::move(permit), nullptr);
  const auto t_tokenized = std::chrono::steady_clock::now();
  const size_t n_tokens = spec.prompts.empty() ? 0 : spec.prompts[0].size();
  HttpResponse r = generate(std::move(spec), std::move(permit), nullptr);
  auto ms = [](auto a, auto b) { return std::chrono::duration<double, std::milli>(b - a).count(); };
  fmt::print(stderr,
             "kiln edge: /v1/completions body {} B, {} tokens | parse {:.3f} tokenize+log "
             "{:.3f} cache+submit {:.3f} ms\n",
             req.body.size(), n_tokens, ms(req.received, t_parsed), ms(t_parsed, t_tokenized),
             ms(t_tokenized, std::chrono::steady_clock::now()));
  return r;
}

std::vector<int32_t> Router::encode_prompt(std::string_view text, bool add_special) const {
  // Control-token text in a prompt is parsed (templates write it).
  if (known_prefixes_) return known_prefixes_->encode(text, add_special, /*parse_special=*/true);
  return tokenizer_->encode(text, add_special, /*parse_special=*/true);
}

HttpResponse Router::generate(GenerationSpec spec, Admission::Permit permit, const ChatView* chat) {
  CacheDeal deal(cache_, spec, chat);
  if (auto hit = deal.lookup(spec, log_)) return std::move(*hit);
  deal.arm(spec);
  HttpResponse r = producer_response(start_generation({*engine_, *tokenizer_, metrics_, log_},
                                                      std::move(spec), std::move(permit)));
  if (!deal.header().empty()) r.headers.emplace_back(kCacheHeader, deal.header());
  return r;
}

HttpResponse Router::embeddings(const HttpRequest& req) {
  HttpResponse err;
  Admission::Permit permit;
  if (!admit(permit, err)) return err;
  Json body;
  if (!parse_body(req, body, err)) return err;
  EmbeddingRequest er;
  if (auto e = parse_embedding_request(body, er)) return error_response(*e);
  // --embedding-model answers the requests that name it; the served model the rest.
  const bool own = embedding_model_.engine && er.model == embedding_model_.id;
  EmbeddingEngine* target = own ? embedding_model_.engine : embeddings_;
  const Tokenizer* tok = own ? embedding_model_.tokenizer : tokenizer_;
  if (!target)
    return error_response({501,
                           "embeddings are not available: this engine build has no "
                           "embedding call yet",
                           "invalid_request_error", "", "not_implemented"});
  const int32_t n_embd = target->n_embd();
  if (er.dimensions && *er.dimensions != n_embd)
    return error_response(bad_field(
        "dimensions", fmt::format("'dimensions' must be {} (this model's embedding size) or left "
                                  "out; kiln does not truncate embeddings",
                                  n_embd)));
  const int32_t ctx = own ? embedding_model_.max_tokens : engine_->config().ctx_size;
  std::vector<std::vector<int32_t>> inputs;
  for (auto& in : er.inputs) {
    std::vector<int32_t> ids = in.is_tokens ? std::move(in.tokens)
                                            : tok->encode(in.text, /*add_special=*/true,
                                                          /*parse_special=*/false);
    if (ids.empty()) return error_response(bad_field("input", "'input' holds an empty text"));
    for (int32_t id : ids)
      if (id < 0 || id >= tok->n_vocab())
        return error_response(bad_field(
            "input", fmt::format("'input' holds the token id {}, outside the vocabulary [0, {})",
                                 id, tok->n_vocab())));
    if (int32_t(ids.size()) > ctx)
      return error_response(bad_field(
          "input", own ? fmt::format("an input has {} tokens, more than the {} positions of the "
                                     "embedding model '{}'; shorten or split it",
                                     ids.size(), ctx, embedding_model_.id)
                       : fmt::format("an input has {} tokens, more than the context of {} tokens "
                                     "(--ctx-size)",
                                     ids.size(), ctx)));
    inputs.push_back(std::move(ids));
  }
  return producer_response(start_embeddings(*target, std::move(inputs), er.base64,
                                            own ? embedding_model_.id : config_.model_id,
                                            std::move(permit)));
}

HttpResponse Router::tokenize(const HttpRequest& req) {
  HttpResponse err;
  Json body;
  if (!parse_body(req, body, err)) return err;
  std::string content;
  bool add_special = false, parse_special = true;
  auto c = body.find("content");
  if (c == body.end() || !c->is_string())
    return error_response(bad_field("content", "'content' must be a string"));
  content = c->get<std::string>();
  if (auto e = field::boolean(body, "add_special", add_special)) return error_response(*e);
  if (auto e = field::boolean(body, "parse_special", parse_special)) return error_response(*e);
  Json j;
  j["tokens"] = tokenizer_->encode(content, add_special, parse_special);
  return HttpResponse::json(200, j.dump());
}

HttpResponse Router::detokenize(const HttpRequest& req) {
  HttpResponse err;
  Json body;
  if (!parse_body(req, body, err)) return err;
  auto t = body.find("tokens");
  if (t == body.end() || !t->is_array())
    return error_response(bad_field("tokens", "'tokens' must be a list of token ids"));
  std::vector<int32_t> ids;
  for (const auto& v : *t) {
    if (!v.is_number_integer() || v.get<int64_t>() < 0 || v.get<int64_t>() >= tokenizer_->n_vocab())
      return error_response(
          bad_field("tokens", fmt::format("'tokens' must hold token ids in [0, {}), got {}",
                                          tokenizer_->n_vocab(), v.dump())));
    ids.push_back(int32_t(v.get<int64_t>()));
  }
  Json j;
  j["content"] = utf8_sanitize(tokenizer_->decode(ids));
  return HttpResponse::json(200, j.dump());
}

HttpResponse Router::apply_template(const HttpRequest& req) {
  HttpResponse err;
  Json body;
  if (!parse_body(req, body, err)) return err;
  Json messages, tools, vars = Json::object();
  auto m = body.find("messages");
  if (m == body.end()) return error_response(bad_field("messages", "'messages' is required"));
  if (auto e = parse_messages(*m, messages)) return error_response(*e);
  if (auto e = parse_tools(body, tools)) return error_response(*e);
  bool add_generation_prompt = true;
  if (auto e = field::boolean(body, "add_generation_prompt", add_generation_prompt))
    return error_response(*e);
  auto v = body.find("vars");
  if (v != body.end() && !v->is_null()) {
    if (!v->is_object()) return error_response(bad_field("vars", "'vars' must be an object"));
    vars = *v;
  }
  if (!chat_)
    return error_response(bad_field("messages",
                                    "this model has no chat template: start kiln "
                                    "with --chat-template FILE"));
  auto text = chat_(ChatRenderInput{messages, tools, add_generation_prompt, vars});
  if (!text) return error_response(bad_field("messages", "chat template: " + text.message()));
  Json j;
  j["prompt"] = *text;
  return HttpResponse::json(200, j.dump(-1, ' ', false, Json::error_handler_t::replace));
}

}  // namespace kiln::server
