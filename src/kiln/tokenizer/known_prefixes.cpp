// Known-prefix tokenization (see known_prefixes.h).
#include "kiln/tokenizer/known_prefixes.h"

#include <algorithm>
#include <array>

namespace kiln {
namespace {

// Continuations every cut must survive: whitespace runs and line breaks
// (the patterns with lookahead), letters, digits, contractions,
// punctuation, multi-byte characters.
constexpr std::array<std::string_view, 14> kProbes = {
    "", " ", "  x", "\n", "\n\n", " \n", "a", "1", "12345", "'s", " x", ".!", "\xC3\xA9", "\xE4\xB8\xAD"};

bool utf8_continuation(char c) { return (static_cast<unsigned char>(c) & 0xC0) == 0x80; }

}  // namespace

KnownPrefixes::KnownPrefixes(Tokenizer tok) : tok_(std::move(tok)) {
  // No special token's text may reach from inside the margin across a cut.
  size_t longest = 0;
  for (int32_t id = 0; id < tok_.n_vocab(); ++id) {
    const TokenType t = tok_.token_type(id);
    if (t == TokenType::control || t == TokenType::user_defined)
      longest = std::max(longest, tok_.token_to_piece(id).size());
  }
  margin_ = std::max<size_t>(32, 2 * longest);
}

bool KnownPrefixes::add(std::string text, bool add_special, bool parse_special) {
  if (tok_.kind() != TokenizerKind::bpe) return false;  // SentencePiece merges across words
  if (add_special && (tok_.add_eos() || tok_.add_sep())) return false;  // a special token at the end
  if (text.size() < 2 * margin_) return false;
  const std::vector<int32_t> full = tok_.encode(text, add_special, parse_special);
  std::vector<std::string> eot_probes;  // the end-of-turn texts, where control text is parsed
  if (parse_special)
    for (int32_t id : {tok_.eos_id(), tok_.eot_id()})
      if (id >= 0) eot_probes.push_back(tok_.token_to_piece(id));
  const size_t first = text.size() - margin_;
  const size_t last = first > 256 ? first - 256 : 0;
  for (size_t c = first; c > last; --c) {
    if (utf8_continuation(text[c])) continue;
    const std::string_view tail = std::string_view(text).substr(c);
    const std::vector<int32_t> rest = tok_.encode(tail, /*add_special=*/false, parse_special);
    if (rest.size() >= full.size() || !std::equal(rest.begin(), rest.end(), full.end() - int64_t(rest.size())))
      continue;  // the tokens do not split at c
    std::vector<int32_t> head(full.begin(), full.end() - int64_t(rest.size()));
    auto holds = [&](std::string_view s) {
      std::vector<int32_t> want = tok_.encode(text + std::string(s), add_special, parse_special);
      std::vector<int32_t> got = head;
      const auto r = tok_.encode(std::string(tail) + std::string(s), false, parse_special);
      got.insert(got.end(), r.begin(), r.end());
      return got == want;
    };
    bool ok = true;
    for (std::string_view s : kProbes) ok = ok && holds(s);
    for (const auto& s : eot_probes) ok = ok && holds(s);
    if (!ok) continue;
    entries_.push_back({std::move(text), c, std::move(head), add_special, parse_special});
    // Longest first: encode() takes the first that matches.
    std::stable_sort(entries_.begin(), entries_.end(),
                     [](const Entry& a, const Entry& b) { return a.text.size() > b.text.size(); });
    return true;
  }
  return false;
}

std::vector<int32_t> KnownPrefixes::encode(std::string_view text, bool add_special, bool parse_special) const {
  for (const Entry& e : entries_) {
    if (e.add_special != add_special || e.parse_special != parse_special || !text.starts_with(e.text))
      continue;
    std::vector<int32_t> out;
    const auto rest = tok_.encode(text.substr(e.cut), /*add_special=*/false, parse_special);
    out.reserve(e.head.size() + rest.size());
    out.insert(out.end(), e.head.begin(), e.head.end());
    out.insert(out.end(), rest.begin(), rest.end());
    return out;
  }
  return tok_.encode(text, add_special, parse_special);
}

}  // namespace kiln
