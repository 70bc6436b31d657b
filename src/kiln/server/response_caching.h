// The response caches at the edge: which requests may use them, their exact
// keys and semantic partitions, the replay of a cached answer (JSON or SSE)
// and the recording of fresh answers. The storage itself is
// cache::ResponseCache; this file decides what is "the same request".
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "kiln/server/generation.h"
#include "kiln/server/http_types.h"
#include "kiln/server/openai_common.h"

namespace kiln {
class Tokenizer;
}
namespace kiln::cache {
class ResponseCache;
}

namespace kiln::server {

class RequestLog;

// The response header saying what the cache did.
inline constexpr const char* kCacheHeader = "x-kiln-cache";

// What the edge knows about the cache: the store, and what identifies the
// model's outputs (the same fingerprint on every instance sharing a Redis).
struct CacheContext {
  cache::ResponseCache* cache = nullptr;
  // Model/artifact identity plus whatever else changes outputs (KV type,
  // backend, --ctx-size which sets the default max_tokens).
  std::string fingerprint;
};

// Temperature 0, or a seed the client chose: the same request gives the same answer.
bool deterministic(const GenerationOptions& g);

// The normalized request an exact key is the hash of: prompts after
// templating (token ids), sampling parameters (those that cannot change a
// greedy answer dropped when greedy), max_tokens, stop, n; never `stream`,
// `stream_options` or `user`. Exposed for tests and for seeding.
Json exact_key_material(const std::string& fingerprint, Api api,
                        const std::vector<std::vector<int32_t>>& prompts,
                        const GenerationOptions& g);
std::string exact_key(const std::string& fingerprint, Api api,
                      const std::vector<std::vector<int32_t>>& prompts, const GenerationOptions& g);

// The chat request beyond its tokens, for the semantic cache.
struct ChatView {
  const Json& messages;
  const Json& tools;
  const Json& template_vars;
  bool add_generation_prompt = true;
};

// Everything that must match besides the last user turn: model, embedder,
// every earlier message (system prompt and history), tools, template
// variables and the sampling parameters.
std::string semantic_partition(const std::string& fingerprint, const std::string& embedder_id,
                               const ChatView& chat, const GenerationOptions& g);

// A recorded answer, as GenerationSpec::on_complete gives it and as seeding
// writes it: {"api", "choices": [{"text", "finish_reason"}], "prompt_tokens",
// "completion_tokens"}.
Json make_record(Api api, const std::vector<std::pair<std::string, std::string>>& texts_and_finish,
                 int64_t prompt_tokens, int64_t completion_tokens);

// Seeding (e.g. the warm prompts a baked artifact recorded): stores the
// answer under the key a later identical request computes. `prompts` are the
// token ids after templating, as the routes compute them.
bool seed_response(const CacheContext& ctx, Api api,
                   const std::vector<std::vector<int32_t>>& prompts, const GenerationOptions& g,
                   const Json& record);

// Seeding from a recorded request as a client would send it (e.g. a baked
// artifact's RecordedOutput: `request` is the prompt line, `rendered` the
// prompt text the model saw, chat template applied). The request is parsed
// by the routes' own parsers and tokenized as the routes do, so the key is
// the one an identical live request computes. false with `why` set when the
// request does not parse or is not cacheable (sampled without a seed, logprobs).
bool seed_from_request(const CacheContext& ctx, const Tokenizer& tokenizer, const Json& request,
                       const std::string& rendered, const Json& record, std::string* why = nullptr);

// One request's dealings with the cache. Routes call lookup() after
// templating; on a hit they return its response, otherwise they start the
// generation after arm(spec) and add header() to the response.
class CacheDeal {
 public:
  // `chat` null for /v1/completions.
  CacheDeal(const CacheContext& ctx, const GenerationSpec& spec, const ChatView* chat);
  std::optional<HttpResponse> lookup(const GenerationSpec& spec, RequestLog* log);
  void arm(GenerationSpec& spec);
  const std::string& header() const { return header_; }

 private:
  HttpResponse replay(const GenerationSpec& spec, const std::string& payload, RequestLog* log,
                      const char* how);

  cache::ResponseCache* cache_ = nullptr;
  bool active_ = false;
  std::string header_;
  std::string key_;
  bool semantic_ = false;
  std::string partition_, text_;
  std::vector<float> vec_;
};

}  // namespace kiln::server
