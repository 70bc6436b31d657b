// Prefix-cache blocks taken out of one engine and put into another: what
// `kiln bake` exports after running the warm prompts and what `kiln serve`
// restores before it reports ready (artifact/warm_file.h stores them).
#pragma once

#include <cstdint>
#include <span>
#include <vector>

namespace kiln::engine {

struct PrefixBlock {
  // Index in PrefixBlocks::blocks of the previous block of the chain, -1 for a
  // chain's first block (the key chain starts at kPrefixRootHash). Parents
  // come before their children, so one pass rebuilds every chain.
  int32_t parent = -1;
  // [block_size] token ids of this block, or fewer for a tail (a warm
  // prompt's partial last block; never a parent).
  std::vector<int32_t> tokens;
  std::span<const uint8_t> kv;  // [block_bytes] K/V in the canonical format (backend.h)
};

struct PrefixBlocks {
  int32_t block_size = 0;
  uint64_t block_bytes = 0;  // kv_bytes_per_block(hp, type, block_size)
  std::vector<PrefixBlock> blocks;
  // Backing store of the kv spans when exported (empty when they point into
  // a mapped warm.bin). [n_blocks, block_bytes]
  std::vector<uint8_t> storage;
};

// What a restore did: blocks adopted, blocks already cached (duplicates), and
// blocks left out (pool full, or the parent was left out).
struct PrefixImportReport {
  int32_t restored = 0;
  int32_t duplicates = 0;
  int32_t skipped = 0;
};

// The tokens of every chain of blocks, from the root to each block that is
// no block's parent (a warm prompt's tail where it has one), in block order.
std::vector<std::vector<int32_t>> prefix_chains(const PrefixBlocks& blocks);
// The longest of them; empty without blocks.
std::vector<int32_t> longest_prefix_chain(const PrefixBlocks& blocks);

}  // namespace kiln::engine
