// Internal state shared by the tokenizer's parts (tokenizer.cpp, spm.cpp,
// bpe.cpp): the vocabulary tables built once by Tokenizer::from_gguf.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "kiln/core/status.h"
#include "kiln/tokenizer/tokenizer.h"
#include "kiln/tokenizer/unicode.h"

namespace kiln::tok {

struct StringHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};
using TextToId = std::unordered_map<std::string, int32_t, StringHash, std::equal_to<>>;

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

struct Vocab {
  TokenizerKind kind = TokenizerKind::spm;
  std::string model_name;
  std::string pre_name;
  std::vector<TokenData> tokens;
  TextToId text_to_id;
  // Token for each byte: SPM's <0xNN> tokens; BPE's byte-level characters. -1 if absent.
  std::array<int32_t, 256> byte_to_id{};

  // Byte-level BPE.
  ByteUnicode byte_unicode;
  std::unordered_map<uint64_t, Merge> merges;  // key: (left id << 32) | right id
  std::unique_ptr<PreTokenizer> pre;
  bool ignore_merges = false;

  // Tokens matched in input text before tokenizing it (control, unknown,
  // user-defined), indexed by first byte, longest first.
  std::array<std::vector<int32_t>, 256> specials_by_first_byte;

  int32_t bos = -1, eos = -1, eot = -1, eom = -1, unk = -1, pad = -1;
  bool add_bos = false, add_eos = false, add_space_prefix = false;
  std::vector<int32_t> eog;
  std::vector<uint8_t> is_eog;  // [n_vocab]
  std::string chat_template;

  int32_t n_vocab() const { return static_cast<int32_t>(tokens.size()); }
  int32_t find(std::string_view text) const {
    auto it = text_to_id.find(text);
    return it == text_to_id.end() ? -1 : it->second;
  }
};

// Tokenizes one fragment of plain text (no special tokens in it), appending ids.
// SPM: `text` already has spaces escaped to '▁' and the prefix added.
void spm_encode(const Vocab& v, std::string_view text, std::vector<int32_t>& out);
void bpe_encode(const Vocab& v, std::string_view text, std::vector<int32_t>& out);

// Builds the merge table from tokenizer.ggml.merges ("left right" strings).
Status bpe_load_merges(Vocab& v, const std::vector<std::string_view>& merges);

}  // namespace kiln::tok
