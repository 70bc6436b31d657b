// SentencePiece BPE encoding (tokenizer.ggml.model = "llama"): start from
// UTF-8 characters, repeatedly merge the adjacent pair whose concatenation is
// the vocabulary piece with the highest score (leftmost on ties), then map
// pieces to ids, falling back to <0xNN> byte tokens for characters the
// vocabulary lacks.
#include <queue>

#include "kiln/tokenizer/vocab.h"

namespace kiln::tok {
namespace {

struct Symbol {
  uint32_t begin;  // byte offset into the text
  uint32_t len;    // bytes; 0 once merged into its left neighbour
  int32_t prev;    // index of the live neighbours, -1 at the ends
  int32_t next;
};

struct Candidate {
  float score;
  int32_t left;   // symbol index; indices grow with text position
  int32_t right;
  uint32_t len;   // len(left) + len(right) when queued: detects stale entries
};

struct WorseCandidate {
  bool operator()(const Candidate& a, const Candidate& b) const {
    if (a.score != b.score) return a.score < b.score;
    return a.left > b.left;
  }
};

// Pieces that merging may produce: SentencePiece only merges into normal and
// user-defined pieces (control, byte and unknown tokens are reserved ids).
int32_t mergeable_piece(const Vocab& v, std::string_view s) {
  const int32_t id = v.find(s);
  if (id < 0) return -1;
  const TokenType t = v.tokens[id].type;
  return (t == TokenType::normal || t == TokenType::user_defined || t == TokenType::undefined)
             ? id
             : -1;
}

}  // namespace

void spm_encode(const Vocab& v, std::string_view text, std::vector<int32_t>& out) {
  if (text.empty()) return;
  std::vector<Symbol> syms;
  syms.reserve(text.size());
  for (size_t pos = 0; pos < text.size();) {
    const size_t n = utf8_char_len(text, pos);
    const auto i = static_cast<int32_t>(syms.size());
    syms.push_back({static_cast<uint32_t>(pos), static_cast<uint32_t>(n), i - 1, i + 1});
    pos += n;
  }
  syms.back().next = -1;

  std::priority_queue<Candidate, std::vector<Candidate>, WorseCandidate> queue;
  const auto try_pair = [&](int32_t l, int32_t r) {
    if (l < 0 || r < 0) return;
    const uint32_t len = syms[l].len + syms[r].len;
    const int32_t id = mergeable_piece(v, text.substr(syms[l].begin, len));
    if (id >= 0) queue.push({v.tokens[id].score, l, r, len});
  };
  for (int32_t i = 1; i < static_cast<int32_t>(syms.size()); ++i) try_pair(i - 1, i);

  while (!queue.empty()) {
    const Candidate c = queue.top();
    queue.pop();
    Symbol& l = syms[c.left];
    Symbol& r = syms[c.right];
    if (l.len == 0 || r.len == 0 || l.len + r.len != c.len || l.next != c.right) continue;
    l.len += r.len;
    r.len = 0;
    l.next = r.next;
    if (r.next >= 0) syms[r.next].prev = c.left;
    try_pair(l.prev, c.left);
    try_pair(c.left, l.next);
  }

  for (int32_t i = 0; i >= 0; i = syms[i].next) {
    const std::string_view s = text.substr(syms[i].begin, syms[i].len);
    const int32_t id = mergeable_piece(v, s);
    if (id >= 0) {
      out.push_back(id);
      continue;
    }
    // Only single characters can be missing (merges only make vocabulary
    // pieces): spell them as bytes, or <unk> if the vocabulary has no bytes.
    for (char c : s) {
      const int32_t b = v.byte_to_id[static_cast<uint8_t>(c)];
      if (b >= 0) {
        out.push_back(b);
      } else if (v.unk >= 0) {
        out.push_back(v.unk);
        break;  // one <unk> per character
      }
    }
  }
}

}  // namespace kiln::tok
