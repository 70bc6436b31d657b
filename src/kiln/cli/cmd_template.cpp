// `kiln template`: renders a chat template for a conversation exactly as
// transformers' apply_chat_template would, printing the text and nothing else.
#include <cstdio>
#include <fstream>
#include <sstream>

#include "kiln/cli/commands.h"
#include "kiln/template/template.h"

namespace kiln::cli {
namespace {

struct TemplateOptions {
  std::string template_path, messages_path, tools_path, vars, now;
  std::string bos, eos;
  bool add_generation_prompt = false;
  bool has_bos = false, has_eos = false;
};

bool read_file(const std::string& path, std::string& out) {
  std::ifstream f(path, std::ios::binary);
  if (!f) return false;
  std::ostringstream ss;
  ss << f.rdbuf();
  out = ss.str();
  return true;
}

// Reads a JSON file; `what` names it in messages.
bool read_json(const std::string& path, const char* what, nlohmann::ordered_json& out) {
  std::string text;
  if (!read_file(path, text)) {
    std::fprintf(stderr, "kiln template: cannot read %s file '%s'\n", what, path.c_str());
    return false;
  }
  try {
    out = nlohmann::ordered_json::parse(text);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "kiln template: %s file '%s' is not valid JSON: %s\n", what, path.c_str(), e.what());
    return false;
  }
  return true;
}

int run_template(const TemplateOptions& o) {
  std::string source;
  if (!read_file(o.template_path, source)) {
    std::fprintf(stderr, "kiln template: cannot read template file '%s'\n", o.template_path.c_str());
    return 1;
  }
  auto tmpl = jinja::Template::parse(source);
  if (!tmpl) {
    std::fprintf(stderr, "kiln template: %s: %s\n", o.template_path.c_str(), tmpl.message().c_str());
    return 1;
  }
  nlohmann::ordered_json messages, tools = nullptr, vars = nlohmann::ordered_json::object();
  if (!read_json(o.messages_path, "messages", messages)) return 1;
  // Accept a bare list or a conversation object holding "messages".
  if (messages.is_object() && messages.contains("messages")) messages = nlohmann::ordered_json(messages["messages"]);
  if (!messages.is_array()) {
    std::fprintf(stderr, "kiln template: --messages must hold a JSON list of messages\n");
    return 1;
  }
  if (!o.tools_path.empty() && !read_json(o.tools_path, "tools", tools)) return 1;
  if (!o.vars.empty()) {
    try {
      vars = nlohmann::ordered_json::parse(o.vars);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "kiln template: --vars is not valid JSON: %s\n", e.what());
      return 1;
    }
    if (!vars.is_object()) {
      std::fprintf(stderr, "kiln template: --vars must be a JSON object, e.g. '{\"enable_thinking\": false}'\n");
      return 1;
    }
  }
  jinja::RenderOptions ro;
  if (!o.now.empty()) {
    auto now = jinja::parse_iso_datetime(o.now);
    if (!now) {
      std::fprintf(stderr, "kiln template: --now: %s\n", now.message().c_str());
      return 1;
    }
    ro.clock = [t = *now] { return t; };
  }
  const auto ctx = jinja::chat_context(messages, tools, o.add_generation_prompt,
                                       o.has_bos ? std::optional<std::string>(o.bos) : std::nullopt,
                                       o.has_eos ? std::optional<std::string>(o.eos) : std::nullopt, vars);
  auto text = tmpl->render(ctx, ro);
  if (!text) {
    std::fprintf(stderr, "kiln template: %s\n", text.message().c_str());
    return 1;
  }
  std::fwrite(text->data(), 1, text->size(), stdout);
  return std::fflush(stdout) == 0 ? 0 : 1;
}

}  // namespace

void register_template(CLI::App& root, Runner& run) {
  auto o = std::make_shared<TemplateOptions>();
  auto* sub = root.add_subcommand(
      "template", "Render a Jinja chat template for a conversation, as transformers would");
  sub->add_option("--template", o->template_path, "Chat template (.jinja)")->required();
  sub->add_option("--messages", o->messages_path, "JSON list of messages (or {\"messages\": [...]})")
      ->required();
  sub->add_flag("--add-generation-prompt", o->add_generation_prompt,
                "End with the assistant turn's opening");
  sub->add_option("--bos-token", o->bos, "bos_token (left undefined when not given)");
  sub->add_option("--eos-token", o->eos, "eos_token (left undefined when not given)");
  sub->add_option("--tools", o->tools_path, "JSON list of tool definitions");
  sub->add_option("--vars", o->vars, "Extra variables as a JSON object, e.g. '{\"enable_thinking\": false}'");
  sub->add_option("--now", o->now, "Fixed local time for strftime_now (ISO-8601, e.g. 2024-07-26T10:30:00)");
  sub->callback([o, sub, &run] {
    o->has_bos = sub->count("--bos-token") > 0;
    o->has_eos = sub->count("--eos-token") > 0;
    run = [o] { return run_template(*o); };
  });
}

}  // namespace kiln::cli
