// Parsing of the request fields shared by /v1/chat/completions and
// /v1/completions into native form, and the typed field readers every
// OpenAI parser uses (wrong type or range -> ApiError naming the field;
// unknown fields are ignored; a JSON null counts as absent).
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "kiln/engine/sampler.h"
#include "kiln/server/api_error.h"

namespace kiln::server {

// ordered_json everywhere: messages and tools reach the chat template with
// their keys in the client's order (templates `tojson` them).
using Json = nlohmann::ordered_json;

enum class Api { chat, completions };

// Limits a parser checks that come from the server's configuration.
struct ParseLimits {
  int32_t max_n = 16;     // choices per request
  int32_t max_stop = 16;  // stop strings
  int32_t max_top_logprobs = 20;
};

// What both generation APIs ask for, in native form.
struct GenerationOptions {
  std::optional<int32_t>
      max_tokens;  // max_tokens / max_completion_tokens; nullopt: up to the context
  engine::SamplingParams sampling;
  bool seed_given = false;        // sampling.seed is the client's
  std::vector<std::string> stop;  // never empty strings
  int32_t n = 1;
  // -1: no logprobs. Chat: logprobs=true gives top_logprobs (default 0);
  // completions: the integer `logprobs`.
  int32_t n_top_logprobs = -1;
  bool stream = false;
  bool include_usage = false;  // stream_options.include_usage
  std::string user;
  // kiln extension `cache`: false skips the response caches for this request
  // (neither served from nor stored in them).
  bool cache = true;
};

// Parses the shared fields of a chat or completions body (an object).
std::optional<ApiError> parse_generation_options(const Json& body, Api api,
                                                 const ParseLimits& limits, GenerationOptions& out);

// A prompt (or embedding input) as given: text, or token ids.
struct PromptInput {
  bool is_tokens = false;
  std::string text;
  std::vector<int32_t> tokens;
};

// `prompt`/`input`: a string, a list of strings, a list of token ids, or a
// list of token-id lists. Empty lists are refused.
std::optional<ApiError> parse_prompt_list(const Json& v, const char* field,
                                          std::vector<PromptInput>& out);

// Typed readers: absent or null leaves `out` unchanged.
namespace field {
std::optional<ApiError> string(const Json& obj, const char* key, std::string& out);
std::optional<ApiError> boolean(const Json& obj, const char* key, bool& out);
// Integers must be whole numbers within [lo, hi]; 2.0 is accepted as 2.
std::optional<ApiError> integer(const Json& obj, const char* key, int64_t lo, int64_t hi,
                                std::optional<int64_t>& out);
std::optional<ApiError> number(const Json& obj, const char* key, double lo, double hi,
                               std::optional<double>& out);
}  // namespace field

// The JSON type name used in messages ("a string", "an integer", ...).
std::string json_type_name(const Json& v);

}  // namespace kiln::server
