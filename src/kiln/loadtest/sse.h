// Streaming Server-Sent Events parsing for OpenAI-style streams: events are
// cut out of the body as bytes arrive (lines may split anywhere), and each
// event is classified with a cheap scan, so the per-token cost stays a few
// microseconds; only the rare usage/error events are parsed as JSON.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>

namespace kiln::loadtest {

class SseParser {
 public:
  // Called with the data of each complete event (several data lines joined
  // by '\n'); events with no data line (comments, keep-alives) are skipped.
  using EventSink = std::function<void(std::string_view data)>;
  void feed(std::string_view bytes, const EventSink& sink);

 private:
  void on_line(std::string_view line, const EventSink& sink);
  std::string partial_;  // a line split across reads
  std::string data_;     // data lines of the event being read
  bool has_data_ = false;
};

struct StreamEvent {
  enum class Kind { token, done, usage, error, other };
  Kind kind = Kind::other;
  // usage (OpenAI `usage`, sent last with stream_options.include_usage):
  int64_t prompt_tokens = -1, completion_tokens = -1;
  int64_t cached_tokens = -1;  // usage.prompt_tokens_details.cached_tokens; -1: not reported
  std::string error;           // kind error: the message
};

// token: a chunk with non-empty `text` (completions) or `delta.content`
// (chat). A chunk that also carries usage is reported as usage with
// `also_token` set.
StreamEvent classify_event(std::string_view data, bool* also_token = nullptr);

}  // namespace kiln::loadtest
