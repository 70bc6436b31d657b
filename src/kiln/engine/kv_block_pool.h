// Host-side bookkeeping of the paged KV cache: which block ids are free, and
// how many sequences share each used block (prefix caching shares full blocks
// by reference count). The backend stores the blocks' contents; this class
// only hands out ids. Owned by the engine thread; not thread-safe.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace kiln::engine {

class KvBlockPool {
 public:
  explicit KvBlockPool(int32_t n_blocks);

  int32_t n_blocks() const { return int32_t(ref_.size()); }
  int32_t n_free() const { return int32_t(free_.size()); }
  int32_t ref_count(int32_t block) const { return ref_[size_t(block)]; }

  // Blocks needed to hold positions [0, n_positions).
  static int32_t blocks_for(int64_t n_positions, int32_t block_size) {
    return int32_t((n_positions + block_size - 1) / block_size);
  }

  // Appends new blocks (reference count 1) to `table` until it covers
  // n_positions positions. False, and `table` unchanged, when too few are free.
  bool grow(std::vector<int32_t>& table, int64_t n_positions, int32_t block_size);

  // Another sequence starts using `block` (a shared prefix block).
  void retain(int32_t block);
  // A sequence stops using `block`; at count 0 it returns to the free list.
  void release(int32_t block);
  // Releases every block of a sequence's table and clears it.
  void release_all(std::vector<int32_t>& table);

 private:
  std::vector<int32_t> ref_;   // [n_blocks] reference counts
  std::vector<int32_t> free_;  // free ids; the most recently freed is reused first (warm memory)
};

}  // namespace kiln::engine
