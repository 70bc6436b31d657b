// kiln::Tokenizer: text <-> token ids for GGUF vocabularies: SentencePiece BPE
// (tokenizer.ggml.model = "llama"), byte-level BPE ("gpt2") with the
// pre-tokenizer regex named by tokenizer.ggml.pre, and WordPiece ("bert").
//
// A Tokenizer is immutable after from_gguf() and cheap to copy (shared state);
// all methods are const and safe to call from several threads at once.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "kiln/core/status.h"

namespace kiln::gguf {
class File;
}

namespace kiln {

// tokenizer.ggml.token_type values.
enum class TokenType : int32_t {
  undefined = 0,
  normal = 1,
  unknown = 2,
  control = 3,
  user_defined = 4,
  unused = 5,
  byte = 6,
};

enum class TokenizerKind {
  spm,  // "llama": SentencePiece BPE with scores and byte fallback
  bpe,  // "gpt2": byte-level BPE with ranked merges
  wpm,  // "bert": WordPiece after BERT's basic pre-tokenization (lowercased)
};

namespace tok {
struct Vocab;
}

class Tokenizer {
 public:
  // Reads tokenizer.ggml.* from the file's metadata. Errors name the key that
  // is missing or malformed, or the unsupported model / pre-tokenizer.
  static Result<Tokenizer> from_gguf(const gguf::File& file);

  // Pre-tokenizer names (tokenizer.ggml.pre) kiln knows for byte-level BPE.
  static std::vector<std::string_view> known_pre_tokenizers();

  // add_special: add BOS/EOS/SEP as the vocabulary asks (add_bos()/add_eos()/
  // add_sep(); WordPiece: CLS is the BOS id, SEP goes at the end).
  // parse_special: text of control tokens (e.g. "<|im_start|>") in `text`
  // becomes those tokens; user-defined tokens are always matched, as
  // SentencePiece and Hugging Face tokenizers do for non-special added tokens.
  // Bytes that are not valid UTF-8 are kept (byte fallback / byte-level
  // tokens), so decode(encode(x)) == x for any x without special-token text
  // (SentencePiece: and without '▁' U+2581, which it reads back as a space,
  // like the reference tokenizers). WordPiece is lossy (lowercase, no accents,
  // whitespace collapsed, control characters dropped).
  std::vector<int32_t> encode(std::string_view text, bool add_special, bool parse_special) const;

  // Bytes of the text of `ids` (may end inside a UTF-8 sequence). SentencePiece
  // vocabularies drop the space they added in front of the first word, as
  // SentencePiece does. skip_special leaves out control and unknown tokens.
  // WordPiece: words joined with single spaces, continuation pieces glued on.
  std::string decode(std::span<const int32_t> ids, bool skip_special = false) const;

  // Bytes one token stands for: '▁' -> ' ', <0xNN> -> byte NN, byte-level
  // characters -> their bytes; control tokens give their text. Empty for an
  // id out of range.
  const std::string& token_to_piece(int32_t id) const;
  // The vocabulary string as stored in the file (e.g. "▁Hello", "ĠHello").
  const std::string& token_text(int32_t id) const;
  TokenType token_type(int32_t id) const;
  float token_score(int32_t id) const;
  // Exact vocabulary lookup of a stored string; -1 if absent.
  int32_t token_id(std::string_view text) const;

  TokenizerKind kind() const;
  const std::string& model_name() const;  // tokenizer.ggml.model
  const std::string& pre_name() const;    // tokenizer.ggml.pre ("" for spm)
  int32_t n_vocab() const;

  // Special ids; -1 where the vocabulary has none. WordPiece: bos_id() is CLS.
  int32_t bos_id() const;
  int32_t eos_id() const;
  int32_t eot_id() const;  // end of turn (<|eot_id|>, <|im_end|>, ...)
  int32_t unk_id() const;
  int32_t pad_id() const;
  int32_t sep_id() const;
  bool add_bos() const;
  bool add_eos() const;
  bool add_sep() const;
  bool add_space_prefix() const;

  // End of generation: EOS, EOT, EOM and the well-known end-of-turn control
  // tokens of the vocabulary.
  bool is_eog(int32_t id) const;
  const std::vector<int32_t>& eog_ids() const;

  // tokenizer.chat_template ("" when absent).
  const std::string& chat_template() const;

 private:
  explicit Tokenizer(std::shared_ptr<const tok::Vocab> v) : v_(std::move(v)) {}
  std::shared_ptr<const tok::Vocab> v_;
};

}  // namespace kiln
