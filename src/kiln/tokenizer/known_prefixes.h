// Texts many prompts start with (a baked artifact's warm prompts: long system
// preambles) with their tokens, so that a prompt starting with one is
// tokenized only from near its end. On an H100 host, tokenizing a
// 2,500-token preamble took 0.2-0.3 ms of every such request's time to first
// token, more than a tenth of what its baked KV saves on the GPU.
//
// Reuse is exact: encode() returns what Tokenizer::encode returns. A known
// text P is cut at a point c, at least margin() bytes before its end, where
// its tokens split: P's tokens are H followed by the tokens of P[c:] alone.
// A prompt P + S is then H + encode(P[c:] + S). That holds because a
// byte-level BPE token never spans pre-tokenizer pieces, the pieces before c
// depend only on bytes shortly after them (the pre-tokenizer patterns look a
// character or so ahead), and no special token text can reach across c from
// inside P's last margin() bytes. Only byte-level BPE vocabularies qualify,
// and add() also checks each cut against a set of continuations.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "kiln/tokenizer/tokenizer.h"

namespace kiln {

class KnownPrefixes {
 public:
  explicit KnownPrefixes(Tokenizer tok);

  // Learns `text` for encode() calls with the same add_special and
  // parse_special. False (and nothing learned) when the vocabulary is not
  // byte-level BPE, it appends special tokens, the text is too short, or no
  // cut passes the checks.
  bool add(std::string text, bool add_special, bool parse_special);

  // Tokenizer::encode(text, add_special, parse_special), reusing the longest
  // known text that `text` starts with.
  std::vector<int32_t> encode(std::string_view text, bool add_special, bool parse_special) const;

  size_t size() const { return entries_.size(); }
  // Bytes kept between a cut and the end of its text.
  size_t margin() const { return margin_; }

 private:
  struct Entry {
    std::string text;
    size_t cut = 0;              // bytes of text before the cut
    std::vector<int32_t> head;   // tokens of text[0, cut)
    bool add_special = false, parse_special = false;
  };
  Tokenizer tok_;
  size_t margin_ = 32;
  std::vector<Entry> entries_;
};

}  // namespace kiln
