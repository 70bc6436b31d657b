// POST /v1/completions: the request in native form.
#pragma once

#include "kiln/server/openai_common.h"

namespace kiln::server {

struct CompletionRequest {
  std::string model;
  std::vector<PromptInput> prompts;  // one choice set (n choices) per prompt
  GenerationOptions gen;
};

std::optional<ApiError> parse_completion_request(const Json& body, const ParseLimits& limits,
                                                 CompletionRequest& out);

}  // namespace kiln::server
