// Parses jinja tokens into a Program (ast.h), following jinja2's grammar:
// the same precedence, the same statements, the same errors for unknown tags,
// filters and tests.
#pragma once

#include <string_view>

#include "kiln/template/ast.h"
#include "kiln/template/lexer.h"

namespace kiln::jinja {

// Throws SyntaxError.
Program parse_program(std::string_view source);

}  // namespace kiln::jinja
