// EmbeddingWorker: an EmbeddingEngine over a synchronous batch call (the BERT
// encoder of --embedding-model), run on a thread of its own so that HTTP
// threads never compute; requests are served in arrival order.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

#include "kiln/server/engine_hooks.h"

namespace kiln::server {

class EmbeddingWorker final : public EmbeddingEngine {
 public:
  // One vector per input, in order (or an error for the whole request).
  using EmbedFn = std::function<Result<std::vector<std::vector<float>>>(
      const std::vector<std::vector<int32_t>>& inputs)>;

  EmbeddingWorker(int32_t n_embd, EmbedFn fn);
  // Requests still queued get an error; the one running finishes first.
  ~EmbeddingWorker() override;
  EmbeddingWorker(const EmbeddingWorker&) = delete;
  EmbeddingWorker& operator=(const EmbeddingWorker&) = delete;

  int32_t n_embd() const override { return n_embd_; }
  // `done` runs on the worker thread.
  Status submit_embeddings(std::vector<std::vector<int32_t>> inputs, Done done) override;
  uint64_t n_completed() const;  // requests answered (tests assert the worker ran)

 private:
  struct Job {
    std::vector<std::vector<int32_t>> inputs;
    Done done;
  };
  void loop();

  const int32_t n_embd_;
  EmbedFn fn_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Job> queue_;
  bool stop_ = false;
  uint64_t n_completed_ = 0;
  std::thread thread_;  // last: starts once the members above exist
};

}  // namespace kiln::server
