// WordPiece encoding (tokenizer.ggml.model = "bert"): BERT's basic
// pre-tokenization (clean control characters, isolate CJK characters, strip
// accents, lowercase, split on whitespace and punctuation), then greedy
// longest-match-first WordPiece on every word, [UNK] for a word that cannot
// be covered. Unicode properties and normalization come from ICU.
#if KILN_HAVE_ICU  // without ICU, Tokenizer::from_gguf refuses BERT vocabularies
#include <unicode/uchar.h>
#include <unicode/locid.h>
#include <unicode/normalizer2.h>
#include <unicode/unistr.h>
#include <unicode/ustring.h>

#include "kiln/tokenizer/vocab.h"

namespace kiln::tok {
namespace {

constexpr std::string_view kSpmSpace = "\xE2\x96\x81";  // '▁' U+2581
// Hugging Face's WordPiece gives [UNK] for words longer than this (in characters).
constexpr size_t kMaxWordChars = 100;

// Decodes one code point at s[pos]; invalid UTF-8 bytes read as U+FFFD, which
// BERT's text cleaning removes like the reference does for undecodable input.
uint32_t next_cp(std::string_view s, size_t& pos) {
  const size_t n = utf8_char_len(s, pos);
  const auto b = [&](size_t i) { return static_cast<uint8_t>(s[pos + i]); };
  uint32_t cp;
  if (n == 1) {
    cp = b(0) < 0x80 ? b(0) : 0xFFFD;
  } else if (n == 2) {
    cp = ((b(0) & 0x1Fu) << 6) | (b(1) & 0x3Fu);
  } else if (n == 3) {
    cp = ((b(0) & 0x0Fu) << 12) | ((b(1) & 0x3Fu) << 6) | (b(2) & 0x3Fu);
  } else {
    cp = ((b(0) & 0x07u) << 18) | ((b(1) & 0x3Fu) << 12) | ((b(2) & 0x3Fu) << 6) | (b(3) & 0x3Fu);
  }
  pos += n;
  return cp;
}

bool is_whitespace(uint32_t cp) {
  return cp == ' ' || cp == '\t' || cp == '\n' || cp == '\r' || u_isUWhiteSpace(static_cast<UChar32>(cp));
}

// Control and format characters (and NUL / U+FFFD) are dropped; tab, CR and
// LF count as whitespace instead.
bool is_dropped(uint32_t cp) {
  if (cp == 0 || cp == 0xFFFD) return true;
  if (cp == '\t' || cp == '\n' || cp == '\r') return false;
  const int8_t t = u_charType(static_cast<UChar32>(cp));
  return t == U_CONTROL_CHAR || t == U_FORMAT_CHAR;
}

// BERT treats all non-alphanumeric ASCII as punctuation (e.g. '$', '^', '`'),
// plus every Unicode P* character.
bool is_punct(uint32_t cp) {
  if ((cp >= 33 && cp <= 47) || (cp >= 58 && cp <= 64) || (cp >= 91 && cp <= 96) ||
      (cp >= 123 && cp <= 126)) {
    return true;
  }
  return u_ispunct(static_cast<UChar32>(cp));
}

// The CJK Unified Ideograph blocks BERT's tokenizer isolates as words.
bool is_cjk(uint32_t cp) {
  return (cp >= 0x4E00 && cp <= 0x9FFF) || (cp >= 0x3400 && cp <= 0x4DBF) ||
         (cp >= 0x20000 && cp <= 0x2A6DF) || (cp >= 0x2A700 && cp <= 0x2B73F) ||
         (cp >= 0x2B740 && cp <= 0x2B81F) || (cp >= 0x2B820 && cp <= 0x2CEAF) ||
         (cp >= 0xF900 && cp <= 0xFAFF) || (cp >= 0x2F800 && cp <= 0x2FA1F);
}

// NFD, remove non-spacing marks (accents), then full lowercase mapping, in the
// order of the reference BertNormalizer.
icu::UnicodeString normalize(const icu::UnicodeString& in, bool strip_accents, bool lowercase) {
  icu::UnicodeString s = in;
  if (strip_accents) {
    UErrorCode err = U_ZERO_ERROR;
    const icu::Normalizer2* nfd = icu::Normalizer2::getNFDInstance(err);
    if (U_SUCCESS(err)) {
      icu::UnicodeString d = nfd->normalize(s, err);
      if (U_SUCCESS(err)) s = d;
    }
    icu::UnicodeString kept;
    for (int32_t i = 0; i < s.length();) {
      const UChar32 c = s.char32At(i);
      if (u_charType(c) != U_NON_SPACING_MARK) kept.append(c);
      i += U16_LENGTH(c);
    }
    s = kept;
  }
  if (lowercase) s.toLower(icu::Locale::getRoot());
  return s;
}

// Greedy longest-match-first over one word (UTF-8, already normalized).
void encode_word(const Vocab& v, std::string_view word, std::vector<int32_t>& out) {
  std::vector<size_t> bounds;  // byte offsets of character starts, plus the end
  for (size_t p = 0; p < word.size(); p += utf8_char_len(word, p)) bounds.push_back(p);
  const size_t n_chars = bounds.size();
  bounds.push_back(word.size());
  if (n_chars > kMaxWordChars) {
    if (v.unk >= 0) out.push_back(v.unk);
    return;
  }
  const size_t mark = out.size();
  std::string key;
  for (size_t start = 0; start < n_chars;) {
    int32_t hit = -1;
    size_t end = n_chars;
    for (; end > start; --end) {
      const std::string_view sub = word.substr(bounds[start], bounds[end] - bounds[start]);
      // Word-initial pieces are "▁x" (GGUF convention) or plain "x" (original
      // vocab.txt); continuation pieces are plain "x" or "##x" respectively.
      key.clear();
      if (v.wp_hash_continuation) {
        if (start > 0) key = "##";
      } else if (start == 0) {
        key = kSpmSpace;
      }
      key.append(sub);
      hit = v.find(key);
      if (hit >= 0) break;
    }
    if (hit < 0) {
      out.resize(mark);
      if (v.unk >= 0) out.push_back(v.unk);
      return;
    }
    out.push_back(hit);
    start = end;
  }
}

}  // namespace

void wordpiece_encode(const Vocab& v, std::string_view text, std::vector<int32_t>& out) {
  // Clean and split into words: whitespace separates, punctuation and CJK
  // characters are words of their own.
  icu::UnicodeString word;
  std::string utf8;
  const auto flush = [&] {
    if (word.isEmpty()) return;
    const icu::UnicodeString norm = normalize(word, v.wp_strip_accents, v.wp_lowercase);
    word.remove();
    // Accent stripping can leave nothing (a word of lone combining marks).
    if (norm.isEmpty()) return;
    utf8.clear();
    norm.toUTF8String(utf8);
    encode_word(v, utf8, out);
  };
  for (size_t pos = 0; pos < text.size();) {
    const uint32_t cp = next_cp(text, pos);
    if (is_dropped(cp)) continue;
    if (is_whitespace(cp)) {
      flush();
    } else if (is_punct(cp) || is_cjk(cp)) {
      flush();
      word.append(static_cast<UChar32>(cp));
      flush();
    } else {
      word.append(static_cast<UChar32>(cp));
    }
  }
  flush();
}

}  // namespace kiln::tok
#else
#include "kiln/core/assert.h"
#include "kiln/tokenizer/vocab.h"

namespace kiln::tok {
// Tokenizer::from_gguf refuses WordPiece vocabularies in builds without ICU,
// so no Vocab of that kind can reach this.
void wordpiece_encode(const Vocab&, std::string_view, std::vector<int32_t>&) {
  KILN_ASSERT_MSG(false, "WordPiece needs ICU");
}
}  // namespace kiln::tok
#endif  // KILN_HAVE_ICU
