// Byte-level BPE (tokenizer.ggml.model = "gpt2"): split the text with the
// pre-tokenizer regex of tokenizer.ggml.pre (PCRE2), map each piece's bytes to
// GPT-2's printable characters, then apply the merges by rank (lowest first,
// leftmost on ties), as Hugging Face's BPE model does.
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <queue>

#include "kiln/tokenizer/vocab.h"

namespace kiln::tok {

// The Split regexes of the Hugging Face tokenizer.json files of each family.
// \s+(?!\S) keeps the last space of a run for the word that follows it
// (" world" stays one piece after "  "); PCRE2 backtracks into it like the
// Oniguruma engine the reference tokenizers use.
namespace {
constexpr std::string_view kGpt2Regex =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";
constexpr std::string_view kLlama3Regex =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
// Llama 3's regex with single digits (\p{N} instead of \p{N}{1,3}).
constexpr std::string_view kQwen2Regex =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
}  // namespace

const std::vector<PreTokenizerSpec>& pre_tokenizer_specs() {
  // Llama 3's files expect BOS by default and were trained with
  // ignore_merges (a piece that is itself a token is not re-merged).
  static const std::vector<PreTokenizerSpec> specs = {
      {"default", kGpt2Regex, false, false},
      {"gpt-2", kGpt2Regex, false, false},
      {"llama-bpe", kLlama3Regex, true, true},
      {"llama3", kLlama3Regex, true, true},
      {"llama-v3", kLlama3Regex, true, true},
      {"qwen2", kQwen2Regex, false, false},
  };
  return specs;
}

// --- PreTokenizer ------------------------------------------------------------

Result<std::unique_ptr<PreTokenizer>> PreTokenizer::compile(std::string_view pattern) {
  int err = 0;
  PCRE2_SIZE err_off = 0;
  // MATCH_INVALID_UTF: invalid UTF-8 in the input never matches and is
  // skipped over instead of failing the whole match; those bytes become
  // pieces of their own and still tokenize as bytes.
  pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(),
                                   PCRE2_UTF | PCRE2_UCP | PCRE2_MATCH_INVALID_UTF, &err,
                                   &err_off, nullptr);
  if (!code) {
    PCRE2_UCHAR buf[256];
    pcre2_get_error_message(err, buf, sizeof buf);
    return make_error("pre-tokenizer regex does not compile at offset " +
                      std::to_string(err_off) + ": " + reinterpret_cast<char*>(buf));
  }
  pcre2_jit_compile(code, PCRE2_JIT_COMPLETE);  // optional: falls back to the interpreter
  std::unique_ptr<PreTokenizer> p(new PreTokenizer());
  p->code_ = code;
  return p;
}

PreTokenizer::~PreTokenizer() { pcre2_code_free(static_cast<pcre2_code*>(code_)); }

void PreTokenizer::split(std::string_view text,
                         const std::function<void(size_t, size_t)>& emit) const {
  auto* code = static_cast<pcre2_code*>(code_);
  // Match data per call: the compiled code is shared between threads.
  std::unique_ptr<pcre2_match_data, decltype(&pcre2_match_data_free)> md(
      pcre2_match_data_create_from_pattern(code, nullptr), &pcre2_match_data_free);
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  size_t pos = 0;
  size_t emitted = 0;  // end of the last piece handed out
  while (pos < text.size()) {
    int rc = pcre2_match(code, subject, text.size(), pos, 0, md.get(), nullptr);
    if (rc == PCRE2_ERROR_JIT_STACKLIMIT) {
      rc = pcre2_match(code, subject, text.size(), pos, PCRE2_NO_JIT, md.get(), nullptr);
    }
    if (rc < 0) break;  // no match in the rest (or a resource limit): rest is one piece
    const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md.get());
    const size_t b = ov[0], e = ov[1];
    if (b > emitted) emit(emitted, b);  // bytes no alternative matched
    if (e > b) {
      emit(b, e);
      emitted = e;
      pos = e;
    } else {
      // An empty match cannot come from these patterns; step past it anyway.
      pos = b + utf8_char_len(text, b);
    }
  }
  if (emitted < text.size()) emit(emitted, text.size());
}

// --- merges --------------------------------------------------------------------

Status bpe_load_merges(Vocab& v, const std::vector<std::string_view>& merges) {
  v.merges.reserve(merges.size());
  std::string joined;
  for (size_t rank = 0; rank < merges.size(); ++rank) {
    const std::string_view m = merges[rank];
    // Byte-level pieces never contain ' ' (it is 'Ġ'), so the first space
    // after the first character separates the two parts.
    const size_t sp = m.size() > 1 ? m.find(' ', 1) : std::string_view::npos;
    if (sp == std::string_view::npos) {
      return make_error("tokenizer.ggml.merges[" + std::to_string(rank) + "] = '" +
                        std::string(m) + "' is not of the form 'left right'");
    }
    const std::string_view a = m.substr(0, sp), b = m.substr(sp + 1);
    const int32_t ia = v.find(a), ib = v.find(b);
    joined.assign(a);
    joined.append(b);
    const int32_t ir = v.find(joined);
    // A merge whose parts or result are not tokens can never apply.
    if (ia < 0 || ib < 0 || ir < 0) continue;
    v.merges.insert(ia, ib, Merge{static_cast<int32_t>(rank), ir});
  }
  return Status::success();
}

// --- encoding -------------------------------------------------------------------

namespace {

struct Symbol {
  int32_t id;
  int32_t prev;
  int32_t next;
  bool alive;
};

struct Candidate {
  int32_t rank;
  int32_t left;  // symbol indices (grow with text position)
  int32_t right;
  int32_t left_id;  // ids when queued: detects stale entries
  int32_t right_id;
};

struct WorseCandidate {
  bool operator()(const Candidate& a, const Candidate& b) const {
    if (a.rank != b.rank) return a.rank > b.rank;
    return a.left > b.left;
  }
};

void encode_piece(const Vocab& v, std::string_view piece, std::vector<int32_t>& out) {
  if (v.ignore_merges) {
    const int32_t whole = v.find(v.byte_unicode.encode_all(piece));
    if (whole >= 0) {
      out.push_back(whole);
      return;
    }
  }
  std::vector<Symbol> syms;
  syms.reserve(piece.size());
  for (size_t i = 0; i < piece.size(); ++i) {
    const auto n = static_cast<int32_t>(i);
    syms.push_back({v.byte_to_id[static_cast<uint8_t>(piece[i])], n - 1, n + 1, true});
  }
  syms.back().next = -1;

  std::priority_queue<Candidate, std::vector<Candidate>, WorseCandidate> queue;
  const auto try_pair = [&](int32_t l, int32_t r) {
    if (l < 0 || r < 0 || syms[l].id < 0 || syms[r].id < 0) return;
    if (const Merge* m = v.merges.find(syms[l].id, syms[r].id)) {
      queue.push({m->rank, l, r, syms[l].id, syms[r].id});
    }
  };
  for (int32_t i = 1; i < static_cast<int32_t>(syms.size()); ++i) try_pair(i - 1, i);

  while (!queue.empty()) {
    const Candidate c = queue.top();
    queue.pop();
    Symbol& l = syms[c.left];
    Symbol& r = syms[c.right];
    if (!l.alive || !r.alive || l.next != c.right || l.id != c.left_id || r.id != c.right_id) {
      continue;
    }
    l.id = v.merges.find(l.id, r.id)->result;
    r.alive = false;
    l.next = r.next;
    if (r.next >= 0) syms[r.next].prev = c.left;
    try_pair(l.prev, c.left);
    try_pair(c.left, l.next);
  }

  for (int32_t i = 0; i >= 0; i = syms[i].next) {
    if (syms[i].id >= 0) {
      out.push_back(syms[i].id);
    } else if (v.unk >= 0) {
      out.push_back(v.unk);  // a byte whose character is missing from the vocabulary
    }
  }
}

}  // namespace

void bpe_encode(const Vocab& v, std::string_view text, std::vector<int32_t>& out) {
  if (text.empty()) return;
  v.pre->split(text, [&](size_t b, size_t e) { encode_piece(v, text.substr(b, e - b), out); });
}

}  // namespace kiln::tok
