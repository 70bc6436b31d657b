// jinja2's builtin filters, tests and globals, and the Python methods of str,
// dict and list that templates call (`content.strip()`, `message.get('x')`).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "kiln/template/value.h"

namespace kiln::jinja {

// Filter/test ids: >= 0 implemented; kUnsupported: a jinja2 builtin kiln does
// not implement (fails only when used, as jinja2 would not); kUnknown: no such
// builtin (a syntax error, as in jinja2).
constexpr int kUnknown = -1;
constexpr int kUnsupported = -2;

int filter_id(std::string_view name);
int test_id(std::string_view name);
Value apply_filter(Interp& in, int id, const std::string& name, const Value& subject,
                   CallArgs& args);
bool apply_test(Interp& in, int id, const std::string& name, const Value& subject,
                CallArgs& args);

// `self.name` when it names a method of str/dict/list/tuple: a bound method
// object, or an Undefined for the mutating methods the sandbox refuses.
std::optional<Value> method_attr(const Value& self, const std::string& name);

// Template globals: range, dict, namespace, joiner, cycler, raise_exception,
// strftime_now. nullopt: not a global.
std::optional<Value> global(Interp& in, const std::string& name);

// json.dumps as transformers' tojson filter calls it.
struct JsonOptions {
  std::optional<std::string> indent;  // nullopt: single line
  std::string item_sep = ", ", key_sep = ": ";
  bool sort_keys = false;
  bool ensure_ascii = false;
  size_t max_bytes = SIZE_MAX;  // fails rather than build a longer text
};
std::string json_dumps(const Value& v, const JsonOptions& o);

// Python's `fmt % args` and `fmt.format(*args, **kwargs)`.
std::string percent_format(const std::string& fmt, const Value& args);
std::string str_format(Interp& in, const std::string& fmt, const CallArgs& args);

// Binds call arguments to parameter names (positional first, then keywords);
// fails on unknown keywords or too many positionals, naming `fn`.
std::vector<std::optional<Value>> bind_args(const char* fn, const CallArgs& args,
                                            std::initializer_list<const char*> names);

// Python's int(s, base) and float(s) on strings; nullopt where Python raises
// ValueError. base 0 reads a 0x/0o/0b prefix.
std::optional<int64_t> py_int_from_str(std::string_view s, int base);
std::optional<double> py_float_from_str(std::string_view s);

}  // namespace kiln::jinja
