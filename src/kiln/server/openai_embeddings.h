// POST /v1/embeddings: the request in native form and the response body
// (vectors as float lists or as base64 of little-endian float32, which the
// official SDKs ask for by default).
#pragma once

#include <memory>
#include <span>
#include <variant>

#include "kiln/core/base64.h"
#include "kiln/server/admission.h"
#include "kiln/server/engine_hooks.h"
#include "kiln/server/http_types.h"
#include "kiln/server/openai_common.h"

namespace kiln::server {

struct EmbeddingRequest {
  std::string model;
  std::vector<PromptInput> inputs;
  bool base64 = false;                // encoding_format
  std::optional<int64_t> dimensions;  // must equal the model's when given
};

std::optional<ApiError> parse_embedding_request(const Json& body, EmbeddingRequest& out);

// {"object":"list","data":[{"object":"embedding","index","embedding"}],"model","usage"}.
std::string embedding_response(const std::string& model,
                               const std::vector<std::vector<float>>& vectors, bool base64,
                               int64_t prompt_tokens);

// Submits the inputs (token ids, already checked against the vocabulary and
// the context) and returns the producer of the response body.
std::variant<std::shared_ptr<BodyProducer>, ApiError> start_embeddings(
    EmbeddingEngine& engine, std::vector<std::vector<int32_t>> inputs, bool base64,
    std::string model, Admission::Permit permit);

// Standard base64 (RFC 4648, with padding) of raw bytes.
using kiln::base64_encode;  // the float32 bytes of `encoding_format: base64`

}  // namespace kiln::server
