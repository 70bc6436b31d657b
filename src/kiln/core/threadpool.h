// A fixed pool of worker threads for data-parallel loops (matmul rows,
// attention heads). The caller thread takes part, so a pool of n threads runs
// n-1 workers. Workers spin briefly before sleeping: a decode step issues
// hundreds of small parallel loops and a condition-variable wake-up each time
// would cost more than the work.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace kiln {

class ThreadPool {
 public:
  // n_threads <= 0: the number of hardware threads.
  explicit ThreadPool(int n_threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const { return n_threads_; }

  // Calls fn(task, thread) for every task in [0, n_tasks), spread over the
  // threads (thread in [0, size())); returns when all are done. Tasks are
  // handed out dynamically; results must not depend on which thread ran a task.
  void parallel_for(int64_t n_tasks, const std::function<void(int64_t, int)>& fn);

 private:
  void worker_loop(int thread_idx);
  void run_tasks(int thread_idx);

  int n_threads_;
  std::vector<std::thread> workers_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::atomic<uint64_t> generation_{0};
  std::atomic<int> pending_workers_{0};
  std::atomic<int64_t> next_task_{0};
  int64_t n_tasks_ = 0;
  const std::function<void(int64_t, int)>* fn_ = nullptr;
  std::atomic<bool> stop_{false};
};

}  // namespace kiln
