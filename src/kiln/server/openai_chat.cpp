// Parsing of chat completion requests: messages, tools, template variables.
#include "kiln/server/openai_chat.h"

#include <fmt/format.h>

namespace kiln::server {

std::optional<ApiError> parse_messages(const Json& v, Json& out) {
  if (!v.is_array())
    return bad_field("messages", "'messages' must be a list of messages, got " + json_type_name(v));
  if (v.empty()) return bad_field("messages", "'messages' must hold at least one message");
  out = Json::array();
  for (size_t i = 0; i < v.size(); ++i) {
    const Json& m = v[i];
    const std::string at = fmt::format("messages[{}]", i);
    if (!m.is_object())
      return bad_field(at, fmt::format("'{}' must be an object, got {}", at, json_type_name(m)));
    auto role = m.find("role");
    if (role == m.end() || !role->is_string())
      return bad_field(at + ".role", fmt::format("'{}.role' must be a string", at));
    const std::string& r = role->get_ref<const std::string&>();
    if (r != "system" && r != "user" && r != "assistant" && r != "tool" && r != "developer" &&
        r != "function")
      return bad_field(at + ".role",
                       fmt::format("'{}.role' must be one of system, developer, user, assistant, "
                                   "tool; got \"{}\"",
                                   at, r));
    Json msg = m;
    auto content = m.find("content");
    const bool has_tool_calls = m.contains("tool_calls") && !m["tool_calls"].is_null();
    if (content == m.end() || content->is_null()) {
      if (r != "assistant" || !has_tool_calls)
        return bad_field(at + ".content", fmt::format("'{}.content' is missing", at));
      msg["content"] = nullptr;
    } else if (content->is_array()) {
      std::string joined;
      for (size_t j = 0; j < content->size(); ++j) {
        const Json& part = (*content)[j];
        const std::string pat = fmt::format("{}.content[{}]", at, j);
        if (!part.is_object() || !part.contains("type") || !part["type"].is_string())
          return bad_field(pat, fmt::format("'{}' must be an object with a 'type'", pat));
        if (part["type"] != "text")
          return bad_field(pat, fmt::format("'{}' has type \"{}\"; only text parts are supported",
                                            pat, part["type"].get<std::string>()));
        if (!part.contains("text") || !part["text"].is_string())
          return bad_field(pat + ".text", fmt::format("'{}.text' must be a string", pat));
        if (j) joined += '\n';
        joined += part["text"].get<std::string>();
      }
      msg["content"] = joined;
    } else if (!content->is_string()) {
      return bad_field(at + ".content",
                       fmt::format("'{}.content' must be a string or a list of text parts, got {}",
                                   at, json_type_name(*content)));
    }
    if (has_tool_calls && !m["tool_calls"].is_array())
      return bad_field(at + ".tool_calls", fmt::format("'{}.tool_calls' must be a list", at));
    out.push_back(std::move(msg));
  }
  return std::nullopt;
}

std::optional<ApiError> parse_tools(const Json& body, Json& out) {
  auto t = body.find("tools");
  if (t == body.end() || t->is_null()) return std::nullopt;
  if (!t->is_array())
    return bad_field("tools", "'tools' must be a list of tool objects, got " + json_type_name(*t));
  for (size_t i = 0; i < t->size(); ++i)
    if (!(*t)[i].is_object())
      return bad_field(fmt::format("tools[{}]", i),
                       fmt::format("'tools[{}]' must be an object", i));
  out = *t;
  return std::nullopt;
}

std::optional<ApiError> parse_chat_request(const Json& body, const ParseLimits& limits,
                                           ChatRequest& out) {
  if (!body.is_object())
    return bad_field("", "the request body must be a JSON object, got " + json_type_name(body));
  if (auto e = field::string(body, "model", out.model)) return e;
  auto m = body.find("messages");
  if (m == body.end() || m->is_null()) return bad_field("messages", "'messages' is required");
  if (auto e = parse_messages(*m, out.messages)) return e;
  if (auto e = parse_tools(body, out.tools)) return e;
  if (auto e = field::boolean(body, "add_generation_prompt", out.add_generation_prompt)) return e;
  auto kw = body.find("chat_template_kwargs");
  if (kw != body.end() && !kw->is_null()) {
    if (!kw->is_object())
      return bad_field("chat_template_kwargs", "'chat_template_kwargs' must be an object");
    out.template_vars = *kw;
  }
  return parse_generation_options(body, Api::chat, limits, out.gen);
}

}  // namespace kiln::server
