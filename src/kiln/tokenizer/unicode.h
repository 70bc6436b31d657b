// UTF-8 helpers for the tokenizers, and GPT-2's byte <-> printable-unicode
// mapping used by byte-level BPE vocabularies.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace kiln::tok {

// Length of the UTF-8 sequence starting at s[pos] when it is well formed
// (right lead byte, enough continuation bytes, no overlong/surrogate forms);
// 1 for any malformed or truncated sequence, so that invalid bytes become
// single-byte units the tokenizers can still carry through byte fallback.
size_t utf8_char_len(std::string_view s, size_t pos);

// Appends the UTF-8 encoding of code point cp.
void append_utf8(std::string& out, uint32_t cp);

// GPT-2's bytes_to_unicode table: the printable bytes ('!'..'~', '¡'..'¬',
// '®'..'ÿ') map to themselves, the other 68 bytes to U+0100.. in byte order,
// so that every byte has a visible, non-space character in vocab strings.
class ByteUnicode {
 public:
  ByteUnicode();
  // UTF-8 text of the character that stands for byte b.
  const std::string& encode(uint8_t b) const { return byte_to_text_[b]; }
  // Byte for code point cp, or -1 when cp is not one of the 256 characters.
  int decode(uint32_t cp) const { return cp < cp_to_byte_.size() ? cp_to_byte_[cp] : -1; }
  // Maps every byte of `bytes` to its character.
  std::string encode_all(std::string_view bytes) const;
  // Reverses encode_all; characters outside the table are copied unchanged
  // (added tokens of byte-level vocabularies are plain text).
  std::string decode_all(std::string_view text) const;

 private:
  std::array<std::string, 256> byte_to_text_;
  std::array<int16_t, 324> cp_to_byte_{};  // 256 + 68 code points cover the table
};

}  // namespace kiln::tok
