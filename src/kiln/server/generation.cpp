// Generation requests in flight: engine events -> text -> SSE chunks or JSON.
#include "kiln/server/generation.h"

#include <fmt/format.h>

#include <algorithm>
#include <mutex>

#include "kiln/engine/engine.h"
#include "kiln/server/request_log.h"
#include "kiln/server/server_metrics.h"
#include "kiln/server/sse.h"
#include "kiln/server/text_stream.h"
#include "kiln/tokenizer/tokenizer.h"

namespace kiln::server {

Json response_envelope(const GenerationSpec& spec, bool chunk) {
  const bool chat = spec.api == Api::chat;
  Json j;
  j["id"] = spec.id;
  j["object"] = chat ? (chunk ? "chat.completion.chunk" : "chat.completion") : "text_completion";
  j["created"] = spec.created;
  j["model"] = spec.model;
  if (chat) j["system_fingerprint"] = nullptr;
  return j;
}

const char* finish_reason_text(int r) {
  switch (engine::FinishReason(r)) {
    case engine::FinishReason::none:
      return nullptr;
    case engine::FinishReason::stop:
      return "stop";
    case engine::FinishReason::length:
      return "length";
    // Ended by the server (shutdown), not by the model: vLLM's word for it.
    case engine::FinishReason::cancelled:
      return "abort";
    case engine::FinishReason::error:
      return "error";
  }
  return "error";
}

namespace {

using Clock = std::chrono::steady_clock;
double seconds(Clock::duration d) {
  return std::chrono::duration<double>(d).count();
}

// Forwards the engine's wake-ups to the connection; outlives the job because
// the channels (shared with the engine) hold it.
struct WakeRelay {
  std::mutex mu;
  std::function<void()> fn;
  void wake() {
    std::function<void()> f;
    {
      std::lock_guard<std::mutex> lock(mu);
      f = fn;
    }
    if (f) f();
  }
  void set(std::function<void()> f) {
    std::lock_guard<std::mutex> lock(mu);
    fn = std::move(f);
  }
};

struct Choice {
  Choice(const Tokenizer& tok, std::vector<std::string> stops) : dec(tok), stop(std::move(stops)) {}
  int32_t index = 0;
  int32_t prompt = 0;
  int32_t max_tokens = 0;
  std::shared_ptr<engine::ResultChannel> ch;
  TokenTextDecoder dec;
  StopMatcher stop;
  std::string text;  // all text so far (for the JSON body and the log)
  int32_t n_tokens = 0;
  int32_t cached = -1;
  bool finished = false;
  std::string finish;
  std::string error;
  size_t chars_decoded = 0;
  Clock::time_point last_token{};
  // Logprobs: chat "content" entries, or the legacy completions arrays.
  Json lp_content = Json::array();
  Json lp_tokens = Json::array(), lp_token_logprobs = Json::array(), lp_top = Json::array(),
       lp_offsets = Json::array();
};

// What one poll adds to a choice: text and the logprobs of its tokens.
struct Delta {
  std::string text;
  Json lp_content = Json::array();
  Json lp_tokens = Json::array(), lp_token_logprobs = Json::array(), lp_top = Json::array(),
       lp_offsets = Json::array();
  bool has_logprobs() const { return !lp_content.empty() || !lp_tokens.empty(); }
};

Json byte_list(std::string_view s) {
  Json b = Json::array();
  for (unsigned char c : s) b.push_back(int(c));
  return b;
}

class GenerationJob final : public BodyProducer {
 public:
  GenerationJob(GenerationDeps deps, GenerationSpec spec, Admission::Permit permit)
      : deps_(deps),
        spec_(std::move(spec)),
        permit_(std::move(permit)),
        relay_(std::make_shared<WakeRelay>()),
        wall_time_(utc_now_iso8601()) {}

  ~GenerationJob() override {
    relay_->set(nullptr);
    if (!finalized_) cancel();
  }

  // Creates the choices and submits them; fails before anything is sent.
  std::optional<ApiError> submit(const std::vector<int32_t>& max_tokens_per_prompt) {
    const auto& g = spec_.gen;
    int32_t index = 0;
    for (size_t p = 0; p < spec_.prompts.size(); ++p) {
      for (int32_t j = 0; j < g.n; ++j, ++index) {
        auto c = std::make_unique<Choice>(deps_.tokenizer, g.stop);
        c->index = index;
        c->prompt = int32_t(p);
        c->max_tokens = max_tokens_per_prompt[p];
        c->ch = std::make_shared<engine::ResultChannel>();
        std::weak_ptr<WakeRelay> relay = relay_;
        c->ch->set_notifier([relay] {
          if (auto r = relay.lock()) r->wake();
        });
        engine::GenerationRequest req;
        req.prompt = spec_.prompts[p];
        req.sampling = g.sampling;
        req.sampling.seed = (g.seed_given ? g.sampling.seed : spec_.random_seed) + uint64_t(index);
        req.max_tokens = c->max_tokens;
        req.n_top_logprobs = g.n_top_logprobs;
        req.arrival = spec_.arrival;
        Status st = deps_.engine.submit(std::move(req), c->ch);
        if (!st.ok()) {
          for (auto& prev : choices_) prev->ch->cancel();
          finalized_ = true;  // nothing ran; the route counts the 4xx
          return ApiError{400, st.message(), "invalid_request_error", "", ""};
        }
        choices_.push_back(std::move(c));
      }
    }
    return std::nullopt;
  }

  bool streaming() const override { return spec_.gen.stream; }
  int status() const override { return status_; }
  void set_waker(std::function<void()> wake) override { relay_->set(std::move(wake)); }

  void cancel() override {
    if (finalized_) return;
    for (auto& c : choices_)
      if (!c->finished) c->ch->cancel();
    deps_.metrics.cancelled.inc();
    finalize(499);  // nginx's "client closed request", for the log only
  }

  Poll poll(std::string& out) override {
    if (finalized_) return Poll::done;
    const bool chat = spec_.api == Api::chat;
    if (!started_) {
      started_ = true;
      if (streaming() && chat) {
        for (auto& c : choices_) {
          Json delta = {{"role", "assistant"}, {"content", ""}};
          out += sse_event(chunk(*c, std::move(delta), nullptr, nullptr));
        }
      }
    }
    std::vector<engine::TokenEvent> events;
    bool all_done = true;
    for (auto& cp : choices_) {
      Choice& c = *cp;
      if (c.finished) continue;
      events.clear();
      c.ch->drain(events);
      Delta d;
      for (auto& ev : events) {
        process(c, ev, d);
        if (c.finished) break;
      }
      if (streaming()) emit_stream(c, d, out);
      if (!c.finished) all_done = false;
    }
    if (!all_done) return Poll::pending;

    const bool failed = std::any_of(choices_.begin(), choices_.end(),
                                    [](const auto& c) { return c->finish == "error"; });
    if (streaming()) {
      if (spec_.gen.include_usage) {
        Json u;
        u["id"] = spec_.id;
        u["object"] = chat ? "chat.completion.chunk" : "text_completion";
        u["created"] = spec_.created;
        u["model"] = spec_.model;
        u["choices"] = Json::array();
        u["usage"] = usage();
        out += sse_event(u);
      }
      out += sse_done();
      finalize(200);
    } else if (failed) {
      std::string msg;
      for (auto& c : choices_)
        if (c->finish == "error") msg = c->error;
      body_ = error_body({500, "generation failed in the engine: " + msg, "server_error", "", ""});
      out += body_;
      finalize(500);
    } else {
      out += final_body();
      finalize(200);
    }
    return Poll::done;
  }

 private:
  void process(Choice& c, const engine::TokenEvent& ev, Delta& d) {
    const auto now = Clock::now();
    if (c.cached < 0 && ev.cached_prompt_tokens >= 0) c.cached = ev.cached_prompt_tokens;
    if (ev.token >= 0) {
      ++c.n_tokens;
      if (!first_token_seen_) {
        first_token_seen_ = true;
        ttft_s_ = seconds(now - spec_.arrival);
        deps_.metrics.ttft.observe(ttft_s_);
      } else if (c.n_tokens > 1) {
        deps_.metrics.inter_token.observe(seconds(now - c.last_token));
      }
      c.last_token = now;
      const bool eog = ev.finish == engine::FinishReason::stop && deps_.tokenizer.is_eog(ev.token);
      const std::string piece = eog ? std::string() : c.dec.push(ev.token);
      if (ev.logprobs && spec_.gen.n_top_logprobs >= 0) add_logprobs(c, *ev.logprobs, d);
      c.chars_decoded += utf8_length(piece);
      auto o = c.stop.push(piece);
      d.text += o.text;
      c.text += o.text;
      if (o.stopped) {
        c.finished = true;
        c.finish = "stop";
        c.ch->cancel();  // the engine frees the sequence within a step
        return;
      }
    }
    if (ev.finish != engine::FinishReason::none) {
      auto o = c.stop.push(c.dec.flush());
      std::string tail = o.text;
      if (!o.stopped) tail += c.stop.flush();
      d.text += tail;
      c.text += tail;
      c.finished = true;
      c.finish = o.stopped ? "stop" : finish_reason_text(int(ev.finish));
      c.error = ev.error;
    }
  }

  void add_logprobs(Choice& c, const engine::Logprobs& lp, Delta& d) {
    auto token_str = [&](int32_t id) {
      return utf8_sanitize(std::string(deps_.tokenizer.token_to_piece(id)));
    };
    if (spec_.api == Api::chat) {
      Json e;
      const std::string& raw = deps_.tokenizer.token_to_piece(lp.chosen.id);
      e["token"] = utf8_sanitize(raw);
      e["logprob"] = lp.chosen.logprob;
      e["bytes"] = byte_list(raw);
      e["top_logprobs"] = Json::array();
      for (const auto& t : lp.top) {
        const std::string& r = deps_.tokenizer.token_to_piece(t.id);
        e["top_logprobs"].push_back(
            {{"token", utf8_sanitize(r)}, {"logprob", t.logprob}, {"bytes", byte_list(r)}});
      }
      d.lp_content.push_back(e);
      c.lp_content.push_back(std::move(e));
    } else {
      Json top = Json::object();
      for (const auto& t : lp.top) top[token_str(t.id)] = t.logprob;
      const std::string tok = token_str(lp.chosen.id);
      d.lp_tokens.push_back(tok);
      d.lp_token_logprobs.push_back(lp.chosen.logprob);
      d.lp_top.push_back(top);
      d.lp_offsets.push_back(c.chars_decoded);
      c.lp_tokens.push_back(tok);
      c.lp_token_logprobs.push_back(lp.chosen.logprob);
      c.lp_top.push_back(std::move(top));
      c.lp_offsets.push_back(c.chars_decoded);
    }
  }

  Json logprobs_json(const Json& content, const Json& tokens, const Json& token_lps,
                     const Json& top, const Json& offsets) const {
    if (spec_.gen.n_top_logprobs < 0) return nullptr;
    if (spec_.api == Api::chat) return {{"content", content}, {"refusal", nullptr}};
    return {{"tokens", tokens},
            {"token_logprobs", token_lps},
            {"top_logprobs", top},
            {"text_offset", offsets}};
  }

  // A streamed chunk for one choice. chat: `delta`; completions: `text`.
  Json chunk(const Choice& c, Json delta_or_text, Json logprobs, const char* finish) const {
    const bool chat = spec_.api == Api::chat;
    Json j = response_envelope(spec_, /*chunk=*/true);
    Json ch;
    ch["index"] = c.index;
    ch[chat ? "delta" : "text"] = std::move(delta_or_text);
    ch["logprobs"] = std::move(logprobs);
    ch["finish_reason"] = finish ? Json(finish) : Json(nullptr);
    j["choices"] = Json::array({std::move(ch)});
    if (spec_.gen.include_usage) j["usage"] = nullptr;
    return j;
  }

  void emit_stream(const Choice& c, const Delta& d, std::string& out) {
    const bool chat = spec_.api == Api::chat;
    if (!d.text.empty() || d.has_logprobs()) {
      Json lp =
          logprobs_json(d.lp_content, d.lp_tokens, d.lp_token_logprobs, d.lp_top, d.lp_offsets);
      Json body = chat ? Json{{"content", d.text}} : Json(d.text);
      out += sse_event(chunk(c, std::move(body), std::move(lp), nullptr));
    }
    if (c.finished) {
      if (c.finish == "error") {
        out += sse_event(Json::parse(error_body(
            {500, "generation failed in the engine: " + c.error, "server_error", "", ""})));
      }
      out += sse_event(chunk(c, chat ? Json::object() : Json(""), nullptr, c.finish.c_str()));
    }
  }

  Json usage() const {
    int64_t prompt = 0, completion = 0, cached = 0;
    std::vector<int32_t> cached_per_prompt(spec_.prompts.size(), 0);
    for (size_t p = 0; p < spec_.prompts.size(); ++p) prompt += int64_t(spec_.prompts[p].size());
    for (const auto& c : choices_) {
      completion += c->n_tokens;
      cached_per_prompt[size_t(c->prompt)] =
          std::max(cached_per_prompt[size_t(c->prompt)], std::max(0, c->cached));
    }
    for (int32_t x : cached_per_prompt) cached += x;
    Json u;
    u["prompt_tokens"] = prompt;
    u["completion_tokens"] = completion;
    u["total_tokens"] = prompt + completion;
    u["prompt_tokens_details"] = {{"cached_tokens", cached}};
    return u;
  }

  std::string final_body() const {
    const bool chat = spec_.api == Api::chat;
    Json j = response_envelope(spec_, /*chunk=*/false);
    j["choices"] = Json::array();
    for (const auto& c : choices_) {
      Json ch;
      ch["index"] = c->index;
      if (chat) {
        ch["message"] = {{"role", "assistant"}, {"content", c->text}, {"refusal", nullptr}};
      } else {
        ch["text"] = c->text;
      }
      ch["logprobs"] = logprobs_json(c->lp_content, c->lp_tokens, c->lp_token_logprobs, c->lp_top,
                                     c->lp_offsets);
      ch["finish_reason"] = c->finish;
      j["choices"].push_back(std::move(ch));
    }
    j["usage"] = usage();
    return j.dump(-1, ' ', false, Json::error_handler_t::replace);
  }

  void finalize(int status) {
    if (finalized_) return;
    finalized_ = true;
    status_ = status;
    const double duration = seconds(Clock::now() - spec_.arrival);
    const Json u = usage();
    auto& m = deps_.metrics;
    m.e2e.observe(duration);
    m.prompt_tokens.inc(double(u["prompt_tokens"].get<int64_t>()));
    m.generated_tokens.inc(double(u["completion_tokens"].get<int64_t>()));
    m.cached_tokens.inc(double(u["prompt_tokens_details"]["cached_tokens"].get<int64_t>()));
    if (spec_.prompts.size() == 1)  // cached tokens are counted per request, not per prompt
      m.preambles.record(spec_.prompts[0], u["prompt_tokens_details"]["cached_tokens"].get<int64_t>());
    if (deps_.log) {
      Json e;
      e["time"] = wall_time_;
      e["id"] = spec_.id;
      for (auto it = spec_.log_entry.begin(); it != spec_.log_entry.end(); ++it)
        e[it.key()] = it.value();
      e["prompt_tokens"] = u["prompt_tokens"];
      e["completion_tokens"] = u["completion_tokens"];
      e["cached_tokens"] = u["prompt_tokens_details"]["cached_tokens"];
      e["ttft_ms"] = first_token_seen_ ? Json(ttft_s_ * 1e3) : Json(nullptr);
      e["duration_ms"] = duration * 1e3;
      e["status"] = status;
      Json fr = Json::array();
      for (const auto& c : choices_) fr.push_back(c->finished ? Json(c->finish) : Json(nullptr));
      e["finish_reasons"] = fr;
      deps_.log->write(e);
    }
    if (status == 200 && spec_.on_complete) {
      const bool clean = std::all_of(choices_.begin(), choices_.end(), [](const auto& c) {
        return c->finished && (c->finish == "stop" || c->finish == "length");
      });
      if (clean) {
        Json rec;
        rec["api"] = spec_.api == Api::chat ? "chat" : "completions";
        rec["choices"] = Json::array();
        for (const auto& c : choices_)
          rec["choices"].push_back({{"text", c->text}, {"finish_reason", c->finish}});
        rec["prompt_tokens"] = u["prompt_tokens"];
        rec["completion_tokens"] = u["completion_tokens"];
        spec_.on_complete(rec);
      }
    }
    permit_.release();
  }

  GenerationDeps deps_;
  GenerationSpec spec_;
  Admission::Permit permit_;
  std::shared_ptr<WakeRelay> relay_;
  std::string wall_time_;
  std::vector<std::unique_ptr<Choice>> choices_;
  bool started_ = false;
  bool finalized_ = false;
  bool first_token_seen_ = false;
  double ttft_s_ = 0;
  int status_ = 200;
  std::string body_;
};

}  // namespace

std::variant<std::shared_ptr<BodyProducer>, ApiError> start_generation(GenerationDeps deps,
                                                                       GenerationSpec spec,
                                                                       Admission::Permit permit) {
  const int32_t ctx = deps.engine.config().ctx_size;
  const int32_t n_vocab = deps.tokenizer.n_vocab();
  const auto& g = spec.gen;
  std::vector<int32_t> max_tokens;
  for (const auto& p : spec.prompts) {
    if (p.empty())
      return bad_field(
          spec.prompt_param,
          fmt::format("'{}' gives no tokens; send a non-empty prompt", spec.prompt_param));
    for (int32_t id : p)
      if (id < 0 || id >= n_vocab)
        return bad_field(spec.prompt_param,
                         fmt::format("'{}' holds the token id {}, outside the vocabulary [0, {})",
                                     spec.prompt_param, id, n_vocab));
    const int32_t len = int32_t(p.size());
    if (len >= ctx)
      return bad_field(spec.prompt_param,
                       fmt::format("This model's maximum context length is {} tokens (--ctx-size), "
                                   "but the prompt has {} tokens, leaving no room to generate. "
                                   "Shorten the prompt or raise --ctx-size.",
                                   ctx, len));
    if (g.max_tokens) {
      if (int64_t(len) + *g.max_tokens > ctx)
        return bad_field(
            "max_tokens",
            fmt::format("This model's maximum context length is {} tokens (--ctx-size), "
                        "but {} prompt tokens + {} max_tokens = {}. Lower max_tokens to "
                        "at most {} or shorten the prompt.",
                        ctx, len, *g.max_tokens, int64_t(len) + *g.max_tokens, ctx - len));
      max_tokens.push_back(*g.max_tokens);
    } else {
      // OpenAI's defaults: chat generates up to the context, legacy completions 16.
      max_tokens.push_back(spec.api == Api::chat ? ctx - len : std::min(16, ctx - len));
    }
  }
  for (const auto& [id, bias] : g.sampling.logit_bias)
    if (id >= n_vocab)
      return bad_field("logit_bias", fmt::format("'logit_bias' names the token id {}, outside the "
                                                 "vocabulary [0, {})",
                                                 id, n_vocab));
  if (Status st = engine::validate(g.sampling, n_vocab); !st.ok())
    return ApiError{400, st.message(), "invalid_request_error", "", ""};

  auto job = std::make_shared<GenerationJob>(deps, std::move(spec), std::move(permit));
  if (auto e = job->submit(max_tokens)) return *e;
  return std::shared_ptr<BodyProducer>(std::move(job));
}

}  // namespace kiln::server
