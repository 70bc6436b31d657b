// Jinja lexer with the settings transformers uses (trim_blocks and
// lstrip_blocks on, keep_trailing_newline off): splits a template into data
// and the tokens inside {{ }}, {% %}; drops {# #}; applies "-"/"+" whitespace
// control exactly as jinja2's lexer does.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace kiln::jinja {

enum class Tok : uint8_t {
  Data, VarBegin, VarEnd, BlockBegin, BlockEnd, Name, String, Int, Float,
  Add, Sub, Div, FloorDiv, Mul, Mod, Pow, Tilde, LBracket, RBracket, LParen, RParen,
  LBrace, RBrace, Eq, Ne, Gt, GtEq, Lt, LtEq, Assign, Dot, Colon, Pipe, Comma, Semicolon,
  Eof,
};

struct Token {
  Tok type = Tok::Eof;
  std::string text;  // Data, Name, String (unescaped value)
  int64_t ival = 0;
  double fval = 0;
  uint32_t line = 1, col = 1;
};

struct SyntaxError {
  std::string message;
  uint32_t line = 1, col = 1;
};

// Throws SyntaxError. The last token is Eof.
std::vector<Token> lex(std::string_view source);

const char* tok_name(Tok t);  // for messages: "'}}'", "name", ...

}  // namespace kiln::jinja
