// fetch_to_file: plan the chunks, resume what an earlier run finished, run
// one thread per connection (each with its own curl handle, so connections
// are reused across chunks), hash the file in order as chunks complete, and
// publish DEST by rename once the checksums match. See fetch.h.
#include "kiln/fetch/fetch.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <filesystem>
#include <mutex>
#include <random>
#include <thread>
#include <vector>

#include "kiln/fetch/chunk_download.h"
#include "kiln/fetch/digest.h"
#include "kiln/fetch/fetch_state.h"
#include "kiln/fetch/progress.h"
#include "kiln/fetch/remote_object.h"
#include "kiln/fetch/retry.h"

namespace kiln::fetch {

std::string partial_path(const std::string& dest) {
  return dest + ".partial";
}
std::string state_path(const std::string& dest) {
  return dest + ".partial.json";
}
namespace {
std::string record_path(const std::string& dest) {
  return dest + ".fetch.json";
}

using Clock = std::chrono::steady_clock;

// What the worker threads, the hasher and the main thread share.
struct Download {
  const FetchOptions& opts;
  const RemoteObject& obj;
  const ChunkCallback& on_chunk;
  std::function<void(const std::string&)> log;
  int fd = -1;
  std::string data_path, state_file;
  uint64_t chunk_size = 0;
  size_t n_chunks = 0;

  std::atomic<bool> stop{false};  // a fatal error, or the caller's cancel
  std::atomic<uint64_t> on_disk{0};
  std::atomic<int> retries{0};

  std::mutex mu;  // guards everything below
  std::condition_variable cv;
  FetchState state;
  std::vector<size_t> pending;
  size_t next = 0;
  int workers_running = 0;
  std::optional<Error> failure;
  bool state_warned = false;

  Download(const FetchOptions& o, const RemoteObject& r, const ChunkCallback& c)
      : opts(o), obj(r), on_chunk(c) {}

  uint64_t chunk_offset(size_t i) const { return uint64_t(i) * chunk_size; }
  uint64_t chunk_length(size_t i) const { return std::min(chunk_size, obj.size - chunk_offset(i)); }

  void fail(Error e) {
    {
      std::lock_guard<std::mutex> lock(mu);
      if (!failure) failure = std::move(e);
    }
    stop = true;
    cv.notify_all();
  }

  void complete(size_t i) {
    {
      std::lock_guard<std::mutex> lock(mu);
      state.done[i] = true;
      // Without ranges a resume could not ask for the rest, so no state.
      if (obj.ranges) {
        if (auto st = save_fetch_state(state_file, state); !st && !state_warned) {
          state_warned = true;
          log("cannot save resume state (" + st.message() + "); the download goes on");
        }
      }
    }
    cv.notify_all();
    if (on_chunk) on_chunk(chunk_offset(i), chunk_length(i));
  }
};

void worker(Download& d) {
  HttpClient client;
  std::mt19937 rng(std::random_device{}());
  for (;;) {
    size_t i;
    {
      std::lock_guard<std::mutex> lock(d.mu);
      if (d.stop || d.next >= d.pending.size()) break;
      i = d.pending[d.next++];
    }
    ChunkTarget t{d.fd, d.data_path, d.chunk_offset(i), d.chunk_length(i), &d.on_disk};
    uint64_t got = 0;
    for (int attempt = 1;; ++attempt) {
      if (!d.obj.ranges && got) {  // one stream from byte 0 again
        d.on_disk -= got;
        got = 0;
      }
      const ChunkAttempt r = download_chunk_once(client, d.obj, d.opts, t, got, &d.stop);
      if (r.kind == ChunkAttempt::Kind::ok) break;
      if (r.kind == ChunkAttempt::Kind::stopped) return;
      if (r.kind == ChunkAttempt::Kind::fatal) {
        d.fail(make_error(d.obj.media_url + ": " + r.why));
        return;
      }
      if (attempt >= d.opts.max_attempts) {
        d.fail(make_error(fmt::format(
            "{}: still failing after {} attempts (last: {}); the finished chunks are kept in {}: "
            "run the same command again to resume",
            d.obj.media_url, attempt, r.why, d.data_path)));
        return;
      }
      d.retries++;
      const double wait =
          backoff_seconds(attempt, d.opts.backoff_initial_s, d.opts.backoff_max_s, rng);
      d.log(fmt::format("retrying chunk {} in {:.1f} s (attempt {} of {}): {}", i, wait,
                        attempt + 1, d.opts.max_attempts, r.why));
      if (!sleep_unless(wait, &d.stop)) return;
    }
    d.complete(i);
  }
}

// Hashes chunk after chunk in file order as they complete, so verification
// ends right after the last byte lands instead of re-reading the whole file.
void hasher(Download& d, Digester& dg) {
  std::vector<char> buf(4u << 20);
  for (size_t i = 0; i < d.n_chunks; ++i) {
    {
      std::unique_lock<std::mutex> lock(d.mu);
      d.cv.wait(lock, [&] { return d.state.done[i] || d.workers_running == 0 || d.stop; });
      if (!d.state.done[i]) return;
    }
    uint64_t off = d.chunk_offset(i), left = d.chunk_length(i);
    while (left) {
      const ssize_t n = ::pread(d.fd, buf.data(), std::min<uint64_t>(left, buf.size()), off_t(off));
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {
        d.fail(make_error("cannot read back " + d.data_path +
                          " to verify it: " + std::strerror(errno)));
        return;
      }
      dg.update(buf.data(), size_t(n));
      off += uint64_t(n);
      left -= uint64_t(n);
    }
  }
}

// Reserves the whole file up front: a full disk fails now, not at 90%.
Status preallocate(int fd, uint64_t size, const std::string& path) {
  if (size == 0) return Status::success();
  const int rc = ::posix_fallocate(fd, 0, off_t(size));
  if (rc == 0) return Status::success();
  if (rc == ENOSPC)
    return make_error(
        fmt::format("not enough disk space for {} ({} bytes) at {}; free space or "
                    "choose another destination",
                    format_bytes(double(size)), size, path));
  // Filesystems without fallocate: a sparse file does as well.
  if (::ftruncate(fd, off_t(size)) != 0)
    return make_error("cannot size " + path + ": " + std::strerror(errno));
  return Status::success();
}

std::optional<uint64_t> file_size(const std::string& p) {
  struct stat st;
  if (::stat(p.c_str(), &st) != 0) return std::nullopt;
  return uint64_t(st.st_size);
}

Status check_options(const FetchOptions& o) {
  if (o.connections < 1 || o.connections > 256)
    return make_error(fmt::format("--connections {}: give 1 to 256", o.connections));
  if (o.chunk_size < 4096)
    return make_error(
        fmt::format("--chunk-size {}: give at least 4 KiB (64M is typical)", o.chunk_size));
  if (o.max_attempts < 1) return make_error("--retries: give at least 1 attempt");
  return Status::success();
}

}  // namespace

Result<FetchResult> fetch_to_file(const std::string& url, const std::string& dest_arg,
                                  const FetchOptions& opts, ChunkCallback on_chunk_done) {
  const auto t0 = Clock::now();
  KILN_TRY(check_options(opts));
  auto log =
      opts.log ? opts.log : [](const std::string& m) { fmt::print(stderr, "kiln fetch: {}\n", m); };
  auto u = parse_remote_url(url);
  if (!u) return u.error();
  std::string dest = dest_arg;
  if (std::filesystem::is_directory(dest))
    dest = (std::filesystem::path(dest) / remote_file_name(*u)).string();

  ExpectedChecksums user;
  if (!opts.sha256_hex.empty()) {
    auto b = from_hex(opts.sha256_hex);
    if (!b || b->size() != 32)
      return make_error("--sha256 " + opts.sha256_hex + ": give the 64 hex digits of a SHA-256");
    user.sha256 = *b;
  }
  if (!opts.md5_hex.empty()) {
    auto b = from_hex(opts.md5_hex);
    if (!b || b->size() != 16)
      return make_error("--md5 " + opts.md5_hex + ": give the 32 hex digits of an MD5");
    user.md5 = *b;
  }

  HttpClient client;
  auto obj_r = stat_remote(*u, opts, client);
  if (!obj_r) return obj_r.error();
  const RemoteObject& obj = *obj_r;
  ExpectedChecksums want = obj.checksums;
  if (want.crc32c && !want.md5.empty() && !opts.verify_md5_too) want.md5.clear();
  if (!user.sha256.empty()) want.sha256 = user.sha256;
  if (!user.md5.empty()) {
    if (!obj.checksums.md5.empty() && obj.checksums.md5 != user.md5)
      return make_error("--md5 " + opts.md5_hex + " differs from the server's md5 " +
                        to_hex(obj.checksums.md5) + ": the object is not the one you expect");
    want.md5 = user.md5;
  }

  FetchResult res;
  res.path = dest;
  res.size = obj.size;
  res.ranges = obj.ranges;
  const uint64_t chunk_size = obj.ranges ? opts.chunk_size : std::max<uint64_t>(1, obj.size);
  const size_t n_chunks = size_t((obj.size + chunk_size - 1) / chunk_size);

  // ---- a verified earlier download of the same object ----------------------
  if (opts.reuse_verified && !obj.validator.empty()) {
    auto rec = load_fetch_record(record_path(dest));
    if (rec && rec->url == url && rec->size == obj.size && rec->validator == obj.validator &&
        file_size(dest) == obj.size) {
      log(fmt::format(
          "{} is already here, complete ({}), and unchanged remotely ({}): reusing it", dest,
          rec->verified.empty() ? "size checked, no checksum known" : rec->verified + " verified",
          obj.validator));
      if (opts.on_start) opts.on_start({obj.size, dest, chunk_size, obj.size});
      if (on_chunk_done)
        for (size_t i = 0; i < n_chunks; ++i)
          on_chunk_done(uint64_t(i) * chunk_size,
                        std::min(chunk_size, obj.size - uint64_t(i) * chunk_size));
      res.reused = true;
      res.bytes_resumed = obj.size;
      res.verified = rec->verified;
      res.seconds = std::chrono::duration<double>(Clock::now() - t0).count();
      return res;
    }
  }

  Download d(opts, obj, on_chunk_done);
  d.log = log;
  d.data_path = partial_path(dest);
  d.state_file = state_path(dest);
  d.chunk_size = chunk_size;
  d.n_chunks = n_chunks;

  // ---- resume or start afresh ----------------------------------------------
  bool resumed = false;
  if (opts.resume && obj.ranges) {
    auto st = load_fetch_state(d.state_file);
    if (st && st->url == url && st->size == obj.size && st->chunk_size == chunk_size &&
        !obj.validator.empty() && st->validator == obj.validator &&
        file_size(d.data_path) == obj.size) {
      d.state = std::move(*st);
      resumed = true;
    } else if (st) {
      log("the partial download at " + d.data_path +
          " is for another version, URL or chunk size: starting afresh");
    }
  }
  if (!resumed) {
    d.state = FetchState{url, obj.size, obj.validator, chunk_size, std::vector<bool>(n_chunks)};
    std::remove(d.state_file.c_str());
  }
  d.fd = ::open(d.data_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | (resumed ? 0 : O_TRUNC), 0644);
  if (d.fd < 0)
    return make_error("cannot create " + d.data_path + ": " + std::strerror(errno) +
                      "; check that the directory exists and is writable");
  struct FdCloser {
    int& fd;
    ~FdCloser() {
      if (fd >= 0) ::close(fd);
    }
  } closer{d.fd};
  if (!resumed) KILN_TRY(preallocate(d.fd, obj.size, d.data_path));
  if (obj.ranges && !resumed) KILN_TRY(save_fetch_state(d.state_file, d.state));

  for (size_t i = 0; i < n_chunks; ++i) {
    if (d.state.done[i])
      res.bytes_resumed += d.chunk_length(i);
    else
      d.pending.push_back(i);
  }
  d.on_disk = res.bytes_resumed;
  const int n_workers = int(std::min<size_t>(size_t(opts.connections), d.pending.size()));
  res.connections = n_workers;
  log(fmt::format("{} -> {}: {} ({}), {} chunk(s) of {}, {} connection(s){}, auth: {}, verify: {}",
                  url, dest, format_bytes(double(obj.size)), obj.size, n_chunks,
                  format_bytes(double(chunk_size)), n_workers,
                  obj.ranges ? "" : " (the server ignores Range: one stream, no resume)",
                  obj.auth.empty() ? "none" : obj.auth,
                  want.any() ? Digester(want).names() : "size only (no checksum known)"));
  if (resumed)
    log(fmt::format("resuming: {} of {} already on disk", format_bytes(double(res.bytes_resumed)),
                    format_bytes(double(obj.size))));
  if (opts.on_start) opts.on_start({obj.size, d.data_path, chunk_size, res.bytes_resumed});
  if (on_chunk_done)
    for (size_t i = 0; i < n_chunks; ++i)
      if (d.state.done[i]) on_chunk_done(d.chunk_offset(i), d.chunk_length(i));

  // ---- download ------------------------------------------------------------
  Digester dg(want);
  d.workers_running = n_workers;
  std::vector<std::thread> threads;
  for (int w = 0; w < n_workers; ++w)
    threads.emplace_back([&d] {
      worker(d);
      {
        std::lock_guard<std::mutex> lock(d.mu);
        d.workers_running--;
      }
      d.cv.notify_all();
    });
  std::thread hash_thread;
  if (want.any()) hash_thread = std::thread([&] { hasher(d, dg); });

  ProgressReporter progress(opts.progress, opts.log_interval_s, obj.size, res.bytes_resumed, log);
  {
    std::unique_lock<std::mutex> lock(d.mu);
    while (d.workers_running > 0) {
      d.cv.wait_for(lock, std::chrono::milliseconds(100));
      if (opts.cancel && opts.cancel->load()) {
        d.stop = true;
        d.cv.notify_all();
      }
      lock.unlock();
      progress.update(d.on_disk.load());
      lock.lock();
    }
  }
  for (auto& t : threads) t.join();
  d.cv.notify_all();
  if (hash_thread.joinable()) hash_thread.join();
  progress.finish(d.on_disk.load());
  res.retries = d.retries.load();
  res.bytes_downloaded = d.on_disk.load() - res.bytes_resumed;
  res.seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  res.rate_bytes_per_s = res.seconds > 0 ? double(res.bytes_downloaded) / res.seconds : 0;

  if (d.failure) return *d.failure;
  for (size_t i = 0; i < n_chunks; ++i)
    if (!d.state.done[i])
      return make_error(fmt::format(
          "{}: cancelled with {} of {} on disk in {}; run again to resume", url,
          format_bytes(double(d.on_disk.load())), format_bytes(double(obj.size)), d.data_path));

  // ---- verify, then publish ---------------------------------------------------
  if (want.any()) {
    if (auto st = dg.verify(); !st) {
      ::close(d.fd);
      d.fd = -1;
      std::remove(d.data_path.c_str());
      std::remove(d.state_file.c_str());
      return make_error(url + ": " + st.message() +
                        "; the download was deleted: run again to fetch it afresh (if it fails "
                        "again, the stored object or the server is corrupt)");
    }
    res.verified = dg.names();
  }
  // No fsync: this guards against a dead process, not a dead machine (a
  // Cloud Run disk dies with the instance anyway); checksums catch the rest.
  ::close(d.fd);
  d.fd = -1;
  if (std::rename(d.data_path.c_str(), dest.c_str()) != 0)
    return make_error("cannot rename " + d.data_path + " to " + dest + ": " + std::strerror(errno));
  std::remove(d.state_file.c_str());
  if (opts.reuse_verified && !obj.validator.empty()) {
    if (auto st =
            save_fetch_record(record_path(dest), {url, obj.size, obj.validator, res.verified});
        !st)
      log("cannot save " + record_path(dest) + " (" + st.message() +
          "); the next run downloads again");
  } else {
    std::remove(record_path(dest).c_str());  // a stale record must not vouch for new bytes
  }
  log(fmt::format("done: {} in {:.2f} s ({}/s, {} retries){}", format_bytes(double(obj.size)),
                  res.seconds, format_bytes(res.rate_bytes_per_s), res.retries,
                  res.verified.empty() ? ", no checksum to verify" : ", " + res.verified + " ok"));
  return res;
}

}  // namespace kiln::fetch
