// The CPU backend's paged KV cache: one pool of blocks per layer, rows stored
// in the configured KvType.
//
// Layout per layer and per K/V: [n_blocks][n_head_kv][block_size][row], where
// row = kv_row_bytes(type, head_dim). One KV head's positions inside a block
// are contiguous, so attention over a block streams one run of memory.
#pragma once

#include <cstdint>
#include <memory>

#include "kiln/backend/backend.h"
#include "kiln/core/status.h"

namespace kiln::cpu {

// Stores / loads one row of n elements in a KV element type.
void kv_store_row(KvType t, const float* src, uint8_t* dst, int64_t n);  // src [n]
void kv_load_row(KvType t, const uint8_t* src, float* dst, int64_t n);   // dst [n]

class KvCache {
 public:
  Status init(const model::HParams& hp, const KvCacheConfig& cfg);
  const KvCacheConfig& config() const { return cfg_; }
  bool ready() const { return data_ != nullptr; }
  uint64_t bytes() const { return total_bytes_; }

  size_t k_row_bytes() const { return k_row_; }
  size_t v_row_bytes() const { return v_row_; }
  // First row of (layer, block, kv head) for K or V; the block's slots follow
  // at k_row_bytes() / v_row_bytes() strides.
  uint8_t* k_head(int64_t layer, int32_t block, int64_t head) const {
    return data_.get() + layer * layer_stride_ + block * k_block_stride_ + head * k_head_stride_;
  }
  uint8_t* v_head(int64_t layer, int32_t block, int64_t head) const {
    return data_.get() + layer * layer_stride_ + v_offset_ + block * v_block_stride_ +
           head * v_head_stride_;
  }

  void copy_block(int32_t src, int32_t dst);
  // One block in Backend's canonical format (backend.h): per layer, the K
  // run [n_head_kv][block_size][row] then the V run; this is the pool's own
  // layout, so each run is one memcpy. out/in hold block_bytes() bytes.
  size_t block_bytes() const { return size_t(n_layer_) * (k_block_stride_ + v_block_stride_); }
  void read_block(int32_t block, uint8_t* out) const;
  void write_block(int32_t block, const uint8_t* in);

 private:
  KvCacheConfig cfg_;
  int64_t n_layer_ = 0;
  size_t k_row_ = 0, v_row_ = 0;
  size_t k_head_stride_ = 0, v_head_stride_ = 0;    // block_size rows
  size_t k_block_stride_ = 0, v_block_stride_ = 0;  // n_head_kv heads
  size_t v_offset_ = 0;                             // V after K within a layer
  size_t layer_stride_ = 0;
  uint64_t total_bytes_ = 0;
  std::unique_ptr<uint8_t[]> data_;  // uninitialized: pages are touched when written
};

}  // namespace kiln::cpu
