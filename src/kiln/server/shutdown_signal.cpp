// sigwait-based SIGTERM/SIGINT watcher.
#include "kiln/server/shutdown_signal.h"

#include <pthread.h>
#include <signal.h>

namespace kiln::server {

void ShutdownSignal::install() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  watcher_ = std::thread([this, set] {
    int sig = 0;
    if (sigwait(&set, &sig) == 0) trigger(sig);
    watcher_done_ = true;
  });
}

void ShutdownSignal::trigger(int signo) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    int expected = -1;
    signo_.compare_exchange_strong(expected, signo);
  }
  cv_.notify_all();
}

bool ShutdownSignal::wait(std::chrono::milliseconds timeout) {
  std::unique_lock<std::mutex> lock(mu_);
  if (timeout == std::chrono::milliseconds::max()) {
    cv_.wait(lock, [&] { return triggered(); });
    return true;
  }
  return cv_.wait_for(lock, timeout, [&] { return triggered(); });
}

ShutdownSignal::~ShutdownSignal() {
  if (watcher_.joinable()) {
    // The watcher still sits in sigwait when no signal came: wake it with
    // one of its own signals aimed at that thread only.
    if (!watcher_done_) pthread_kill(watcher_.native_handle(), SIGTERM);
    watcher_.join();
  }
}

}  // namespace kiln::server
