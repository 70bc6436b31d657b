// SIGTERM/SIGINT as an event: the signals are blocked in every thread (call
// install() before starting any) and a watcher thread sigwait()s for them,
// so nothing runs in a signal handler and any thread may wait for shutdown.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <thread>

namespace kiln::server {

class ShutdownSignal {
 public:
  ShutdownSignal() = default;
  ~ShutdownSignal();
  ShutdownSignal(const ShutdownSignal&) = delete;
  ShutdownSignal& operator=(const ShutdownSignal&) = delete;

  // Blocks SIGTERM and SIGINT in the calling thread (and so in every thread
  // it starts later) and starts the watcher.
  void install();
  // Like a signal, from code (tests, fatal errors).
  void trigger(int signo = 0);
  bool triggered() const { return signo_.load() >= 0; }
  int signal_number() const { return signo_.load(); }
  // Waits until a signal came; false on timeout.
  bool wait(std::chrono::milliseconds timeout = std::chrono::milliseconds::max());

 private:
  std::atomic<int> signo_{-1};
  std::atomic<bool> watcher_done_{false};
  std::mutex mu_;
  std::condition_variable cv_;
  std::thread watcher_;
};

}  // namespace kiln::server
