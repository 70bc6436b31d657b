// SSE framing and OpenAI chunk classification for the load generator.
#include "kiln/loadtest/sse.h"

#include <nlohmann/json.hpp>

namespace kiln::loadtest {

void SseParser::on_line(std::string_view line, const EventSink& sink) {
  if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
  if (line.empty()) {  // blank line: the event ends
    if (has_data_) sink(data_);
    data_.clear();
    has_data_ = false;
    return;
  }
  if (line.front() == ':') return;  // comment
  std::string_view field = line, value;
  const size_t c = line.find(':');
  if (c != std::string_view::npos) {
    field = line.substr(0, c);
    value = line.substr(c + 1);
    if (!value.empty() && value.front() == ' ') value.remove_prefix(1);
  }
  if (field != "data") return;  // event:, id:, retry: carry nothing we measure
  if (has_data_) data_ += '\n';
  data_.append(value);
  has_data_ = true;
}

void SseParser::feed(std::string_view bytes, const EventSink& sink) {
  while (!bytes.empty()) {
    const size_t nl = bytes.find('\n');
    if (nl == std::string_view::npos) {
      partial_.append(bytes);
      return;
    }
    if (partial_.empty()) {
      on_line(bytes.substr(0, nl), sink);
    } else {
      partial_.append(bytes.substr(0, nl));
      on_line(partial_, sink);
      partial_.clear();
    }
    bytes.remove_prefix(nl + 1);
  }
}

namespace {

// Position just after `"key":` (whitespace allowed around the colon), or npos.
// A key found this way is a real key: inside a JSON string a quote is
// escaped, so `"key"` followed by ':' cannot occur in string content.
size_t after_key(std::string_view s, std::string_view quoted_key) {
  size_t from = 0;
  for (;;) {
    const size_t k = s.find(quoted_key, from);
    if (k == std::string_view::npos) return k;
    size_t p = k + quoted_key.size();
    while (p < s.size() && (s[p] == ' ' || s[p] == '\t' || s[p] == '\n' || s[p] == '\r')) ++p;
    if (p < s.size() && s[p] == ':') {
      ++p;
      while (p < s.size() && (s[p] == ' ' || s[p] == '\t' || s[p] == '\n' || s[p] == '\r')) ++p;
      return p;
    }
    from = k + 1;
  }
}

// `"key": "<at least one character>"`.
bool non_empty_string_value(std::string_view s, std::string_view quoted_key) {
  const size_t p = after_key(s, quoted_key);
  return p != std::string_view::npos && p + 1 < s.size() && s[p] == '"' && s[p + 1] != '"';
}

}  // namespace

StreamEvent classify_event(std::string_view data, bool* also_token) {
  StreamEvent ev;
  if (also_token) *also_token = false;
  if (data == "[DONE]") {
    ev.kind = StreamEvent::Kind::done;
    return ev;
  }
  const bool token =
      non_empty_string_value(data, "\"text\"") || non_empty_string_value(data, "\"content\"");
  const size_t u = after_key(data, "\"usage\"");
  const bool has_usage = u != std::string_view::npos && u < data.size() && data[u] == '{';
  const size_t e = after_key(data, "\"error\"");
  const bool has_error = e != std::string_view::npos && e < data.size() && data[e] != 'n';
  if (!has_usage && !has_error) {
    ev.kind = token ? StreamEvent::Kind::token : StreamEvent::Kind::other;
    return ev;
  }
  const auto j = nlohmann::json::parse(data, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    ev.kind = token ? StreamEvent::Kind::token : StreamEvent::Kind::other;
    return ev;
  }
  if (has_error) {
    ev.kind = StreamEvent::Kind::error;
    const auto& err = j["error"];
    if (err.is_object() && err.contains("message") && err["message"].is_string())
      ev.error = err["message"].get<std::string>();
    else
      ev.error = err.dump();
    return ev;
  }
  ev.kind = StreamEvent::Kind::usage;
  if (also_token) *also_token = token;
  const auto& us = j["usage"];
  auto get_int = [](const nlohmann::json& o, const char* k) -> int64_t {
    auto it = o.find(k);
    return it != o.end() && it->is_number_integer() ? it->get<int64_t>() : -1;
  };
  ev.prompt_tokens = get_int(us, "prompt_tokens");
  ev.completion_tokens = get_int(us, "completion_tokens");
  auto d = us.find("prompt_tokens_details");
  if (d != us.end() && d->is_object()) ev.cached_tokens = get_int(*d, "cached_tokens");
  return ev;
}

}  // namespace kiln::loadtest
