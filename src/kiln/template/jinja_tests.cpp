// jinja2's builtin tests (`x is defined`, `x is string`, `x is divisibleby 3`)
// with the Python type checks behind them: bool counts as a number, strings
// and dicts are sequences, and Undefined is iterable, a sequence and callable.
#include <iterator>

#include "kiln/template/builtins.h"
#include "kiln/template/interp.h"
#include "kiln/template/pystr.h"

namespace kiln::jinja {
namespace {

using TestFn = bool (*)(Interp&, const Value&, CallArgs&);

const Value& arg0(const CallArgs& a, const char* test) {
  if (a.pos.empty()) {
    if (!a.kw.empty()) return a.kw.front().second;
    fail(std::string("the '") + test + "' test needs an argument");
  }
  return a.pos[0];
}

bool t_defined(Interp&, const Value& v, CallArgs&) { return !v.is_undefined(); }
bool t_undefined(Interp&, const Value& v, CallArgs&) { return v.is_undefined(); }
bool t_none(Interp&, const Value& v, CallArgs&) { return v.is_none(); }
bool t_boolean(Interp&, const Value& v, CallArgs&) { return v.kind == Kind::Bool; }
bool t_false(Interp&, const Value& v, CallArgs&) { return v.kind == Kind::Bool && !v.i; }
bool t_true(Interp&, const Value& v, CallArgs&) { return v.kind == Kind::Bool && v.i; }
bool t_integer(Interp&, const Value& v, CallArgs&) { return v.kind == Kind::Int; }
bool t_float(Interp&, const Value& v, CallArgs&) { return v.kind == Kind::Float; }
bool t_number(Interp&, const Value& v, CallArgs&) { return v.is_number(); }
bool t_string(Interp&, const Value& v, CallArgs&) { return v.is_str(); }
bool t_mapping(Interp&, const Value& v, CallArgs&) { return v.is_dict(); }
bool t_sequence(Interp&, const Value& v, CallArgs&) {
  return v.is_undefined() || v.is_str() || v.is_dict() ||
         (v.is_seq() && (v.seq == SeqKind::List || v.seq == SeqKind::Tuple));
}
bool t_iterable(Interp&, const Value& v, CallArgs&) {
  return v.is_undefined() || v.is_str() || v.is_dict() || v.is_seq();
}
bool t_callable(Interp&, const Value& v, CallArgs&) {
  return v.is_undefined() || (v.is_obj() && v.o().is_callable());
}
bool t_escaped(Interp&, const Value&, CallArgs&) { return false; }

bool t_sameas(Interp&, const Value& v, CallArgs& a) {
  const Value& o = arg0(a, "sameas");
  if (v.kind != o.kind) return false;
  switch (v.kind) {
    case Kind::Undefined: return false;  // distinct Undefined objects
    case Kind::None: return true;
    case Kind::Bool: return v.i == o.i;
    case Kind::Int: return v.i == o.i && v.i >= -5 && v.i <= 256;  // CPython's small-int cache
    default: return v.p == o.p;
  }
}

bool t_in(Interp&, const Value& v, CallArgs& a) { return contains(arg0(a, "in"), v); }

bool t_lower(Interp&, const Value& v, CallArgs&) {
  bool cased = false;
  for (char32_t c : pystr::decode(to_str(v))) {
    if (pystr::is_upper_char(c)) return false;
    cased |= pystr::is_lower_char(c);
  }
  return cased;
}
bool t_upper(Interp&, const Value& v, CallArgs&) {
  bool cased = false;
  for (char32_t c : pystr::decode(to_str(v))) {
    if (pystr::is_lower_char(c)) return false;
    cased |= pystr::is_upper_char(c);
  }
  return cased;
}

bool t_divisibleby(Interp& in, const Value& v, CallArgs& a) {
  return equal(arith(ExprKind::Mod, v, arg0(a, "divisibleby"), in), Value::integer(0));
}
bool t_odd(Interp& in, const Value& v, CallArgs&) {
  return equal(arith(ExprKind::Mod, v, Value::integer(2), in), Value::integer(1));
}
bool t_even(Interp& in, const Value& v, CallArgs&) {
  return equal(arith(ExprKind::Mod, v, Value::integer(2), in), Value::integer(0));
}

bool t_filter(Interp&, const Value& v, CallArgs&) { return v.is_str() && filter_id(v.s()) != kUnknown; }
bool t_test(Interp&, const Value& v, CallArgs&) { return v.is_str() && test_id(v.s()) != kUnknown; }

bool t_eq(Interp&, const Value& v, CallArgs& a) { return equal(v, arg0(a, "==")); }
bool t_ne(Interp&, const Value& v, CallArgs& a) { return !equal(v, arg0(a, "!=")); }
bool t_gt(Interp&, const Value& v, CallArgs& a) { return less(arg0(a, ">"), v); }
bool t_ge(Interp&, const Value& v, CallArgs& a) {
  const Value& o = arg0(a, ">=");
  return less(o, v) || equal(o, v);
}
bool t_lt(Interp&, const Value& v, CallArgs& a) { return less(v, arg0(a, "<")); }
bool t_le(Interp&, const Value& v, CallArgs& a) {
  const Value& o = arg0(a, "<=");
  return less(v, o) || equal(v, o);
}

struct TestEntry {
  const char* name;
  TestFn fn;
};
constexpr TestEntry kTests[] = {
    {"defined", t_defined},   {"undefined", t_undefined}, {"none", t_none},
    {"boolean", t_boolean},   {"false", t_false},         {"true", t_true},
    {"integer", t_integer},   {"float", t_float},         {"number", t_number},
    {"string", t_string},     {"mapping", t_mapping},     {"sequence", t_sequence},
    {"iterable", t_iterable}, {"callable", t_callable},   {"sameas", t_sameas},
    {"escaped", t_escaped},   {"in", t_in},               {"lower", t_lower},
    {"upper", t_upper},       {"divisibleby", t_divisibleby}, {"odd", t_odd},
    {"even", t_even},         {"filter", t_filter},       {"test", t_test},
    {"eq", t_eq},             {"equalto", t_eq},          {"==", t_eq},
    {"ne", t_ne},             {"!=", t_ne},               {"gt", t_gt},
    {"greaterthan", t_gt},    {">", t_gt},                {"ge", t_ge},
    {">=", t_ge},             {"lt", t_lt},               {"lessthan", t_lt},
    {"<", t_lt},              {"le", t_le},               {"<=", t_le},
};

}  // namespace

int test_id(std::string_view name) {
  for (size_t k = 0; k < std::size(kTests); ++k)
    if (name == kTests[k].name) return int(k);
  return kUnknown;
}

bool apply_test(Interp& in, int id, const std::string& name, const Value& subject, CallArgs& args) {
  if (id < 0 || size_t(id) >= std::size(kTests)) fail("No test named '" + name + "'.");
  return kTests[id].fn(in, subject, args);
}

}  // namespace kiln::jinja
