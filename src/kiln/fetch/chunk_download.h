// One attempt at one chunk: a ranged GET whose answer is checked (status,
// Content-Range, Content-Length, byte count) before and while its bytes are
// written in place with pwrite, so a misbehaving server cannot put bytes at
// the wrong offset.
#pragma once

#include <atomic>
#include <cstdint>
#include <string>

#include "kiln/fetch/http.h"
#include "kiln/fetch/remote_object.h"

namespace kiln::fetch {

struct ChunkAttempt {
  enum class Kind {
    ok,
    retry,    // transient: connection dropped, 5xx, short or overlong body, wrong Content-Length
    fatal,    // retrying cannot help: 4xx, Range ignored, Content-Range for other bytes, disk full
    stopped,  // cancelled
  } kind = Kind::ok;
  std::string why;
};

struct ChunkTarget {
  int fd = -1;       // DEST.partial, opened read-write
  std::string path;  // for messages
  uint64_t offset = 0, length = 0;
  std::atomic<uint64_t>* progress = nullptr;  // bytes written, added as they land
};

// Fetches bytes [offset + got, offset + length) and advances `got`; a retry
// continues where the previous attempt stopped when the server does ranges.
ChunkAttempt download_chunk_once(HttpClient& client, const RemoteObject& obj,
                                 const FetchOptions& opts, const ChunkTarget& t, uint64_t& got,
                                 const std::atomic<bool>* stop);

}  // namespace kiln::fetch
