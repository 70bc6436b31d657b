// Download progress for people: a redrawn bar on a terminal, a log line
// every few seconds otherwise (Cloud Run logs, CI), both from one thread.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>

#include "kiln/fetch/fetch.h"

namespace kiln::fetch {

class ProgressReporter {
 public:
  ProgressReporter(ProgressMode mode, double log_interval_s, uint64_t total, uint64_t already,
                   std::function<void(const std::string&)> log);
  // Called periodically with the bytes on disk so far (resumed included).
  void update(uint64_t done);
  // The last redraw/line, then a newline on a terminal.
  void finish(uint64_t done);

 private:
  std::string line(uint64_t done, bool bar) const;
  ProgressMode mode_;
  double interval_s_;
  uint64_t total_, already_;
  std::function<void(const std::string&)> log_;
  std::chrono::steady_clock::time_point t0_, last_;
  bool drew_ = false;
};

// "1.50 GiB", "512.0 MiB", "12 B".
std::string format_bytes(double bytes);

}  // namespace kiln::fetch
