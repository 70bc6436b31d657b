// `kiln pull URL DEST`: downloads a model from https://, http:// or
// gs://BUCKET/OBJECT with parallel ranged GETs, retries, resume and checksum
// verification (library: fetch/fetch.h; user doc: docs/pull.md).
#include <fmt/format.h>

#include <memory>

#include "kiln/core/byte_size.h"
#include "kiln/cli/commands.h"
#include "kiln/fetch/fetch.h"
#include "kiln/fetch/progress.h"

namespace kiln::cli {
namespace {

struct PullOptions {
  std::string url;
  std::string dest;
  int connections = 8;
  std::string chunk_size = "64M";
  std::string sha256;
  std::string md5;
  int attempts = 6;
  bool no_resume = false;
  bool verify_md5 = false;
  std::string progress = "auto";
};

int run_pull(const PullOptions& o) {
  fetch::FetchOptions f;
  f.connections = o.connections;
  const auto chunk = parse_byte_size(o.chunk_size);
  if (!chunk) {
    fmt::print(stderr, "kiln pull: --chunk-size {}: give bytes, e.g. 64M or 16MiB\n", o.chunk_size);
    return 2;
  }
  f.chunk_size = *chunk;
  f.sha256_hex = o.sha256;
  f.md5_hex = o.md5;
  f.max_attempts = o.attempts;
  f.resume = !o.no_resume;
  f.verify_md5_too = o.verify_md5;
  if (o.progress == "auto")
    f.progress = fetch::ProgressMode::automatic;
  else if (o.progress == "bar")
    f.progress = fetch::ProgressMode::bar;
  else if (o.progress == "log")
    f.progress = fetch::ProgressMode::log;
  else if (o.progress == "none")
    f.progress = fetch::ProgressMode::none;
  else {
    fmt::print(stderr, "kiln pull: --progress {}: use auto, bar, log or none\n", o.progress);
    return 2;
  }
  f.log = [](const std::string& m) { fmt::print(stderr, "kiln pull: {}\n", m); };
  auto r = fetch::fetch_to_file(o.url, o.dest, f);
  if (!r) {
    fmt::print(stderr, "kiln pull: {}\n", r.message());
    return 1;
  }
  fmt::print("{}\t{} bytes\t{:.2f} s\t{}/s\t{} connection(s)\tverified: {}\n", r->path, r->size,
             r->seconds, fetch::format_bytes(r->rate_bytes_per_s), r->connections,
             r->verified.empty() ? "size only" : r->verified);
  return 0;
}

}  // namespace

void register_pull(CLI::App& root, Runner& run) {
  auto o = std::make_shared<PullOptions>();
  auto* sub = root.add_subcommand(
      "pull",
      "Download a model (https://, http://, gs://BUCKET/OBJECT) with parallel ranged GETs, "
      "retries, resume and checksum verification (docs/pull.md)");
  sub->add_option("url", o->url, "https://..., http://... or gs://BUCKET/OBJECT")->required();
  sub->add_option("dest", o->dest, "Destination file, or an existing directory")->required();
  sub->add_option("--connections", o->connections, "Parallel connections")->capture_default_str();
  sub->add_option("--chunk-size", o->chunk_size, "Bytes per ranged GET (e.g. 64M)")
      ->capture_default_str();
  sub->add_option("--sha256", o->sha256, "Expected SHA-256 (hex) of the file");
  sub->add_option("--md5", o->md5, "Expected MD5 (hex) of the file");
  sub->add_flag("--verify-md5", o->verify_md5,
                "Also check GCS's MD5 when its CRC32C is there (slower; CRC32C alone catches "
                "corruption)");
  sub->add_option("--retries", o->attempts, "Attempts per chunk before giving up")
      ->capture_default_str();
  sub->add_flag("--no-resume", o->no_resume, "Ignore a partial download from an earlier run");
  sub->add_option("--progress", o->progress,
                  "auto (a bar on a terminal, log lines otherwise), bar, log or none")
      ->capture_default_str();
  sub->callback([o, &run] { run = [o] { return run_pull(*o); }; });
}

}  // namespace kiln::cli
