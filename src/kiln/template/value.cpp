// Python semantics of template values: truthiness, str()/repr(), equality,
// ordering, iteration, and conversion from JSON.
#include "kiln/template/value.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstring>

#include "kiln/template/pystr.h"

namespace kiln::jinja {

void fail(std::string message) { throw RenderError{std::move(message), false}; }

Value Object::call(Interp&, CallArgs&) { fail("'" + type_name() + "' object is not callable"); }
std::optional<Value> Object::attr(Interp&, const std::string&) { return std::nullopt; }
void Object::set_attr(const std::string&, Value) {
  fail("cannot assign attribute on non-namespace object");
}

Value Value::undefined(std::string hint) {
  Value v;
  v.kind = Kind::Undefined;
  if (!hint.empty()) v.p = std::make_shared<const std::string>(std::move(hint));
  return v;
}
Value Value::none() {
  Value v;
  v.kind = Kind::None;
  return v;
}
Value Value::boolean(bool b) {
  Value v;
  v.kind = Kind::Bool;
  v.i = b ? 1 : 0;
  return v;
}
Value Value::integer(int64_t x) {
  Value v;
  v.kind = Kind::Int;
  v.i = x;
  return v;
}
Value Value::number(double x) {
  Value v;
  v.kind = Kind::Float;
  v.f = x;
  return v;
}
Value Value::string(std::string s) {
  Value v;
  v.kind = Kind::Str;
  v.p = std::make_shared<const std::string>(std::move(s));
  return v;
}
static uint16_t nest(uint16_t child_max) {
  if (child_max + 1 > kMaxValueDepth)
    fail("value nests too deeply (more than " + std::to_string(kMaxValueDepth) + " levels)");
  return uint16_t(child_max + 1);
}

Value Value::list(List items, SeqKind k) {
  Value v;
  v.kind = Kind::Seq;
  v.seq = k;
  uint16_t d = 0;
  for (const Value& x : items) d = std::max(d, x.depth);
  v.depth = nest(d);
  v.p = std::make_shared<List>(std::move(items));
  return v;
}
Value Value::dict(DictData d) {
  Value v;
  v.kind = Kind::Dict;
  uint16_t m = 0;
  for (const auto& [k, x] : d.entries) m = std::max({m, k.depth, x.depth});
  v.depth = nest(m);
  v.p = std::make_shared<const DictData>(std::move(d));
  return v;
}
Value Value::object(std::shared_ptr<Object> o) {
  Value v;
  v.kind = Kind::Obj;
  v.p = std::move(o);
  return v;
}

const std::string& Value::hint() const {
  static const std::string kNone = "value is undefined";
  if (auto* sp = std::get_if<1>(&p)) return **sp;
  return kNone;
}

void undefined_error(const Value& v) { fail(v.hint()); }

const Value* DictData::find(const Value& key) const {
  for (const auto& [k, v] : entries)
    if (equal(k, key)) return &v;
  return nullptr;
}
const Value* DictData::find(std::string_view key) const {
  for (const auto& [k, v] : entries)
    if (k.kind == Kind::Str && k.s() == key) return &v;
  return nullptr;
}
void DictData::set(Value key, Value v) {
  for (auto& e : entries)
    if (equal(e.first, key)) {
      e.second = std::move(v);
      return;
    }
  entries.emplace_back(std::move(key), std::move(v));
}

bool truthy(const Value& v) {
  switch (v.kind) {
    case Kind::Undefined:
    case Kind::None: return false;
    case Kind::Bool:
    case Kind::Int: return v.i != 0;
    case Kind::Float: return v.f != 0.0;
    case Kind::Str: return !v.s().empty();
    case Kind::Seq: return v.seq == SeqKind::Iter || !v.items().empty();
    case Kind::Dict: return !v.d().entries.empty();
    case Kind::Obj: return true;
  }
  return false;
}

// Python's float repr: the shortest digits that round-trip, in fixed notation
// when the decimal exponent is in [-4, 16), otherwise d.ddde+XX.
std::string float_repr(double v) {
  if (std::isnan(v)) return "nan";
  if (std::isinf(v)) return v < 0 ? "-inf" : "inf";
  char buf[64];
  auto r = std::to_chars(buf, buf + sizeof buf, v, std::chars_format::scientific);
  std::string sci(buf, r.ptr);
  std::string sign;
  if (sci[0] == '-') {
    sign = "-";
    sci.erase(0, 1);
  }
  const size_t epos = sci.find('e');
  std::string digits = sci.substr(0, epos);
  const int exp = std::atoi(sci.c_str() + epos + 1);
  digits.erase(std::remove(digits.begin(), digits.end(), '.'), digits.end());
  const int decpt = exp + 1;  // value = 0.DIGITS * 10^decpt
  std::string out;
  if (decpt > -4 && decpt <= 16) {
    if (decpt <= 0) {
      out = "0." + std::string(size_t(-decpt), '0') + digits;
    } else if (size_t(decpt) >= digits.size()) {
      out = digits + std::string(size_t(decpt) - digits.size(), '0') + ".0";
    } else {
      out = digits.substr(0, size_t(decpt)) + "." + digits.substr(size_t(decpt));
    }
  } else {
    out = digits.substr(0, 1);
    if (digits.size() > 1) out += "." + digits.substr(1);
    const int e = decpt - 1;
    char eb[16];
    std::snprintf(eb, sizeof eb, "e%c%02d", e < 0 ? '-' : '+', e < 0 ? -e : e);
    out += eb;
  }
  return sign + out;
}

static std::string seq_repr(const Value& v) {
  std::string out;
  const List& xs = v.items();
  auto join = [&](const char* open, const char* close) {
    out = open;
    for (size_t k = 0; k < xs.size(); ++k) {
      if (k) out += ", ";
      out += repr(xs[k]);
    }
    if (v.seq == SeqKind::Tuple && xs.size() == 1) out += ",";
    out += close;
  };
  switch (v.seq) {
    case SeqKind::List: join("[", "]"); break;
    case SeqKind::Tuple: join("(", ")"); break;
    case SeqKind::Iter: return "<generator object>";
    case SeqKind::ItemsView: join("dict_items([", "])"); break;
    case SeqKind::KeysView: join("dict_keys([", "])"); break;
    case SeqKind::ValuesView: join("dict_values([", "])"); break;
  }
  return out;
}

std::string repr(const Value& v) {
  switch (v.kind) {
    case Kind::Undefined: return "Undefined";
    case Kind::Str: return pystr::repr(v.s());
    case Kind::Seq: return seq_repr(v);
    case Kind::Dict: {
      std::string out = "{";
      bool first = true;
      for (const auto& [k, x] : v.d().entries) {
        if (!first) out += ", ";
        first = false;
        out += repr(k) + ": " + repr(x);
      }
      return out + "}";
    }
    default: return to_str(v);
  }
}

std::string to_str(const Value& v) {
  switch (v.kind) {
    case Kind::Undefined: return "";
    case Kind::None: return "None";
    case Kind::Bool: return v.i ? "True" : "False";
    case Kind::Int: return std::to_string(v.i);
    case Kind::Float: return float_repr(v.f);
    case Kind::Str: return v.s();
    case Kind::Seq:
    case Kind::Dict: return repr(v);
    case Kind::Obj: return v.o().repr();
  }
  return "";
}

std::string type_name(const Value& v) {
  switch (v.kind) {
    case Kind::Undefined: return "Undefined";
    case Kind::None: return "NoneType";
    case Kind::Bool: return "bool";
    case Kind::Int: return "int";
    case Kind::Float: return "float";
    case Kind::Str: return "str";
    case Kind::Seq:
      switch (v.seq) {
        case SeqKind::List: return "list";
        case SeqKind::Tuple: return "tuple";
        case SeqKind::Iter: return "generator";
        case SeqKind::ItemsView: return "dict_items";
        case SeqKind::KeysView: return "dict_keys";
        case SeqKind::ValuesView: return "dict_values";
      }
      return "list";
    case Kind::Dict: return "dict";
    case Kind::Obj: return v.o().type_name();
  }
  return "object";
}

// Exact int/float comparison: long double holds every int64 exactly on x86.
static int num_cmp(const Value& a, const Value& b) {
  if (a.kind != Kind::Float && b.kind != Kind::Float) return a.i < b.i ? -1 : a.i > b.i ? 1 : 0;
  const long double x = a.kind == Kind::Float ? (long double)a.f : (long double)a.i;
  const long double y = b.kind == Kind::Float ? (long double)b.f : (long double)b.i;
  if (x < y) return -1;
  if (x > y) return 1;
  if (x == y) return 0;
  return 2;  // NaN involved: neither
}

static bool same_seq_family(const Value& a, const Value& b) {
  auto fam = [](SeqKind k) { return k == SeqKind::List ? 0 : k == SeqKind::Tuple ? 1 : 2 + int(k); };
  return fam(a.seq) == fam(b.seq);
}

bool equal(const Value& a, const Value& b) {
  if (a.is_number() && b.is_number()) return num_cmp(a, b) == 0;
  if (a.kind != b.kind) return false;
  switch (a.kind) {
    case Kind::Undefined:
    case Kind::None: return true;
    case Kind::Str: return a.s() == b.s();
    case Kind::Seq: {
      if (a.seq == SeqKind::Iter || b.seq == SeqKind::Iter) return a.p == b.p;
      if (!same_seq_family(a, b)) return false;
      const List &x = a.items(), &y = b.items();
      if (x.size() != y.size()) return false;
      for (size_t k = 0; k < x.size(); ++k)
        if (!equal(x[k], y[k])) return false;
      return true;
    }
    case Kind::Dict: {
      const auto &x = a.d().entries, &y = b.d().entries;
      if (x.size() != y.size()) return false;
      for (const auto& [k, v] : x) {
        const Value* o = b.d().find(k);
        if (!o || !equal(v, *o)) return false;
      }
      return true;
    }
    case Kind::Obj: return a.p == b.p;
    default: return false;
  }
}

bool less(const Value& a, const Value& b) {
  if (a.is_undefined()) undefined_error(a);
  if (b.is_undefined()) undefined_error(b);
  if (a.is_number() && b.is_number()) return num_cmp(a, b) == -1;
  if (a.kind == Kind::Str && b.kind == Kind::Str) return a.s() < b.s();
  if (a.kind == Kind::Seq && b.kind == Kind::Seq && same_seq_family(a, b) &&
      (a.seq == SeqKind::List || a.seq == SeqKind::Tuple)) {
    const List &x = a.items(), &y = b.items();
    for (size_t k = 0; k < x.size() && k < y.size(); ++k)
      if (!equal(x[k], y[k])) return less(x[k], y[k]);
    return x.size() < y.size();
  }
  fail("'<' not supported between instances of '" + type_name(a) + "' and '" + type_name(b) +
       "'");
}

List iterate(const Value& v) {
  switch (v.kind) {
    case Kind::Undefined: return {};
    case Kind::Str: {
      List out;
      const std::string& s = v.s();
      if (s.size() > (size_t(1) << 22)) fail("string too long to iterate (more than 4 MiB)");
      for (size_t i = 0; i < s.size();) {
        size_t j = i + 1;
        while (j < s.size() && (uint8_t(s[j]) & 0xC0) == 0x80) ++j;
        out.push_back(Value::string(s.substr(i, j - i)));
        i = j;
      }
      return out;
    }
    case Kind::Seq: return v.items();
    case Kind::Dict: {
      List out;
      out.reserve(v.d().entries.size());
      for (const auto& e : v.d().entries) out.push_back(e.first);
      return out;
    }
    default: fail("'" + type_name(v) + "' object is not iterable");
  }
}

int64_t length(const Value& v) {
  switch (v.kind) {
    case Kind::Undefined: return 0;
    case Kind::Str: return int64_t(pystr::length(v.s()));
    case Kind::Seq:
      if (v.seq == SeqKind::Iter) fail("object of type 'generator' has no len()");
      return int64_t(v.items().size());
    case Kind::Dict: return int64_t(v.d().entries.size());
    default: fail("object of type '" + type_name(v) + "' has no len()");
  }
}

bool hashable(const Value& v) {
  if (v.kind == Kind::Dict) return false;
  if (v.kind == Kind::Seq) {
    if (v.seq == SeqKind::Iter) return true;
    if (v.seq != SeqKind::Tuple) return false;
    for (const Value& x : v.items())
      if (!hashable(x)) return false;
  }
  return true;
}

Value from_json(const nlohmann::ordered_json& j, int depth) {
  using T = nlohmann::ordered_json::value_t;
  if (depth > kMaxValueDepth)
    fail("template variables nest too deeply (more than " + std::to_string(kMaxValueDepth) + " levels)");
  switch (j.type()) {
    case T::null: return Value::none();
    case T::boolean: return Value::boolean(j.get<bool>());
    case T::number_integer: return Value::integer(j.get<int64_t>());
    case T::number_unsigned: {
      const auto u = j.get<uint64_t>();
      return u <= uint64_t(INT64_MAX) ? Value::integer(int64_t(u)) : Value::number(double(u));
    }
    case T::number_float: return Value::number(j.get<double>());
    case T::string: return Value::string(j.get<std::string>());
    case T::array: {
      List xs;
      xs.reserve(j.size());
      for (const auto& e : j) xs.push_back(from_json(e, depth + 1));
      return Value::list(std::move(xs));
    }
    case T::object: {
      DictData d;
      d.entries.reserve(j.size());
      for (auto it = j.begin(); it != j.end(); ++it)
        d.entries.emplace_back(Value::string(it.key()), from_json(it.value(), depth + 1));
      return Value::dict(std::move(d));
    }
    default: return Value::none();  // binary/discarded: not produced by JSON text
  }
}

}  // namespace kiln::jinja
