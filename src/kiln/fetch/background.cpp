// BackgroundFetch: fetch_to_file on its own thread (see background.h).
#include "kiln/fetch/background.h"

#include <algorithm>

namespace kiln::fetch {

BackgroundFetch::BackgroundFetch(std::string url, std::string dest, FetchOptions opts)
    : arrivals_(std::make_shared<ArrivalTracker>()), started_(Clock::now()) {
  StartCallback user_start = std::move(opts.on_start);
  StartCallback track = arrivals_->start_callback();
  opts.on_start = [this, track, user_start](const FetchStart& s) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      data_path_ = s.data_path;
    }
    track(s);
    if (user_start) user_start(s);
  };
  opts.cancel = &cancel_;
  thread_ = std::thread([this, url = std::move(url), dest = std::move(dest),
                         opts = std::move(opts)] {
    auto r = fetch_to_file(url, dest, opts, arrivals_->chunk_callback());
    ended_ = Clock::now();
    result_ = r;
    done_ = true;
    // After done_: a consumer woken with the error may ask finish() at once.
    arrivals_->finish(r);
  });
}

BackgroundFetch::~BackgroundFetch() { cancel(); }

std::function<Status(uint64_t, uint64_t)> BackgroundFetch::range_wait() const {
  return [t = arrivals_](uint64_t offset, uint64_t length) { return t->wait(offset, length); };
}

std::string BackgroundFetch::final_path() const {
  std::lock_guard<std::mutex> lock(mu_);
  const std::string suffix = partial_path("");
  if (data_path_.size() > suffix.size() &&
      data_path_.compare(data_path_.size() - suffix.size(), suffix.size(), suffix) == 0)
    return data_path_.substr(0, data_path_.size() - suffix.size());
  return data_path_;  // a reused complete download is read in place
}

Result<FetchResult> BackgroundFetch::finish() {
  if (thread_.joinable()) thread_.join();
  return *result_;
}

void BackgroundFetch::cancel() {
  if (!thread_.joinable()) return;
  cancel_ = true;
  thread_.join();
}

Error BackgroundFetch::consumer_failed(const Error& e) {
  if (done()) {
    auto r = finish();
    return r ? e : r.error();
  }
  cancel();
  return make_error(e.message +
                    " (read while the download was still running, before its checksum: if the "
                    "source file is fine, run again: the download resumes and is verified)");
}

double overlap_seconds(BackgroundFetch::Clock::time_point a0, BackgroundFetch::Clock::time_point a1,
                       BackgroundFetch::Clock::time_point b0, BackgroundFetch::Clock::time_point b1) {
  const auto from = std::max(a0, b0), to = std::min(a1, b1);
  return to > from ? std::chrono::duration<double>(to - from).count() : 0.0;
}

}  // namespace kiln::fetch
