// What a download needs to know about the remote file before the first
// chunk: size, whether ranges work, a validator that changes with the
// content, the checksums the server vouches for, and the auth headers.
#pragma once

#include <string>
#include <vector>

#include "kiln/fetch/digest.h"
#include "kiln/fetch/fetch.h"
#include "kiln/fetch/http.h"
#include "kiln/fetch/remote_url.h"

namespace kiln::fetch {

struct RemoteObject {
  std::string media_url;             // what the ranged GETs ask for
  std::vector<std::string> headers;  // e.g. "Authorization: Bearer ..."
  uint64_t size = 0;
  bool ranges = true;     // a Range request was answered with 206
  std::string validator;  // ETag / generation / Last-Modified; empty: unknown
  ExpectedChecksums checksums;
  std::string auth;  // "token from ...", "anonymous": for the log
};

// Resolves gs:// through the JSON API metadata (size, crc32c, md5Hash,
// generation) and http(s) through a one-byte Range probe (Content-Range,
// ETag, x-goog-hash when the server is GCS's XML API). Transient failures
// (5xx, 429, connection errors) are retried per `opts`.
Result<RemoteObject> stat_remote(const RemoteUrl& u, const FetchOptions& opts, HttpClient& client);

// Parses an `x-goog-hash` value ("crc32c=..., md5=...") into `into`.
void parse_goog_hash(const std::string& value, ExpectedChecksums& into);

// Parses "bytes FIRST-LAST/TOTAL" (TOTAL may be '*'); false when malformed.
bool parse_content_range(const std::string& v, uint64_t& first, uint64_t& last, uint64_t& total,
                         bool& total_known);

// True for answers worth retrying: 408, 429 and 5xx.
inline bool retryable_status(long s) {
  return s == 408 || s == 429 || s >= 500;
}

}  // namespace kiln::fetch
