// kiln's Jinja chat-template renderer: parses a template once, renders it for
// any number of conversations, byte-for-byte as Hugging Face transformers does
// with jinja2 (sandboxed, trim_blocks + lstrip_blocks, loopcontrols, a
// tojson that keeps non-ASCII text, raise_exception and strftime_now).
// Failures (syntax errors, raise_exception, runaway templates) come back as
// kiln::Result errors; nothing throws out of this API.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>

#include "kiln/core/status.h"

namespace kiln::jinja {

struct Program;

// A naive local date and time, what Python's datetime.now() gives strftime_now.
struct DateTime {
  int year = 1970, month = 1, day = 1;
  int hour = 0, minute = 0, second = 0, microsecond = 0;
};

// "YYYY-MM-DD", "YYYY-MM-DDTHH:MM[:SS[.ffffff]]" (a space may replace 'T').
Result<DateTime> parse_iso_datetime(std::string_view text);
DateTime local_now();
// Python's datetime.strftime in the C locale (also %f, and empty %z/%Z for a
// naive time).
std::string format_datetime(const DateTime& t, std::string_view fmt);

struct RenderOptions {
  // What strftime_now() sees; empty: the machine's local time at each call.
  std::function<DateTime()> clock;
  size_t max_output_bytes = size_t(64) << 20;  // also caps any single string built
  uint64_t max_steps = 20'000'000;              // evaluation steps (a runaway-loop guard)
  int max_call_depth = 150;                     // nested macro calls (jinja2 fails near 170)
};

// Statistics of one render, for tests and metrics.
struct RenderStats {
  uint64_t steps = 0;
  uint64_t macro_calls = 0;
  uint64_t filter_calls = 0;
};

class Template {
 public:
  // Syntax errors name the line and column.
  static Result<Template> parse(std::string_view source);

  // `context` must be an object: its members become template variables.
  Result<std::string> render(const nlohmann::ordered_json& context,
                             const RenderOptions& options = {},
                             RenderStats* stats = nullptr) const;

 private:
  std::shared_ptr<const Program> program_;
};

// The variables transformers' apply_chat_template passes: messages, tools
// (null when none), documents (null), add_generation_prompt, bos_token,
// eos_token (left out when nullopt, as for a tokenizer without one), then
// `extra` members (enable_thinking, date_string, ...), which
// may override any of these.
nlohmann::ordered_json chat_context(const nlohmann::ordered_json& messages,
                                    const nlohmann::ordered_json& tools,
                                    bool add_generation_prompt,
                                    const std::optional<std::string>& bos_token,
                                    const std::optional<std::string>& eos_token,
                                    const nlohmann::ordered_json& extra = nlohmann::ordered_json::object());

}  // namespace kiln::jinja
