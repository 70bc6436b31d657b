// One chat or completion request in flight: submits a sequence per choice
// to the engine, turns each ResultChannel's events into text (UTF-8 safe,
// stop strings held back) and produces either SSE chunks or, at the end, one
// JSON body. Also the request's metrics and request-log line.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <variant>
#include <vector>

#include "kiln/server/admission.h"
#include "kiln/server/http_types.h"
#include "kiln/server/openai_common.h"

namespace kiln {
class Tokenizer;
namespace engine {
class Engine;
}
}  // namespace kiln

namespace kiln::server {

class ServerMetrics;
class RequestLog;

struct GenerationSpec {
  Api api = Api::completions;
  std::string id;                             // "chatcmpl-..." / "cmpl-..."
  int64_t created = 0;                        // Unix seconds
  std::string model;                          // echoed in responses
  std::vector<std::vector<int32_t>> prompts;  // token ids, one choice set per prompt
  const char* prompt_param = "prompt";        // field named in context-length errors
  GenerationOptions gen;
  uint64_t random_seed = 0;  // used when the client gave none
  std::chrono::steady_clock::time_point arrival = std::chrono::steady_clock::now();
  Json log_entry = Json::object();  // request-log fields known up front (prompt/messages, params)
  // Called once when the request ended well (status 200, every choice
  // finished by stop or length, not cancelled) with its record:
  // {"api", "choices": [{"text", "finish_reason"}], "prompt_tokens",
  // "completion_tokens"}; the response cache stores it (response_caching.h).
  std::function<void(const Json& record)> on_complete;
};

// The fields every completion object and stream chunk starts with: id,
// object ("chat.completion[.chunk]" / "text_completion"), created, model,
// and chat's system_fingerprint (null).
Json response_envelope(const GenerationSpec& spec, bool chunk);

struct GenerationDeps {
  engine::Engine& engine;
  const Tokenizer& tokenizer;
  ServerMetrics& metrics;
  RequestLog* log = nullptr;
};

// Checks the prompts against the context and resolves max_tokens; on
// success submits every sequence and returns the producer (which keeps the
// admission permit until it is destroyed).
std::variant<std::shared_ptr<BodyProducer>, ApiError> start_generation(GenerationDeps deps,
                                                                       GenerationSpec spec,
                                                                       Admission::Permit permit);

// The OpenAI finish_reason spelling kiln reports.
const char* finish_reason_text(int engine_finish_reason);

}  // namespace kiln::server
