// GCS credentials in the order the Google client libraries use them for a
// plain token: explicit, then the instance metadata server, then anonymous.
#include "kiln/fetch/gcs_auth.h"

#include <cstdlib>
#include <nlohmann/json.hpp>

namespace kiln::fetch {
namespace {
std::string env(const char* name) {
  const char* v = std::getenv(name);
  return v ? std::string(v) : std::string();
}
}  // namespace

std::string metadata_host(const FetchOptions& opts) {
  if (!opts.metadata_host.empty()) return opts.metadata_host;
  for (const char* name : {"KILN_GCE_METADATA_HOST", "GCE_METADATA_HOST"})
    if (auto v = env(name); !v.empty()) return v;
  return "metadata.google.internal";
}

std::string gcs_endpoint(const FetchOptions& opts) {
  if (!opts.gcs_endpoint.empty()) return opts.gcs_endpoint;
  if (auto v = env("KILN_GCS_ENDPOINT"); !v.empty()) return v;
  return "https://storage.googleapis.com";
}

GcsToken gcs_token(const FetchOptions& opts, HttpClient& client) {
  if (opts.access_token)
    return {*opts.access_token, opts.access_token->empty() ? "anonymous" : "the given token"};
  if (auto t = env("GOOGLE_OAUTH_ACCESS_TOKEN"); !t.empty())
    return {t, "GOOGLE_OAUTH_ACCESS_TOKEN"};

  HttpRequest req;
  req.url = "http://" + metadata_host(opts) +
            "/computeMetadata/v1/instance/service-accounts/default/token";
  req.headers = {"Metadata-Flavor: Google"};
  // Off Google Cloud the host does not resolve or answer: give up quickly
  // rather than delay every anonymous pull.
  req.connect_timeout_ms = 1000;
  req.total_timeout_ms = 5000;
  auto r = client.get_small(req, 64 << 10);
  if (!r || r->first.status != 200) return {"", "anonymous (no metadata server token)"};
  try {
    const auto j = nlohmann::json::parse(r->second);
    const std::string tok = j.value("access_token", "");
    if (!tok.empty()) return {tok, "metadata server"};
  } catch (const nlohmann::json::exception&) {
  }
  return {"", "anonymous (the metadata server's token answer had no access_token)"};
}

}  // namespace kiln::fetch
