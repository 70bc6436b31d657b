// Parsing of legacy completion requests: prompt forms and the fields kiln
// refuses rather than silently ignores (they would change the answer).
#include "kiln/server/openai_completions.h"

namespace kiln::server {

std::optional<ApiError> parse_completion_request(const Json& body, const ParseLimits& limits,
                                                 CompletionRequest& out) {
  if (!body.is_object())
    return bad_field("", "the request body must be a JSON object, got " + json_type_name(body));
  if (auto e = field::string(body, "model", out.model)) return e;
  auto p = body.find("prompt");
  if (p == body.end() || p->is_null()) return bad_field("prompt", "'prompt' is required");
  if (auto e = parse_prompt_list(*p, "prompt", out.prompts)) return e;

  bool echo = false;
  if (auto e = field::boolean(body, "echo", echo)) return e;
  if (echo) return bad_field("echo", "'echo' is not supported by kiln; leave it out or false");
  std::string suffix;
  if (auto e = field::string(body, "suffix", suffix)) return e;
  if (!suffix.empty()) return bad_field("suffix", "'suffix' is not supported by kiln");
  if (auto e = parse_generation_options(body, Api::completions, limits, out.gen)) return e;
  std::optional<int64_t> best_of;
  if (auto e = field::integer(body, "best_of", 1, limits.max_n, best_of)) return e;
  if (best_of && *best_of != out.gen.n)
    return bad_field("best_of", "'best_of' other than 'n' is not supported by kiln");
  return std::nullopt;
}

}  // namespace kiln::server
