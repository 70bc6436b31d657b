// Python str semantics on UTF-8 (see pystr.h). Case tables cover the scripts
// chat text actually uses (Latin, Greek, Cyrillic, Armenian, fullwidth); other
// scripts are treated as caseless, as most of Unicode is.
#include "kiln/template/pystr.h"

#include <algorithm>

namespace kiln::jinja::pystr {

// ---------------------------------------------------------------- UTF-8
void append_utf8(std::string& out, char32_t c) {
  if (c < 0x80) {
    out += char(c);
  } else if (c < 0x800) {
    out += char(0xC0 | (c >> 6));
    out += char(0x80 | (c & 0x3F));
  } else if (c < 0x10000) {
    out += char(0xE0 | (c >> 12));
    out += char(0x80 | ((c >> 6) & 0x3F));
    out += char(0x80 | (c & 0x3F));
  } else {
    out += char(0xF0 | (c >> 18));
    out += char(0x80 | ((c >> 12) & 0x3F));
    out += char(0x80 | ((c >> 6) & 0x3F));
    out += char(0x80 | (c & 0x3F));
  }
}

// Decodes one code point at s[i]; advances i. Invalid sequences give U+FFFD
// and advance one byte.
static char32_t next_cp(std::string_view s, size_t& i, bool* ok = nullptr) {
  const auto b0 = uint8_t(s[i]);
  if (b0 < 0x80) {
    ++i;
    return b0;
  }
  const int n = b0 >= 0xF0 && b0 < 0xF5 ? 3 : b0 >= 0xE0 && b0 < 0xF0 ? 2 : b0 >= 0xC2 && b0 < 0xE0 ? 1 : -1;
  auto bad = [&]() -> char32_t {
    ++i;
    if (ok) *ok = false;
    return 0xFFFD;
  };
  if (n < 0 || i + size_t(n) >= s.size()) return bad();
  char32_t c = b0 & (0x3F >> n);
  for (int k = 1; k <= n; ++k) {
    const auto b = uint8_t(s[i + size_t(k)]);
    if ((b & 0xC0) != 0x80) return bad();
    c = (c << 6) | (b & 0x3F);
  }
  const char32_t min = n == 1 ? 0x80 : n == 2 ? 0x800 : 0x10000;
  if (c < min || c > 0x10FFFF || (c >= 0xD800 && c <= 0xDFFF)) return bad();
  i += size_t(n) + 1;
  return c;
}

std::u32string decode(std::string_view s) {
  std::u32string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size();) out += next_cp(s, i);
  return out;
}

std::string encode(std::u32string_view s) {
  std::string out;
  out.reserve(s.size());
  for (char32_t c : s) append_utf8(out, c);
  return out;
}

bool valid_utf8(std::string_view s) {
  bool ok = true;
  for (size_t i = 0; i < s.size() && ok;) next_cp(s, i, &ok);
  return ok;
}

bool is_ascii(std::string_view s) {
  for (char c : s)
    if (uint8_t(c) >= 0x80) return false;
  return true;
}

size_t length(std::string_view s) {
  size_t n = 0;
  for (char c : s) n += (uint8_t(c) & 0xC0) != 0x80;
  return n;
}

// ---------------------------------------------------------------- classes
bool is_space(char32_t c) {
  return (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20) || c == 0x85 || c == 0xA0 ||
         c == 0x1680 || (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 ||
         c == 0x202F || c == 0x205F || c == 0x3000;
}

// Simple one-to-one mappings; 0 = none. Pairs tables: [lo, hi] ranges where
// upper and lower alternate (even = upper when `even_upper`).
struct PairRange {
  char32_t lo, hi;
  bool even_upper;
};
static constexpr PairRange kPairs[] = {
    {0x0100, 0x012F, true}, {0x0132, 0x0137, true}, {0x0139, 0x0148, false},
    {0x014A, 0x0177, true}, {0x0179, 0x017E, false}, {0x0460, 0x0481, true},
    {0x048A, 0x04BF, true}, {0x04C1, 0x04CE, false}, {0x04D0, 0x052F, true},
    {0x1E00, 0x1E95, true}, {0x1EA0, 0x1EFF, true},  {0x03D8, 0x03EF, true},
    {0x01CD, 0x01DC, false}, {0x01DE, 0x01EF, true}, {0x01F4, 0x01F5, true},
    {0x01F8, 0x021F, true}, {0x0222, 0x0233, true},  {0x0246, 0x024F, true},
};

// The Latin digraphs have three forms: upper (DŽ), title (Dž), lower (dž).
static int digraph(char32_t c) {  // index of the upper form, or 0
  if (c >= 0x1C4 && c <= 0x1CC) return int(0x1C4 + (c - 0x1C4) / 3 * 3);
  if (c >= 0x1F1 && c <= 0x1F3) return 0x1F1;
  return 0;
}

static char32_t to_lower1(char32_t c) {
  if (c < 0x80) return (c >= 'A' && c <= 'Z') ? c + 32 : c;
  if (const int d = digraph(c)) return char32_t(d + 2);
  if ((c >= 0xC0 && c <= 0xDE && c != 0xD7)) return c + 32;
  if (c == 0x178) return 0xFF;
  for (const auto& p : kPairs)
    if (c >= p.lo && c <= p.hi) return ((c & 1) == 0) == p.even_upper ? c + 1 : c;
  if (c >= 0x391 && c <= 0x3A9 && c != 0x3A2) return c + 32;
  if (c == 0x386) return 0x3AC;
  if (c >= 0x388 && c <= 0x38A) return c + 37;
  if (c == 0x38C) return 0x3CC;
  if (c == 0x38E || c == 0x38F) return c + 63;
  if (c >= 0x410 && c <= 0x42F) return c + 32;
  if (c >= 0x400 && c <= 0x40F) return c + 80;
  if (c == 0x4C0) return 0x4CF;
  if (c >= 0x531 && c <= 0x556) return c + 48;
  if (c == 0x1E9E) return 0xDF;
  if (c >= 0xFF21 && c <= 0xFF3A) return c + 32;
  return c;
}

static char32_t to_upper1(char32_t c) {
  if (c < 0x80) return (c >= 'a' && c <= 'z') ? c - 32 : c;
  if (const int d = digraph(c)) return char32_t(d);
  if (c >= 0xE0 && c <= 0xFE && c != 0xF7) return c - 32;
  if (c == 0xFF) return 0x178;
  if (c == 0xB5) return 0x39C;
  if (c == 0x131) return 'I';
  if (c == 0x17F) return 'S';
  for (const auto& p : kPairs)
    if (c >= p.lo && c <= p.hi) return ((c & 1) == 0) == p.even_upper ? c : c - 1;
  if (c >= 0x3B1 && c <= 0x3C9) return c == 0x3C2 ? 0x3A3 : c - 32;
  if (c == 0x3AC) return 0x386;
  if (c >= 0x3AD && c <= 0x3AF) return c - 37;
  if (c == 0x3CC) return 0x38C;
  if (c == 0x3CD || c == 0x3CE) return c - 63;
  if (c == 0x3CA || c == 0x3CB) return c - 32;
  if (c >= 0x430 && c <= 0x44F) return c - 32;
  if (c >= 0x450 && c <= 0x45F) return c - 80;
  if (c == 0x4CF) return 0x4C0;
  if (c >= 0x561 && c <= 0x586) return c - 48;
  if (c >= 0xFF41 && c <= 0xFF5A) return c - 32;
  return c;
}

// Full upper mapping (may expand to several code points).
static void upper_full(char32_t c, std::u32string& out) {
  switch (c) {
    case 0xDF: out += U"SS"; return;
    case 0x149: out += U"\u02BCN"; return;
    case 0x390: out += U"\u0399\u0308\u0301"; return;
    case 0x3B0: out += U"\u03A5\u0308\u0301"; return;
    case 0x587: out += U"\u0535\u0552"; return;
    case 0xFB00: out += U"FF"; return;
    case 0xFB01: out += U"FI"; return;
    case 0xFB02: out += U"FL"; return;
    case 0xFB03: out += U"FFI"; return;
    case 0xFB04: out += U"FFL"; return;
    case 0xFB05:
    case 0xFB06: out += U"ST"; return;
    default: out += to_upper1(c);
  }
}

static void lower_full(char32_t c, std::u32string& out) {
  if (c == 0x130) {
    out += U"i\u0307";
    return;
  }
  out += to_lower1(c);
}

bool is_upper_char(char32_t c) {
  if (const int d = digraph(c)) return int(c) == d;
  return to_lower1(c) != c || c == 0x130;
}
bool is_lower_char(char32_t c) {
  if (const int d = digraph(c)) return int(c) == d + 2;
  return to_upper1(c) != c || c == 0xDF || (c >= 0xFB00 && c <= 0xFB06) || c == 0x149 || c == 0x390 || c == 0x3B0 || c == 0x587 ||
         c == 0x138;
}
bool is_cased(char32_t c) { return digraph(c) || is_upper_char(c) || is_lower_char(c); }

bool is_alpha(char32_t c) {
  if (c < 0x80) return (c | 32) >= 'a' && (c | 32) <= 'z';
  if (is_cased(c)) return true;
  return (c >= 0x4E00 && c <= 0x9FFF) || (c >= 0x3040 && c <= 0x30FF) ||
         (c >= 0xAC00 && c <= 0xD7A3) || (c >= 0x3400 && c <= 0x4DBF) ||
         (c >= 0x0600 && c <= 0x064A) || (c >= 0x05D0 && c <= 0x05EA) ||
         (c >= 0x0E01 && c <= 0x0E30) || (c >= 0x0905 && c <= 0x0939);
}
bool is_decimal(char32_t c) {
  return (c >= '0' && c <= '9') || (c >= 0x660 && c <= 0x669) || (c >= 0x6F0 && c <= 0x6F9) ||
         (c >= 0x966 && c <= 0x96F) || (c >= 0xFF10 && c <= 0xFF19);
}
bool is_digit(char32_t c) {
  return is_decimal(c) || c == 0xB2 || c == 0xB3 || c == 0xB9 || (c >= 0x2070 && c <= 0x2079) ||
         (c >= 0x2080 && c <= 0x2089) || (c >= 0x2460 && c <= 0x2468);
}

bool is_printable(char32_t c) {
  if (c < 0x20 || (c >= 0x7F && c <= 0xA0) || c == 0xAD) return false;
  if (c < 0x600) return true;
  if ((c >= 0x600 && c <= 0x605) || c == 0x61C || c == 0x6DD || c == 0x70F || c == 0x180E ||
      c == 0x1680)
    return false;
  if ((c >= 0x2000 && c <= 0x200F) || (c >= 0x2028 && c <= 0x202F) ||
      (c >= 0x205F && c <= 0x2064) || (c >= 0x2066 && c <= 0x206F) || c == 0x3000)
    return false;
  if ((c >= 0xD800 && c <= 0xF8FF) || c == 0xFEFF || (c >= 0xFFF9 && c <= 0xFFFB) ||
      c == 0xFFFE || c == 0xFFFF)
    return false;
  if (c >= 0xE0000) return false;
  return true;
}

// ---------------------------------------------------------------- case
template <class F>
static std::string map_chars(std::string_view s, F f) {
  std::u32string in = decode(s), out;
  out.reserve(in.size());
  for (size_t k = 0; k < in.size(); ++k) f(in, k, out);
  return encode(out);
}

std::string upper(std::string_view s) {
  if (is_ascii(s)) {
    std::string r(s);
    for (char& c : r)
      if (c >= 'a' && c <= 'z') c -= 32;
    return r;
  }
  return map_chars(s, [](const std::u32string& in, size_t k, std::u32string& out) {
    upper_full(in[k], out);
  });
}

static bool case_ignorable(char32_t c) {
  return c == '\'' || c == '.' || c == ':' || c == '^' || c == '`' || c == 0xB7 ||
         c == 0x2019 || (c >= 0x300 && c <= 0x36F);
}

// Greek capital sigma lowers to final sigma at the end of a word (Unicode's
// Final_Sigma condition, as CPython implements it).
static bool final_sigma(const std::u32string& in, size_t k) {
  size_t j = k;
  bool before = false;
  while (j > 0) {
    --j;
    if (case_ignorable(in[j])) continue;
    before = is_cased(in[j]);
    break;
  }
  if (!before) return false;
  for (j = k + 1; j < in.size(); ++j) {
    if (case_ignorable(in[j])) continue;
    return !is_cased(in[j]);
  }
  return true;
}

std::string lower(std::string_view s) {
  if (is_ascii(s)) {
    std::string r(s);
    for (char& c : r)
      if (c >= 'A' && c <= 'Z') c += 32;
    return r;
  }
  return map_chars(s, [](const std::u32string& in, size_t k, std::u32string& out) {
    if (in[k] == 0x3A3 && final_sigma(in, k))
      out += char32_t(0x3C2);
    else
      lower_full(in[k], out);
  });
}

static void title_full(char32_t c, std::u32string& out) {
  if (c == 0xDF) {
    out += U"Ss";
    return;
  }
  if (const int d = digraph(c)) {
    out += char32_t(d + 1);
    return;
  }
  switch (c) {  // ligatures title-case to one capital: "ﬁ" -> "Fi"
    case 0xFB00: out += U"Ff"; return;
    case 0xFB01: out += U"Fi"; return;
    case 0xFB02: out += U"Fl"; return;
    case 0xFB03: out += U"Ffi"; return;
    case 0xFB04: out += U"Ffl"; return;
    case 0xFB05:
    case 0xFB06: out += U"St"; return;
    default: break;
  }
  upper_full(c, out);
}

std::string title(std::string_view s) {
  bool prev_cased = false;
  return map_chars(s, [&](const std::u32string& in, size_t k, std::u32string& out) {
    const char32_t c = in[k];
    if (prev_cased) {
      if (c == 0x3A3 && final_sigma(in, k))
        out += char32_t(0x3C2);
      else
        lower_full(c, out);
    } else {
      title_full(c, out);
    }
    prev_cased = is_cased(c);
  });
}

std::string capitalize(std::string_view s) {
  return map_chars(s, [](const std::u32string& in, size_t k, std::u32string& out) {
    if (k == 0)
      title_full(in[k], out);
    else if (in[k] == 0x3A3 && final_sigma(in, k))
      out += char32_t(0x3C2);
    else
      lower_full(in[k], out);
  });
}

std::string swapcase(std::string_view s) {
  return map_chars(s, [](const std::u32string& in, size_t k, std::u32string& out) {
    const char32_t c = in[k];
    if (is_upper_char(c))
      lower_full(c, out);
    else if (is_lower_char(c))
      upper_full(c, out);
    else
      out += c;
  });
}

// The `title` filter: words begin after runs of '-', whitespace, '(', '{',
// '[' or '<'; each word is first-char-upper, rest-lower.
std::string jinja_title(std::string_view s) {
  const std::u32string in = decode(s);
  auto sep = [](char32_t c) { return c == '-' || c == '(' || c == '{' || c == '[' || c == '<' || is_space(c); };
  std::u32string out;
  size_t k = 0;
  while (k < in.size()) {
    size_t j = k;
    const bool is_sep = sep(in[k]);
    while (j < in.size() && sep(in[j]) == is_sep) ++j;
    if (is_sep) {
      out.append(in, k, j - k);
    } else {
      upper_full(in[k], out);
      for (size_t m = k + 1; m < j; ++m) lower_full(in[m], out);
    }
    k = j;
  }
  return encode(out);
}

// ---------------------------------------------------------------- methods
std::string strip(std::string_view s, const std::optional<std::string>& chars, bool left,
                  bool right) {
  std::u32string set;
  if (chars) set = decode(*chars);
  auto strip_me = [&](char32_t c) {
    return chars ? set.find(c) != std::u32string::npos : is_space(c);
  };
  if (is_ascii(s) && (!chars || is_ascii(*chars))) {
    size_t b = 0, e = s.size();
    if (left)
      while (b < e && strip_me(char32_t(uint8_t(s[b])))) ++b;
    if (right)
      while (e > b && strip_me(char32_t(uint8_t(s[e - 1])))) --e;
    return std::string(s.substr(b, e - b));
  }
  const std::u32string in = decode(s);
  size_t b = 0, e = in.size();
  if (left)
    while (b < e && strip_me(in[b])) ++b;
  if (right)
    while (e > b && strip_me(in[e - 1])) --e;
  return encode(std::u32string_view(in).substr(b, e - b));
}

std::vector<std::string> split(std::string_view s, const std::optional<std::string>& sep,
                               int64_t maxsplit) {
  std::vector<std::string> out;
  if (sep) {
    size_t pos = 0;
    while (maxsplit < 0 || int64_t(out.size()) < maxsplit) {
      const size_t at = s.find(*sep, pos);
      if (at == std::string_view::npos) break;
      out.emplace_back(s.substr(pos, at - pos));
      pos = at + sep->size();
    }
    out.emplace_back(s.substr(pos));
    return out;
  }
  const std::u32string in = decode(s);
  size_t k = 0;
  while (true) {
    while (k < in.size() && is_space(in[k])) ++k;
    if (k == in.size()) break;
    if (maxsplit >= 0 && int64_t(out.size()) == maxsplit) {
      out.push_back(encode(std::u32string_view(in).substr(k)));  // the rest, as is
      break;
    }
    size_t j = k;
    while (j < in.size() && !is_space(in[j])) ++j;
    out.push_back(encode(std::u32string_view(in).substr(k, j - k)));
    k = j;
  }
  return out;
}

std::vector<std::string> rsplit(std::string_view s, const std::optional<std::string>& sep,
                                int64_t maxsplit) {
  if (maxsplit < 0) return split(s, sep, -1);
  std::vector<std::string> out;
  if (sep) {
    size_t end = s.size();
    while (int64_t(out.size()) < maxsplit) {
      if (end < sep->size()) break;
      const size_t at = s.rfind(*sep, end - sep->size());
      if (at == std::string_view::npos) break;
      out.emplace_back(s.substr(at + sep->size(), end - at - sep->size()));
      end = at;
    }
    out.emplace_back(s.substr(0, end));
  } else {
    const std::u32string in = decode(s);
    size_t e = in.size();
    while (true) {
      while (e > 0 && is_space(in[e - 1])) --e;
      if (e == 0) break;
      if (int64_t(out.size()) == maxsplit) {
        out.push_back(encode(std::u32string_view(in).substr(0, e)));  // the rest, as is
        break;
      }
      size_t b = e;
      while (b > 0 && !is_space(in[b - 1])) --b;
      out.push_back(encode(std::u32string_view(in).substr(b, e - b)));
      e = b;
    }
  }
  std::reverse(out.begin(), out.end());
  return out;
}

static bool line_break(char32_t c) {
  return c == '\n' || c == '\r' || c == 0x0B || c == 0x0C || c == 0x1C || c == 0x1D ||
         c == 0x1E || c == 0x85 || c == 0x2028 || c == 0x2029;
}

std::vector<std::string> splitlines(std::string_view s, bool keepends) {
  const std::u32string in = decode(s);
  std::vector<std::string> out;
  size_t k = 0;
  while (k < in.size()) {
    size_t j = k;
    while (j < in.size() && !line_break(in[j])) ++j;
    size_t eol = j;
    if (j < in.size()) {
      eol = j + 1;
      if (in[j] == '\r' && j + 1 < in.size() && in[j + 1] == '\n') eol = j + 2;
    }
    out.push_back(encode(std::u32string_view(in).substr(k, (keepends ? eol : j) - k)));
    k = eol;
  }
  return out;
}

std::string replace(std::string_view s, std::string_view old, std::string_view repl,
                    int64_t count) {
  std::string out;
  if (old.empty()) {
    // Python inserts `repl` before every code point and at the end.
    int64_t n = 0;
    size_t i = 0;
    while (i < s.size()) {
      if (count < 0 || n < count) {
        out += repl;
        ++n;
      }
      const size_t b = i;
      next_cp(s, i);
      out += s.substr(b, i - b);
    }
    if (count < 0 || n < count) out += repl;
    return out;
  }
  size_t pos = 0;
  int64_t n = 0;
  while (count < 0 || n < count) {
    const size_t at = s.find(old, pos);
    if (at == std::string_view::npos) break;
    out += s.substr(pos, at - pos);
    out += repl;
    pos = at + old.size();
    ++n;
  }
  out += s.substr(pos);
  return out;
}

int64_t find(std::string_view s, std::string_view sub, bool reverse) {
  const size_t at = reverse ? s.rfind(sub) : s.find(sub);
  if (at == std::string_view::npos) return -1;
  return int64_t(length(s.substr(0, at)));
}

int64_t count(std::string_view s, std::string_view sub) {
  if (sub.empty()) return int64_t(length(s)) + 1;
  int64_t n = 0;
  for (size_t pos = s.find(sub); pos != std::string_view::npos; pos = s.find(sub, pos + sub.size()))
    ++n;
  return n;
}

static std::string fill_str(char32_t fill, int64_t n) {
  std::string out;
  for (int64_t k = 0; k < n; ++k) append_utf8(out, fill);
  return out;
}

std::string center(std::string_view s, int64_t width, char32_t fill) {
  const int64_t len = int64_t(length(s));
  if (width <= len) return std::string(s);
  const int64_t marg = width - len;
  // CPython: left = marg / 2 + (marg & width & 1)
  const int64_t left = marg / 2 + (marg & width & 1);
  return fill_str(fill, left) + std::string(s) + fill_str(fill, marg - left);
}

std::string ljust(std::string_view s, int64_t width, char32_t fill) {
  const int64_t len = int64_t(length(s));
  return std::string(s) + fill_str(fill, std::max<int64_t>(0, width - len));
}

std::string rjust(std::string_view s, int64_t width, char32_t fill) {
  const int64_t len = int64_t(length(s));
  return fill_str(fill, std::max<int64_t>(0, width - len)) + std::string(s);
}

std::string zfill(std::string_view s, int64_t width) {
  const int64_t len = int64_t(length(s));
  if (width <= len) return std::string(s);
  std::string pad(size_t(width - len), '0');
  if (!s.empty() && (s[0] == '+' || s[0] == '-')) return std::string(1, s[0]) + pad + std::string(s.substr(1));
  return pad + std::string(s);
}

std::vector<int64_t> slice_indices(int64_t len, std::optional<int64_t> start,
                                   std::optional<int64_t> stop, std::optional<int64_t> step) {
  const int64_t st = step.value_or(1);
  int64_t lo, hi;
  if (st > 0) {
    lo = start ? (*start < 0 ? std::max<int64_t>(0, *start + len) : std::min(*start, len)) : 0;
    hi = stop ? (*stop < 0 ? std::max<int64_t>(0, *stop + len) : std::min(*stop, len)) : len;
  } else {
    lo = start ? (*start < 0 ? std::max<int64_t>(-1, *start + len) : std::min(*start, len - 1))
               : len - 1;
    hi = stop ? (*stop < 0 ? std::max<int64_t>(-1, *stop + len) : std::min(*stop, len - 1)) : -1;
  }
  std::vector<int64_t> idx;
  if (st > 0)
    for (int64_t k = lo; k < hi; k += st) idx.push_back(k);
  else
    for (int64_t k = lo; k > hi; k += st) idx.push_back(k);
  return idx;
}

std::string slice(std::string_view s, std::optional<int64_t> start, std::optional<int64_t> stop,
                  std::optional<int64_t> step) {
  if (is_ascii(s)) {
    std::string out;
    for (int64_t k : slice_indices(int64_t(s.size()), start, stop, step)) out += s[size_t(k)];
    return out;
  }
  const std::u32string in = decode(s);
  std::u32string out;
  for (int64_t k : slice_indices(int64_t(in.size()), start, stop, step)) out += in[size_t(k)];
  return encode(out);
}

std::string repr(std::string_view s) {
  const std::u32string in = decode(s);
  const bool has_single = in.find(U'\'') != std::u32string::npos;
  const bool has_double = in.find(U'"') != std::u32string::npos;
  const char quote = has_single && !has_double ? '"' : '\'';
  std::string out(1, quote);
  static const char* hex = "0123456789abcdef";
  for (char32_t c : in) {
    if (c == char32_t(quote) || c == '\\') {
      out += '\\';
      out += char(c);
    } else if (c == '\t') {
      out += "\\t";
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '\r') {
      out += "\\r";
    } else if (!is_printable(c)) {
      if (c <= 0xFF) {
        out += "\\x";
        out += hex[c >> 4];
        out += hex[c & 15];
      } else if (c <= 0xFFFF) {
        out += "\\u";
        for (int sh = 12; sh >= 0; sh -= 4) out += hex[(c >> sh) & 15];
      } else {
        out += "\\U";
        for (int sh = 28; sh >= 0; sh -= 4) out += hex[(c >> sh) & 15];
      }
    } else {
      append_utf8(out, c);
    }
  }
  out += quote;
  return out;
}

}  // namespace kiln::jinja::pystr
