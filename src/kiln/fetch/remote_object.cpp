// Learning a remote file's size, validator and checksums before download.
#include "kiln/fetch/remote_object.h"

#include <nlohmann/json.hpp>
#include <random>

#include "kiln/fetch/gcs_auth.h"
#include "kiln/fetch/retry.h"

namespace kiln::fetch {
namespace {

// Runs `attempt` until it succeeds, fails for good, or attempts run out.
// `attempt` returns nullopt for "transient, try again" with `why` set.
template <class T, class F>
Result<T> with_retries(const FetchOptions& opts, const std::string& what, F attempt) {
  std::mt19937 rng(std::random_device{}());
  std::string why;
  for (int i = 1; i <= std::max(1, opts.max_attempts); ++i) {
    if (i > 1 &&
        !sleep_unless(backoff_seconds(i - 1, opts.backoff_initial_s, opts.backoff_max_s, rng),
                      opts.cancel))
      return make_error(what + ": cancelled");
    std::optional<Result<T>> r = attempt(why);
    if (r) return std::move(*r);
  }
  return make_error(what + ": still failing after " + std::to_string(opts.max_attempts) +
                    " attempts (last: " + why + "); check the network and the server, then retry");
}

Error status_error(const std::string& url, long status, const std::string& body, bool gcs) {
  std::string msg = url + ": HTTP " + std::to_string(status);
  if (status == 404) msg += ": not found; check the bucket/object name or URL";
  if (status == 401 || status == 403) {
    msg += ": access denied";
    if (gcs)
      msg +=
          "; on Cloud Run/GCE grant the service account roles/storage.objectViewer on the "
          "bucket, elsewhere set GOOGLE_OAUTH_ACCESS_TOKEN (e.g. to `gcloud auth "
          "print-access-token`)";
  }
  if (!body.empty()) msg += " (" + body.substr(0, 300) + ")";
  return make_error(msg);
}

Result<RemoteObject> stat_gcs(const RemoteUrl& u, const FetchOptions& opts, HttpClient& client) {
  RemoteObject obj;
  const GcsToken tok = gcs_token(opts, client);
  obj.auth = tok.source;
  if (!tok.token.empty()) obj.headers.push_back("Authorization: Bearer " + tok.token);
  const std::string endpoint = gcs_endpoint(opts);
  HttpRequest req;
  req.url = gcs_metadata_url(endpoint, u);
  req.headers = obj.headers;
  req.connect_timeout_ms = opts.connect_timeout_ms;
  req.total_timeout_ms = 60000;
  req.cancel = opts.cancel;
  using Meta = std::pair<HttpHead, std::string>;
  auto meta = with_retries<Meta>(opts, u.url + " metadata", [&](std::string& why) {
    auto r = client.get_small(req);
    if (!r) {
      why = r.message();
      return std::optional<Result<Meta>>();
    }
    if (retryable_status(r->first.status)) {
      why = "HTTP " + std::to_string(r->first.status);
      return std::optional<Result<Meta>>();
    }
    if (r->first.status != 200)
      return std::optional<Result<Meta>>(status_error(u.url, r->first.status, r->second, true));
    return std::optional<Result<Meta>>(std::move(*r));
  });
  if (!meta) return meta.error();
  try {
    const auto j = nlohmann::json::parse(meta->second);
    // The JSON API sends 64-bit numbers as strings.
    const auto size = j.at("size");
    obj.size = size.is_string() ? std::stoull(size.get<std::string>()) : size.get<uint64_t>();
    const std::string gen = j.value("generation", "");
    obj.validator = gen.empty() ? j.value("etag", "") : "generation " + gen;
    if (j.contains("crc32c")) {
      auto c = crc32c_from_base64(j.at("crc32c").get<std::string>());
      if (!c) return make_error(u.url + " metadata: " + c.message());
      obj.checksums.crc32c = *c;
    }
    if (j.contains("md5Hash")) {
      auto m = base64_decode(j.at("md5Hash").get<std::string>());
      if (!m || m->size() != 16) return make_error(u.url + " metadata: md5Hash is not 16 bytes");
      obj.checksums.md5 = *m;
    }
    obj.media_url = gcs_media_url(endpoint, u, gen);
  } catch (const std::exception& e) {
    return make_error(u.url + ": the object metadata from " + req.url + " is not what GCS sends (" +
                      e.what() + ")");
  }
  return obj;
}

Result<RemoteObject> stat_http(const RemoteUrl& u, const FetchOptions& opts, HttpClient& client) {
  RemoteObject obj;
  obj.media_url = u.url;
  HttpRequest req;
  req.url = u.url;
  req.range = std::make_pair(uint64_t(0), uint64_t(0));
  req.connect_timeout_ms = opts.connect_timeout_ms;
  req.total_timeout_ms = 60000;
  req.cancel = opts.cancel;
  // One byte by Range: GET works where HEAD is refused (signed URLs), and
  // the answer tells whether ranges work at all.
  auto head = with_retries<HttpHead>(opts, u.url, [&](std::string& why) {
    std::string body;
    auto out = client.get(req, [&](const HttpHead& h, const char* d, size_t n) {
      if (h.status == 206 || h.status == 200) return false;  // the head is all we need
      if (body.size() < 4096) body.append(d, std::min<size_t>(n, 4096));
      return true;
    });
    if (out.cancelled) return std::optional<Result<HttpHead>>(make_error(u.url + ": cancelled"));
    if (out.curl_code != 0 && !out.sink_stopped) {
      why = describe(out);
      return std::optional<Result<HttpHead>>();
    }
    if (retryable_status(out.head.status)) {
      why = "HTTP " + std::to_string(out.head.status);
      return std::optional<Result<HttpHead>>();
    }
    if (out.head.status != 200 && out.head.status != 206 && out.head.status != 416)
      return std::optional<Result<HttpHead>>(status_error(u.url, out.head.status, body, false));
    return std::optional<Result<HttpHead>>(std::move(out.head));
  });
  if (!head) return head.error();
  const HttpHead& h = *head;
  uint64_t first = 0, last = 0, total = 0;
  bool total_known = false;
  if (h.status == 206) {
    if (!parse_content_range(h.header("content-range"), first, last, total, total_known) ||
        !total_known || first != 0)
      return make_error(u.url + ": the server answered a Range request with Content-Range '" +
                        h.header("content-range") + "', which gives no usable size");
    obj.size = total;
  } else if (h.status == 416) {
    // Only an empty file cannot serve byte 0: "bytes */0".
    if (!parse_content_range(h.header("content-range"), first, last, total, total_known) ||
        total != 0)
      return make_error(u.url + ": HTTP 416 to a request for byte 0; the file is not readable");
    obj.size = 0;
  } else {
    obj.ranges = false;
    const std::string cl = h.header("content-length");
    if (cl.empty())
      return make_error(u.url +
                        ": the server neither supports Range nor sends Content-Length, so the "
                        "size is unknown; download it another way");
    try {
      obj.size = std::stoull(cl);
    } catch (const std::exception&) {
      return make_error(u.url + ": the server sent Content-Length '" + cl + "', not a number");
    }
  }
  obj.validator = h.header("etag");
  if (obj.validator.empty()) obj.validator = h.header("last-modified");
  parse_goog_hash(h.header("x-goog-hash"), obj.checksums);
  obj.auth = "none";
  return obj;
}

}  // namespace

void parse_goog_hash(const std::string& value, ExpectedChecksums& into) {
  size_t pos = 0;
  while (pos < value.size()) {
    size_t end = value.find(',', pos);
    if (end == std::string::npos) end = value.size();
    std::string item = value.substr(pos, end - pos);
    while (!item.empty() && item.front() == ' ') item.erase(item.begin());
    const size_t eq = item.find('=');
    if (eq != std::string::npos) {
      const std::string k = item.substr(0, eq), v = item.substr(eq + 1);
      if (k == "crc32c") {
        if (auto c = crc32c_from_base64(v)) into.crc32c = *c;
      } else if (k == "md5") {
        if (auto m = base64_decode(v); m && m->size() == 16) into.md5 = *m;
      }
    }
    pos = end + 1;
  }
}

bool parse_content_range(const std::string& v, uint64_t& first, uint64_t& last, uint64_t& total,
                         bool& total_known) {
  if (v.rfind("bytes ", 0) != 0) return false;
  const std::string r = v.substr(6);
  const size_t slash = r.find('/');
  if (slash == std::string::npos) return false;
  const std::string span = r.substr(0, slash), tot = r.substr(slash + 1);
  try {
    total_known = tot != "*";
    if (total_known) total = std::stoull(tot);
    if (span == "*") {
      first = last = 0;
      return true;
    }
    const size_t dash = span.find('-');
    if (dash == std::string::npos) return false;
    first = std::stoull(span.substr(0, dash));
    last = std::stoull(span.substr(dash + 1));
  } catch (const std::exception&) {
    return false;
  }
  return last >= first;
}

Result<RemoteObject> stat_remote(const RemoteUrl& u, const FetchOptions& opts, HttpClient& client) {
  return u.kind == RemoteUrl::Kind::gcs ? stat_gcs(u, opts, client) : stat_http(u, opts, client);
}

}  // namespace kiln::fetch
