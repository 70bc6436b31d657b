// Flags and construction of kiln serve's response caches.
#include "kiln/cli/serve_cache.h"
#include "kiln/core/byte_size.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <vector>

namespace kiln::cli {

namespace fs = std::filesystem;

namespace {

// Head and tail of a file: enough to tell model files apart (GGUF headers
// and metadata are at the front, tensor data runs to the end) without
// reading gigabytes at start-up.
void sample_file(const fs::path& p, std::string& out) {
  std::ifstream f(p, std::ios::binary);
  if (!f) return;
  std::error_code ec;
  const uint64_t size = fs::file_size(p, ec);
  out += fmt::format("{}:{};", p.filename().string(), size);
  constexpr uint64_t kSpan = 1 << 20;
  std::string buf(size_t(std::min(size, kSpan)), '\0');
  f.read(buf.data(), std::streamsize(buf.size()));
  out += buf;
  if (size > 2 * kSpan) {
    f.seekg(std::streamoff(size - kSpan));
    f.read(buf.data(), std::streamsize(buf.size()));
    out += buf;
  }
}

}  // namespace

void add_cache_options(CLI::App* sub, ServeCacheOptions& o) {
  sub->add_flag("--no-response-cache", o.no_cache,
                "Kill switch: no exact or semantic response cache (also "
                "KILN_RESPONSE_CACHE=off). Per request: send \"cache\": false");
  sub->add_flag("--semantic-cache", o.semantic,
                "Also serve answers to similar questions (needs --embedding-model): the last "
                "user turn is embedded and matched within the same system prompt, history and "
                "sampling settings, guarded against differing numbers, negations and names");
  sub->add_option("--semantic-threshold", o.semantic_threshold,
                  "Cosine similarity a semantic hit needs")
      ->capture_default_str();
  sub->add_flag("--cache-nondeterministic", o.nondeterministic,
                "Also cache sampled requests without a seed (later identical requests get the "
                "same sample); by default only temperature 0 or a fixed seed are cached");
  sub->add_option("--cache-max-entries", o.max_entries, "Entries per response cache (LRU)")
      ->capture_default_str();
  sub->add_option("--cache-max-bytes", o.max_bytes, "Bytes per response cache (LRU), e.g. 256M")
      ->capture_default_str();
  sub->add_option("--cache-ttl", o.ttl_s, "Seconds an answer stays cached (0: until evicted)")
      ->capture_default_str();
  sub->add_option("--cache-dir", o.dir,
                  "Persist the response caches in DIR across restarts (a disk that outlives "
                  "the process; on Cloud Run use --cache-redis)");
  sub->add_option("--cache-redis", o.redis,
                  "Share the response caches through Redis: redis://[:password@]host:port[/db] "
                  "(no TLS; see docs/caches.md for Memorystore)");
}

Result<std::unique_ptr<cache::ResponseCache>> make_response_cache(const ServeCacheOptions& o,
                                                                  cache::TextEmbedder* embedder) {
  bool off = o.no_cache;
  if (const char* env = std::getenv("KILN_RESPONSE_CACHE")) {
    const std::string v = env;
    if (v == "off" || v == "0" || v == "false") off = true;
  }
  if (off) return std::unique_ptr<cache::ResponseCache>();
  if (o.semantic && !embedder)
    return make_error("--semantic-cache needs --embedding-model FILE (a BERT-family GGUF)");
  const auto max_bytes = parse_byte_size(o.max_bytes);
  if (!max_bytes) return make_error("--cache-max-bytes " + o.max_bytes + ": give bytes, e.g. 256M");
  if (o.ttl_s < 0) return make_error("--cache-ttl must be 0 or more seconds");
  cache::ResponseCacheConfig cfg;
  cfg.exact = true;
  cfg.semantic = o.semantic;
  cfg.semantic_threshold = o.semantic_threshold;
  cfg.nondeterministic = o.nondeterministic;
  cfg.limits.max_entries = o.max_entries;
  cfg.limits.max_bytes = *max_bytes;
  cfg.limits.ttl_ms = int64_t(o.ttl_s * 1000);
  cfg.dir = o.dir;
  cfg.redis.url = o.redis;
  auto rc = cache::ResponseCache::create(std::move(cfg), embedder);
  if (!rc) return rc.error();
  return std::move(*rc);
}

std::string serve_fingerprint(const std::string& model_path, const std::string& backend_name,
                              const std::string& kv_type, int ctx_size,
                              const std::string& chat_template) {
  std::string m = fmt::format("kiln-serve-v1;{};{};{};", backend_name, kv_type, ctx_size);
  std::error_code ec;
  if (fs::is_directory(model_path, ec)) {
    std::vector<fs::path> files;
    for (const auto& e : fs::recursive_directory_iterator(model_path, ec))
      if (e.is_regular_file()) files.push_back(e.path());
    std::sort(files.begin(), files.end());
    for (const auto& f : files) sample_file(f, m);
  } else {
    sample_file(model_path, m);
  }
  m += chat_template;
  return cache::hash_hex(m);
}

}  // namespace kiln::cli
