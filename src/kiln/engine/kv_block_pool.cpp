// KvBlockPool: free list + reference counts (see kv_block_pool.h).
#include "kiln/engine/kv_block_pool.h"

#include "kiln/core/assert.h"

namespace kiln::engine {

KvBlockPool::KvBlockPool(int32_t n_blocks) : ref_(size_t(n_blocks), 0) {
  KILN_ASSERT(n_blocks >= 0);
  free_.reserve(size_t(n_blocks));
  // Pop from the back: block 0 is handed out first.
  for (int32_t b = n_blocks - 1; b >= 0; --b) free_.push_back(b);
}

bool KvBlockPool::grow(std::vector<int32_t>& table, int64_t n_positions, int32_t block_size) {
  const int32_t need = blocks_for(n_positions, block_size) - int32_t(table.size());
  if (need <= 0) return true;
  if (need > n_free()) return false;
  for (int32_t i = 0; i < need; ++i) {
    const int32_t b = free_.back();
    free_.pop_back();
    ref_[size_t(b)] = 1;
    table.push_back(b);
  }
  return true;
}

void KvBlockPool::retain(int32_t block) {
  KILN_ASSERT(block >= 0 && block < n_blocks() && ref_[size_t(block)] > 0);
  ++ref_[size_t(block)];
}

void KvBlockPool::release(int32_t block) {
  KILN_ASSERT(block >= 0 && block < n_blocks() && ref_[size_t(block)] > 0);
  if (--ref_[size_t(block)] == 0) free_.push_back(block);
}

void KvBlockPool::release_all(std::vector<int32_t>& table) {
  for (auto it = table.rbegin(); it != table.rend(); ++it) release(*it);
  table.clear();
}

}  // namespace kiln::engine
