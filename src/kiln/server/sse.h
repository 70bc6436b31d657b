// Server-Sent Events framing for streamed completions: one `data: <json>`
// event per chunk, a blank line after each, and `data: [DONE]` at the end
// (what the OpenAI SDKs wait for).
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

namespace kiln::server {

// `data: <payload>\n\n`; a payload with newlines becomes several data lines.
std::string sse_data(std::string_view payload);
// The JSON compact on one line (invalid UTF-8 replaced).
std::string sse_event(const nlohmann::ordered_json& j);
inline std::string sse_done() {
  return "data: [DONE]\n\n";
}

}  // namespace kiln::server
