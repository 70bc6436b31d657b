// Automatic prefix caching: full KV blocks are remembered under a chained
// hash of their tokens, so a later sequence whose prompt starts with the same
// tokens reuses their K/V instead of computing them again.
//
// key(block i) = hash(key(block i-1), tokens of block i), key(-1) = a seed.
// A hash only finds a candidate: every hit is verified against the stored
// token ids of the block *and* against the identity of its parent entry, so
// a hash collision can never hand out K/V of a different prefix.
//
// The cache holds one reference (KvBlockPool::retain) on each block it
// remembers; a block no sequence uses any more (reference count 1: only the
// cache) is "evictable" and sits in an LRU list. When the pool runs out, the
// least recently used evictable blocks are given back to the pool. Owned by
// the engine thread; not thread-safe.
//
// Tails: the last, partial block of a baked warm prompt (fewer than
// block_size tokens after a chain of full blocks) is cached too, keyed like a
// block by its parent's key and its tokens (the hash covers the length, so a
// tail never answers for a full block). A request that starts with the warm
// prompt copies the tail's K/V into a block of its own (it then writes its
// own tokens after the tail's), so its first step computes only what follows
// the preamble instead of the preamble's last partial block as well. A tail
// is never a parent: chains continue only through full blocks.
//
// Baked blocks (restored from a `kiln bake` artifact through adopt()) sit in
// a second LRU list that is evicted only once the ordinary one is empty: they
// survive normal cache pressure, yet the pool can still reclaim them when a
// request needs the room, so "every admitted request fits the pool alone"
// (engine.md) keeps holding and restoring a cache can never starve serving.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <unordered_map>
#include <vector>

#include "kiln/engine/kv_block_pool.h"

namespace kiln::engine {

// The key the chain of every sequence starts from.
inline constexpr uint64_t kPrefixRootHash = 0x6b696c6e2d617063ull;

// Where a sequence's chain of cached blocks ends: the parent of its next
// full block. serial 0 is the root (no parent).
struct PrefixChain {
  uint64_t hash = kPrefixRootHash;  // key of the last block in the chain
  uint64_t serial = 0;              // cache entry that block is registered as (0: root)
  int32_t n_blocks = 0;             // blocks of the sequence covered by the chain
  bool broken = false;              // a collision stopped registration for this sequence
};

class PrefixCache {
 public:
  // hash(parent key, the block's token ids) -> key. Tests replace it to force
  // collisions; production uses block_hash().
  using HashFn = std::function<uint64_t(uint64_t, std::span<const int32_t>)>;

  PrefixCache(KvBlockPool& pool, int32_t block_size);

  static uint64_t block_hash(uint64_t parent, std::span<const int32_t> tokens);
  void set_hash_fn_for_testing(HashFn fn) { hash_fn_ = std::move(fn); }

  // Longest verified run of cached full blocks at the start of `tokens`, at
  // most max_blocks. Appends their ids to `table` (retaining each) and
  // advances `chain` past them; returns how many blocks matched.
  int32_t match(std::span<const int32_t> tokens, int32_t max_blocks, std::vector<int32_t>& table,
                PrefixChain& chain);

  // Registers the sequence's full blocks table[chain.n_blocks .. n_full) whose
  // K/V are computed (tokens holds at least n_full * block_size ids). A block
  // whose key is already cached with the same content is not added twice.
  void insert(std::span<const int32_t> tokens, std::span<const int32_t> table, int32_t n_full,
              PrefixChain& chain);

  // Registers one baked block: `block` holds the K/V of `tokens` (one full
  // block) following `chain`, and the caller's pool reference on it becomes
  // the cache's. It starts evictable in the baked list, tail-first order when
  // chains are adopted parents first. Returns false (caller keeps its
  // reference, chain unchanged) when the key is already cached or collides.
  bool adopt(std::span<const int32_t> tokens, int32_t block, PrefixChain& chain);

  // Registers a tail: `block` holds the K/V of `tokens` (1 .. block_size-1
  // ids) right after `chain` (not advanced); otherwise as adopt().
  bool adopt_tail(std::span<const int32_t> tokens, int32_t block, const PrefixChain& chain);
  // The longest cached tail right after `chain` whose tokens start `rest`,
  // at most max_tokens of them. Retains its block for the caller, who copies
  // it and then calls release(block). {-1, 0} when there is none.
  struct TailHit {
    int32_t block = -1;
    int32_t n_tokens = 0;
  };
  TailHit match_tail(std::span<const int32_t> rest, int32_t max_tokens, const PrefixChain& chain);
  // The cached tail of exactly `tokens` after `chain`, without retaining it
  // or touching the LRU order (export); -1 when there is none.
  int32_t peek_tail(std::span<const int32_t> tokens, const PrefixChain& chain) const;

  // The cached blocks of the longest verified chain at the start of `tokens`
  // (full blocks only), without retaining them or touching the LRU order:
  // what `kiln bake` exports.
  std::vector<int32_t> peek(std::span<const int32_t> tokens) const;
  // Advances `chain` past one full block of `tokens` when that block is
  // cached (and verifies) right after it; no reference taken.
  bool follow(std::span<const int32_t> tokens, PrefixChain& chain) const;

  // A sequence stops using `block`: the pool reference is dropped and, when
  // only the cache still holds it, the block becomes evictable (most recent).
  void release(int32_t block);
  // Releases a whole block table, last block first (so a chain's tail is
  // evicted before its head, which other prompts are more likely to share).
  void release_all(std::vector<int32_t>& table);

  // Gives up to n evictable blocks back to the pool, least recently used
  // first; returns how many were freed.
  int32_t evict(int32_t n);
  int32_t n_evictable() const { return n_evictable_; }
  int32_t n_cached() const { return int32_t(by_hash_.size()); }
  int32_t n_baked() const { return n_baked_; }  // adopted blocks still cached
  bool contains(int32_t block) const { return entries_[size_t(block)].serial != 0; }

  uint64_t collisions() const { return collisions_; }  // key found, verification failed

 private:
  struct Entry {
    uint64_t hash = 0;
    uint64_t serial = 0;  // 0: this block is not cached
    uint64_t parent_serial = 0;
    int32_t n_tokens = 0;  // block_size, or fewer for a tail
    int32_t lru_prev = -1, lru_next = -1;
    bool evictable = false;
    bool baked = false;  // adopted: lives in the second LRU list
  };
  uint64_t hash_of(uint64_t parent, std::span<const int32_t> tokens) const {
    return hash_fn_ ? hash_fn_(parent, tokens) : block_hash(parent, tokens);
  }
  bool verify(int32_t block, std::span<const int32_t> tokens, uint64_t parent_serial) const;
  void take(int32_t block);  // a hit: out of the LRU (if evictable), one more reference
  // Makes `block` a cached entry under `key` (baked, evictable, most recent
  // of its list); the caller's pool reference becomes the cache's.
  Entry& register_baked(int32_t block, uint64_t key, std::span<const int32_t> tokens,
                        uint64_t parent_serial);
  void lru_push_back(int32_t block);
  void lru_push_front(int32_t block);
  void lru_remove(int32_t block);
  void forget(int32_t block);

  KvBlockPool& pool_;
  int32_t block_size_;
  HashFn hash_fn_;
  std::unordered_map<uint64_t, int32_t> by_hash_;  // key -> block id
  std::vector<Entry> entries_;                     // [n_blocks]
  std::vector<int32_t> tokens_;                    // [n_blocks, block_size] ids of cached blocks
  // [0]: ordinary blocks, [1]: baked ones (evicted only when [0] is empty).
  int32_t lru_head_[2] = {-1, -1}, lru_tail_[2] = {-1, -1};  // head: least recently used
  int32_t n_baked_ = 0;
  int32_t n_evictable_ = 0;
  uint64_t next_serial_ = 1;
  uint64_t collisions_ = 0;
};

}  // namespace kiln::engine
