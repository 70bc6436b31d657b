// A Backend that passes every required call to another one: tests derive
// from it and override only the calls they change (a failing write, device
// sampling on the CPU), instead of each spelling out the whole interface.
#pragma once

#include <memory>
#include <span>
#include <string>
#include <utility>

#include "kiln/backend/backend.h"

namespace kiln::test {

class DelegatingBackend : public Backend {
 public:
  explicit DelegatingBackend(std::unique_ptr<Backend> in) : in_(std::move(in)) {}
  std::string name() const override { return in_->name(); }
  std::string device_name() const override { return in_->device_name(); }
  Status load_weights(const model::Model& m) override { return in_->load_weights(m); }
  Status init_kv_cache(const KvCacheConfig& c) override { return in_->init_kv_cache(c); }
  const KvCacheConfig& kv_config() const override { return in_->kv_config(); }
  Status forward(const Batch& b) override { return in_->forward(b); }
  Status synchronize() override { return in_->synchronize(); }
  int32_t n_logits() const override { return in_->n_logits(); }
  std::span<const float> logits(int32_t i) const override { return in_->logits(i); }
  Status copy_kv_block(int32_t src, int32_t dst) override { return in_->copy_kv_block(src, dst); }
  MemoryReport memory() const override { return in_->memory(); }

 private:
  std::unique_ptr<Backend> in_;
};

}  // namespace kiln::test
