// POST /v1/chat/completions (and /apply-template): the request in native form.
#pragma once

#include "kiln/server/openai_common.h"

namespace kiln::server {

struct ChatRequest {
  std::string model;
  Json messages = Json::array();  // validated; text-part lists joined into strings
  Json tools;                     // null when absent
  bool add_generation_prompt = true;
  Json template_vars = Json::object();  // chat_template_kwargs (e.g. enable_thinking)
  GenerationOptions gen;
};

std::optional<ApiError> parse_chat_request(const Json& body, const ParseLimits& limits,
                                           ChatRequest& out);

// `messages`: a non-empty list of {role, content, ...}. Content may be a
// string, null (assistant turns with tool_calls) or a list of text parts,
// which is joined with "\n" (templates expect strings). Other keys
// (name, tool_calls, tool_call_id, ...) pass through unchanged.
std::optional<ApiError> parse_messages(const Json& v, Json& out);

// `tools`: a list of objects, passed to the template as given.
std::optional<ApiError> parse_tools(const Json& body, Json& out);

}  // namespace kiln::server
