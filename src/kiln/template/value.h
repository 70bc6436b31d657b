// The values a Jinja template computes with, modelled on the Python objects
// jinja2 sees: None, bool, int (64-bit here), float, str, list/tuple (and the
// one-shot iterators filters return), insertion-ordered dict, jinja2's
// Undefined, and objects (macros, bound methods, loop, namespace).
// Containers are immutable once built (the sandbox forbids mutation), so
// copies share storage.
#pragma once

#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

namespace kiln::jinja {

class Interp;
struct Value;

// A failure while rendering. `raised` marks raise_exception() from the
// template itself (its message is the template author's).
struct RenderError {
  std::string message;
  bool raised = false;
};
[[noreturn]] void fail(std::string message);

enum class Kind : uint8_t { Undefined, None, Bool, Int, Float, Str, Seq, Dict, Obj };
// Python's sequence flavours that print or compare differently. Iter is a
// one-shot generator/iterator (no len(), always truthy); the views come from
// dict.items()/keys()/values().
enum class SeqKind : uint8_t { List, Tuple, Iter, ItemsView, KeysView, ValuesView };

struct CallArgs {
  std::vector<Value> pos;
  std::vector<std::pair<std::string, Value>> kw;
};

// Macros, builtins, bound methods, loop, namespace, joiner.
struct Object {
  virtual ~Object() = default;
  virtual std::string repr() const = 0;
  virtual std::string type_name() const = 0;
  virtual bool is_callable() const { return false; }
  virtual Value call(Interp& in, CallArgs& args);
  // nullopt: no such attribute.
  virtual std::optional<Value> attr(Interp& in, const std::string& name);
  virtual bool is_namespace() const { return false; }
  virtual void set_attr(const std::string& name, Value v);
  // Drops the values this object holds; the interpreter calls it after a
  // render to break reference cycles (a macro stored in the scope it closes
  // over, `ns.self = ns`).
  virtual void release() {}
};

struct DictData;
using List = std::vector<Value>;

// Containers may nest this deep; deeper ones fail to build, which keeps every
// recursive walk (repr, ==, tojson, destruction) shallow.
constexpr int kMaxValueDepth = 500;

struct Value {
  Kind kind = Kind::Undefined;
  SeqKind seq = SeqKind::List;
  uint16_t depth = 0;  // nesting of lists/dicts inside this value
  union {
    int64_t i = 0;  // Bool (0/1) and Int
    double f;       // Float
  };
  // Str: the text (UTF-8); Undefined: why it is undefined ("'x' is undefined").
  std::variant<std::monostate, std::shared_ptr<const std::string>, std::shared_ptr<List>,
               std::shared_ptr<const DictData>, std::shared_ptr<Object>>
      p;

  Value() = default;
  static Value undefined(std::string hint = {});
  static Value none();
  static Value boolean(bool b);
  static Value integer(int64_t v);
  static Value number(double v);
  static Value string(std::string s);
  static Value list(List items, SeqKind k = SeqKind::List);
  static Value dict(DictData d);
  static Value object(std::shared_ptr<Object> o);

  bool is_undefined() const { return kind == Kind::Undefined; }
  bool is_none() const { return kind == Kind::None; }
  bool is_str() const { return kind == Kind::Str; }
  bool is_int() const { return kind == Kind::Int || kind == Kind::Bool; }  // Python: bool is an int
  bool is_number() const { return is_int() || kind == Kind::Float; }
  bool is_seq() const { return kind == Kind::Seq; }
  bool is_dict() const { return kind == Kind::Dict; }
  bool is_obj() const { return kind == Kind::Obj; }

  const std::string& s() const { return *std::get<1>(p); }
  const List& items() const { return *std::get<2>(p); }
  // Only list.pop()/clear() mutate, in place, as Python lists are shared.
  List& mutable_items() const { return *std::get<2>(p); }
  const DictData& d() const { return *std::get<3>(p); }
  Object& o() const { return *std::get<4>(p); }
  const std::string& hint() const;  // Undefined only
  double as_double() const { return kind == Kind::Float ? f : double(i); }
};

struct DictData {
  std::vector<std::pair<Value, Value>> entries;
  const Value* find(const Value& key) const;
  const Value* find(std::string_view key) const;
  void set(Value key, Value v);  // replaces an equal key in place, as Python does
};

// Python semantics.
bool truthy(const Value& v);
std::string to_str(const Value& v);  // str(v)
std::string repr(const Value& v);    // repr(v)
bool equal(const Value& a, const Value& b);
// a < b, Python ordering; fails with a TypeError-like message for mixed types.
bool less(const Value& a, const Value& b);
std::string type_name(const Value& v);  // "str", "int", "dict", "NoneType", ...
std::string float_repr(double v);
// Elements of an iterable (dict: keys; str: characters; Undefined: none).
List iterate(const Value& v);
// Raises the error an operation on this Undefined raises in jinja2.
[[noreturn]] void undefined_error(const Value& v);
// len(); fails for values without one.
int64_t length(const Value& v);
bool hashable(const Value& v);

// Fails (RenderError) beyond kMaxValueDepth levels of nesting.
Value from_json(const nlohmann::ordered_json& j, int depth = 0);

}  // namespace kiln::jinja
