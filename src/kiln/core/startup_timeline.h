// The start-up breakdown of `kiln serve`: named phases measured from process
// start, printed when the server turns ready and exported as
// kiln_startup_phase_seconds{phase="..."} gauges. Any layer can feed it (the
// CUDA loader adds its own phases: context creation, reads, uploads), so it
// is a plain value passed around, not a global.
#pragma once

#include <chrono>
#include <mutex>
#include <string>
#include <vector>

namespace kiln {

class StartupTimeline {
 public:
  using Clock = std::chrono::steady_clock;

  struct Phase {
    std::string name;    // snake_case, the metrics label: "backend_ready", "weights_read", ...
    double seconds = 0;  // how long it took
    double end_at = 0;   // seconds from process start to its end (0 for add()ed phases)
  };

  // `start` is when the clock starts: by default the process's exec time as
  // the kernel recorded it (/proc/self/stat, 10 ms resolution), so the
  // breakdown covers dynamic loading and static initialization too.
  StartupTimeline();
  explicit StartupTimeline(Clock::time_point start);

  // Ends a sequential phase now: it lasted from the previous mark (or the
  // start) until now. Thread-safe.
  void mark(const std::string& name);
  // Records a phase measured elsewhere, e.g. one that overlapped others (a
  // CUDA context created while weights were read). Thread-safe.
  void add(const std::string& name, double seconds);

  std::vector<Phase> phases() const;
  Clock::time_point start() const { return start_; }
  double since_start() const;
  // "process start -> backend_ready 0.01 s -> weights_read 0.20 s -> ... =
  // ready 0.53 s after exec"
  std::string format(const std::string& final_name = "ready") const;

  // When this process was exec'd, on the steady clock (now() when unknown).
  static Clock::time_point process_start();

 private:
  Clock::time_point start_;
  Clock::time_point last_;
  mutable std::mutex mu_;
  std::vector<Phase> phases_;
};

}  // namespace kiln
