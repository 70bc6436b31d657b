// Internal state shared by the tokenizer's parts (tokenizer.cpp, spm.cpp,
// bpe.cpp, wordpiece.cpp): the vocabulary tables built once by Tokenizer::from_gguf.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "kiln/core/status.h"
#include "kiln/tokenizer/tokenizer.h"
#include "kiln/tokenizer/unicode.h"

namespace kiln::tok {

struct TokenData {
  std::string text;   // as stored in the vocabulary
  std::string piece;  // the bytes it decodes to (see Tokenizer::token_to_piece)
  float score = 0.0f;
  TokenType type = TokenType::normal;
};

// A compiled pre-tokenizer regex (PCRE2); splits text into the pieces that
// byte-level BPE then encodes one by one.
class PreTokenizer {
 public:
  static Result<std::unique_ptr<PreTokenizer>> compile(std::string_view pattern);
  ~PreTokenizer();
  // Calls emit(begin, end) for every piece of text[...] in order; the pieces
  // tile the text (bytes no alternative matches, e.g. invalid UTF-8, become
  // pieces of their own).
  void split(std::string_view text, const std::function<void(size_t, size_t)>& emit) const;

 private:
  PreTokenizer() = default;
  void* code_ = nullptr;  // pcre2_code_8*
};

// What tokenizer.ggml.pre selects for byte-level BPE.
struct PreTokenizerSpec {
  std::string_view name;
  std::string_view regex;
  bool add_bos;        // default of add_bos_token when the metadata is silent
  bool ignore_merges;  // a piece that is a whole vocabulary token is emitted as is
};
const std::vector<PreTokenizerSpec>& pre_tokenizer_specs();

struct Merge {
  int32_t rank;
  int32_t result;  // id of the merged token
};

// Flat open-addressing hash tables (linear probing, power-of-two size, built
// once): a 150k-token vocabulary with 280k merges loads in tens of
// milliseconds, where node-based maps spend their time on cache misses.
class TextIndex {
 public:
  // Duplicate strings: the first id wins, as in the reference tokenizers.
  void build(const std::vector<TokenData>& tokens);
  int32_t find(const std::vector<TokenData>& tokens, std::string_view s) const;

 private:
  struct Slot {
    uint32_t hash;
    int32_t id;  // -1: empty
  };
  std::vector<Slot> slots_;
  size_t mask_ = 0;
};

class MergeTable {
 public:
  void reserve(size_t n);
  void insert(int32_t left, int32_t right, Merge m);  // keeps an existing entry
  const Merge* find(int32_t left, int32_t right) const;

 private:
  struct Slot {
    uint64_t key;  // (left << 32) | right; kEmpty when unused
    Merge merge;
  };
  static constexpr uint64_t kEmpty = ~uint64_t{0};
  void grow();
  std::vector<Slot> slots_;
  size_t mask_ = 0;
  size_t n_ = 0;
};

struct Vocab {
  TokenizerKind kind = TokenizerKind::spm;
  std::string model_name;
  std::string pre_name;
  std::vector<TokenData> tokens;
  TextIndex text_to_id;
  // Token for each byte: SPM's <0xNN> tokens; BPE's byte-level characters. -1 if absent.
  std::array<int32_t, 256> byte_to_id{};

  // Byte-level BPE.
  ByteUnicode byte_unicode;
  MergeTable merges;
  std::unique_ptr<PreTokenizer> pre;
  bool ignore_merges = false;

  // WordPiece. wp_hash_continuation: continuation pieces are "##x" and
  // word-initial ones plain (vocab.txt); otherwise word-initial pieces are
  // "▁x" and continuations plain (how GGUF converters store BERT vocabularies).
  bool wp_hash_continuation = false;
  bool wp_lowercase = true;
  bool wp_strip_accents = true;

  // Tokens matched in input text before tokenizing it (control, unknown,
  // user-defined), indexed by first byte, longest first.
  std::array<std::vector<int32_t>, 256> specials_by_first_byte;

  int32_t bos = -1, eos = -1, eot = -1, eom = -1, unk = -1, pad = -1, sep = -1;
  bool add_bos = false, add_eos = false, add_sep = false, add_space_prefix = false;
  std::vector<int32_t> eog;
  std::vector<uint8_t> is_eog;  // [n_vocab]
  std::string chat_template;

  int32_t n_vocab() const { return static_cast<int32_t>(tokens.size()); }
  int32_t find(std::string_view text) const { return text_to_id.find(tokens, text); }
};

// Tokenizes one fragment of plain text (no special tokens in it), appending ids.
// SPM: `text` already has spaces escaped to '▁' and the prefix added.
void spm_encode(const Vocab& v, std::string_view text, std::vector<int32_t>& out);
void bpe_encode(const Vocab& v, std::string_view text, std::vector<int32_t>& out);
void wordpiece_encode(const Vocab& v, std::string_view text, std::vector<int32_t>& out);

// Builds the merge table from tokenizer.ggml.merges ("left right" strings).
Status bpe_load_merges(Vocab& v, const std::vector<std::string_view>& merges);

}  // namespace kiln::tok
