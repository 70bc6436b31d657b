// Which byte ranges of a download are on disk, for a consumer that reads
// (e.g. uploads tensors to the GPU) while later chunks still download:
// fetch_to_file's callbacks mark, the consumer waits for the range it needs.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "kiln/core/status.h"
#include "kiln/fetch/fetch.h"

namespace kiln::fetch {

class ArrivalTracker {
 public:
  // Plug into FetchOptions::on_start and fetch_to_file's on_chunk_done.
  StartCallback start_callback();
  ChunkCallback chunk_callback();
  ArrivalTracker() = default;
  ~ArrivalTracker();
  ArrivalTracker(const ArrivalTracker&) = delete;
  ArrivalTracker& operator=(const ArrivalTracker&) = delete;

  // The download ended (fetch_to_file returned): on failure waiters wake
  // with its error.
  void finish(const Result<FetchResult>& r);
  void finish(const Status& st);

  // The object's size once on_start ran (blocks until then).
  Result<uint64_t> wait_size();
  // Blocks until [offset, offset + length) is on disk; fails when the
  // download failed or ended without those bytes.
  Status wait(uint64_t offset, uint64_t length);
  // A read-only descriptor of the file the bytes land in, opened when the
  // download started (valid after wait_size()): pread it. Unlike the path
  // (DEST.partial, renamed to DEST at the end) it stays valid throughout.
  int fd() const { return fd_; }

  // How the consumer fared: wait() calls, those that found their range not
  // yet on disk (the consumer was ahead of the download) and the time they
  // blocked (summed over threads: parallel readers may wait at once).
  struct WaitStats {
    uint64_t calls = 0;
    uint64_t blocked = 0;
    double blocked_seconds = 0;
  };
  WaitStats wait_stats() const;
  // When the last chunk landed (before the final checksum), if it did.
  std::optional<std::chrono::steady_clock::time_point> all_arrived_at() const;

 private:
  bool covered(uint64_t offset, uint64_t length) const;  // mu_ held
  mutable std::mutex mu_;
  std::condition_variable cv_;
  int fd_ = -1;
  bool started_ = false, finished_ = false;
  std::optional<Error> error_;
  FetchStart start_;
  std::vector<bool> chunks_;
  size_t n_arrived_ = 0;  // chunks_ set
  std::optional<std::chrono::steady_clock::time_point> all_arrived_;
  WaitStats stats_;
};

}  // namespace kiln::fetch
