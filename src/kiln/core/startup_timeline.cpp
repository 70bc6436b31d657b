// StartupTimeline (see startup_timeline.h).
#include "kiln/core/startup_timeline.h"

#include <fmt/format.h>
#include <time.h>
#include <unistd.h>

#include <fstream>
#include <sstream>

namespace kiln {

StartupTimeline::Clock::time_point StartupTimeline::process_start() {
  const auto now = Clock::now();
  // Field 22 of /proc/self/stat: start time in clock ticks after boot. The
  // command name (field 2) may hold spaces, so parse after its ')'.
  std::ifstream f("/proc/self/stat");
  std::string line;
  if (!std::getline(f, line)) return now;
  const size_t close = line.rfind(')');
  if (close == std::string::npos) return now;
  std::istringstream rest(line.substr(close + 2));
  std::string field;
  unsigned long long start_ticks = 0;
  for (int i = 3; i <= 22 && rest >> field; ++i)
    if (i == 22) start_ticks = std::stoull(field);
  const long hz = sysconf(_SC_CLK_TCK);
  timespec boot{};
  if (start_ticks == 0 || hz <= 0 || clock_gettime(CLOCK_BOOTTIME, &boot) != 0) return now;
  const double up = double(boot.tv_sec) + double(boot.tv_nsec) * 1e-9;
  const double age = up - double(start_ticks) / double(hz);
  if (age < 0 || age > 3600) return now;  // implausible: do not invent a start
  return now - std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(age));
}

StartupTimeline::StartupTimeline() : StartupTimeline(process_start()) {}
StartupTimeline::StartupTimeline(Clock::time_point start) : start_(start), last_(start) {}

void StartupTimeline::mark(const std::string& name) {
  const auto now = Clock::now();
  std::lock_guard<std::mutex> lock(mu_);
  phases_.push_back({name, std::chrono::duration<double>(now - last_).count(),
                     std::chrono::duration<double>(now - start_).count()});
  last_ = now;
}

void StartupTimeline::add(const std::string& name, double seconds) {
  std::lock_guard<std::mutex> lock(mu_);
  phases_.push_back({name, seconds, 0.0});
}

std::vector<StartupTimeline::Phase> StartupTimeline::phases() const {
  std::lock_guard<std::mutex> lock(mu_);
  return phases_;
}

double StartupTimeline::since_start() const {
  return std::chrono::duration<double>(Clock::now() - start_).count();
}

std::string StartupTimeline::format(const std::string& final_name) const {
  std::string s = "process start";
  std::string side;
  for (const auto& p : phases()) {
    if (p.end_at > 0)
      s += fmt::format(" -> {} {:.3f} s", p.name, p.seconds);
    else
      side += fmt::format("{}{} {:.3f} s", side.empty() ? " (" : ", ", p.name, p.seconds);
  }
  s += fmt::format(" = {} {:.3f} s after exec", final_name, since_start());
  if (!side.empty()) s += side + ")";
  return s;
}

}  // namespace kiln
