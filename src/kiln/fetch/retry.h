// Exponential backoff between attempts, shared by metadata requests and
// chunk downloads; sleeps in short steps so a cancel is noticed promptly.
#pragma once

#include <atomic>
#include <chrono>
#include <cmath>
#include <random>
#include <thread>

namespace kiln::fetch {

// Delay before attempt `attempt` (1-based retries): initial * 2^(attempt-1),
// capped, times a jitter in [0.5, 1] so parallel connections that failed
// together (a server restart) do not all come back in the same instant.
inline double backoff_seconds(int attempt, double initial, double cap, std::mt19937& rng) {
  const double base = std::min(cap, initial * std::pow(2.0, std::max(0, attempt - 1)));
  return base * std::uniform_real_distribution<double>(0.5, 1.0)(rng);
}

// Returns false when `stop` was set during the wait.
inline bool sleep_unless(double seconds, const std::atomic<bool>* stop1,
                         const std::atomic<bool>* stop2 = nullptr) {
  const auto end = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
  while (std::chrono::steady_clock::now() < end) {
    if ((stop1 && stop1->load()) || (stop2 && stop2->load())) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return !((stop1 && stop1->load()) || (stop2 && stop2->load()));
}

}  // namespace kiln::fetch
