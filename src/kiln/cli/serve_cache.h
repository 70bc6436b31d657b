// kiln serve's response-cache flags (--semantic-cache, --cache-dir,
// --cache-redis, ...) and the cache they build, kept out of cmd_serve.cpp.
#pragma once

#include <CLI/CLI.hpp>
#include <memory>
#include <string>

#include "kiln/cache/response_cache.h"

namespace kiln::cli {

struct ServeCacheOptions {
  bool no_cache = false;  // --no-response-cache (or KILN_RESPONSE_CACHE=off)
  bool semantic = false;
  float semantic_threshold = 0.95f;
  bool nondeterministic = false;
  size_t max_entries = 10000;
  std::string max_bytes = "256M";
  double ttl_s = 3600;
  std::string dir;
  std::string redis;
};

void add_cache_options(CLI::App* cmd, ServeCacheOptions& o);

// The caches as the flags say; null when they are switched off. `embedder`
// (the --embedding-model) may be null unless --semantic-cache.
Result<std::unique_ptr<cache::ResponseCache>> make_response_cache(const ServeCacheOptions& o,
                                                                  cache::TextEmbedder* embedder);

// What identifies this server's outputs, the same on every instance serving
// the same model the same way: a content hash of the model (file or baked
// artifact directory; sampled, not read whole) plus the settings that change
// tokens (backend, KV type, --ctx-size via the default max_tokens, chat
// template).
std::string serve_fingerprint(const std::string& model_path, const std::string& backend_name,
                              const std::string& kv_type, int ctx_size,
                              const std::string& chat_template);

}  // namespace kiln::cli
