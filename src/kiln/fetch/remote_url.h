// URLs `kiln pull` and `kiln serve --model` accept: http(s)://... and
// gs://BUCKET/OBJECT, the latter mapped onto Cloud Storage's JSON API.
#pragma once

#include <string>

#include "kiln/core/status.h"

namespace kiln::fetch {

struct RemoteUrl {
  enum class Kind { http, gcs } kind = Kind::http;
  std::string url;     // as given
  std::string bucket;  // gs:// only
  std::string object;  // gs:// only, not encoded
};

// True for the prefixes a model path may carry to mean "download first".
bool is_remote_url(const std::string& s);
Result<RemoteUrl> parse_remote_url(const std::string& s);

// Percent-encodes everything but RFC 3986 unreserved characters: an object
// name is one path segment of the JSON API, so '/' must become %2F.
std::string percent_encode(const std::string& s);

// JSON API addresses under `endpoint` (e.g. https://storage.googleapis.com,
// or a local test server): the object's metadata, and its bytes pinned to
// one generation, so an object overwritten mid-download cannot mix versions.
std::string gcs_metadata_url(const std::string& endpoint, const RemoteUrl& u);
std::string gcs_media_url(const std::string& endpoint, const RemoteUrl& u,
                          const std::string& generation);

// The last path segment without query: the file name a download gets when
// DEST is a directory.
std::string remote_file_name(const RemoteUrl& u);

}  // namespace kiln::fetch
