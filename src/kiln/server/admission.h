// Admission control matching Cloud Run's max concurrency: up to
// --max-concurrency C generation requests are admitted at once (the engine
// runs --parallel N of them, the rest wait in its FIFO); beyond C -> 429
// with Retry-After. A Permit is the slot; it frees the slot when destroyed.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>

namespace kiln::server {

class Admission {
 public:
  explicit Admission(int64_t max_concurrency) : max_(max_concurrency) {}

  class Permit {
   public:
    Permit() = default;
    explicit Permit(Admission* a) : a_(a) {}
    Permit(Permit&& o) noexcept : a_(o.a_) { o.a_ = nullptr; }
    Permit& operator=(Permit&& o) noexcept {
      if (this != &o) {
        release();
        a_ = o.a_;
        o.a_ = nullptr;
      }
      return *this;
    }
    ~Permit() { release(); }
    explicit operator bool() const { return a_ != nullptr; }
    void release() {
      if (a_) a_->in_use_.fetch_sub(1, std::memory_order_acq_rel);
      a_ = nullptr;
    }

   private:
    Admission* a_ = nullptr;
  };

  // An empty Permit when C requests are already admitted.
  Permit try_acquire() {
    int64_t cur = in_use_.load(std::memory_order_relaxed);
    while (cur < max_.load(std::memory_order_relaxed)) {
      if (in_use_.compare_exchange_weak(cur, cur + 1, std::memory_order_acq_rel))
        return Permit(this);
    }
    return Permit();
  }

  int64_t in_use() const { return in_use_.load(std::memory_order_acquire); }
  int64_t max_concurrency() const { return max_.load(std::memory_order_relaxed); }
  // Set once the capacity plan is known (nothing is admitted before ready).
  void set_max_concurrency(int64_t c) { max_.store(c, std::memory_order_relaxed); }
  // Seconds a refused client is told to wait: Cloud Run itself retries
  // quickly; a queue of C requests drains in about one generation.
  int retry_after_s() const { return 1; }

 private:
  std::atomic<int64_t> max_;
  std::atomic<int64_t> in_use_{0};
};

}  // namespace kiln::server
