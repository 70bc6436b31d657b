// Response caching at the edge: keys, partitions, replay, recording.
#include "kiln/server/response_caching.h"

#include <fmt/format.h>

#include <algorithm>

#include "kiln/cache/response_cache.h"
#include "kiln/server/openai_chat.h"
#include "kiln/server/openai_completions.h"
#include "kiln/server/request_log.h"
#include "kiln/server/sse.h"
#include "kiln/tokenizer/tokenizer.h"

namespace kiln::server {

bool deterministic(const GenerationOptions& g) {
  return g.sampling.greedy() || g.seed_given;
}

namespace {

// The sampling side of a key: what can change the tokens.
Json sampling_material(const GenerationOptions& g) {
  const auto& sp = g.sampling;
  Json s;
  s["temperature"] = sp.temperature;
  if (!sp.greedy()) {
    // Greedy takes the argmax whatever top_k/top_p/min_p keep (they all keep
    // the best token) and draws no random number: these only matter when sampling.
    s["top_k"] = sp.top_k < 0 ? 0 : sp.top_k;
    s["top_p"] = sp.top_p;
    s["min_p"] = sp.min_p;
    s["seed"] = g.seed_given ? Json(sp.seed) : Json(nullptr);
  }
  s["repetition_penalty"] = sp.repetition_penalty;
  s["penalty_last_n"] = sp.repetition_penalty == 1.0f ? 0 : sp.penalty_last_n;
  s["presence_penalty"] = sp.presence_penalty;
  s["frequency_penalty"] = sp.frequency_penalty;
  auto bias = sp.logit_bias;
  std::sort(bias.begin(), bias.end());
  s["logit_bias"] = Json::array();
  for (const auto& [id, b] : bias) s["logit_bias"].push_back({id, b});
  s["ignore_eos"] = sp.ignore_eos;
  s["max_tokens"] = g.max_tokens ? Json(*g.max_tokens) : Json(nullptr);
  s["stop"] = g.stop;
  s["n"] = g.n;
  return s;
}

}  // namespace

Json exact_key_material(const std::string& fingerprint, Api api,
                        const std::vector<std::vector<int32_t>>& prompts,
                        const GenerationOptions& g) {
  Json k;
  k["v"] = 1;
  k["fp"] = fingerprint;
  k["api"] = api == Api::chat ? "chat" : "completions";
  k["prompts"] = prompts;
  k["sampling"] = sampling_material(g);
  return k;
}

std::string exact_key(const std::string& fingerprint, Api api,
                      const std::vector<std::vector<int32_t>>& prompts,
                      const GenerationOptions& g) {
  return cache::hash_hex(exact_key_material(fingerprint, api, prompts, g).dump());
}

std::string semantic_partition(const std::string& fingerprint, const std::string& embedder_id,
                               const ChatView& chat, const GenerationOptions& g) {
  Json p;
  p["v"] = 1;
  p["fp"] = fingerprint;
  p["embedder"] = embedder_id;
  Json before = Json::array();
  for (size_t i = 0; i + 1 < chat.messages.size(); ++i) before.push_back(chat.messages[i]);
  p["before"] = std::move(before);
  p["tools"] = chat.tools;
  p["vars"] = chat.template_vars;
  p["add_generation_prompt"] = chat.add_generation_prompt;
  p["sampling"] = sampling_material(g);
  return cache::hash_hex(p.dump(-1, ' ', false, Json::error_handler_t::replace));
}

Json make_record(Api api, const std::vector<std::pair<std::string, std::string>>& texts_and_finish,
                 int64_t prompt_tokens, int64_t completion_tokens) {
  Json rec;
  rec["api"] = api == Api::chat ? "chat" : "completions";
  rec["choices"] = Json::array();
  for (const auto& [text, finish] : texts_and_finish)
    rec["choices"].push_back({{"text", text}, {"finish_reason", finish}});
  rec["prompt_tokens"] = prompt_tokens;
  rec["completion_tokens"] = completion_tokens;
  return rec;
}

bool seed_response(const CacheContext& ctx, Api api,
                   const std::vector<std::vector<int32_t>>& prompts, const GenerationOptions& g,
                   const Json& record) {
  if (!ctx.cache) return false;
  return ctx.cache->seed_exact(exact_key(ctx.fingerprint, api, prompts, g),
                               record.dump(-1, ' ', false, Json::error_handler_t::replace));
}

bool seed_from_request(const CacheContext& ctx, const Tokenizer& tokenizer, const Json& request,
                       const std::string& rendered, const Json& record, std::string* why) {
  auto fail = [&](std::string m) {
    if (why) *why = std::move(m);
    return false;
  };
  if (!ctx.cache) return fail("no response cache");
  const bool chat = request.contains("messages");
  GenerationOptions g;
  const ParseLimits limits;
  if (chat) {
    ChatRequest cr;
    if (auto e = parse_chat_request(request, limits, cr)) return fail(e->message);
    g = std::move(cr.gen);
  } else {
    CompletionRequest cr;
    if (auto e = parse_completion_request(request, limits, cr)) return fail(e->message);
    g = std::move(cr.gen);
  }
  if (!g.cache || g.n_top_logprobs >= 0 ||
      (!deterministic(g) && !ctx.cache->config().nondeterministic))
    return fail("the request is not cacheable (sampled without a seed, logprobs, or cache: false)");
  // As the routes tokenize: chat templates write their own BOS, completions get one added.
  const std::vector<std::vector<int32_t>> prompts = {
      tokenizer.encode(rendered, /*add_special=*/!chat, /*parse_special=*/true)};
  if (!seed_response(ctx, chat ? Api::chat : Api::completions, prompts, g, record))
    return fail("the cache refused the entry (too large?)");
  return true;
}

namespace {

// A cached answer sent as Server-Sent Events, in the chunk shapes a live
// stream has (role chunk, content, finish, optional usage, [DONE]), all in
// the first poll: the text is there already.
class StreamReplay final : public BodyProducer {
 public:
  explicit StreamReplay(std::string body) : body_(std::move(body)) {}
  bool streaming() const override { return true; }
  Poll poll(std::string& out) override {
    out += body_;
    body_.clear();
    return Poll::done;
  }
  void set_waker(std::function<void()>) override {}
  void cancel() override {}

 private:
  std::string body_;
};

}  // namespace

CacheDeal::CacheDeal(const CacheContext& ctx, const GenerationSpec& spec, const ChatView* chat)
    : cache_(ctx.cache) {
  const auto& g = spec.gen;
  if (!cache_ || (!cache_->exact_enabled() && !cache_->semantic_enabled())) return;  // no header
  if (!g.cache) {
    header_ = "miss; bypass=request";
    return;
  }
  // Logprobs are not recorded, so such requests can be neither served nor stored.
  if (g.n_top_logprobs >= 0) {
    header_ = "miss; bypass=logprobs";
    return;
  }
  if (!deterministic(g) && !cache_->config().nondeterministic) {
    header_ = "miss; bypass=sampled";
    return;
  }
  active_ = true;
  header_ = "miss";
  key_ = exact_key(ctx.fingerprint, spec.api, spec.prompts, g);
  if (chat && cache_->semantic_enabled() && g.n == 1 && !chat->messages.empty()) {
    const Json& last = chat->messages.back();
    if (last.value("role", "") == "user" && last.contains("content") &&
        last["content"].is_string()) {
      semantic_ = true;
      text_ = last["content"].get<std::string>();
      partition_ = semantic_partition(ctx.fingerprint, cache_->embedder_id(), *chat, g);
    }
  }
}

std::optional<HttpResponse> CacheDeal::lookup(const GenerationSpec& spec, RequestLog* log) {
  if (!active_) return std::nullopt;
  if (auto e = cache_->lookup_exact(key_)) return replay(spec, e->payload, log, "exact");
  if (!semantic_) return std::nullopt;
  // The embedding runs here, on the HTTP thread: a small encoder on one
  // short turn takes milliseconds, and the request is about to wait far
  // longer for generation if it misses.
  auto v = cache_->embed(text_);
  if (!v) {
    semantic_ = false;  // nothing to compare or store; the request still runs
    return std::nullopt;
  }
  vec_ = std::move(*v);
  if (auto hit = cache_->lookup_semantic(partition_, text_, vec_)) {
    HttpResponse r = replay(spec, hit->entry->payload, log, "semantic");
    for (auto& [k, val] : r.headers)
      if (k == kCacheHeader) val = fmt::format("semantic; similarity={:.4f}", hit->similarity);
    return r;
  }
  return std::nullopt;
}

void CacheDeal::arm(GenerationSpec& spec) {
  if (!active_) return;
  // The cache outlives every request (cmd_serve tears the server down first).
  spec.on_complete = [cache = cache_, key = key_, semantic = semantic_, partition = partition_,
                      text = text_, vec = vec_](const Json& record) {
    const std::string payload = record.dump(-1, ' ', false, Json::error_handler_t::replace);
    cache->store_exact(key, payload);
    if (semantic && !vec.empty()) cache->store_semantic(partition, text, vec, payload);
  };
}

HttpResponse CacheDeal::replay(const GenerationSpec& spec, const std::string& payload,
                               RequestLog* log, const char* how) {
  const Json rec = Json::parse(payload, nullptr, false);
  const bool chat = spec.api == Api::chat;
  const auto& g = spec.gen;
  int64_t prompt_tokens = 0;
  for (const auto& p : spec.prompts) prompt_tokens += int64_t(p.size());
  const int64_t completion_tokens = rec.value("completion_tokens", int64_t(0));
  Json usage;
  usage["prompt_tokens"] = prompt_tokens;
  usage["completion_tokens"] = completion_tokens;
  usage["total_tokens"] = prompt_tokens + completion_tokens;
  // The whole prompt was served from the cache.
  usage["prompt_tokens_details"] = {{"cached_tokens", prompt_tokens}};
  const Json choices = rec.contains("choices") ? rec["choices"] : Json::array();

  HttpResponse r;
  Json fr = Json::array();
  if (!g.stream) {
    Json j = response_envelope(spec, /*chunk=*/false);
    j["choices"] = Json::array();
    for (size_t i = 0; i < choices.size(); ++i) {
      Json ch;
      ch["index"] = int(i);
      const std::string text = choices[i].value("text", "");
      if (chat)
        ch["message"] = {{"role", "assistant"}, {"content", text}, {"refusal", nullptr}};
      else
        ch["text"] = text;
      ch["logprobs"] = nullptr;
      ch["finish_reason"] = choices[i].value("finish_reason", "stop");
      fr.push_back(ch["finish_reason"]);
      j["choices"].push_back(std::move(ch));
    }
    j["usage"] = usage;
    r = HttpResponse::json(200, j.dump(-1, ' ', false, Json::error_handler_t::replace));
  } else {
    auto chunk = [&](size_t index, Json body, Json finish) {
      Json j = response_envelope(spec, /*chunk=*/true);
      Json ch;
      ch["index"] = int(index);
      ch[chat ? "delta" : "text"] = std::move(body);
      ch["logprobs"] = nullptr;
      ch["finish_reason"] = std::move(finish);
      j["choices"] = Json::array({std::move(ch)});
      if (g.include_usage) j["usage"] = nullptr;
      return sse_event(j);
    };
    std::string body;
    for (size_t i = 0; i < choices.size(); ++i) {
      const std::string text = choices[i].value("text", "");
      const std::string finish = choices[i].value("finish_reason", "stop");
      fr.push_back(finish);
      if (chat) body += chunk(i, {{"role", "assistant"}, {"content", ""}}, nullptr);
      if (!text.empty()) body += chunk(i, chat ? Json{{"content", text}} : Json(text), nullptr);
      body += chunk(i, chat ? Json::object() : Json(""), finish);
    }
    if (g.include_usage) {
      Json u;
      u["id"] = spec.id;
      u["object"] = chat ? "chat.completion.chunk" : "text_completion";
      u["created"] = spec.created;
      u["model"] = spec.model;
      u["choices"] = Json::array();
      u["usage"] = usage;
      body += sse_event(u);
    }
    body += sse_done();
    r.producer = std::make_shared<StreamReplay>(std::move(body));
    r.content_type = "text/event-stream";
  }
  r.headers.emplace_back(kCacheHeader, how);
  if (log) {
    Json e;
    e["time"] = utc_now_iso8601();
    e["id"] = spec.id;
    for (auto it = spec.log_entry.begin(); it != spec.log_entry.end(); ++it)
      e[it.key()] = it.value();
    e["prompt_tokens"] = prompt_tokens;
    e["completion_tokens"] = completion_tokens;
    e["cached_tokens"] = prompt_tokens;
    e["ttft_ms"] = nullptr;
    e["duration_ms"] =
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - spec.arrival)
            .count();
    e["status"] = 200;
    e["finish_reasons"] = fr;
    e["cache"] = how;
    log->write(e);
  }
  return r;
}

}  // namespace kiln::server
