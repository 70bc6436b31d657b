// parse_redis_url: the subset of the redis:// scheme kiln speaks.
#include "kiln/cache/redis_url.h"

#include <charconv>

namespace kiln::cache {

Result<RedisEndpoint> parse_redis_url(const std::string& url) {
  const std::string scheme = "redis://";
  auto bad = [&](const std::string& why) {
    return make_error("--cache-redis " + url + ": " + why +
                      " (expected redis://[:password@]host[:port][/db])");
  };
  if (url.rfind("rediss://", 0) == 0)
    return bad(
        "TLS (rediss://) is not supported by this build's hiredis 0.14; reach Redis over a "
        "private network path (see docs/caches.md)");
  if (url.rfind(scheme, 0) != 0) return bad("the URL must start with redis://");
  std::string rest = url.substr(scheme.size());
  RedisEndpoint ep;
  if (auto at = rest.rfind('@'); at != std::string::npos) {
    const std::string cred = rest.substr(0, at);
    rest = rest.substr(at + 1);
    if (auto colon = cred.find(':'); colon != std::string::npos) {
      ep.user = cred.substr(0, colon);
      ep.password = cred.substr(colon + 1);
    } else {
      ep.password = cred;
    }
  }
  if (auto slash = rest.find('/'); slash != std::string::npos) {
    const std::string db = rest.substr(slash + 1);
    rest = rest.substr(0, slash);
    if (!db.empty()) {
      auto [p, ec] = std::from_chars(db.data(), db.data() + db.size(), ep.db);
      if (ec != std::errc() || p != db.data() + db.size() || ep.db < 0) return bad("bad db number");
    }
  }
  std::string host = rest, port;
  if (!rest.empty() && rest[0] == '[') {  // [::1]:6379
    const size_t rb = rest.find(']');
    if (rb == std::string::npos) return bad("unclosed [ in the host");
    host = rest.substr(1, rb - 1);
    if (rb + 1 < rest.size()) {
      if (rest[rb + 1] != ':') return bad("junk after the host");
      port = rest.substr(rb + 2);
    }
  } else if (const size_t colon = rest.rfind(':'); colon != std::string::npos) {
    host = rest.substr(0, colon);
    port = rest.substr(colon + 1);
  }
  if (!port.empty() || (rest.size() && rest.back() == ':')) {
    auto [p, ec] = std::from_chars(port.data(), port.data() + port.size(), ep.port);
    if (ec != std::errc() || p != port.data() + port.size() || ep.port <= 0 || ep.port > 65535)
      return bad("bad port");
  }
  if (host.empty()) return bad("no host");
  ep.host = host;
  return ep;
}

}  // namespace kiln::cache
