// Parallel ranged download of one remote file (https://, http://, gs://) to
// local disk: N connections fetch fixed-size chunks into DEST.partial,
// failed chunks are retried with exponential backoff, a sidecar state file
// lets an interrupted pull resume, the bytes are verified against the
// server's CRC32C/MD5 (GCS) or a given SHA-256/MD5, and DEST appears by an
// atomic rename only once verified. Used by `kiln pull` and by
// `kiln serve --model URL`, which consumes chunks while later ones download.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>

#include "kiln/core/status.h"

namespace kiln::fetch {

// Told once, before any chunk: the object's size and the file its bytes are
// written to until the final rename (DEST.partial).
struct FetchStart {
  uint64_t size = 0;
  std::string data_path;
  uint64_t chunk_size = 0;
  uint64_t bytes_already_on_disk = 0;  // from a resumed earlier run
};
using StartCallback = std::function<void(const FetchStart&)>;

// Bytes [offset, offset + length) are on disk in FetchStart::data_path (a
// pread of them sees the downloaded bytes). Called from the download threads,
// possibly concurrently and in any order of offsets; chunks a resumed run
// found complete are reported first. NOT yet checksum-verified: the whole
// file is verified after the last chunk, and fetch_to_file fails if it does
// not match — a consumer must then discard what it built from the bytes.
using ChunkCallback = std::function<void(uint64_t offset, uint64_t length)>;

enum class ProgressMode { automatic, bar, log, none };  // automatic: bar on a TTY, else log lines

struct FetchOptions {
  int connections = 8;
  uint64_t chunk_size = 64ull << 20;
  int max_attempts = 6;            // per chunk and per metadata request
  double backoff_initial_s = 0.5;  // doubles per attempt, with jitter
  double backoff_max_s = 16.0;
  long connect_timeout_ms = 10000;
  long stall_seconds = 30;  // a connection under 1 KiB/s this long is dropped and retried
  bool resume = true;       // continue from DEST.partial + its state file when they match
  // Expected digests in hex (from the user: --sha256, --md5). They add to
  // what the server's metadata gives.
  std::string sha256_hex;
  std::string md5_hex;
  // GCS objects carry both CRC32C and MD5; CRC32C alone detects corruption
  // and is ~10x cheaper, so MD5 is checked only when CRC32C is absent
  // (composite objects have no MD5) or when this is set.
  bool verify_md5_too = false;
  ProgressMode progress = ProgressMode::automatic;
  double log_interval_s = 5.0;
  std::function<void(const std::string&)> log;  // default: stderr
  // Where gs:// goes: empty means $KILN_GCS_ENDPOINT, else
  // https://storage.googleapis.com (tests point it at a local server).
  std::string gcs_endpoint;
  // The GCE/Cloud Run metadata server (host[:port]); empty means
  // $KILN_GCE_METADATA_HOST, $GCE_METADATA_HOST, else metadata.google.internal.
  std::string metadata_host;
  // GCS bearer token; unset means $GOOGLE_OAUTH_ACCESS_TOKEN, else the
  // metadata server's token, else anonymous (public objects).
  std::optional<std::string> access_token;
  // Keep DEST.fetch.json (URL, size, ETag/generation) beside a finished
  // download, and skip the download when it still matches the remote
  // object: how `kiln serve --model URL` reuses its download directory.
  bool reuse_verified = false;
  StartCallback on_start;
  const std::atomic<bool>* cancel = nullptr;  // set to stop; the partial file is kept for resume
};

struct FetchResult {
  std::string path;  // DEST, or DEST/NAME when DEST is a directory
  uint64_t size = 0;
  uint64_t bytes_downloaded = 0;  // by this call
  uint64_t bytes_resumed = 0;     // found on disk from an earlier run
  double seconds = 0;
  double rate_bytes_per_s = 0;  // bytes_downloaded / seconds
  int connections = 0;          // used
  int retries = 0;              // failed attempts that were retried
  bool ranges = true;           // false: the server ignored Range, one stream was used
  bool reused = false;          // reuse_verified found a matching complete file
  std::string verified;         // "crc32c", "md5", "sha256" joined by '+'; empty: none known
};

// Downloads `url` to `dest` (a file path, or an existing directory to put
// the URL's file name in). `on_chunk_done` may be null.
Result<FetchResult> fetch_to_file(const std::string& url, const std::string& dest,
                                  const FetchOptions& opts, ChunkCallback on_chunk_done = nullptr);

// Where the bytes of `dest` live until the final rename, and its state file.
std::string partial_path(const std::string& dest);
std::string state_path(const std::string& dest);

}  // namespace kiln::fetch
