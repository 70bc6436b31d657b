// jinja2's builtin filters (3.1), with transformers' tojson. Each follows the
// jinja2 function of the same name, including its quirks: select/map/unique
// return one-shot iterators (no len()), `default` only replaces Undefined
// unless boolean=true, `int` falls back through float ("42.5"|int is 42).
#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>

#include "kiln/template/builtins.h"
#include "kiln/template/interp.h"
#include "kiln/template/pystr.h"

namespace kiln::jinja {
namespace {

using FilterFn = Value (*)(Interp&, const Value&, CallArgs&);

// ignore_case: strings compare lower-cased unless case_sensitive.
Value fold(const Value& v, bool case_sensitive) {
  if (!case_sensitive && v.is_str()) return Value::string(pystr::lower(v.s()));
  return v;
}

// make_attrgetter: "a.b.0" walks items (then attributes) one part at a time.
std::vector<Value> attr_parts(const Value& attribute) {
  std::vector<Value> parts;
  if (attribute.is_none() || attribute.is_undefined()) return parts;
  if (!attribute.is_str()) return {attribute};
  for (const std::string& p : pystr::split(attribute.s(), std::string("."), -1)) {
    const bool digits = !p.empty() && std::all_of(p.begin(), p.end(), [](char c) { return std::isdigit(uint8_t(c)); });
    parts.push_back(digits ? Value::integer(std::stoll(p)) : Value::string(p));
  }
  return parts;
}

Value get_path(Interp& in, Value item, const std::vector<Value>& parts,
               const std::optional<Value>& dflt = std::nullopt) {
  for (const Value& part : parts) {
    item = in.getitem(item, part);
    if (dflt && !dflt->is_none() && item.is_undefined()) item = *dflt;
  }
  return item;
}

bool arg_bool(const std::optional<Value>& v, bool dflt) { return v ? truthy(*v) : dflt; }
int64_t arg_int(const std::optional<Value>& v, int64_t dflt, const char* what) {
  if (!v || v->is_none()) return dflt;
  if (!v->is_int()) fail(std::string(what) + ": an integer is required, not " + type_name(*v));
  return v->i;
}

Value iter_of(List xs) { return Value::list(std::move(xs), SeqKind::Iter); }

Value f_abs(Interp&, const Value& v, CallArgs& a) {
  bind_args("abs", a, {});
  if (v.is_int()) {
    if (v.i == INT64_MIN) fail("integer overflow (kiln's integers are 64-bit)");
    return Value::integer(v.i < 0 ? -v.i : v.i);
  }
  if (v.kind == Kind::Float) return Value::number(std::fabs(v.f));
  if (v.is_undefined()) undefined_error(v);
  fail("bad operand type for abs(): '" + type_name(v) + "'");
}

// `attr` reads a Python attribute only (methods, namespace/loop attributes),
// never a dict key: {'a': 1}|attr('a') is undefined.
Value f_attr(Interp& in, const Value& v, CallArgs& a) {
  const auto p = bind_args("attr", a, {"name"});
  if (!p[0]) fail("attr() missing required argument 'name'");
  const std::string name = to_str(*p[0]);
  if (v.is_obj()) {
    if (auto x = v.o().attr(in, name)) return *x;
  } else if (!v.is_dict()) {
    const Value x = in.getattr(v, name);  // str/list methods, int.real, ...
    if (!x.is_undefined()) return x;
  } else if (auto m = method_attr(v, name)) {
    return *m;
  }
  return Value::undefined("'" + type_name(v) + " object' has no attribute '" + name + "'");
}

Value f_batch(Interp&, const Value& v, CallArgs& a) {
  const auto p = bind_args("batch", a, {"linecount", "fill_with"});
  const int64_t n = arg_int(p[0], 0, "batch");
  if (n <= 0) fail("batch size must be positive");
  List out, cur;
  for (const Value& x : iterate(v)) {
    if (int64_t(cur.size()) == n) out.push_back(Value::list(std::exchange(cur, {})));
    cur.push_back(x);
  }
  if (!cur.empty()) {
    if (p[1] && !p[1]->is_none())
      while (int64_t(cur.size()) < n) cur.push_back(*p[1]);
    out.push_back(Value::list(std::move(cur)));
  }
  return iter_of(std::move(out));
}

Value f_capitalize(Interp&, const Value& v, CallArgs& a) {
  bind_args("capitalize", a, {});
  return Value::string(pystr::capitalize(to_str(v)));
}

Value f_center(Interp& in, const Value& v, CallArgs& a) {
  const auto p = bind_args("center", a, {"width"});
  const int64_t w = arg_int(p[0], 80, "center");
  in.check_size(size_t(std::max<int64_t>(0, w)));
  return Value::string(pystr::center(to_str(v), w, U' '));
}

Value f_length(Interp&, const Value& v, CallArgs& a) {
  bind_args("length", a, {});
  return Value::integer(length(v));
}

Value f_default(Interp&, const Value& v, CallArgs& a) {
  const auto p = bind_args("default", a, {"default_value", "boolean"});
  if (v.is_undefined() || (arg_bool(p[1], false) && !truthy(v)))
    return p[0] ? *p[0] : Value::string("");
  return v;
}

void stable_sort_by(List& xs, const std::function<Value(const Value&)>& key, bool reverse) {
  std::vector<std::pair<Value, Value>> keyed;
  keyed.reserve(xs.size());
  for (Value& x : xs) keyed.emplace_back(key(x), std::move(x));
  std::stable_sort(keyed.begin(), keyed.end(), [reverse](const auto& l, const auto& r) {
    return reverse ? less(r.first, l.first) : less(l.first, r.first);
  });
  xs.clear();
  for (auto& kv : keyed) xs.push_back(std::move(kv.second));
}

Value f_dictsort(Interp&, const Value& v, CallArgs& a) {
  const auto p = bind_args("dictsort", a, {"case_sensitive", "by", "reverse"});
  if (!v.is_dict()) fail("'" + type_name(v) + "' object has no attribute 'items'");
  const std::string by = p[1] ? to_str(*p[1]) : "key";
  if (by != "key" && by != "value") fail("You can only sort by either \"key\" or \"value\"");
  const bool cs = arg_bool(p[0], false);
  List items;
  for (const auto& [k, x] : v.d().entries) items.push_back(Value::list({k, x}, SeqKind::Tuple));
  const size_t pos = by == "key" ? 0 : 1;
  stable_sort_by(items, [&](const Value& it) { return fold(it.items()[pos], cs); }, arg_bool(p[2], false));
  return Value::list(std::move(items));
}

std::string html_escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&#34;"; break;
      case '\'': out += "&#39;"; break;
      default: out += c;
    }
  }
  return out;
}

Value f_escape(Interp&, const Value& v, CallArgs& a) {
  bind_args("escape", a, {});
  return Value::string(html_escape(to_str(v)));
}

Value f_first(Interp&, const Value& v, CallArgs& a) {
  bind_args("first", a, {});
  const List xs = iterate(v);
  if (xs.empty()) return Value::undefined("No first item, sequence was empty.");
  return xs.front();
}

Value f_last(Interp&, const Value& v, CallArgs& a) {
  bind_args("last", a, {});
  if (v.is_seq() && v.seq == SeqKind::Iter) fail("'generator' object is not reversible");
  const List xs = iterate(v);
  if (xs.empty()) return Value::undefined("No last item, sequence was empty.");
  return xs.back();
}

Value f_float(Interp&, const Value& v, CallArgs& a) {
  const auto p = bind_args("float", a, {"default"});
  if (v.is_undefined()) undefined_error(v);
  if (v.is_number()) return Value::number(v.as_double());
  if (v.is_str())
    if (auto d = py_float_from_str(v.s())) return Value::number(*d);
  return p[0] ? *p[0] : Value::number(0.0);
}

Value f_format(Interp&, const Value& v, CallArgs& a) {
  if (!a.pos.empty() && !a.kw.empty())
    fail("can't handle positional and keyword arguments at the same time");
  if (!a.kw.empty()) {
    DictData d;
    for (const auto& [k, x] : a.kw) d.set(Value::string(k), x);
    return Value::string(percent_format(to_str(v), Value::dict(std::move(d))));
  }
  return Value::string(percent_format(to_str(v), Value::list(a.pos, SeqKind::Tuple)));
}

Value f_indent(Interp& in, const Value& v, CallArgs& a) {
  const auto p = bind_args("indent", a, {"width", "first", "blank"});
  std::string ind;
  if (p[0] && p[0]->is_str()) {
    ind = p[0]->s();
  } else {
    const int64_t w = std::max<int64_t>(0, arg_int(p[0], 4, "indent"));
    in.check_size(size_t(w));
    ind = std::string(size_t(w), ' ');
  }
  const std::string s = to_str(v) + "\n";
  const std::vector<std::string> lines = pystr::splitlines(s, false);
  std::string rv;
  if (arg_bool(p[2], false)) {
    for (size_t k = 0; k < lines.size(); ++k) rv += (k ? "\n" + ind : "") + lines[k];
  } else {
    rv = lines.empty() ? "" : lines[0];
    for (size_t k = 1; k < lines.size(); ++k) rv += "\n" + (lines[k].empty() ? "" : ind + lines[k]);
  }
  if (arg_bool(p[1], false)) rv = ind + rv;
  in.check_size(rv.size());
  return Value::string(std::move(rv));
}

// int(value) (int(value, base) for strings), falling back to int(float(value)).
Value f_int(Interp&, const Value& v, CallArgs& a) {
  const auto p = bind_args("int", a, {"default", "base"});
  const Value dflt = p[0] ? *p[0] : Value::integer(0);
  if (v.is_undefined()) undefined_error(v);
  if (v.is_int()) return Value::integer(v.i);
  std::optional<double> d;
  if (v.is_str()) {
    if (auto r = py_int_from_str(v.s(), int(arg_int(p[1], 10, "int")))) return Value::integer(*r);
    d = py_float_from_str(v.s());
  } else if (v.kind == Kind::Float) {
    d = v.f;
  }
  if (!d || std::isnan(*d)) return dflt;
  if (std::isinf(*d)) fail("cannot convert float infinity to integer");
  if (std::fabs(*d) >= 9.2233720368547758e18) fail("integer overflow (kiln's integers are 64-bit)");
  return Value::integer(int64_t(*d));
}

Value f_items(Interp&, const Value& v, CallArgs& a) {
  bind_args("items", a, {});
  if (v.is_undefined()) return iter_of({});
  if (!v.is_dict()) fail("Can only get item pairs from a mapping.");
  List out;
  for (const auto& [k, x] : v.d().entries) out.push_back(Value::list({k, x}, SeqKind::Tuple));
  return iter_of(std::move(out));
}

Value f_join(Interp& in, const Value& v, CallArgs& a) {
  const auto p = bind_args("join", a, {"d", "attribute"});
  const std::string sep = p[0] ? to_str(*p[0]) : "";
  const std::vector<Value> parts = p[1] ? attr_parts(*p[1]) : std::vector<Value>{};
  std::string out;
  bool first = true;
  for (const Value& x : iterate(v)) {
    if (!first) out += sep;
    first = false;
    out += to_str(p[1] ? get_path(in, x, parts) : x);
    in.check_size(out.size());
  }
  return Value::string(std::move(out));
}

Value f_list(Interp&, const Value& v, CallArgs& a) {
  bind_args("list", a, {});
  return Value::list(iterate(v));
}

Value f_lower(Interp&, const Value& v, CallArgs& a) {
  bind_args("lower", a, {});
  return Value::string(pystr::lower(to_str(v)));
}

Value f_upper(Interp&, const Value& v, CallArgs& a) {
  bind_args("upper", a, {});
  return Value::string(pystr::upper(to_str(v)));
}

Value f_title(Interp&, const Value& v, CallArgs& a) {
  bind_args("title", a, {});
  return Value::string(pystr::jinja_title(to_str(v)));
}

Value f_map(Interp& in, const Value& v, CallArgs& a) {
  List out;
  const List xs = iterate(v);
  if (a.pos.empty()) {
    std::optional<Value> attribute, dflt;
    for (const auto& [k, x] : a.kw) {
      if (k == "attribute") attribute = x;
      else if (k == "default") dflt = x;
      else fail("Unexpected keyword argument '" + k + "'");
    }
    if (!attribute) fail("map requires a filter argument");
    const auto parts = attr_parts(*attribute);
    for (const Value& x : xs) out.push_back(get_path(in, x, parts, dflt ? dflt : std::optional<Value>()));
    return iter_of(std::move(out));
  }
  const std::string name = to_str(a.pos[0]);
  const int id = filter_id(name);
  if (id == kUnknown) fail("No filter named '" + name + "'.");
  for (const Value& x : xs) {
    CallArgs rest{List(a.pos.begin() + 1, a.pos.end()), a.kw};
    out.push_back(apply_filter(in, id, name, x, rest));
  }
  return iter_of(std::move(out));
}

Value min_max(Interp& in, const Value& v, CallArgs& a, bool want_max) {
  const auto p = bind_args(want_max ? "max" : "min", a, {"case_sensitive", "attribute"});
  const List xs = iterate(v);
  if (xs.empty()) return Value::undefined("No aggregated item, sequence was empty.");
  const bool cs = arg_bool(p[0], false);
  const auto parts = p[1] ? attr_parts(*p[1]) : std::vector<Value>{};
  size_t best = 0;
  Value best_key = fold(get_path(in, xs[0], parts), cs);
  for (size_t k = 1; k < xs.size(); ++k) {
    Value key = fold(get_path(in, xs[k], parts), cs);
    if (want_max ? less(best_key, key) : less(key, best_key)) {
      best = k;
      best_key = std::move(key);
    }
  }
  return xs[best];
}
Value f_max(Interp& in, const Value& v, CallArgs& a) { return min_max(in, v, a, true); }
Value f_min(Interp& in, const Value& v, CallArgs& a) { return min_max(in, v, a, false); }

// select / reject / selectattr / rejectattr.
Value select_reject(Interp& in, const Value& v, CallArgs& a, bool keep, bool by_attr) {
  if (!truthy(v)) return iter_of({});
  size_t off = 0;
  std::vector<Value> parts;
  if (by_attr) {
    if (a.pos.empty()) fail("Missing parameter for attribute name");
    parts = attr_parts(a.pos[0]);
    off = 1;
  }
  std::optional<std::string> test;
  int id = kUnknown;
  if (a.pos.size() > off) {
    test = to_str(a.pos[off]);
    id = test_id(*test);
    if (id == kUnknown) fail("No test named '" + *test + "'.");
  }
  List out;
  for (const Value& x : iterate(v)) {
    const Value subject = by_attr ? get_path(in, x, parts) : x;
    bool ok;
    if (test) {
      CallArgs rest{List(a.pos.begin() + long(off) + 1, a.pos.end()), a.kw};
      ok = apply_test(in, id, *test, subject, rest);
    } else {
      ok = truthy(subject);
    }
    if (ok == keep) out.push_back(x);
  }
  return iter_of(std::move(out));
}
Value f_select(Interp& in, const Value& v, CallArgs& a) { return select_reject(in, v, a, true, false); }
Value f_reject(Interp& in, const Value& v, CallArgs& a) { return select_reject(in, v, a, false, false); }
Value f_selectattr(Interp& in, const Value& v, CallArgs& a) { return select_reject(in, v, a, true, true); }
Value f_rejectattr(Interp& in, const Value& v, CallArgs& a) { return select_reject(in, v, a, false, true); }

Value f_replace(Interp& in, const Value& v, CallArgs& a) {
  const auto p = bind_args("replace", a, {"old", "new", "count"});
  if (!p[0] || !p[1]) fail("replace() missing required arguments 'old' and 'new'");
  std::string r = pystr::replace(to_str(v), to_str(*p[0]), to_str(*p[1]), arg_int(p[2], -1, "replace"));
  in.check_size(r.size());
  return Value::string(std::move(r));
}

Value f_reverse(Interp&, const Value& v, CallArgs& a) {
  bind_args("reverse", a, {});
  if (v.is_str()) return Value::string(pystr::slice(v.s(), std::nullopt, std::nullopt, -1));
  List xs = iterate(v);
  std::reverse(xs.begin(), xs.end());
  // reversed() gives an iterator; a generator has no reversed() and becomes a list.
  return Value::list(std::move(xs), v.is_seq() && v.seq == SeqKind::Iter ? SeqKind::List : SeqKind::Iter);
}

// Python's round(x, n): correctly rounded, ties to even, via glibc's printf.
double py_round(double x, int64_t n) {
  if (!std::isfinite(x) || n > 300) return x;
  if (n < -300) return 0.0 * x;
  if (n >= 0) {
    char buf[512];
    std::snprintf(buf, sizeof buf, "%.*f", int(n), x);
    return std::strtod(buf, nullptr);
  }
  const double p = std::pow(10.0, double(-n));
  const double y = x / p;
  double r = std::nearbyint(y);
  return r * p;
}

Value f_round(Interp&, const Value& v, CallArgs& a) {
  const auto p = bind_args("round", a, {"precision", "method"});
  const int64_t prec = arg_int(p[0], 0, "round");
  const std::string method = p[1] ? to_str(*p[1]) : "common";
  if (method != "common" && method != "ceil" && method != "floor")
    fail("method must be common, ceil or floor");
  if (v.is_undefined()) undefined_error(v);
  if (!v.is_number()) fail("type " + type_name(v) + " doesn't define __round__ method");
  if (method == "common") {
    if (v.is_int()) {
      if (prec >= 0) return Value::integer(v.i);
      const double r = py_round(double(v.i), prec);
      return Value::integer(int64_t(r));
    }
    return Value::number(py_round(v.f, prec));
  }
  const double scale = std::pow(10.0, double(prec));
  const double x = v.as_double() * scale;
  return Value::number((method == "ceil" ? std::ceil(x) : std::floor(x)) / scale);
}

Value f_safe(Interp&, const Value& v, CallArgs& a) {
  bind_args("safe", a, {});
  return Value::string(to_str(v));
}

Value f_slice(Interp&, const Value& v, CallArgs& a) {
  const auto p = bind_args("slice", a, {"slices", "fill_with"});
  const int64_t slices = arg_int(p[0], 0, "slice");
  if (slices <= 0) fail("slices must be positive");
  if (slices > (int64_t(1) << 20)) fail("slice count too large (kiln's limit is 1048576)");
  const List seq = iterate(v);
  const int64_t len = int64_t(seq.size()), per = len / slices, extra = len % slices;
  int64_t offset = 0;
  List out;
  for (int64_t n = 0; n < slices; ++n) {
    const int64_t start = offset + n * per;
    if (n < extra) ++offset;
    const int64_t end = offset + (n + 1) * per;
    List part(seq.begin() + start, seq.begin() + end);
    if (p[1] && !p[1]->is_none() && n >= extra) part.push_back(*p[1]);
    out.push_back(Value::list(std::move(part)));
  }
  return iter_of(std::move(out));
}

Value f_sort(Interp& in, const Value& v, CallArgs& a) {
  const auto p = bind_args("sort", a, {"reverse", "case_sensitive", "attribute"});
  const bool cs = arg_bool(p[1], false);
  List xs = iterate(v);
  std::vector<std::vector<Value>> paths;
  if (p[2] && p[2]->is_str()) {
    for (const std::string& part : pystr::split(p[2]->s(), std::string(","), -1))
      paths.push_back(attr_parts(Value::string(part)));
  } else {
    paths.push_back(p[2] ? attr_parts(*p[2]) : std::vector<Value>{});
  }
  stable_sort_by(xs, [&](const Value& x) {
    List key;
    for (const auto& path : paths) key.push_back(fold(get_path(in, x, path), cs));
    return Value::list(std::move(key));
  }, arg_bool(p[0], false));
  return Value::list(std::move(xs));
}

Value f_string(Interp&, const Value& v, CallArgs& a) {
  bind_args("string", a, {});
  return v.is_str() ? v : Value::string(to_str(v));
}

Value f_sum(Interp& in, const Value& v, CallArgs& a) {
  const auto p = bind_args("sum", a, {"attribute", "start"});
  Value total = p[1] ? *p[1] : Value::integer(0);
  if (total.is_str()) fail("sum() can't sum strings [use ''.join(seq) instead]");
  const auto parts = p[0] ? attr_parts(*p[0]) : std::vector<Value>{};
  for (const Value& x : iterate(v)) total = arith(ExprKind::Add, total, get_path(in, x, parts), in);
  return total;
}

Value f_tojson(Interp& in, const Value& v, CallArgs& a) {
  const auto p = bind_args("tojson", a, {"ensure_ascii", "indent", "separators", "sort_keys"});
  JsonOptions o;
  o.ensure_ascii = arg_bool(p[0], false);
  if (p[1] && !p[1]->is_none()) {
    if (p[1]->is_str()) o.indent = p[1]->s();
    else {
      const int64_t w = std::max<int64_t>(0, arg_int(p[1], 0, "tojson"));
      in.check_size(size_t(w));
      o.indent = std::string(size_t(w), ' ');
    }
    o.item_sep = ",";
  }
  if (p[2] && !p[2]->is_none()) {
    const List seps = iterate(*p[2]);
    if (seps.size() != 2) fail("separators must be an (item_separator, key_separator) pair");
    o.item_sep = to_str(seps[0]);
    o.key_sep = to_str(seps[1]);
  }
  o.sort_keys = arg_bool(p[3], false);
  o.max_bytes = in.options.max_output_bytes;
  std::string s = json_dumps(v, o);
  in.check_size(s.size());
  return Value::string(std::move(s));
}

Value f_trim(Interp&, const Value& v, CallArgs& a) {
  const auto p = bind_args("trim", a, {"chars"});
  std::optional<std::string> chars;
  if (p[0] && !p[0]->is_none()) chars = to_str(*p[0]);
  return Value::string(pystr::strip(to_str(v), chars, true, true));
}

Value f_truncate(Interp&, const Value& v, CallArgs& a) {
  const auto p = bind_args("truncate", a, {"length", "killwords", "end", "leeway"});
  const std::string s = to_str(v);
  const int64_t len = arg_int(p[0], 255, "truncate");
  const std::string end = p[2] ? to_str(*p[2]) : "...";
  const int64_t leeway = arg_int(p[3], 5, "truncate");
  const int64_t end_len = int64_t(pystr::length(end));
  if (len < end_len) fail("expected length >= " + std::to_string(end_len) + ", got " + std::to_string(len));
  if (leeway < 0) fail("expected leeway >= 0, got " + std::to_string(leeway));
  if (int64_t(pystr::length(s)) <= len + leeway) return Value::string(s);
  std::string head = pystr::slice(s, std::nullopt, len - end_len, std::nullopt);
  if (!arg_bool(p[1], false)) head = pystr::rsplit(head, std::string(" "), 1).front();
  return Value::string(head + end);
}

Value f_unique(Interp& in, const Value& v, CallArgs& a) {
  const auto p = bind_args("unique", a, {"case_sensitive", "attribute"});
  const bool cs = arg_bool(p[0], false);
  const auto parts = p[1] ? attr_parts(*p[1]) : std::vector<Value>{};
  List out, seen;
  for (const Value& x : iterate(v)) {
    const Value key = fold(get_path(in, x, parts), cs);
    if (!hashable(key)) fail("unhashable type: '" + type_name(key) + "'");
    if (std::none_of(seen.begin(), seen.end(), [&](const Value& s) { return equal(s, key); })) {
      seen.push_back(key);
      out.push_back(x);
    }
  }
  return iter_of(std::move(out));
}

Value f_wordcount(Interp&, const Value& v, CallArgs& a) {
  bind_args("wordcount", a, {});
  int64_t n = 0;
  bool in_word = false;
  for (char32_t c : pystr::decode(to_str(v))) {
    const bool w = c == '_' || pystr::is_alpha(c) || pystr::is_digit(c);
    if (w && !in_word) ++n;
    in_word = w;
  }
  return Value::integer(n);
}

struct FilterEntry {
  const char* name;
  FilterFn fn;
};
constexpr FilterEntry kFilters[] = {
    {"abs", f_abs},           {"attr", f_attr},         {"batch", f_batch},
    {"capitalize", f_capitalize}, {"center", f_center}, {"count", f_length},
    {"d", f_default},         {"default", f_default},   {"dictsort", f_dictsort},
    {"e", f_escape},          {"escape", f_escape},     {"first", f_first},
    {"float", f_float},       {"forceescape", f_escape}, {"format", f_format},
    {"indent", f_indent},     {"int", f_int},           {"items", f_items},
    {"join", f_join},         {"last", f_last},         {"length", f_length},
    {"list", f_list},         {"lower", f_lower},       {"map", f_map},
    {"max", f_max},           {"min", f_min},           {"reject", f_reject},
    {"rejectattr", f_rejectattr}, {"replace", f_replace}, {"reverse", f_reverse},
    {"round", f_round},       {"safe", f_safe},         {"select", f_select},
    {"selectattr", f_selectattr}, {"slice", f_slice},   {"sort", f_sort},
    {"string", f_string},     {"sum", f_sum},           {"title", f_title},
    {"tojson", f_tojson},     {"trim", f_trim},         {"truncate", f_truncate},
    {"unique", f_unique},     {"upper", f_upper},       {"wordcount", f_wordcount},
};
// jinja2 builtins kiln does not implement: they fail when a render reaches them.
constexpr const char* kUnsupportedFilters[] = {
    "filesizeformat", "groupby", "pprint", "random", "striptags",
    "urlencode",      "urlize",  "wordwrap", "xmlattr",
};

}  // namespace

int filter_id(std::string_view name) {
  for (size_t k = 0; k < std::size(kFilters); ++k)
    if (name == kFilters[k].name) return int(k);
  for (const char* n : kUnsupportedFilters)
    if (name == n) return kUnsupported;
  return kUnknown;
}

Value apply_filter(Interp& in, int id, const std::string& name, const Value& subject, CallArgs& args) {
  if (id < 0 || size_t(id) >= std::size(kFilters))
    fail("the '" + name + "' filter is not supported by kiln");
  return kFilters[id].fn(in, subject, args);
}

}  // namespace kiln::jinja
