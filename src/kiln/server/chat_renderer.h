// The chat renderer kiln serve uses: the model's tokenizer.chat_template (or
// --chat-template FILE) through kiln's Jinja renderer, with the variables
// transformers' apply_chat_template passes (bos_token, eos_token, tools, ...).
#pragma once

#include <string>

#include "kiln/core/status.h"
#include "kiln/server/engine_hooks.h"

namespace kiln {
class Tokenizer;
}

namespace kiln::server {

// Parses `source` once; the renderer is thread-safe and keeps what it needs
// from the tokenizer (the BOS/EOS texts).
Result<ChatRenderer> make_chat_renderer(const std::string& source, const Tokenizer& tokenizer);

}  // namespace kiln::server
