// Turning a stream of generated tokens into text a client may see:
// Utf8Stream never lets a partial UTF-8 sequence out (a character split
// across byte tokens waits for its last byte), StopMatcher holds back any
// tail that could still become a stop string, so a stop string is never
// sent, not even its first bytes.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace kiln {
class Tokenizer;
}

namespace kiln::server {

// Byte length of the complete, well-formed UTF-8 character at s[pos]; 0 when
// the bytes there are a valid but unfinished start of one (more may come);
// -1 when they can never become a valid character.
int utf8_complete_len(std::string_view s, size_t pos);

// Valid UTF-8 copy of `s`: every byte that is not part of a well-formed
// character becomes U+FFFD (JSON strings must be valid UTF-8).
std::string utf8_sanitize(std::string_view s);

// Number of Unicode code points in valid UTF-8 text (Python's len()).
size_t utf8_length(std::string_view s);

class Utf8Stream {
 public:
  // Adds bytes; returns the text that is now complete (valid UTF-8; bytes
  // that can never be valid are replaced by U+FFFD).
  std::string push(std::string_view bytes);
  // End of the stream: whatever is left, an unfinished tail as U+FFFD.
  std::string flush();
  bool has_pending() const { return !pending_.empty(); }

 private:
  std::string pending_;
};

class StopMatcher {
 public:
  explicit StopMatcher(std::vector<std::string> stops) : stops_(std::move(stops)) {}

  struct Out {
    std::string text;      // safe to send now
    bool stopped = false;  // a stop string was found; `text` ends just before it
  };
  // `text` must be valid UTF-8 (from Utf8Stream). After a stop, returns nothing.
  Out push(std::string_view text);
  // End of generation without a stop: the held-back tail is plain text.
  std::string flush();
  bool stopped() const { return stopped_; }

 private:
  std::vector<std::string> stops_;
  std::string held_;
  bool stopped_ = false;
};

// Generated token ids -> text deltas: each token's bytes (control tokens
// such as end-of-turn left out) through a Utf8Stream.
class TokenTextDecoder {
 public:
  explicit TokenTextDecoder(const Tokenizer& tok) : tok_(&tok) {}
  std::string push(int32_t token);
  std::string flush() { return utf8_.flush(); }

 private:
  const Tokenizer* tok_;
  Utf8Stream utf8_;
};

// The bytes a token stands for in the output (empty for control tokens).
std::string_view token_output_bytes(const Tokenizer& tok, int32_t token);

}  // namespace kiln::server
