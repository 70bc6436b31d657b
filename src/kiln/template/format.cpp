// Text conversions with Python's exact output: json.dumps (as transformers'
// tojson calls it), printf-style `%` formatting, str.format, and int()/float()
// parsing of strings.
#include <cmath>
#include <cstring>

#include "kiln/template/builtins.h"
#include "kiln/template/interp.h"
#include "kiln/template/pystr.h"

namespace kiln::jinja {

std::vector<std::optional<Value>> bind_args(const char* fn, const CallArgs& args,
                                            std::initializer_list<const char*> names) {
  std::vector<std::optional<Value>> out(names.size());
  if (args.pos.size() > names.size())
    fail(std::string(fn) + "() takes at most " + std::to_string(names.size()) + " argument(s) (" +
         std::to_string(args.pos.size()) + " given)");
  for (size_t k = 0; k < args.pos.size(); ++k) out[k] = args.pos[k];
  for (const auto& [key, v] : args.kw) {
    size_t idx = 0;
    for (const char* n : names) {
      if (key == n) break;
      ++idx;
    }
    if (idx == names.size()) fail(std::string(fn) + "() got an unexpected keyword argument '" + key + "'");
    if (out[idx]) fail(std::string(fn) + "() got multiple values for argument '" + key + "'");
    out[idx] = v;
  }
  return out;
}

// ---------------------------------------------------------------- int/float
static std::string strip_ws(std::string_view s) { return pystr::strip(s, std::nullopt, true, true); }

// Digits with single underscores between them, as Python's int()/float() accept.
static bool clean_digits(std::string_view s, int base, std::string& out) {
  if (s.empty() || s.front() == '_' || s.back() == '_') return false;
  for (size_t k = 0; k < s.size(); ++k) {
    const char c = s[k];
    if (c == '_') {
      if (s[k + 1] == '_') return false;
      continue;
    }
    const int d = std::isdigit(uint8_t(c)) ? c - '0' : std::isalpha(uint8_t(c)) ? std::tolower(uint8_t(c)) - 'a' + 10 : 99;
    if (d >= base) return false;
    out += c;
  }
  return true;
}

std::optional<int64_t> py_int_from_str(std::string_view text, int base) {
  std::string s = strip_ws(text);
  bool neg = false;
  size_t k = 0;
  if (k < s.size() && (s[k] == '+' || s[k] == '-')) neg = s[k++] == '-';
  std::string_view body(s);
  body.remove_prefix(k);
  if (base == 0 || base == 16 || base == 8 || base == 2) {
    if (body.size() >= 2 && body[0] == '0') {
      const char p = char(std::tolower(uint8_t(body[1])));
      const int b = p == 'x' ? 16 : p == 'o' ? 8 : p == 'b' ? 2 : 0;
      if (b && (base == 0 || base == b)) {
        base = b;
        body.remove_prefix(2);
        if (!body.empty() && body[0] == '_') body.remove_prefix(1);
      }
    }
    if (base == 0) {
      // base 0: decimal without leading zeros (except zero itself)
      base = 10;
      std::string d;
      if (!clean_digits(body, 10, d)) return std::nullopt;
      if (d.size() > 1 && d[0] == '0' && d.find_first_not_of('0') != std::string::npos) return std::nullopt;
    }
  }
  if (base < 2 || base > 36) return std::nullopt;
  std::string d;
  if (!clean_digits(body, base, d)) return std::nullopt;
  errno = 0;
  const unsigned long long v = std::strtoull(d.c_str(), nullptr, base);
  if (errno == ERANGE || v > uint64_t(INT64_MAX) + (neg ? 1 : 0))
    fail("integer overflow (kiln's integers are 64-bit)");
  return neg ? int64_t(0 - v) : int64_t(v);
}

std::optional<double> py_float_from_str(std::string_view text) {
  std::string s = strip_ws(text);
  std::string lower = pystr::lower(s);
  size_t k = 0;
  std::string sign;
  if (k < lower.size() && (lower[k] == '+' || lower[k] == '-')) sign = lower[k++];
  const std::string rest = lower.substr(k);
  if (rest == "inf" || rest == "infinity") return sign == "-" ? -HUGE_VAL : HUGE_VAL;
  if (rest == "nan") return std::nan("");
  // [digits][.digits][e[+-]digits] with at least one digit in the mantissa.
  std::string clean = sign;
  size_t p = 0;
  auto run = [&](bool required) {
    const size_t b = p;
    while (p < rest.size() && (std::isdigit(uint8_t(rest[p])) || rest[p] == '_')) ++p;
    std::string d;
    if (p == b) return !required;
    if (!clean_digits(std::string_view(rest).substr(b, p - b), 10, d)) return false;
    clean += d;
    return true;
  };
  const size_t m0 = p;
  if (!run(false)) return std::nullopt;
  bool digits = p > m0;
  if (p < rest.size() && rest[p] == '.') {
    clean += '.';
    ++p;
    const size_t f0 = p;
    if (!run(false)) return std::nullopt;
    digits |= p > f0;
  }
  if (!digits) return std::nullopt;
  if (p < rest.size() && rest[p] == 'e') {
    clean += 'e';
    ++p;
    if (p < rest.size() && (rest[p] == '+' || rest[p] == '-')) clean += rest[p++];
    if (!run(true)) return std::nullopt;
  }
  if (p != rest.size()) return std::nullopt;
  return std::strtod(clean.c_str(), nullptr);
}

// ---------------------------------------------------------------- json
static void json_string(std::string& out, const std::string& s, bool ensure_ascii) {
  static const char* hex = "0123456789abcdef";
  auto u = [&](uint32_t c) {
    out += "\\u";
    for (int sh = 12; sh >= 0; sh -= 4) out += hex[(c >> sh) & 15];
  };
  out += '"';
  for (char32_t c : pystr::decode(s)) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      case '\b': out += "\\b"; break;
      case '\f': out += "\\f"; break;
      default:
        if (c < 0x20 || (ensure_ascii && c >= 0x7F)) {
          if (c >= 0x10000) {
            const uint32_t v = c - 0x10000;
            u(0xD800 | (v >> 10));
            u(0xDC00 | (v & 0x3FF));
          } else {
            u(c);
          }
        } else {
          pystr::append_utf8(out, c);
        }
    }
  }
  out += '"';
}

static std::string json_float(double f) {
  if (std::isnan(f)) return "NaN";
  if (std::isinf(f)) return f < 0 ? "-Infinity" : "Infinity";
  return float_repr(f);
}

static void json_value(std::string& out, const Value& v, const JsonOptions& o, int level) {
  if (level > 500) fail("tojson: value nests too deeply");
  auto newline = [&](int lvl) {
    if (out.size() + 1 + size_t(lvl) * o.indent->size() > o.max_bytes)
      fail("tojson output exceeds the limit of " + std::to_string(o.max_bytes) + " bytes");
    out += '\n';
    for (int k = 0; k < lvl; ++k) out += *o.indent;
  };
  switch (v.kind) {
    case Kind::None: out += "null"; return;
    case Kind::Bool: out += v.i ? "true" : "false"; return;
    case Kind::Int: out += std::to_string(v.i); return;
    case Kind::Float: out += json_float(v.f); return;
    case Kind::Str: json_string(out, v.s(), o.ensure_ascii); return;
    case Kind::Seq: {
      if (v.seq != SeqKind::List && v.seq != SeqKind::Tuple) break;
      const List& xs = v.items();
      if (xs.empty()) {
        out += "[]";
        return;
      }
      out += '[';
      if (o.indent) newline(level + 1);
      for (size_t k = 0; k < xs.size(); ++k) {
        if (k) {
          out += o.item_sep;
          if (o.indent) newline(level + 1);
        }
        json_value(out, xs[k], o, level + 1);
      }
      if (o.indent) newline(level);
      out += ']';
      return;
    }
    case Kind::Dict: {
      std::vector<const std::pair<Value, Value>*> entries;
      for (const auto& e : v.d().entries) entries.push_back(&e);
      if (entries.empty()) {
        out += "{}";
        return;
      }
      if (o.sort_keys)
        std::stable_sort(entries.begin(), entries.end(),
                         [](const auto* a, const auto* b) { return less(a->first, b->first); });
      out += '{';
      if (o.indent) newline(level + 1);
      bool first = true;
      for (const auto* e : entries) {
        if (!first) {
          out += o.item_sep;
          if (o.indent) newline(level + 1);
        }
        first = false;
        const Value& k = e->first;
        std::string key;
        switch (k.kind) {
          case Kind::Str: key = k.s(); break;
          case Kind::Int: key = std::to_string(k.i); break;
          case Kind::Float: key = json_float(k.f); break;
          case Kind::Bool: key = k.i ? "true" : "false"; break;
          case Kind::None: key = "null"; break;
          default: fail("keys must be str, int, float, bool or None, not " + type_name(k));
        }
        json_string(out, key, o.ensure_ascii);
        out += o.key_sep;
        json_value(out, e->second, o, level + 1);
      }
      if (o.indent) newline(level);
      out += '}';
      return;
    }
    default: break;
  }
  fail("Object of type " + type_name(v) + " is not JSON serializable");
}

std::string json_dumps(const Value& v, const JsonOptions& o) {
  std::string out;
  json_value(out, v, o, 0);
  return out;
}

// ---------------------------------------------------------------- % format
namespace {

struct Spec {
  char32_t fill = U' ';
  char align = 0;  // '<', '>', '^', '='
  char sign = '-';
  bool alt = false, zero = false;
  int64_t width = -1, prec = -1;
  char grouping = 0;
  char type = 0;
};

std::string pad(const std::string& sign, const std::string& body, const Spec& sp, char dflt_align) {
  if (sp.width > (int64_t(1) << 26)) fail("format width too large (kiln's limit is 64 MiB)");
  const int64_t len = int64_t(pystr::length(sign) + pystr::length(body));
  if (sp.width <= len) return sign + body;
  const char align = sp.align ? sp.align : dflt_align;
  const int64_t n = sp.width - len;
  std::string f;
  for (int64_t k = 0; k < n; ++k) pystr::append_utf8(f, sp.fill);
  if (align == '<') return sign + body + f;
  if (align == '=') return sign + f + body;
  if (align == '^') {
    std::string l, r;
    for (int64_t k = 0; k < n / 2; ++k) pystr::append_utf8(l, sp.fill);
    for (int64_t k = 0; k < n - n / 2; ++k) pystr::append_utf8(r, sp.fill);
    return l + sign + body + r;
  }
  return f + sign + body;
}

std::string group(const std::string& digits, char sep, int every) {
  std::string out;
  const int n = int(digits.size());
  for (int k = 0; k < n; ++k) {
    if (k && (n - k) % every == 0) out += sep;
    out += digits[size_t(k)];
  }
  return out;
}

std::string int_digits(uint64_t mag, char type, bool alt) {
  std::string d;
  const int base = type == 'x' || type == 'X' ? 16 : type == 'o' ? 8 : type == 'b' ? 2 : 10;
  do {
    const int r = int(mag % uint64_t(base));
    d += char(r < 10 ? '0' + r : (type == 'X' ? 'A' : 'a') + r - 10);
    mag /= uint64_t(base);
  } while (mag);
  std::reverse(d.begin(), d.end());
  if (alt && base != 10) d = std::string("0") + (type == 'X' ? 'X' : type) + d;
  return d;
}

// Formats a finite or non-finite double with printf type f/e/g (upper-cased for F/E/G).
std::string float_body(double mag, char type, int64_t prec, bool alt) {
  const bool upper = type == 'F' || type == 'E' || type == 'G';
  if (std::isnan(mag)) return upper ? "NAN" : "nan";
  if (std::isinf(mag)) return upper ? "INF" : "inf";
  char fmt[16];
  std::snprintf(fmt, sizeof fmt, "%%%s.%d%c", alt ? "#" : "", int(std::min<int64_t>(prec, 300)), type);
  char buf[512];
  std::snprintf(buf, sizeof buf, fmt, mag);
  return buf;
}

std::string sign_of(bool neg, char sign) { return neg ? "-" : sign == '+' ? "+" : sign == ' ' ? " " : ""; }

}  // namespace

std::string percent_format(const std::string& fmt, const Value& args) {
  const bool is_tuple = args.is_seq() && args.seq == SeqKind::Tuple;
  const List single = is_tuple ? List{} : List{args};
  const List& xs = is_tuple ? args.items() : single;
  size_t next = 0;
  bool used_mapping = false;
  auto take = [&]() -> const Value& {
    if (next >= xs.size()) fail("not enough arguments for format string");
    return xs[next++];
  };
  std::string out;
  for (size_t i = 0; i < fmt.size(); ++i) {
    if (fmt[i] != '%') {
      out += fmt[i];
      continue;
    }
    if (++i >= fmt.size()) fail("incomplete format");
    if (fmt[i] == '%') {
      out += '%';
      continue;
    }
    const Value* arg = nullptr;
    Value keyed;
    if (fmt[i] == '(') {
      const size_t close = fmt.find(')', i);
      if (close == std::string::npos) fail("incomplete format key");
      if (!args.is_dict()) fail("format requires a mapping");
      const Value* v = args.d().find(std::string_view(fmt).substr(i + 1, close - i - 1));
      if (!v) fail("KeyError: '" + fmt.substr(i + 1, close - i - 1) + "'");
      keyed = *v;
      arg = &keyed;
      used_mapping = true;
      i = close + 1;
    }
    Spec sp;
    for (; i < fmt.size() && std::strchr("-+ #0", fmt[i]) && fmt[i]; ++i) {
      if (fmt[i] == '-') sp.align = '<';
      else if (fmt[i] == '+') sp.sign = '+';
      else if (fmt[i] == ' ' && sp.sign != '+') sp.sign = ' ';
      else if (fmt[i] == '#') sp.alt = true;
      else if (fmt[i] == '0') sp.zero = true;
    }
    auto number = [&](int64_t& dst) {
      if (i < fmt.size() && fmt[i] == '*') {
        const Value& w = take();
        if (!w.is_int()) fail("* wants int");
        dst = w.i;
        ++i;
        return;
      }
      if (i < fmt.size() && std::isdigit(uint8_t(fmt[i]))) {
        dst = 0;
        while (i < fmt.size() && std::isdigit(uint8_t(fmt[i]))) dst = dst * 10 + (fmt[i++] - '0');
      }
    };
    number(sp.width);
    if (sp.width < -1) {
      sp.align = '<';
      sp.width = -sp.width;
    }
    if (i < fmt.size() && fmt[i] == '.') {
      ++i;
      sp.prec = 0;
      number(sp.prec);
    }
    while (i < fmt.size() && (fmt[i] == 'h' || fmt[i] == 'l' || fmt[i] == 'L')) ++i;
    if (i >= fmt.size()) fail("incomplete format");
    const char t = fmt[i];
    const Value& v = arg ? *arg : take();
    if (!sp.align) sp.align = '>';
    if (sp.zero && sp.align == '>') {
      sp.fill = U'0';
      sp.align = '=';
    }
    switch (t) {
      case 's':
      case 'r':
      case 'a': {
        std::string s = t == 's' ? to_str(v) : repr(v);
        if (sp.prec >= 0) s = pystr::slice(s, std::nullopt, sp.prec, std::nullopt);
        Spec plain = sp;
        plain.fill = U' ';
        if (plain.align == '=') plain.align = '>';
        out += pad("", s, plain, '>');
        break;
      }
      case 'd':
      case 'i':
      case 'u':
      case 'x':
      case 'X':
      case 'o': {
        int64_t n;
        if (v.is_int()) n = v.i;
        else if (v.kind == Kind::Float && (t == 'd' || t == 'i' || t == 'u')) {
          if (!std::isfinite(v.f)) fail("cannot convert float infinity to integer");
          n = int64_t(v.f);
        } else {
          fail(std::string("%") + t + " format: a" + (t == 'd' || t == 'i' || t == 'u' ? " real number" : "n integer") +
               " is required, not " + type_name(v));
        }
        const uint64_t mag = n < 0 ? uint64_t(0) - uint64_t(n) : uint64_t(n);
        std::string body = int_digits(mag, t == 'i' || t == 'u' ? 'd' : t, sp.alt);
        if (sp.prec >= 0 && int64_t(body.size()) < sp.prec) body = std::string(size_t(sp.prec) - body.size(), '0') + body;
        out += pad(sign_of(n < 0, sp.sign), body, sp, '>');
        break;
      }
      case 'e':
      case 'E':
      case 'f':
      case 'F':
      case 'g':
      case 'G': {
        if (!v.is_number()) fail("must be real number, not " + type_name(v));
        const double d = v.as_double();
        std::string body = float_body(std::fabs(d), t, sp.prec < 0 ? 6 : sp.prec, sp.alt);
        Spec s2 = sp;
        if (!std::isfinite(d) && s2.fill == U'0') {
          s2.fill = U' ';
          s2.align = '>';
        }
        out += pad(sign_of(std::signbit(d) && !std::isnan(d), sp.sign), body, s2, '>');
        break;
      }
      case 'c': {
        std::string c;
        if (v.is_int()) pystr::append_utf8(c, char32_t(v.i));
        else if (v.is_str() && pystr::length(v.s()) == 1) c = v.s();
        else fail("%c requires int or char");
        out += pad("", c, sp, '>');
        break;
      }
      default: {
        char msg[96];
        std::snprintf(msg, sizeof msg, "unsupported format character '%c' (0x%x) at index %zu", t, unsigned(uint8_t(t)), i);
        fail(msg);
      }
    }
  }
  if (!used_mapping && next < xs.size() && !(args.is_dict() && !is_tuple))
    fail("not all arguments converted during string formatting");
  return out;
}

// ---------------------------------------------------------------- str.format
static Spec parse_spec(const std::string& s) {
  Spec sp;
  const std::u32string u = pystr::decode(s);
  size_t k = 0;
  auto is_align = [](char32_t c) { return c == '<' || c == '>' || c == '^' || c == '='; };
  if (u.size() >= 2 && is_align(u[1])) {
    sp.fill = u[0];
    sp.align = char(u[1]);
    k = 2;
  } else if (!u.empty() && is_align(u[0])) {
    sp.align = char(u[0]);
    k = 1;
  }
  if (k < u.size() && (u[k] == '+' || u[k] == '-' || u[k] == ' ')) sp.sign = char(u[k++]);
  if (k < u.size() && u[k] == 'z') ++k;
  if (k < u.size() && u[k] == '#') sp.alt = true, ++k;
  if (k < u.size() && u[k] == '0') sp.zero = true, ++k;
  if (k < u.size() && std::isdigit(int(u[k]))) {
    sp.width = 0;
    while (k < u.size() && u[k] < 128 && std::isdigit(int(u[k]))) sp.width = sp.width * 10 + int64_t(u[k++] - '0');
  }
  if (k < u.size() && (u[k] == ',' || u[k] == '_')) sp.grouping = char(u[k++]);
  if (k < u.size() && u[k] == '.') {
    ++k;
    sp.prec = 0;
    if (k >= u.size() || !(u[k] < 128 && std::isdigit(int(u[k])))) fail("Format specifier missing precision");
    while (k < u.size() && u[k] < 128 && std::isdigit(int(u[k]))) sp.prec = sp.prec * 10 + int64_t(u[k++] - '0');
  }
  if (k < u.size()) sp.type = char(u[k++]);
  if (k != u.size()) fail("Invalid format specifier '" + s + "'");
  if (sp.zero && !sp.align) {
    sp.fill = U'0';
    sp.align = '=';
  }
  return sp;
}

static std::string format_value(const Value& v, const std::string& spec_text) {
  if (spec_text.empty() && !v.is_number()) return to_str(v);
  const Spec sp = parse_spec(spec_text);
  if (v.is_str()) {
    if (sp.type && sp.type != 's') fail(std::string("Unknown format code '") + sp.type + "' for object of type 'str'");
    if (sp.sign != '-' || sp.alt || sp.grouping) fail("Sign not allowed in string format specifier");
    std::string s = v.s();
    if (sp.prec >= 0) s = pystr::slice(s, std::nullopt, sp.prec, std::nullopt);
    return pad("", s, sp, '<');
  }
  if (!v.is_number()) fail("unsupported format string passed to " + type_name(v) + ".__format__");
  if (spec_text.empty()) return to_str(v);  // str(True) == "True"
  const char t = sp.type;
  if (v.is_int() && (t == 0 || t == 'd' || t == 'n' || t == 'b' || t == 'o' || t == 'x' || t == 'X' || t == 'c')) {
    if (sp.prec >= 0) fail("Precision not allowed in integer format specifier");
    if (t == 'c') {
      std::string c;
      pystr::append_utf8(c, char32_t(v.i));
      return pad("", c, sp, '>');
    }
    const uint64_t mag = v.i < 0 ? uint64_t(0) - uint64_t(v.i) : uint64_t(v.i);
    std::string body = int_digits(mag, t == 0 || t == 'n' ? 'd' : t, false);
    if (sp.grouping) body = group(body, sp.grouping, t == 0 || t == 'd' || t == 'n' ? 3 : 4);
    std::string prefix = sp.alt && t && t != 'd' && t != 'n' ? std::string("0") + (t == 'X' ? 'X' : t) : "";
    return pad(sign_of(v.i < 0, sp.sign) + prefix, body, sp, '>');
  }
  const double d = v.as_double();
  std::string body;
  const double mag = std::fabs(d);
  if (t == '%') {
    body = float_body(mag * 100, 'f', sp.prec < 0 ? 6 : sp.prec, sp.alt) + "%";
  } else if (t == 'e' || t == 'E' || t == 'f' || t == 'F' || t == 'g' || t == 'G') {
    body = float_body(mag, t, sp.prec < 0 ? 6 : sp.prec, sp.alt);
  } else if (t == 0 || t == 'n') {
    if (sp.prec < 0) {
      body = float_repr(mag);
    } else {
      body = float_body(mag, 'g', sp.prec == 0 ? 1 : sp.prec, sp.alt);
      if (std::isfinite(mag) && body.find_first_of(".e") == std::string::npos) body += ".0";
    }
  } else {
    fail(std::string("Unknown format code '") + t + "' for object of type '" + type_name(v) + "'");
  }
  if (sp.grouping && std::isfinite(mag)) {
    const size_t end = body.find_first_not_of("0123456789");
    body = group(body.substr(0, end), sp.grouping, 3) + (end == std::string::npos ? "" : body.substr(end));
  }
  return pad(sign_of(std::signbit(d) && !std::isnan(d), sp.sign), body, sp, '>');
}

std::string str_format(Interp& in, const std::string& fmt, const CallArgs& args) {
  std::string out;
  int auto_idx = 0;
  bool manual = false;
  auto field = [&](const std::string& f) -> std::string {
    // field_name[!conv][:spec]
    size_t k = 0;
    while (k < f.size() && f[k] != '.' && f[k] != '[' && f[k] != '!' && f[k] != ':') ++k;
    const std::string head = f.substr(0, k);
    Value v;
    if (head.empty()) {
      if (manual) fail("cannot switch from manual field specification to automatic field numbering");
      if (size_t(auto_idx) >= args.pos.size()) fail("Replacement index " + std::to_string(auto_idx) + " out of range for positional args tuple");
      v = args.pos[size_t(auto_idx++)];
    } else if (std::all_of(head.begin(), head.end(), [](char c) { return std::isdigit(uint8_t(c)); })) {
      if (auto_idx) fail("cannot switch from automatic field numbering to manual field specification");
      manual = true;
      const size_t idx = std::stoul(head);
      if (idx >= args.pos.size()) fail("Replacement index " + head + " out of range for positional args tuple");
      v = args.pos[idx];
    } else {
      const auto it = std::find_if(args.kw.begin(), args.kw.end(), [&](const auto& kv) { return kv.first == head; });
      if (it == args.kw.end()) fail("KeyError: '" + head + "'");
      v = it->second;
    }
    while (k < f.size() && (f[k] == '.' || f[k] == '[')) {
      if (f[k] == '.') {
        size_t e = k + 1;
        while (e < f.size() && f[e] != '.' && f[e] != '[' && f[e] != '!' && f[e] != ':') ++e;
        v = in.getattr(v, f.substr(k + 1, e - k - 1));
        k = e;
      } else {
        const size_t e = f.find(']', k);
        if (e == std::string::npos) fail("Missing ']' in format string");
        const std::string key = f.substr(k + 1, e - k - 1);
        const bool digits = !key.empty() && std::all_of(key.begin(), key.end(), [](char c) { return std::isdigit(uint8_t(c)); });
        v = in.getitem(v, digits ? Value::integer(std::stoll(key)) : Value::string(key));
        k = e + 1;
      }
    }
    if (k < f.size() && f[k] == '!') {
      if (k + 1 >= f.size()) fail("end of string while looking for conversion specifier");
      const char c = f[k + 1];
      if (c == 'r' || c == 'a') v = Value::string(repr(v));
      else if (c == 's') v = Value::string(to_str(v));
      else fail(std::string("Unknown conversion specifier ") + c);
      k += 2;
    }
    std::string spec;
    if (k < f.size()) {
      if (f[k] != ':') fail("expected ':' after conversion specifier");
      spec = f.substr(k + 1);
    }
    return format_value(v, spec);
  };
  for (size_t i = 0; i < fmt.size(); ++i) {
    const char c = fmt[i];
    if (c == '}') {
      if (i + 1 < fmt.size() && fmt[i + 1] == '}') {
        out += '}';
        ++i;
        continue;
      }
      fail("Single '}' encountered in format string");
    }
    if (c != '{') {
      out += c;
      continue;
    }
    if (i + 1 < fmt.size() && fmt[i + 1] == '{') {
      out += '{';
      ++i;
      continue;
    }
    // Find the matching '}', formatting nested {} inside the spec first.
    std::string f;
    size_t j = i + 1;
    int depth = 1;
    for (; j < fmt.size(); ++j) {
      if (fmt[j] == '{') {
        const size_t e = fmt.find('}', j);
        if (e == std::string::npos) break;
        f += field(fmt.substr(j + 1, e - j - 1));
        j = e;
        continue;
      }
      if (fmt[j] == '}' && --depth == 0) break;
      f += fmt[j];
    }
    if (j >= fmt.size()) fail("Single '{' encountered in format string");
    out += field(f);
    in.check_size(out.size());
    i = j;
  }
  return out;
}

}  // namespace kiln::jinja
