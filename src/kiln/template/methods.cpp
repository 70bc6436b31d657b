// Python methods on template values: str (strip, split, startswith, format,
// ...), dict (get, items, keys, values) and list/tuple (count, index).
// Mutating methods (append, update, pop, ...) resolve to an Undefined, as in
// jinja2's ImmutableSandboxedEnvironment, so calling them fails.
#include <algorithm>
#include <iterator>

#include "kiln/template/builtins.h"
#include "kiln/template/interp.h"
#include "kiln/template/pystr.h"

namespace kiln::jinja {
namespace {

constexpr const char* kStrMethods[] = {
    "capitalize", "casefold", "center", "count", "encode", "endswith", "expandtabs", "find",
    "format", "format_map", "index", "isalnum", "isalpha", "isascii", "isdecimal", "isdigit",
    "isidentifier", "islower", "isnumeric", "isprintable", "isspace", "istitle", "isupper",
    "join", "ljust", "lower", "lstrip", "maketrans", "partition", "removeprefix",
    "removesuffix", "replace", "rfind", "rindex", "rjust", "rpartition", "rsplit", "rstrip",
    "split", "splitlines", "startswith", "strip", "swapcase", "title", "translate", "upper",
    "zfill",
};
constexpr const char* kDictSafe[] = {"copy", "fromkeys", "get", "items", "keys", "values"};
constexpr const char* kDictUnsafe[] = {"clear", "pop", "popitem", "setdefault", "update"};
// jinja2's sandbox lets pop and clear through (they are not in its list of
// MutableSequence mutators), so they work here too, in place.
constexpr const char* kListSafe[] = {"clear", "copy", "count", "index", "pop"};
constexpr const char* kListUnsafe[] = {"append", "extend", "insert", "remove", "reverse", "sort"};

template <size_t N>
bool in(const char* const (&names)[N], const std::string& n) {
  return std::any_of(std::begin(names), std::end(names), [&](const char* x) { return n == x; });
}

const std::string& need_str(const std::optional<Value>& v, const char* fn) {
  if (!v || !v->is_str())
    fail(std::string(fn) + "() argument must be str, not " + (v ? type_name(*v) : "nothing"));
  return v->s();
}

std::optional<std::string> opt_str(const std::optional<Value>& v, const char* fn) {
  if (!v || v->is_none()) return std::nullopt;
  return need_str(v, fn);
}

int64_t opt_int(const std::optional<Value>& v, int64_t dflt, const char* fn) {
  if (!v || v->is_none()) return dflt;
  if (!v->is_int())
    fail(std::string(fn) + "(): '" + type_name(*v) + "' object cannot be interpreted as an integer");
  return v->i;
}

// s[start:end] for the optional start/end arguments of find/count/startswith.
std::string window(const std::string& s, const std::optional<Value>& start, const std::optional<Value>& end) {
  if ((!start || start->is_none()) && (!end || end->is_none())) return s;
  std::optional<int64_t> b, e;
  if (start && !start->is_none()) b = opt_int(start, 0, "slice");
  if (end && !end->is_none()) e = opt_int(end, 0, "slice");
  return pystr::slice(s, b, e, std::nullopt);
}

bool affix(const std::string& s, const Value& what, bool prefix, const char* fn) {
  auto one = [&](const Value& x) {
    if (!x.is_str()) fail(std::string(fn) + " first arg must be str or a tuple of str, not " + type_name(x));
    const std::string& a = x.s();
    if (a.size() > s.size()) return false;
    return prefix ? s.compare(0, a.size(), a) == 0 : s.compare(s.size() - a.size(), a.size(), a) == 0;
  };
  if (what.is_seq() && what.seq == SeqKind::Tuple) {
    for (const Value& x : what.items())
      if (one(x)) return true;
    return false;
  }
  return one(what);
}

template <class P>
bool all_chars(const std::string& s, P pred) {
  if (s.empty()) return false;
  for (char32_t c : pystr::decode(s))
    if (!pred(c)) return false;
  return true;
}

char32_t fill_char(const std::optional<Value>& v, const char* fn) {
  if (!v) return U' ';
  const std::u32string f = pystr::decode(need_str(v, fn));
  if (f.size() != 1) fail(std::string(fn) + "(): The fill character must be exactly one character long");
  return f[0];
}

Value str_method(Interp& in, const std::string& s, const std::string& m, CallArgs& a) {
  auto args = [&](std::initializer_list<const char*> names) { return bind_args(m.c_str(), a, names); };
  if (m == "strip" || m == "lstrip" || m == "rstrip") {
    const auto p = args({"chars"});
    return Value::string(pystr::strip(s, opt_str(p[0], m.c_str()), m != "rstrip", m != "lstrip"));
  }
  if (m == "split" || m == "rsplit") {
    const auto p = args({"sep", "maxsplit"});
    const auto sep = opt_str(p[0], m.c_str());
    if (sep && sep->empty()) fail("empty separator");
    const int64_t n = opt_int(p[1], -1, m.c_str());
    List out;
    for (auto& part : m == "split" ? pystr::split(s, sep, n) : pystr::rsplit(s, sep, n))
      out.push_back(Value::string(std::move(part)));
    return Value::list(std::move(out));
  }
  if (m == "splitlines") {
    const auto p = args({"keepends"});
    List out;
    for (auto& line : pystr::splitlines(s, p[0] && truthy(*p[0]))) out.push_back(Value::string(std::move(line)));
    return Value::list(std::move(out));
  }
  if (m == "startswith" || m == "endswith") {
    const auto p = args({"prefix", "start", "end"});
    if (!p[0]) fail(m + "() takes at least 1 argument (0 given)");
    return Value::boolean(affix(window(s, p[1], p[2]), *p[0], m == "startswith", m.c_str()));
  }
  if (m == "replace") {
    const auto p = args({"old", "new", "count"});
    std::string r = pystr::replace(s, need_str(p[0], "replace"), need_str(p[1], "replace"), opt_int(p[2], -1, "replace"));
    in.check_size(r.size());
    return Value::string(std::move(r));
  }
  if (m == "find" || m == "rfind" || m == "index" || m == "rindex" || m == "count") {
    const auto p = args({"sub", "start", "end"});
    const std::string& sub = need_str(p[0], m.c_str());
    const std::string w = window(s, p[1], p[2]);
    if (m == "count") return Value::integer(pystr::count(w, sub));
    int64_t r = pystr::find(w, sub, m[0] == 'r');
    if (r < 0 && (m == "index" || m == "rindex")) fail("substring not found");
    if (r >= 0 && p[1] && !p[1]->is_none()) {
      int64_t b = p[1]->i;
      const int64_t n = int64_t(pystr::length(s));
      if (b < 0) b = std::max<int64_t>(0, b + n);
      r += std::min(b, n);
    }
    return Value::integer(r);
  }
  if (m == "upper") return args({}), Value::string(pystr::upper(s));
  if (m == "lower" || m == "casefold") return args({}), Value::string(pystr::lower(s));
  if (m == "title") return args({}), Value::string(pystr::title(s));
  if (m == "capitalize") return args({}), Value::string(pystr::capitalize(s));
  if (m == "swapcase") return args({}), Value::string(pystr::swapcase(s));
  if (m == "join") {
    const auto p = args({"iterable"});
    if (!p[0]) fail("join() takes exactly one argument (0 given)");
    std::string out;
    size_t k = 0;
    for (const Value& x : iterate(*p[0])) {
      if (!x.is_str())
        fail("sequence item " + std::to_string(k) + ": expected str instance, " + type_name(x) + " found");
      if (k++) out += s;
      out += x.s();
      in.check_size(out.size());
    }
    return Value::string(std::move(out));
  }
  if (m == "center" || m == "ljust" || m == "rjust") {
    const auto p = args({"width", "fillchar"});
    const int64_t w = opt_int(p[0], 0, m.c_str());
    in.check_size(size_t(std::max<int64_t>(0, w)) * 4);
    const char32_t f = fill_char(p[1], m.c_str());
    return Value::string(m == "center" ? pystr::center(s, w, f) : m == "ljust" ? pystr::ljust(s, w, f) : pystr::rjust(s, w, f));
  }
  if (m == "zfill") {
    const auto p = args({"width"});
    const int64_t w = opt_int(p[0], 0, "zfill");
    in.check_size(size_t(std::max<int64_t>(0, w)));
    return Value::string(pystr::zfill(s, w));
  }
  if (m == "partition" || m == "rpartition") {
    const auto p = args({"sep"});
    const std::string& sep = need_str(p[0], m.c_str());
    if (sep.empty()) fail("empty separator");
    const size_t at = m == "partition" ? s.find(sep) : s.rfind(sep);
    if (at == std::string::npos) {
      if (m == "partition") return Value::list({Value::string(s), Value::string(""), Value::string("")}, SeqKind::Tuple);
      return Value::list({Value::string(""), Value::string(""), Value::string(s)}, SeqKind::Tuple);
    }
    return Value::list({Value::string(s.substr(0, at)), Value::string(sep), Value::string(s.substr(at + sep.size()))},
                       SeqKind::Tuple);
  }
  if (m == "removeprefix" || m == "removesuffix") {
    const auto p = args({"affix"});
    const std::string& x = need_str(p[0], m.c_str());
    if (m == "removeprefix" && s.compare(0, x.size(), x) == 0) return Value::string(s.substr(x.size()));
    if (m == "removesuffix" && !x.empty() && s.size() >= x.size() && s.compare(s.size() - x.size(), x.size(), x) == 0)
      return Value::string(s.substr(0, s.size() - x.size()));
    return Value::string(s);
  }
  if (m == "format") return Value::string(str_format(in, s, a));
  if (m.rfind("is", 0) == 0) {
    args({});
    if (m == "isalpha") return Value::boolean(all_chars(s, pystr::is_alpha));
    if (m == "isalnum") return Value::boolean(all_chars(s, [](char32_t c) { return pystr::is_alpha(c) || pystr::is_digit(c); }));
    if (m == "isdigit" || m == "isnumeric") return Value::boolean(all_chars(s, pystr::is_digit));
    if (m == "isdecimal") return Value::boolean(all_chars(s, pystr::is_decimal));
    if (m == "isspace") return Value::boolean(all_chars(s, pystr::is_space));
    if (m == "isascii") return Value::boolean(pystr::is_ascii(s));
    if (m == "isprintable") return Value::boolean(s.empty() || all_chars(s, pystr::is_printable));
    if (m == "islower" || m == "isupper") {
      bool cased = false;
      for (char32_t c : pystr::decode(s)) {
        if (m == "islower" ? pystr::is_upper_char(c) : pystr::is_lower_char(c)) return Value::boolean(false);
        cased |= pystr::is_cased(c);
      }
      return Value::boolean(cased);
    }
  }
  fail("str." + m + "() is not supported by kiln");
}

Value dict_method(const Value& self, const std::string& m, CallArgs& a) {
  const DictData& d = self.d();
  if (m == "get") {
    const auto p = bind_args("get", a, {"key", "default"});
    if (!p[0]) fail("get expected at least 1 argument, got 0");
    if (!hashable(*p[0])) fail("unhashable type: '" + type_name(*p[0]) + "'");
    if (const Value* v = d.find(*p[0])) return *v;
    return p[1] ? *p[1] : Value::none();
  }
  bind_args(m.c_str(), a, {});
  List out;
  for (const auto& [k, v] : d.entries) {
    if (m == "items") out.push_back(Value::list({k, v}, SeqKind::Tuple));
    else if (m == "keys") out.push_back(k);
    else if (m == "values") out.push_back(v);
  }
  if (m == "items") return Value::list(std::move(out), SeqKind::ItemsView);
  if (m == "keys") return Value::list(std::move(out), SeqKind::KeysView);
  if (m == "values") return Value::list(std::move(out), SeqKind::ValuesView);
  if (m == "copy") return self;
  fail("dict." + m + "() is not supported by kiln");
}

// GCC 12 reports a false "may be used uninitialized" on moving a Value's
// std::variant out of the vector in pop().
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
Value list_method(const Value& self, const std::string& m, CallArgs& a) {
  const List& xs = self.items();
  if (m == "copy") return bind_args("copy", a, {}), Value::list(xs);
  if (m == "pop" || m == "clear") {
    // Python lists are shared by reference: every alias sees the change.
    List& mut = self.mutable_items();
    if (m == "clear") {
      bind_args("clear", a, {});
      mut.clear();
      return Value::none();
    }
    const auto p = bind_args("pop", a, {"index"});
    if (mut.empty()) fail("pop from empty list");
    int64_t k = opt_int(p[0], -1, "pop");
    if (k < 0) k += int64_t(mut.size());
    if (k < 0 || k >= int64_t(mut.size())) fail("pop index out of range");
    Value v = std::move(mut[size_t(k)]);
    mut.erase(mut.begin() + k);
    return v;
  }
  const auto p = bind_args(m.c_str(), a, {"value", "start", "stop"});
  if (!p[0]) fail(m + "() takes at least 1 argument (0 given)");
  if (m == "count") {
    return Value::integer(std::count_if(xs.begin(), xs.end(), [&](const Value& x) { return equal(x, *p[0]); }));
  }
  const int64_t n = int64_t(xs.size());
  auto norm = [n](int64_t k) { return k < 0 ? std::max<int64_t>(0, k + n) : std::min(k, n); };
  const int64_t b = norm(opt_int(p[1], 0, "index")), e = norm(opt_int(p[2], n, "index"));
  for (int64_t k = b; k < e; ++k)
    if (equal(xs[size_t(k)], *p[0])) return Value::integer(k);
  fail(repr(*p[0]) + " is not in list");
}
#pragma GCC diagnostic pop

Value bound(const Value& self, const std::string& name, Value (*impl)(Interp&, const Value&, const std::string&, CallArgs&)) {
  return Value::object(std::make_shared<NativeFn>(
      type_name(self) + "." + name,
      [self, name, impl](Interp& in, CallArgs& a) { return impl(in, self, name, a); }, true));
}

Value call_str(Interp& in, const Value& self, const std::string& m, CallArgs& a) { return str_method(in, self.s(), m, a); }
Value call_dict(Interp&, const Value& self, const std::string& m, CallArgs& a) { return dict_method(self, m, a); }
Value call_list(Interp&, const Value& self, const std::string& m, CallArgs& a) { return list_method(self, m, a); }

Value unsafe(const Value& self, const std::string& name) {
  return Value::undefined("access to attribute '" + name + "' of '" + type_name(self) + "' object is unsafe.");
}

}  // namespace

std::optional<Value> method_attr(const Value& self, const std::string& name) {
  switch (self.kind) {
    case Kind::Str:
      if (in(kStrMethods, name)) return bound(self, name, call_str);
      return std::nullopt;
    case Kind::Dict:
      if (in(kDictSafe, name)) return bound(self, name, call_dict);
      if (in(kDictUnsafe, name)) return unsafe(self, name);
      return std::nullopt;
    case Kind::Seq:
      if (self.seq == SeqKind::List) {
        if (in(kListSafe, name)) return bound(self, name, call_list);
        if (in(kListUnsafe, name)) return unsafe(self, name);
      } else if (self.seq == SeqKind::Tuple && (name == "count" || name == "index")) {
        return bound(self, name, call_list);
      }
      return std::nullopt;
    default: return std::nullopt;
  }
}

}  // namespace kiln::jinja
