// --cache-redis URL parsing: redis://[[user]:password@]host[:port][/db].
// No rediss:// — Debian's hiredis 0.14 has no TLS (docs/caches.md says how
// to reach Memorystore over a private VPC path instead).
#pragma once

#include <string>

#include "kiln/core/status.h"

namespace kiln::cache {

struct RedisEndpoint {
  std::string host;
  int port = 6379;
  std::string user;      // Redis 6 ACL user; empty: the default user
  std::string password;  // empty: no AUTH
  int db = 0;
};

Result<RedisEndpoint> parse_redis_url(const std::string& url);

}  // namespace kiln::cache
