// EmbeddingWorker: the queue and the thread (see embedding_worker.h).
#include "kiln/server/embedding_worker.h"

namespace kiln::server {

EmbeddingWorker::EmbeddingWorker(int32_t n_embd, EmbedFn fn)
    : n_embd_(n_embd), fn_(std::move(fn)), thread_([this] { loop(); }) {}

EmbeddingWorker::~EmbeddingWorker() {
  std::deque<Job> left;
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
    left.swap(queue_);
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
  for (auto& j : left) j.done(make_error("the embedding model is shutting down"));
}

Status EmbeddingWorker::submit_embeddings(std::vector<std::vector<int32_t>> inputs, Done done) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stop_) return make_error("the embedding model is shutting down");
    queue_.push_back({std::move(inputs), std::move(done)});
  }
  cv_.notify_one();
  return Status::success();
}

uint64_t EmbeddingWorker::n_completed() const {
  std::lock_guard<std::mutex> lock(mu_);
  return n_completed_;
}

void EmbeddingWorker::loop() {
  for (;;) {
    Job job;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [this] { return stop_ || !queue_.empty(); });
      if (stop_) return;
      job = std::move(queue_.front());
      queue_.pop_front();
    }
    auto r = fn_(job.inputs);
    {
      // Counted before the answer goes out, so whoever reads the reply sees it.
      std::lock_guard<std::mutex> lock(mu_);
      ++n_completed_;
    }
    job.done(std::move(r));
  }
}

}  // namespace kiln::server
