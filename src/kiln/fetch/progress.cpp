// Progress display: rates are averaged from the start of this run, which is
// steadier than an instantaneous rate over chunk-sized bursts.
#include "kiln/fetch/progress.h"

#include <fmt/format.h>
#include <unistd.h>

#include <cctype>
#include <cstdio>
#include <stdexcept>

namespace kiln::fetch {

std::string format_bytes(double b) {
  if (b >= double(1ull << 30)) return fmt::format("{:.2f} GiB", b / double(1ull << 30));
  if (b >= double(1 << 20)) return fmt::format("{:.1f} MiB", b / double(1 << 20));
  if (b >= 1024) return fmt::format("{:.1f} KiB", b / 1024);
  return fmt::format("{} B", uint64_t(b));
}

ProgressReporter::ProgressReporter(ProgressMode mode, double log_interval_s, uint64_t total,
                                   uint64_t already, std::function<void(const std::string&)> log)
    : mode_(mode),
      interval_s_(log_interval_s),
      total_(total),
      already_(already),
      log_(std::move(log)) {
  if (mode_ == ProgressMode::automatic)
    mode_ = ::isatty(STDERR_FILENO) ? ProgressMode::bar : ProgressMode::log;
  t0_ = last_ = std::chrono::steady_clock::now();
}

std::string ProgressReporter::line(uint64_t done, bool bar) const {
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0_).count();
  const double rate = secs > 0 ? double(done - already_) / secs : 0;
  const double frac = total_ ? double(done) / double(total_) : 1.0;
  std::string eta = "--";
  if (rate > 0 && done < total_) eta = fmt::format("{:.0f} s", double(total_ - done) / rate);
  std::string s;
  if (bar) {
    const int width = 30, fill = int(frac * width);
    s.push_back('[');
    s.append(size_t(fill), '#');
    s.append(size_t(width - fill), ' ');
    s += "] ";
  }
  return s + fmt::format("{:5.1f}%  {} / {}  {}/s  ETA {}", frac * 100, format_bytes(double(done)),
                         format_bytes(double(total_)), format_bytes(rate), eta);
}

void ProgressReporter::update(uint64_t done) {
  if (mode_ == ProgressMode::none) return;
  const auto now = std::chrono::steady_clock::now();
  const double since = std::chrono::duration<double>(now - last_).count();
  if (mode_ == ProgressMode::bar) {
    if (since < 0.2 && drew_) return;
    std::fprintf(stderr, "\r%s\x1b[K", line(done, true).c_str());
    std::fflush(stderr);
    drew_ = true;
  } else {
    if (since < interval_s_) return;
    log_("download " + line(done, false));
  }
  last_ = now;
}

void ProgressReporter::finish(uint64_t done) {
  if (mode_ == ProgressMode::bar) {
    std::fprintf(stderr, "\r%s\x1b[K\n", line(done, true).c_str());
    std::fflush(stderr);
  }
}

}  // namespace kiln::fetch
