// `kiln tokenize -m MODEL`: shows how a GGUF's tokenizer splits a text — ids
// on one line (--ids) or one "id<TAB>piece" line per token (piece = the bytes
// the token decodes to, with \n, \t, \r, \\ and other control bytes escaped).
#include <fmt/format.h>

#include <iostream>
#include <iterator>

#include "kiln/cli/commands.h"
#include "kiln/gguf/gguf.h"
#include "kiln/tokenizer/tokenizer.h"
#include "kiln/tokenizer/unicode.h"

namespace kiln::cli {
namespace {

struct TokenizeOptions {
  std::string model;
  std::string text;
  bool have_text = false;
  bool ids_only = false;
  bool bos = false;
  bool special = false;
};

// One line per token: control characters and bytes that are not UTF-8 text
// of their own (a byte token, part of a character) are written as escapes.
std::string escape_piece(const std::string& p) {
  std::string out;
  for (size_t i = 0; i < p.size();) {
    const auto c = static_cast<unsigned char>(p[i]);
    const size_t n = tok::utf8_char_len(p, i);
    if (n > 1) out.append(p, i, n);
    else if (c == '\n') out += "\\n";
    else if (c == '\t') out += "\\t";
    else if (c == '\r') out += "\\r";
    else if (c == '\\') out += "\\\\";
    else if (c < 0x20 || c >= 0x7F) out += fmt::format("\\x{:02x}", c);
    else out += static_cast<char>(c);
    i += n;
  }
  return out;
}

int run_tokenize(const TokenizeOptions& o) {
  auto f = gguf::File::open(o.model);
  if (!f) {
    fmt::print(stderr, "kiln tokenize: {}\n", f.message());
    return 1;
  }
  auto tok = Tokenizer::from_gguf(**f);
  if (!tok) {
    fmt::print(stderr, "kiln tokenize: {}\n", tok.message());
    return 1;
  }
  std::string text = o.text;
  if (!o.have_text) {
    // Verbatim: a trailing newline from `echo` is part of the text.
    text.assign(std::istreambuf_iterator<char>(std::cin), std::istreambuf_iterator<char>());
  }
  std::vector<int32_t> ids;
  if (o.bos) {
    if (tok->bos_id() < 0) {
      fmt::print(stderr, "kiln tokenize: --bos: this vocabulary has no BOS token\n");
      return 1;
    }
    ids.push_back(tok->bos_id());
  }
  const auto body = tok->encode(text, /*add_special=*/false, /*parse_special=*/o.special);
  ids.insert(ids.end(), body.begin(), body.end());

  if (o.ids_only) {
    std::string line;
    for (size_t i = 0; i < ids.size(); ++i) line += (i ? " " : "") + std::to_string(ids[i]);
    fmt::print("{}\n", line);
  } else {
    for (int32_t id : ids) fmt::print("{}\t{}\n", id, escape_piece(tok->token_to_piece(id)));
  }
  return 0;
}

}  // namespace

void register_tokenize(CLI::App& root, Runner& run) {
  auto o = std::make_shared<TokenizeOptions>();
  auto* sub = root.add_subcommand("tokenize", "Tokenize a text with a GGUF's tokenizer "
                                              "(a model or a vocab-only file)");
  sub->add_option("-m,--model", o->model, "GGUF file (model or vocab-only)")->required();
  sub->add_option("--text", o->text, "Text to tokenize (default: all of stdin, verbatim)");
  sub->add_flag("--ids", o->ids_only, "Print only the ids, space-separated on one line");
  sub->add_flag("--bos", o->bos, "Prepend the BOS token");
  sub->add_flag("--special", o->special,
                "Parse special-token text (e.g. <|im_start|>) into those tokens");
  sub->callback([o, sub, &run] {
    o->have_text = sub->count("--text") > 0;
    run = [o] { return run_tokenize(*o); };
  });
}

}  // namespace kiln::cli
