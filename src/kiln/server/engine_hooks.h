// What the edge needs besides engine::Engine: a chat template renderer and
// an embedding call. Both are injected so the edge builds and tests without
// them; cmd_serve wires the real ones.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "kiln/core/status.h"
#include "kiln/server/openai_common.h"

namespace kiln {
class Tokenizer;
}

namespace kiln::server {

struct ChatRenderInput {
  const Json& messages;  // validated by parse_messages
  const Json& tools;     // null when absent
  bool add_generation_prompt;
  const Json& vars;  // extra template variables (chat_template_kwargs / "vars")
};
// Renders a conversation to prompt text (the model's chat template, or
// --chat-template). Errors become 400s naming `messages`.
using ChatRenderer = std::function<Result<std::string>(const ChatRenderInput&)>;

// Embeddings of whole inputs from the served model. Not part of engine.h yet:
// this is the call the edge needs (see the server report). Thread-safe;
// `done` runs on the engine thread and must not block.
class EmbeddingEngine {
 public:
  virtual ~EmbeddingEngine() = default;
  virtual int32_t n_embd() const = 0;
  // One L2-normalized vector [n_embd] per input (mean of the last hidden
  // states after the final norm), in input order.
  using Done = std::function<void(Result<std::vector<std::vector<float>>>)>;
  virtual Status submit_embeddings(std::vector<std::vector<int32_t>> inputs, Done done) = 0;
};

// A separate embedding model (--embedding-model, a BERT encoder) answering the
// /v1/embeddings requests whose "model" is its id; the served model answers
// the others (GUIDE's table). Its vectors are pooled as its GGUF says.
struct EmbeddingModel {
  std::string id;                        // the name requests give in "model"
  EmbeddingEngine* engine = nullptr;     // null: no embedding model
  const Tokenizer* tokenizer = nullptr;  // its own vocabulary (WordPiece)
  int32_t max_tokens = 0;                // per input: the model's learned positions
};

}  // namespace kiln::server
