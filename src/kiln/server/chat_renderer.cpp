// Jinja chat templates behind the edge's ChatRenderer hook.
#include "kiln/server/chat_renderer.h"

#include <optional>

#include "kiln/template/template.h"
#include "kiln/tokenizer/tokenizer.h"

namespace kiln::server {

Result<ChatRenderer> make_chat_renderer(const std::string& source, const Tokenizer& tokenizer) {
  auto tmpl = jinja::Template::parse(source);
  if (!tmpl) return make_error("chat template: " + tmpl.message());
  auto special_text = [&](int32_t id) -> std::optional<std::string> {
    if (id < 0) return std::nullopt;
    return tokenizer.token_text(id);
  };
  const std::optional<std::string> bos = special_text(tokenizer.bos_id());
  const std::optional<std::string> eos = special_text(tokenizer.eos_id());
  return ChatRenderer([t = std::move(*tmpl), bos, eos](const ChatRenderInput& in) {
    const auto ctx =
        jinja::chat_context(in.messages, in.tools, in.add_generation_prompt, bos, eos, in.vars);
    return t.render(ctx);
  });
}

}  // namespace kiln::server
