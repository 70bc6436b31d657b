// Bearer tokens for Cloud Storage: an explicit token, the metadata server of
// Cloud Run/GCE (the service account's token), or none for public objects.
#pragma once

#include <string>

#include "kiln/fetch/fetch.h"
#include "kiln/fetch/http.h"

namespace kiln::fetch {

struct GcsToken {
  std::string token;   // empty: anonymous
  std::string source;  // for the log: "GOOGLE_OAUTH_ACCESS_TOKEN", "metadata server", "anonymous"
};

// Never fails: with no credential anywhere, access is anonymous and a
// private object answers 401/403, whose message says how to give one.
GcsToken gcs_token(const FetchOptions& opts, HttpClient& client);

std::string metadata_host(const FetchOptions& opts);
std::string gcs_endpoint(const FetchOptions& opts);

}  // namespace kiln::fetch
