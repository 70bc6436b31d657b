// A download running on its own thread while the caller consumes its bytes
// (`kiln serve --model URL` loads the model as chunks arrive): fetch_to_file
// with an ArrivalTracker, a cancel flag, and the times an overlap report needs.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

#include "kiln/core/status.h"
#include "kiln/fetch/arrival.h"
#include "kiln/fetch/fetch.h"

namespace kiln::fetch {

class BackgroundFetch {
 public:
  using Clock = std::chrono::steady_clock;

  // Starts fetch_to_file(url, dest, opts) on a thread. opts.on_start is
  // chained after the tracker's; opts.cancel is replaced by this object's.
  BackgroundFetch(std::string url, std::string dest, FetchOptions opts);
  // A download still running is cancelled (its partial file stays for a
  // resume) and its thread joined.
  ~BackgroundFetch();
  BackgroundFetch(const BackgroundFetch&) = delete;
  BackgroundFetch& operator=(const BackgroundFetch&) = delete;

  ArrivalTracker& arrivals() { return *arrivals_; }
  // For gguf::File::open_arriving: blocks until a range is on disk. It holds
  // the tracker, so it stays valid after this object is gone (it then
  // reports how the download ended).
  std::function<Status(uint64_t offset, uint64_t length)> range_wait() const;
  // Where the file is once complete (DEST; the bytes land in DEST.partial
  // until then). Valid once arrivals().wait_size() succeeded.
  std::string final_path() const;

  // Whether the download has ended (finish() would not block).
  bool done() const { return done_.load(); }
  // Waits for the end: the verified result, or why it failed. Repeatable.
  Result<FetchResult> finish();
  // Stops a running download (kept for a resume) and waits for its end.
  void cancel();
  // A consumer of the bytes failed with `e`: the download's own error when it
  // failed (a corrupt or truncated file reads as garbage), else `e`; a
  // download still running is stopped (kept for a resume) and the message
  // says its bytes were not verified yet.
  Error consumer_failed(const Error& e);

  Clock::time_point started_at() const { return started_; }
  Clock::time_point ended_at() const { return ended_; }  // valid once done()

 private:
  std::shared_ptr<ArrivalTracker> arrivals_;
  std::atomic<bool> cancel_{false};
  std::atomic<bool> done_{false};
  Clock::time_point started_, ended_;
  mutable std::mutex mu_;  // data_path_
  std::string data_path_;
  std::optional<Result<FetchResult>> result_;  // written by the thread before done_
  std::thread thread_;
};

// Seconds that [a0, a1] and [b0, b1] share (0 when they do not meet): how
// much of a load ran while the download was still going.
double overlap_seconds(BackgroundFetch::Clock::time_point a0, BackgroundFetch::Clock::time_point a1,
                       BackgroundFetch::Clock::time_point b0, BackgroundFetch::Clock::time_point b1);

}  // namespace kiln::fetch
