// ArrivalTracker: a chunk bitmap behind a condition variable (see arrival.h).
#include "kiln/fetch/arrival.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>

namespace kiln::fetch {

ArrivalTracker::~ArrivalTracker() {
  if (fd_ >= 0) ::close(fd_);
}

StartCallback ArrivalTracker::start_callback() {
  return [this](const FetchStart& s) {
    std::lock_guard<std::mutex> lock(mu_);
    start_ = s;
    if (fd_ >= 0) ::close(fd_);
    fd_ = ::open(s.data_path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd_ < 0)
      error_ = make_error("cannot open " + s.data_path +
                          " to read the download as it arrives: " + std::strerror(errno));
    const uint64_t cs = std::max<uint64_t>(1, s.chunk_size);
    chunks_.assign(size_t((s.size + cs - 1) / cs), false);
    n_arrived_ = 0;
    all_arrived_.reset();
    started_ = true;
    cv_.notify_all();
  };
}

ChunkCallback ArrivalTracker::chunk_callback() {
  return [this](uint64_t offset, uint64_t length) {
    std::lock_guard<std::mutex> lock(mu_);
    const uint64_t cs = std::max<uint64_t>(1, start_.chunk_size);
    for (uint64_t i = offset / cs; i * cs < offset + length && i < chunks_.size(); ++i)
      if (!chunks_[size_t(i)]) {
        chunks_[size_t(i)] = true;
        n_arrived_++;
      }
    if (n_arrived_ == chunks_.size() && !all_arrived_) all_arrived_ = std::chrono::steady_clock::now();
    cv_.notify_all();
  };
}

void ArrivalTracker::finish(const Result<FetchResult>& r) {
  finish(r.ok() ? Status::success() : Status(r.error()));
}

void ArrivalTracker::finish(const Status& st) {
  std::lock_guard<std::mutex> lock(mu_);
  finished_ = true;
  if (!st.ok()) error_ = st.error();
  cv_.notify_all();
}

bool ArrivalTracker::covered(uint64_t offset, uint64_t length) const {
  if (length == 0) return true;
  const uint64_t cs = std::max<uint64_t>(1, start_.chunk_size);
  for (uint64_t i = offset / cs; i * cs < offset + length; ++i)
    if (i >= chunks_.size() || !chunks_[size_t(i)]) return false;
  return true;
}

Status ArrivalTracker::wait(uint64_t offset, uint64_t length) {
  std::unique_lock<std::mutex> lock(mu_);
  stats_.calls++;
  auto ready = [&] { return error_ || finished_ || (started_ && covered(offset, length)); };
  if (!ready()) {
    const auto t0 = std::chrono::steady_clock::now();
    cv_.wait(lock, ready);
    stats_.blocked++;
    stats_.blocked_seconds +=
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  }
  if (error_) return *error_;
  if (!started_ || offset + length > start_.size || !covered(offset, length))
    return make_error("bytes " + std::to_string(offset) + "+" + std::to_string(length) +
                      " are not in the downloaded file (" + std::to_string(start_.size) +
                      " bytes)");
  return Status::success();
}

ArrivalTracker::WaitStats ArrivalTracker::wait_stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return stats_;
}

std::optional<std::chrono::steady_clock::time_point> ArrivalTracker::all_arrived_at() const {
  std::lock_guard<std::mutex> lock(mu_);
  return all_arrived_;
}

Result<uint64_t> ArrivalTracker::wait_size() {
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait(lock, [&] { return error_ || finished_ || started_; });
  if (error_) return *error_;
  if (!started_) return make_error("the download ended before its size was known");
  return start_.size;
}

}  // namespace kiln::fetch
