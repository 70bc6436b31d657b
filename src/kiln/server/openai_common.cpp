// Shared OpenAI request fields: sampling, stop, n, logprobs, streaming.
#include "kiln/server/openai_common.h"

#include <fmt/format.h>

#include <cmath>
#include <limits>

namespace kiln::server {

#define KILN_TRY_FIELD(expr)         \
  do {                               \
    if (auto e_ = (expr)) return e_; \
  } while (0)

std::string json_type_name(const Json& v) {
  switch (v.type()) {
    case Json::value_t::null:
      return "null";
    case Json::value_t::boolean:
      return "a boolean";
    case Json::value_t::number_integer:
    case Json::value_t::number_unsigned:
      return "an integer";
    case Json::value_t::number_float:
      return "a number";
    case Json::value_t::string:
      return "a string";
    case Json::value_t::array:
      return "an array";
    case Json::value_t::object:
      return "an object";
    default:
      return "an unsupported value";
  }
}

namespace field {
namespace {

const Json* find(const Json& obj, const char* key) {
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return nullptr;
  return &*it;
}

ApiError wrong_type(const char* key, const char* want, const Json& got) {
  return bad_field(key, fmt::format("'{}' must be {}, got {}", key, want, json_type_name(got)));
}

}  // namespace

std::optional<ApiError> string(const Json& obj, const char* key, std::string& out) {
  const Json* v = find(obj, key);
  if (!v) return std::nullopt;
  if (!v->is_string()) return wrong_type(key, "a string", *v);
  out = v->get<std::string>();
  return std::nullopt;
}

std::optional<ApiError> boolean(const Json& obj, const char* key, bool& out) {
  const Json* v = find(obj, key);
  if (!v) return std::nullopt;
  if (!v->is_boolean()) return wrong_type(key, "a boolean", *v);
  out = v->get<bool>();
  return std::nullopt;
}

std::optional<ApiError> integer(const Json& obj, const char* key, int64_t lo, int64_t hi,
                                std::optional<int64_t>& out) {
  const Json* v = find(obj, key);
  if (!v) return std::nullopt;
  int64_t x = 0;
  bool in_range = true;
  if (v->is_number_unsigned()) {
    const uint64_t u = v->get<uint64_t>();
    in_range = u <= uint64_t(std::numeric_limits<int64_t>::max());
    x = in_range ? int64_t(u) : 0;
  } else if (v->is_number_integer()) {
    x = v->get<int64_t>();
  } else if (v->is_number_float()) {
    const double d = v->get<double>();
    if (!std::isfinite(d) || d != std::floor(d)) return wrong_type(key, "an integer", *v);
    in_range = d >= -9.2e18 && d <= 9.2e18;
    x = in_range ? int64_t(d) : 0;
  } else {
    return wrong_type(key, "an integer", *v);
  }
  if (!in_range || x < lo || x > hi)
    return bad_field(key,
                     fmt::format("'{}' must be between {} and {}, got {}", key, lo, hi, v->dump()));
  out = x;
  return std::nullopt;
}

std::optional<ApiError> number(const Json& obj, const char* key, double lo, double hi,
                               std::optional<double>& out) {
  const Json* v = find(obj, key);
  if (!v) return std::nullopt;
  if (!v->is_number()) return wrong_type(key, "a number", *v);
  const double d = v->get<double>();
  if (!std::isfinite(d) || d < lo || d > hi)
    return bad_field(key,
                     fmt::format("'{}' must be between {} and {}, got {}", key, lo, hi, v->dump()));
  out = d;
  return std::nullopt;
}

}  // namespace field

namespace {

std::optional<ApiError> parse_stop(const Json& body, const ParseLimits& limits,
                                   std::vector<std::string>& out) {
  auto it = body.find("stop");
  if (it == body.end() || it->is_null()) return std::nullopt;
  if (it->is_string()) {
    if (!it->get_ref<const std::string&>().empty()) out.push_back(it->get<std::string>());
    return std::nullopt;
  }
  if (!it->is_array())
    return bad_field("stop",
                     "'stop' must be a string or a list of strings, got " + json_type_name(*it));
  if (it->size() > size_t(limits.max_stop))
    return bad_field("stop", fmt::format("'stop' may hold at most {} strings, got {}",
                                         limits.max_stop, it->size()));
  for (const auto& s : *it) {
    if (!s.is_string())
      return bad_field("stop", "every entry of 'stop' must be a string, got " + json_type_name(s));
    if (!s.get_ref<const std::string&>().empty()) out.push_back(s.get<std::string>());
  }
  return std::nullopt;
}

std::optional<ApiError> parse_logit_bias(const Json& body, engine::SamplingParams& sp) {
  auto it = body.find("logit_bias");
  if (it == body.end() || it->is_null()) return std::nullopt;
  if (!it->is_object())
    return bad_field("logit_bias",
                     "'logit_bias' must be an object mapping token ids to "
                     "numbers, got " +
                         json_type_name(*it));
  for (auto kv = it->begin(); kv != it->end(); ++kv) {
    const std::string& k = kv.key();
    char* end = nullptr;
    const long id = std::strtol(k.c_str(), &end, 10);
    if (k.empty() || *end != '\0' || id < 0 || id > std::numeric_limits<int32_t>::max())
      return bad_field("logit_bias", "'logit_bias' keys must be token ids, got \"" + k + "\"");
    if (!kv->is_number()) return bad_field("logit_bias", "'logit_bias' values must be numbers");
    const double b = kv->get<double>();
    if (!std::isfinite(b) || b < -100 || b > 100)
      return bad_field("logit_bias", "'logit_bias' values must be between -100 and 100");
    sp.logit_bias.emplace_back(int32_t(id), float(b));
  }
  return std::nullopt;
}

}  // namespace

std::optional<ApiError> parse_generation_options(const Json& body, Api api,
                                                 const ParseLimits& limits,
                                                 GenerationOptions& out) {
  const int64_t kMaxI32 = std::numeric_limits<int32_t>::max();
  std::optional<int64_t> i;
  std::optional<double> d;

  // max_completion_tokens is the newer chat name; when both come it wins.
  KILN_TRY_FIELD(field::integer(body, "max_tokens", 1, kMaxI32, i));
  if (i) out.max_tokens = int32_t(*i);
  i.reset();
  KILN_TRY_FIELD(field::integer(body, "max_completion_tokens", 1, kMaxI32, i));
  if (i) out.max_tokens = int32_t(*i);

  auto& sp = out.sampling;
  KILN_TRY_FIELD(field::number(body, "temperature", 0.0, 2.0, d));
  if (d) sp.temperature = float(*d);
  d.reset();
  KILN_TRY_FIELD(field::number(body, "top_p", 0.0, 1.0, d));
  if (d) {
    if (*d <= 0.0) return bad_field("top_p", "'top_p' must be greater than 0 and at most 1");
    sp.top_p = float(*d);
  }
  d.reset();
  KILN_TRY_FIELD(field::number(body, "presence_penalty", -2.0, 2.0, d));
  if (d) sp.presence_penalty = float(*d);
  d.reset();
  KILN_TRY_FIELD(field::number(body, "frequency_penalty", -2.0, 2.0, d));
  if (d) sp.frequency_penalty = float(*d);
  d.reset();
  KILN_TRY_FIELD(field::number(body, "repetition_penalty", 0.0, 10.0, d));
  if (d) {
    if (*d <= 0.0)
      return bad_field("repetition_penalty", "'repetition_penalty' must be greater than 0");
    sp.repetition_penalty = float(*d);
  }
  d.reset();
  KILN_TRY_FIELD(field::number(body, "min_p", 0.0, 1.0, d));
  if (d) sp.min_p = float(*d);
  i.reset();
  KILN_TRY_FIELD(field::integer(body, "top_k", -1, kMaxI32, i));
  if (i) sp.top_k = int32_t(*i);
  KILN_TRY_FIELD(field::boolean(body, "ignore_eos", sp.ignore_eos));
  i.reset();
  KILN_TRY_FIELD(field::integer(body, "seed", std::numeric_limits<int64_t>::min(),
                                std::numeric_limits<int64_t>::max(), i));
  if (i) {
    sp.seed = uint64_t(*i);
    out.seed_given = true;
  }
  KILN_TRY_FIELD(parse_logit_bias(body, sp));
  KILN_TRY_FIELD(parse_stop(body, limits, out.stop));

  i.reset();
  KILN_TRY_FIELD(field::integer(body, "n", 1, limits.max_n, i));
  if (i) out.n = int32_t(*i);

  if (api == Api::chat) {
    bool logprobs = false;
    KILN_TRY_FIELD(field::boolean(body, "logprobs", logprobs));
    i.reset();
    KILN_TRY_FIELD(field::integer(body, "top_logprobs", 0, limits.max_top_logprobs, i));
    if (i && !logprobs)
      return bad_field("top_logprobs", "'top_logprobs' needs 'logprobs' set to true");
    if (logprobs) out.n_top_logprobs = i ? int32_t(*i) : 0;
  } else {
    i.reset();
    KILN_TRY_FIELD(field::integer(body, "logprobs", 0, limits.max_top_logprobs, i));
    if (i) out.n_top_logprobs = int32_t(*i);
  }

  KILN_TRY_FIELD(field::boolean(body, "stream", out.stream));
  auto so = body.find("stream_options");
  if (so != body.end() && !so->is_null()) {
    if (!so->is_object())
      return bad_field("stream_options",
                       "'stream_options' must be an object, got " + json_type_name(*so));
    auto iu = so->find("include_usage");
    if (iu != so->end() && !iu->is_null()) {
      if (!iu->is_boolean())
        return bad_field("stream_options.include_usage",
                         "'stream_options.include_usage' must be a boolean");
      out.include_usage = iu->get<bool>();
    }
  }
  KILN_TRY_FIELD(field::string(body, "user", out.user));
  KILN_TRY_FIELD(field::boolean(body, "cache", out.cache));
  return std::nullopt;
}

std::optional<ApiError> parse_prompt_list(const Json& v, const char* field,
                                          std::vector<PromptInput>& out) {
  auto token_of = [&](const Json& t, int32_t& id) -> std::optional<ApiError> {
    if (!t.is_number_integer() && !t.is_number_unsigned())
      return bad_field(
          field, fmt::format("'{}' token ids must be integers, got {}", field, json_type_name(t)));
    if (t.is_number_unsigned()
            ? t.get<uint64_t>() > uint64_t(std::numeric_limits<int32_t>::max())
            : (t.get<int64_t>() < 0 || t.get<int64_t>() > std::numeric_limits<int32_t>::max()))
      return bad_field(field, fmt::format("'{}' holds the token id {}, outside the vocabulary",
                                          field, t.dump()));
    id = int32_t(t.get<int64_t>());
    return std::nullopt;
  };
  if (v.is_string()) {
    out.push_back({false, v.get<std::string>(), {}});
    return std::nullopt;
  }
  const std::string want = fmt::format(
      "'{}' must be a string, a list of strings, a list of token ids or a list of token-id lists",
      field);
  if (!v.is_array()) return bad_field(field, want + ", got " + json_type_name(v));
  if (v.empty()) return bad_field(field, fmt::format("'{}' must not be empty", field));
  if (v[0].is_string()) {
    for (const auto& s : v) {
      if (!s.is_string()) return bad_field(field, want + " (the list mixes types)");
      out.push_back({false, s.get<std::string>(), {}});
    }
  } else if (v[0].is_number()) {
    PromptInput p{true, {}, {}};
    for (const auto& t : v) {
      int32_t id = 0;
      KILN_TRY_FIELD(token_of(t, id));
      p.tokens.push_back(id);
    }
    out.push_back(std::move(p));
  } else if (v[0].is_array()) {
    for (const auto& l : v) {
      if (!l.is_array()) return bad_field(field, want + " (the list mixes types)");
      if (l.empty()) return bad_field(field, fmt::format("'{}' holds an empty token list", field));
      PromptInput p{true, {}, {}};
      for (const auto& t : l) {
        int32_t id = 0;
        KILN_TRY_FIELD(token_of(t, id));
        p.tokens.push_back(id);
      }
      out.push_back(std::move(p));
    }
  } else {
    return bad_field(field, want + ", got a list of " + json_type_name(v[0]));
  }
  return std::nullopt;
}

}  // namespace kiln::server
