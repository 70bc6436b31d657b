// Parsing of remote model URLs and the Cloud Storage JSON API addresses.
#include "kiln/fetch/remote_url.h"

namespace kiln::fetch {

bool is_remote_url(const std::string& s) {
  return s.rfind("https://", 0) == 0 || s.rfind("http://", 0) == 0 || s.rfind("gs://", 0) == 0;
}

Result<RemoteUrl> parse_remote_url(const std::string& s) {
  RemoteUrl u;
  u.url = s;
  if (s.rfind("gs://", 0) == 0) {
    u.kind = RemoteUrl::Kind::gcs;
    const std::string rest = s.substr(5);
    const size_t slash = rest.find('/');
    if (slash == std::string::npos || slash == 0 || slash + 1 >= rest.size())
      return make_error("'" + s + "' is not gs://BUCKET/OBJECT: name both a bucket and an object");
    u.bucket = rest.substr(0, slash);
    u.object = rest.substr(slash + 1);
    return u;
  }
  if (s.rfind("https://", 0) == 0 || s.rfind("http://", 0) == 0) {
    const size_t host = s.find("://") + 3;
    if (host >= s.size() || s[host] == '/')
      return make_error("'" + s + "' has no host: give a URL like https://HOST/PATH");
    return u;
  }
  return make_error("'" + s + "' is not a URL kiln can fetch: use https://, http:// or gs://");
}

std::string percent_encode(const std::string& s) {
  static const char* hex = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : s) {
    if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
        c == '.' || c == '_' || c == '~') {
      out.push_back(char(c));
    } else {
      out.push_back('%');
      out.push_back(hex[c >> 4]);
      out.push_back(hex[c & 15]);
    }
  }
  return out;
}

namespace {
std::string trim_slash(std::string e) {
  while (!e.empty() && e.back() == '/') e.pop_back();
  return e;
}
}  // namespace

std::string gcs_metadata_url(const std::string& endpoint, const RemoteUrl& u) {
  return trim_slash(endpoint) + "/storage/v1/b/" + percent_encode(u.bucket) + "/o/" +
         percent_encode(u.object);
}

std::string gcs_media_url(const std::string& endpoint, const RemoteUrl& u,
                          const std::string& generation) {
  std::string url = gcs_metadata_url(endpoint, u) + "?alt=media";
  if (!generation.empty()) url += "&generation=" + percent_encode(generation);
  return url;
}

std::string remote_file_name(const RemoteUrl& u) {
  std::string path = u.kind == RemoteUrl::Kind::gcs ? u.object : u.url;
  if (u.kind == RemoteUrl::Kind::http) {
    const size_t q = path.find_first_of("?#");
    if (q != std::string::npos) path = path.substr(0, q);
    path = path.substr(path.find("://") + 3);
    const size_t slash = path.find('/');
    path = slash == std::string::npos ? "" : path.substr(slash);
  }
  while (!path.empty() && path.back() == '/') path.pop_back();
  const size_t slash = path.rfind('/');
  std::string name = slash == std::string::npos ? path : path.substr(slash + 1);
  return name.empty() ? "download" : name;
}

}  // namespace kiln::fetch
