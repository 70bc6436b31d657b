// PrefixCache: chained block keys, verified hits, LRU of evictable blocks
// (see prefix_cache.h).
#include "kiln/engine/prefix_cache.h"

#include <algorithm>

#include "kiln/core/assert.h"

namespace kiln::engine {
namespace {

// The splitmix64 output function (Vigna, public domain): a bijective mixer
// whose every output bit depends on every input bit.
uint64_t mix64(uint64_t x) {
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ull;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebull;
  x ^= x >> 31;
  return x;
}

}  // namespace

PrefixCache::PrefixCache(KvBlockPool& pool, int32_t block_size)
    : pool_(pool),
      block_size_(block_size),
      entries_(size_t(pool.n_blocks())),
      tokens_(size_t(pool.n_blocks()) * size_t(block_size)) {
  KILN_ASSERT(block_size > 0);
}

uint64_t PrefixCache::block_hash(uint64_t parent, std::span<const int32_t> tokens) {
  // Two token ids per mixing round; the length goes in first so blocks of
  // different sizes never share a key by construction.
  uint64_t h = mix64(parent ^ (0x9e3779b97f4a7c15ull * (uint64_t(tokens.size()) + 1)));
  size_t i = 0;
  for (; i + 1 < tokens.size(); i += 2)
    h = mix64(h ^ (uint64_t(uint32_t(tokens[i])) | (uint64_t(uint32_t(tokens[i + 1])) << 32)));
  if (i < tokens.size()) h = mix64(h ^ uint64_t(uint32_t(tokens[i])) ^ (1ull << 63));
  return h;
}

bool PrefixCache::verify(int32_t block, std::span<const int32_t> tokens,
                         uint64_t parent_serial) const {
  const Entry& e = entries_[size_t(block)];
  if (e.serial == 0 || e.parent_serial != parent_serial || e.n_tokens != int32_t(tokens.size()))
    return false;
  const int32_t* stored = tokens_.data() + size_t(block) * size_t(block_size_);
  return std::equal(tokens.begin(), tokens.end(), stored);
}

int32_t PrefixCache::match(std::span<const int32_t> tokens, int32_t max_blocks,
                           std::vector<int32_t>& table, PrefixChain& chain) {
  const int32_t bs = block_size_;
  max_blocks = std::min<int32_t>(max_blocks, int32_t(tokens.size() / size_t(bs)));
  int32_t n = 0;
  while (chain.n_blocks < max_blocks) {
    const auto blk = tokens.subspan(size_t(chain.n_blocks) * size_t(bs), size_t(bs));
    const uint64_t key = hash_of(chain.hash, blk);
    const auto it = by_hash_.find(key);
    if (it == by_hash_.end()) break;
    const int32_t b = it->second;
    if (!verify(b, blk, chain.serial)) {
      ++collisions_;
      break;
    }
    take(b);
    const Entry& e = entries_[size_t(b)];
    table.push_back(b);
    chain.hash = key;
    chain.serial = e.serial;
    ++chain.n_blocks;
    ++n;
  }
  return n;
}

void PrefixCache::insert(std::span<const int32_t> tokens, std::span<const int32_t> table,
                         int32_t n_full, PrefixChain& chain) {
  const int32_t bs = block_size_;
  KILN_ASSERT(n_full <= int32_t(table.size()) && size_t(n_full) * size_t(bs) <= tokens.size());
  while (!chain.broken && chain.n_blocks < n_full) {
    const int32_t i = chain.n_blocks;
    const auto blk = tokens.subspan(size_t(i) * size_t(bs), size_t(bs));
    const uint64_t key = hash_of(chain.hash, blk);
    const int32_t b = table[size_t(i)];
    const auto it = by_hash_.find(key);
    if (it != by_hash_.end()) {
      // Computed twice (two sequences with the same prefix ran at once): keep
      // the cached copy as the chain's parent; ours stays private.
      if (!verify(it->second, blk, chain.serial)) {
        ++collisions_;
        chain.broken = true;  // a child must name a verified parent: stop here
        return;
      }
      chain.serial = entries_[size_t(it->second)].serial;
    } else {
      Entry& e = entries_[size_t(b)];
      KILN_ASSERT(e.serial == 0);  // a block is registered once, while a sequence owns it
      e.hash = key;
      e.serial = next_serial_++;
      e.parent_serial = chain.serial;
      e.n_tokens = bs;
      std::copy(blk.begin(), blk.end(), tokens_.begin() + ptrdiff_t(size_t(b) * size_t(bs)));
      by_hash_.emplace(key, b);
      pool_.retain(b);
      chain.serial = e.serial;
    }
    chain.hash = key;
    ++chain.n_blocks;
  }
}

bool PrefixCache::adopt(std::span<const int32_t> tokens, int32_t block, PrefixChain& chain) {
  const int32_t bs = block_size_;
  KILN_ASSERT(int32_t(tokens.size()) == bs && pool_.ref_count(block) == 1);
  const uint64_t key = hash_of(chain.hash, tokens);
  const auto it = by_hash_.find(key);
  if (it != by_hash_.end()) {
    if (!verify(it->second, tokens, chain.serial)) ++collisions_;
    return false;
  }
  const Entry& e = register_baked(block, key, tokens, chain.serial);
  chain.hash = key;
  chain.serial = e.serial;
  ++chain.n_blocks;
  return true;
}

PrefixCache::Entry& PrefixCache::register_baked(int32_t block, uint64_t key,
                                                std::span<const int32_t> tokens,
                                                uint64_t parent_serial) {
  Entry& e = entries_[size_t(block)];
  KILN_ASSERT(e.serial == 0);
  e.hash = key;
  e.serial = next_serial_++;
  e.parent_serial = parent_serial;
  e.n_tokens = int32_t(tokens.size());
  e.baked = true;
  e.evictable = true;
  std::copy(tokens.begin(), tokens.end(),
            tokens_.begin() + ptrdiff_t(size_t(block) * size_t(block_size_)));
  by_hash_.emplace(key, block);
  ++n_evictable_;
  ++n_baked_;
  lru_push_front(block);
  return e;
}

void PrefixCache::take(int32_t block) {
  Entry& e = entries_[size_t(block)];
  if (e.evictable) {
    lru_remove(block);
    e.evictable = false;
    --n_evictable_;
  }
  pool_.retain(block);
}

bool PrefixCache::adopt_tail(std::span<const int32_t> tokens, int32_t block,
                             const PrefixChain& chain) {
  KILN_ASSERT(!tokens.empty() && int32_t(tokens.size()) < block_size_ &&
              pool_.ref_count(block) == 1);
  const uint64_t key = hash_of(chain.hash, tokens);
  const auto it = by_hash_.find(key);
  if (it != by_hash_.end()) {
    if (!verify(it->second, tokens, chain.serial)) ++collisions_;
    return false;
  }
  register_baked(block, key, tokens, chain.serial);
  return true;
}

PrefixCache::TailHit PrefixCache::match_tail(std::span<const int32_t> rest, int32_t max_tokens,
                                             const PrefixChain& chain) {
  // Tails are few (one per baked prompt) but their length is not known in
  // advance: try each possible length, longest first (at most block_size-1
  // short hashes, only for prompts that reach this point).
  const int32_t most = std::min({max_tokens, block_size_ - 1, int32_t(rest.size())});
  if (n_baked_ == 0) return {};
  for (int32_t n = most; n >= 1; --n) {
    const auto t = rest.first(size_t(n));
    const auto it = by_hash_.find(hash_of(chain.hash, t));
    if (it == by_hash_.end()) continue;
    if (!verify(it->second, t, chain.serial)) {
      ++collisions_;
      continue;
    }
    take(it->second);
    return {it->second, n};
  }
  return {};
}

int32_t PrefixCache::peek_tail(std::span<const int32_t> tokens, const PrefixChain& chain) const {
  if (tokens.empty() || int32_t(tokens.size()) >= block_size_) return -1;
  const auto it = by_hash_.find(hash_of(chain.hash, tokens));
  return it != by_hash_.end() && verify(it->second, tokens, chain.serial) ? it->second : -1;
}

std::vector<int32_t> PrefixCache::peek(std::span<const int32_t> tokens) const {
  const int32_t bs = block_size_;
  std::vector<int32_t> out;
  uint64_t hash = kPrefixRootHash, serial = 0;
  for (size_t i = 0; (i + 1) * size_t(bs) <= tokens.size(); ++i) {
    const auto blk = tokens.subspan(i * size_t(bs), size_t(bs));
    const uint64_t key = hash_of(hash, blk);
    const auto it = by_hash_.find(key);
    if (it == by_hash_.end() || !verify(it->second, blk, serial)) break;
    out.push_back(it->second);
    hash = key;
    serial = entries_[size_t(it->second)].serial;
  }
  return out;
}

bool PrefixCache::follow(std::span<const int32_t> tokens, PrefixChain& chain) const {
  const uint64_t key = hash_of(chain.hash, tokens);
  const auto it = by_hash_.find(key);
  if (it == by_hash_.end() || !verify(it->second, tokens, chain.serial)) return false;
  chain.hash = key;
  chain.serial = entries_[size_t(it->second)].serial;
  ++chain.n_blocks;
  return true;
}

void PrefixCache::release(int32_t block) {
  pool_.release(block);
  Entry& e = entries_[size_t(block)];
  if (e.serial != 0 && pool_.ref_count(block) == 1) {
    KILN_ASSERT(!e.evictable);
    e.evictable = true;
    ++n_evictable_;
    lru_push_back(block);
  }
}

void PrefixCache::release_all(std::vector<int32_t>& table) {
  for (auto it = table.rbegin(); it != table.rend(); ++it) release(*it);
  table.clear();
}

int32_t PrefixCache::evict(int32_t n) {
  int32_t freed = 0;
  while (freed < n && (lru_head_[0] >= 0 || lru_head_[1] >= 0)) {
    forget(lru_head_[0] >= 0 ? lru_head_[0] : lru_head_[1]);
    ++freed;
  }
  return freed;
}

void PrefixCache::forget(int32_t block) {
  Entry& e = entries_[size_t(block)];
  KILN_ASSERT(e.evictable && pool_.ref_count(block) == 1);
  lru_remove(block);
  --n_evictable_;
  const auto it = by_hash_.find(e.hash);
  if (it != by_hash_.end() && it->second == block) by_hash_.erase(it);
  if (e.baked) --n_baked_;
  e = Entry{};
  pool_.release(block);  // the cache's own reference: back to the free list
}

void PrefixCache::lru_push_back(int32_t block) {
  Entry& e = entries_[size_t(block)];
  const int l = e.baked ? 1 : 0;
  e.lru_prev = lru_tail_[l];
  e.lru_next = -1;
  if (lru_tail_[l] >= 0)
    entries_[size_t(lru_tail_[l])].lru_next = block;
  else
    lru_head_[l] = block;
  lru_tail_[l] = block;
}

void PrefixCache::lru_push_front(int32_t block) {
  Entry& e = entries_[size_t(block)];
  const int l = e.baked ? 1 : 0;
  e.lru_prev = -1;
  e.lru_next = lru_head_[l];
  if (lru_head_[l] >= 0)
    entries_[size_t(lru_head_[l])].lru_prev = block;
  else
    lru_tail_[l] = block;
  lru_head_[l] = block;
}

void PrefixCache::lru_remove(int32_t block) {
  Entry& e = entries_[size_t(block)];
  const int l = e.baked ? 1 : 0;
  if (e.lru_prev >= 0)
    entries_[size_t(e.lru_prev)].lru_next = e.lru_next;
  else
    lru_head_[l] = e.lru_next;
  if (e.lru_next >= 0)
    entries_[size_t(e.lru_next)].lru_prev = e.lru_prev;
  else
    lru_tail_[l] = e.lru_prev;
  e.lru_prev = e.lru_next = -1;
}

}  // namespace kiln::engine
