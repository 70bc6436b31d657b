// Jinja lexer (see lexer.h). Mirrors jinja2's regex rules by hand: the root
// state finds the next tag start, the tag state reads tokens until the end
// delimiter (not while brackets are open, so `{{ {'a': {}} }}` works).
#include "kiln/template/lexer.h"

#include <cstdlib>
#include <cstring>

#include "kiln/template/pystr.h"

namespace kiln::jinja {
namespace {

class Lexer {
 public:
  explicit Lexer(std::string src) : s_(std::move(src)) {}

  std::vector<Token> run() {
    size_t pos = 0;
    bool line_starting = true;  // previous match ended with '\n' (or start of source)
    while (pos < s_.size()) {
      size_t idx = pos;
      char kind = 0;  // '{', '%', '#'
      while ((idx = s_.find('{', idx)) != std::string::npos) {
        if (idx + 1 < s_.size() && std::strchr("{%#", s_[idx + 1]) && s_[idx + 1]) {
          kind = s_[idx + 1];
          break;
        }
        ++idx;
      }
      if (idx == std::string::npos) {
        emit_data(s_.substr(pos), pos);
        break;
      }
      const char sign = idx + 2 < s_.size() && (s_[idx + 2] == '-' || s_[idx + 2] == '+') ? s_[idx + 2] : 0;
      std::string text = s_.substr(pos, idx - pos);
      size_t raw_end = 0;
      const bool raw = kind == '%' && match_raw_begin(idx, raw_end);
      text = control(std::move(text), sign, kind != '{', line_starting);
      emit_data(std::move(text), pos);
      if (raw) {
        pos = lex_raw(raw_end, line_starting);
        continue;
      }
      pos = idx + 2 + (sign ? 1 : 0);
      if (kind == '#') {
        pos = skip_comment(idx, pos);
      } else {
        pos = lex_tag(kind == '{', idx, pos);
      }
      line_starting = s_[pos - 1] == '\n';
    }
    push(Tok::Eof, s_.size());
    return std::move(out_);
  }

 private:
  std::string s_;
  std::vector<Token> out_;

  [[noreturn]] void error(const std::string& msg, size_t at) {
    SyntaxError e{msg, 1, 1};
    position(at, e.line, e.col);
    throw e;
  }

  // Line/column of byte offset `at`; tokens arrive in order, so the scan
  // resumes from the previous answer.
  void position(size_t at, uint32_t& line, uint32_t& col) {
    if (at < pos_at_) {
      pos_at_ = 0;
      pos_line_ = 1;
      pos_line_start_ = 0;
    }
    for (size_t k = pos_at_; k < at && k < s_.size(); ++k)
      if (s_[k] == '\n') {
        ++pos_line_;
        pos_line_start_ = k + 1;
      }
    pos_at_ = std::min(at, s_.size());
    line = pos_line_;
    col = uint32_t(pystr::length(std::string_view(s_).substr(pos_line_start_, at - pos_line_start_)) + 1);
  }
  size_t pos_at_ = 0, pos_line_start_ = 0;
  uint32_t pos_line_ = 1;

  Token& push(Tok t, size_t at) {
    Token tok;
    tok.type = t;
    position(at, tok.line, tok.col);
    out_.push_back(std::move(tok));
    return out_.back();
  }

  void emit_data(std::string text, size_t at) {
    if (text.empty()) return;
    push(Tok::Data, at).text = std::move(text);
  }

  // Decodes the code point at i (ASCII fast path); sets n to its byte length.
  char32_t cp_at(size_t i, size_t& n) const {
    const auto b = uint8_t(s_[i]);
    if (b < 0x80) {
      n = 1;
      return b;
    }
    size_t len = b >= 0xF0 ? 4 : b >= 0xE0 ? 3 : 2;
    len = std::min(len, s_.size() - i);
    std::u32string d = pystr::decode(std::string_view(s_).substr(i, len));
    n = len;
    return d.empty() ? 0xFFFD : d[0];
  }

  size_t skip_space(size_t i) const {
    while (i < s_.size()) {
      size_t n;
      if (!pystr::is_space(cp_at(i, n))) break;
      i += n;
    }
    return i;
  }

  // Whitespace control on the data before a tag: '-' strips all trailing
  // whitespace; otherwise lstrip_blocks removes the indentation before a block
  // or comment tag when nothing else is on its line.
  std::string control(std::string text, char sign, bool lstrip, bool line_starting) const {
    if (sign == '-') {
      const std::u32string d = pystr::decode(text);
      size_t e = d.size();
      while (e > 0 && pystr::is_space(d[e - 1])) --e;
      return pystr::encode(std::u32string_view(d).substr(0, e));
    }
    if (sign == '+' || !lstrip) return text;
    const size_t nl = text.rfind('\n');
    const size_t l_pos = nl == std::string::npos ? 0 : nl + 1;
    if (l_pos == 0 && !line_starting) return text;
    if (l_pos == text.size()) return text;
    for (const char32_t c : pystr::decode(std::string_view(text).substr(l_pos)))
      if (!pystr::is_space(c)) return text;
    text.resize(l_pos);
    return text;
  }

  // `{%[-+]? raw [-]?%}` at i; sets end to just past it.
  bool match_raw_begin(size_t i, size_t& end) const {
    size_t p = i + 2;
    if (p < s_.size() && (s_[p] == '-' || s_[p] == '+')) ++p;
    p = skip_space(p);
    if (s_.compare(p, 3, "raw") != 0) return false;
    p = skip_space(p + 3);
    if (s_.compare(p, 3, "-%}") == 0) {
      end = skip_space(p + 3);
      return true;
    }
    if (s_.compare(p, 2, "%}") == 0) {
      end = p + 2;
      return true;
    }
    return false;
  }

  size_t lex_raw(size_t pos, bool& line_starting) {
    line_starting = s_[pos - 1] == '\n';
    for (size_t p = s_.find("{%", pos); p != std::string::npos; p = s_.find("{%", p + 1)) {
      size_t q = p + 2;
      const char sign = q < s_.size() && (s_[q] == '-' || s_[q] == '+') ? s_[q] : 0;
      if (sign) ++q;
      q = skip_space(q);
      if (s_.compare(q, 6, "endraw") != 0) continue;
      q = skip_space(q + 6);
      size_t end;
      if (s_.compare(q, 3, "+%}") == 0) {
        end = q + 3;
      } else if (s_.compare(q, 3, "-%}") == 0) {
        end = skip_space(q + 3);
      } else if (s_.compare(q, 2, "%}") == 0) {
        end = q + 2;
        if (end < s_.size() && s_[end] == '\n') ++end;
      } else {
        continue;
      }
      emit_data(control(s_.substr(pos, p - pos), sign, true, line_starting), pos);
      line_starting = s_[end - 1] == '\n';
      return end;
    }
    error("Missing end of raw directive", pos);
  }

  size_t skip_comment(size_t begin, size_t pos) {
    for (size_t p = pos; p < s_.size(); ++p) {
      if (s_.compare(p, 3, "+#}") == 0) return p + 3;
      if (s_.compare(p, 3, "-#}") == 0) return skip_space(p + 3);
      if (s_.compare(p, 2, "#}") == 0) return p + 2 < s_.size() && s_[p + 2] == '\n' ? p + 3 : p + 2;
    }
    error("Missing end of comment tag", begin);
  }

  size_t digits(size_t p) const {  // (\d+_)*\d+ ; returns p if none
    size_t q = p;
    if (q >= s_.size() || !std::isdigit(uint8_t(s_[q]))) return p;
    while (true) {
      while (q < s_.size() && std::isdigit(uint8_t(s_[q]))) ++q;
      if (q + 1 < s_.size() && s_[q] == '_' && std::isdigit(uint8_t(s_[q + 1]))) {
        ++q;
        continue;
      }
      return q;
    }
  }

  size_t exponent(size_t p) const {  // e[+-]?digits ; returns p if none
    if (p >= s_.size() || (s_[p] != 'e' && s_[p] != 'E')) return p;
    size_t q = p + 1;
    if (q < s_.size() && (s_[q] == '+' || s_[q] == '-')) ++q;
    const size_t e = digits(q);
    return e == q ? p : e;
  }

  static std::string no_underscores(std::string_view v) {
    std::string r;
    for (char c : v)
      if (c != '_') r += c;
    return r;
  }

  bool lex_number(size_t& p) {
    if (!std::isdigit(uint8_t(s_[p]))) return false;
    // float: (?<!\.)int((\.frac)?exp | \.frac)
    if (p == 0 || s_[p - 1] != '.') {
      const size_t a = digits(p);
      size_t end = 0;
      if (a < s_.size() && s_[a] == '.') {
        const size_t b = digits(a + 1);
        if (b != a + 1) end = std::max(b, exponent(b));
      }
      if (!end) {
        const size_t e = exponent(a);
        if (e != a) end = e;
      }
      if (end) {
        Token& t = push(Tok::Float, p);
        t.fval = std::strtod(no_underscores(std::string_view(s_).substr(p, end - p)).c_str(), nullptr);
        p = end;
        return true;
      }
    }
    // integer: 0b.., 0o.., 0x.., [1-9](_?\d)*, 0(_?0)*
    size_t q = p;
    int base = 10;
    auto run = [&](auto ok) {
      size_t r = q;
      while (r < s_.size()) {
        if (ok(s_[r])) {
          ++r;
        } else if (s_[r] == '_' && r + 1 < s_.size() && ok(s_[r + 1])) {
          r += 2;
        } else {
          break;
        }
      }
      return r;
    };
    const char c1 = p + 1 < s_.size() ? char(std::tolower(uint8_t(s_[p + 1]))) : 0;
    size_t end = p + 1;
    if (s_[p] == '0' && (c1 == 'b' || c1 == 'o' || c1 == 'x')) {
      base = c1 == 'b' ? 2 : c1 == 'o' ? 8 : 16;
      q = p + 2;
      auto ok = [base](char c) {
        const int d = std::isdigit(uint8_t(c)) ? c - '0' : std::isxdigit(uint8_t(c)) ? std::tolower(uint8_t(c)) - 'a' + 10 : 99;
        return d < base;
      };
      // the first digit may itself follow an underscore: 0x_1f
      size_t r = q;
      if (r < s_.size() && s_[r] == '_') ++r;
      if (r < s_.size() && ok(s_[r])) {
        q = r;
        end = run(ok);
      } else {
        base = 10;
      }
    }
    if (base == 10) {
      q = p;
      end = s_[p] == '0' ? run([](char c) { return c == '0'; })
                         : run([](char c) { return std::isdigit(uint8_t(c)) != 0; });
    }
    const std::string text = no_underscores(std::string_view(s_).substr(q, end - q));
    errno = 0;
    char* stop = nullptr;
    const unsigned long long v = std::strtoull(text.c_str(), &stop, base);
    if (errno == ERANGE || v > uint64_t(INT64_MAX))
      error("integer literal too large (kiln supports 64-bit integers)", p);
    push(Tok::Int, p).ival = int64_t(v);
    p = end;
    return true;
  }

  static bool name_char(char32_t c, bool first) {
    if (c < 0x80) return std::isalpha(int(c)) || c == '_' || (!first && std::isdigit(int(c)));
    if (pystr::is_space(c)) return false;
    if ((c >= 0x80 && c <= 0xBF && c != 0xAA && c != 0xB5 && c != 0xBA) || c == 0xD7 || c == 0xF7)
      return false;
    if ((c >= 0x2000 && c <= 0x2BFF) || (c >= 0x3000 && c <= 0x303F) || (c >= 0xFF00 && c <= 0xFF0F) ||
        (c >= 0xFF1A && c <= 0xFF20))
      return false;
    return true;
  }

  bool lex_name(size_t& p) {
    size_t n;
    if (!name_char(cp_at(p, n), true)) return false;
    size_t q = p + n;
    while (q < s_.size() && name_char(cp_at(q, n), false)) q += n;
    push(Tok::Name, p).text = s_.substr(p, q - p);
    p = q;
    return true;
  }

  // Python's "unicode-escape" decoding of a string literal's body.
  std::string unescape(std::string_view body, size_t at) {
    std::string out;
    for (size_t k = 0; k < body.size(); ++k) {
      if (body[k] != '\\' || k + 1 >= body.size()) {
        out += body[k];
        continue;
      }
      const char e = body[++k];
      auto hex = [&](int n) -> char32_t {
        if (k + size_t(n) >= body.size()) error("truncated escape in string literal", at);
        char32_t v = 0;
        for (int m = 1; m <= n; ++m) {
          const char h = body[k + size_t(m)];
          if (!std::isxdigit(uint8_t(h))) error("truncated escape in string literal", at);
          v = v * 16 + char32_t(std::isdigit(uint8_t(h)) ? h - '0' : std::tolower(uint8_t(h)) - 'a' + 10);
        }
        k += size_t(n);
        return v;
      };
      switch (e) {
        case '\n': break;
        case '\\': out += '\\'; break;
        case '\'': out += '\''; break;
        case '"': out += '"'; break;
        case 'a': out += '\a'; break;
        case 'b': out += '\b'; break;
        case 'f': out += '\f'; break;
        case 'n': out += '\n'; break;
        case 'r': out += '\r'; break;
        case 't': out += '\t'; break;
        case 'v': out += '\v'; break;
        case 'x': pystr::append_utf8(out, hex(2)); break;
        case 'u': pystr::append_utf8(out, hex(4)); break;
        case 'U': {
          const char32_t c = hex(8);
          if (c > 0x10FFFF) error("illegal Unicode character in string literal", at);
          pystr::append_utf8(out, c);
          break;
        }
        case 'N': error("\\N{...} escapes are not supported by kiln", at);
        default:
          if (e >= '0' && e <= '7') {
            char32_t v = char32_t(e - '0');
            for (int m = 0; m < 2 && k + 1 < body.size() && body[k + 1] >= '0' && body[k + 1] <= '7'; ++m)
              v = v * 8 + char32_t(body[++k] - '0');
            pystr::append_utf8(out, v);
          } else {
            out += '\\';
            out += e;
          }
      }
    }
    return out;
  }

  bool lex_string(size_t& p) {
    const char q = s_[p];
    if (q != '\'' && q != '"') return false;
    size_t k = p + 1;
    while (k < s_.size() && s_[k] != q) k += s_[k] == '\\' ? 2 : 1;
    if (k >= s_.size()) return false;  // unterminated: falls through to "unexpected char"
    push(Tok::String, p).text = unescape(std::string_view(s_).substr(p + 1, k - p - 1), p);
    p = k + 1;
    return true;
  }

  bool lex_operator(size_t& p, std::vector<char>& stack) {
    static const struct {
      const char* text;
      Tok tok;
    } kOps[] = {
        {"//", Tok::FloorDiv}, {"**", Tok::Pow}, {"==", Tok::Eq}, {"!=", Tok::Ne},
        {">=", Tok::GtEq},     {"<=", Tok::LtEq}, {"+", Tok::Add}, {"-", Tok::Sub},
        {"/", Tok::Div},       {"*", Tok::Mul},   {"%", Tok::Mod}, {"~", Tok::Tilde},
        {"[", Tok::LBracket},  {"]", Tok::RBracket}, {"(", Tok::LParen}, {")", Tok::RParen},
        {"{", Tok::LBrace},    {"}", Tok::RBrace}, {">", Tok::Gt}, {"<", Tok::Lt},
        {"=", Tok::Assign},    {".", Tok::Dot},   {":", Tok::Colon}, {"|", Tok::Pipe},
        {",", Tok::Comma},     {";", Tok::Semicolon},
    };
    for (const auto& op : kOps) {
      const size_t n = std::strlen(op.text);
      if (s_.compare(p, n, op.text) != 0) continue;
      const char c = op.text[0];
      if (n == 1 && (c == '{' || c == '(' || c == '[')) {
        stack.push_back(c == '{' ? '}' : c == '(' ? ')' : ']');
      } else if (n == 1 && (c == '}' || c == ')' || c == ']')) {
        if (stack.empty()) error(std::string("unexpected '") + c + "'", p);
        if (stack.back() != c)
          error(std::string("unexpected '") + c + "', expected '" + stack.back() + "'", p);
        stack.pop_back();
      }
      push(op.tok, p);
      p += n;
      return true;
    }
    return false;
  }

  size_t lex_tag(bool variable, size_t begin, size_t p) {
    push(variable ? Tok::VarBegin : Tok::BlockBegin, begin);
    std::vector<char> stack;
    while (true) {
      if (p >= s_.size())
        error(variable ? "unexpected end of template, expected '}}'"
                       : "unexpected end of template, expected '%}'",
              p);
      if (stack.empty()) {
        if (variable) {
          if (s_.compare(p, 3, "-}}") == 0) {
            push(Tok::VarEnd, p);
            return skip_space(p + 3);
          }
          if (s_.compare(p, 2, "}}") == 0) {
            push(Tok::VarEnd, p);
            return p + 2;
          }
        } else {
          if (s_.compare(p, 3, "+%}") == 0) {
            push(Tok::BlockEnd, p);
            return p + 3;
          }
          if (s_.compare(p, 3, "-%}") == 0) {
            push(Tok::BlockEnd, p);
            return skip_space(p + 3);
          }
          if (s_.compare(p, 2, "%}") == 0) {
            push(Tok::BlockEnd, p);
            return p + 2 < s_.size() && s_[p + 2] == '\n' ? p + 3 : p + 2;
          }
        }
      }
      const size_t ws = skip_space(p);
      if (ws != p) {
        p = ws;
        continue;
      }
      if (lex_number(p) || lex_name(p) || lex_string(p) || lex_operator(p, stack)) continue;
      size_t n;
      std::string ch;
      pystr::append_utf8(ch, cp_at(p, n));
      error("unexpected char '" + ch + "'", p);
    }
  }
};

// jinja2 normalizes \r\n and \r to \n and drops one trailing newline.
std::string normalize(std::string_view src) {
  std::string s;
  s.reserve(src.size());
  for (size_t k = 0; k < src.size(); ++k) {
    if (src[k] == '\r') {
      s += '\n';
      if (k + 1 < src.size() && src[k + 1] == '\n') ++k;
    } else {
      s += src[k];
    }
  }
  if (!s.empty() && s.back() == '\n') s.pop_back();
  return s;
}

}  // namespace

std::vector<Token> lex(std::string_view source) { return Lexer(normalize(source)).run(); }

const char* tok_name(Tok t) {
  switch (t) {
    case Tok::Data: return "template data";
    case Tok::VarBegin: return "begin of print statement";
    case Tok::VarEnd: return "end of print statement";
    case Tok::BlockBegin: return "begin of statement block";
    case Tok::BlockEnd: return "end of statement block";
    case Tok::Name: return "name";
    case Tok::String: return "string";
    case Tok::Int: return "integer";
    case Tok::Float: return "float";
    case Tok::Add: return "'+'";
    case Tok::Sub: return "'-'";
    case Tok::Div: return "'/'";
    case Tok::FloorDiv: return "'//'";
    case Tok::Mul: return "'*'";
    case Tok::Mod: return "'%'";
    case Tok::Pow: return "'**'";
    case Tok::Tilde: return "'~'";
    case Tok::LBracket: return "'['";
    case Tok::RBracket: return "']'";
    case Tok::LParen: return "'('";
    case Tok::RParen: return "')'";
    case Tok::LBrace: return "'{'";
    case Tok::RBrace: return "'}'";
    case Tok::Eq: return "'=='";
    case Tok::Ne: return "'!='";
    case Tok::Gt: return "'>'";
    case Tok::GtEq: return "'>='";
    case Tok::Lt: return "'<'";
    case Tok::LtEq: return "'<='";
    case Tok::Assign: return "'='";
    case Tok::Dot: return "'.'";
    case Tok::Colon: return "':'";
    case Tok::Pipe: return "'|'";
    case Tok::Comma: return "','";
    case Tok::Semicolon: return "';'";
    case Tok::Eof: return "end of template";
  }
  return "token";
}

}  // namespace kiln::jinja
