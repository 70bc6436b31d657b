// Export and restore of prefix-cache blocks (engine.h): the engine side of
// baked warm prefixes. Runs on the caller's thread while the engine thread is
// not running, so it may touch the pool, the cache and the backend directly.
#include <fmt/format.h>

#include <algorithm>
#include <limits>
#include <unordered_map>

#include "kiln/engine/engine_impl.h"
#include "kiln/model/model.h"

namespace kiln::engine {

Status EngineImpl::check_idle_for_prefix_io() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (started_ && !thread_done_)
      return make_error(
          "prefix blocks can only be restored or exported while the engine is not running "
          "(before start() or after stop())");
  }
  if (!cache_)
    return make_error("the prefix cache is off (--no-prefix-cache): no baked prefixes to use");
  return Status::success();
}

Result<PrefixImportReport> EngineImpl::import_prefix_blocks(const PrefixBlocks& in) {
  KILN_TRY(check_idle_for_prefix_io());
  const uint64_t want_bytes =
      kv_bytes_per_block(model_.hparams(), cfg_.kv.type, cfg_.kv.block_size);
  if (in.block_size != cfg_.kv.block_size || in.block_bytes != want_bytes)
    return make_error(fmt::format(
        "baked prefix blocks are {} tokens / {} bytes each, but this engine's KV blocks are {} "
        "tokens / {} bytes ({} KV); rebake with the serving --kv-type and --kv-block-size",
        in.block_size, in.block_bytes, cfg_.kv.block_size, want_bytes, kv_type_name(cfg_.kv.type)));
  PrefixImportReport rep;
  // Where each input block's chain stands once adopted (or found cached); a
  // block left out (usable false) leaves its children out too.
  // A block of fewer tokens is a prompt's partial last block (a tail,
  // prefix_cache.h): never a parent.
  std::vector<PrefixChain> chain_after(in.blocks.size());
  std::vector<bool> usable(in.blocks.size(), false);
  std::vector<bool> is_tail(in.blocks.size(), false);
  std::vector<int32_t> one;
  // The K/V bytes go to the device in one batch once every block has its
  // place (the engine is idle: nothing reads a block before that).
  std::vector<Backend::KvBlockWrite> writes;
  for (size_t i = 0; i < in.blocks.size(); ++i) {
    const PrefixBlock& b = in.blocks[i];
    is_tail[i] = int32_t(b.tokens.size()) < in.block_size;
    if (b.parent >= int32_t(i) || b.tokens.empty() || int32_t(b.tokens.size()) > in.block_size ||
        b.kv.size() != in.block_bytes || (b.parent >= 0 && is_tail[size_t(b.parent)]))
      return make_error(
          fmt::format("baked prefix block {} is malformed (parent {}, {} tokens, {} bytes)", i,
                      b.parent, b.tokens.size(), b.kv.size()));
    for (int32_t t : b.tokens)
      if (t < 0 || t >= n_vocab_)
        return make_error(
            fmt::format("baked prefix block {} holds token id {} outside the "
                        "vocabulary [0, {}): was it baked from another model?",
                        i, t, n_vocab_));
    PrefixChain chain;
    if (b.parent >= 0) {
      if (!usable[size_t(b.parent)]) {
        ++rep.skipped;
        continue;
      }
      chain = chain_after[size_t(b.parent)];
    }
    if (is_tail[i]) {
      if (cache_->peek_tail(b.tokens, chain) >= 0) {
        ++rep.duplicates;
        continue;
      }
      one.clear();
      if (!pool_.grow(one, cfg_.kv.block_size, cfg_.kv.block_size)) {
        ++rep.skipped;
        continue;
      }
      if (!cache_->adopt_tail(b.tokens, one[0], chain)) {
        pool_.release(one[0]);
        ++rep.skipped;
        continue;
      }
      writes.push_back({one[0], b.kv});
      ++rep.restored;
      continue;
    }
    PrefixChain next = chain;
    if (cache_->follow(b.tokens, next)) {  // already cached (duplicate, or restored twice)
      ++rep.duplicates;
      chain_after[i] = next;
      usable[i] = true;
      continue;
    }
    one.clear();
    if (!pool_.grow(one, cfg_.kv.block_size, cfg_.kv.block_size)) {
      ++rep.skipped;  // pool full: the rest of this chain is left out too
      continue;
    }
    const int32_t blk = one[0];
    if (!cache_->adopt(b.tokens, blk, next)) {  // its key collides with another entry
      pool_.release(blk);
      ++rep.skipped;
      continue;
    }
    writes.push_back({blk, b.kv});
    ++rep.restored;
    chain_after[i] = next;
    usable[i] = true;
  }
  if (auto st = backend_.write_kv_blocks(writes); !st) {
    // Cached blocks whose bytes may not have arrived must not serve a hit:
    // every unreferenced block goes back (nothing runs, so that is all).
    cache_->evict(std::numeric_limits<int32_t>::max());
    publish_stats();
    return st.error();
  }
  publish_stats();
  return rep;
}

Result<PrefixBlocks> EngineImpl::export_prefix_blocks(
    std::span<const std::vector<int32_t>> prompts) {
  KILN_TRY(check_idle_for_prefix_io());
  PrefixBlocks out;
  out.block_size = cfg_.kv.block_size;
  out.block_bytes = kv_bytes_per_block(model_.hparams(), cfg_.kv.type, cfg_.kv.block_size);
  std::unordered_map<int32_t, int32_t> index_of;  // KV block id -> index in out.blocks
  std::vector<int32_t> order;                     // KV block id of each output block
  const size_t bs = size_t(out.block_size);
  for (const auto& prompt : prompts) {
    const std::vector<int32_t> chain = cache_->peek(prompt);
    int32_t parent = -1;
    for (size_t i = 0; i < chain.size(); ++i) {
      const auto it = index_of.find(chain[i]);
      if (it != index_of.end()) {
        parent = it->second;
        continue;
      }
      PrefixBlock b;
      b.parent = parent;
      b.tokens.assign(prompt.begin() + ptrdiff_t(i * bs), prompt.begin() + ptrdiff_t((i + 1) * bs));
      parent = int32_t(out.blocks.size());
      index_of.emplace(chain[i], parent);
      order.push_back(chain[i]);
      out.blocks.push_back(std::move(b));
    }
    // The prompt's partial last block, when this engine kept it
    // (EngineConfig::cache_prompt_tails) and its whole chain is cached.
    const size_t n_full = prompt.size() / bs;
    if (chain.size() != n_full || prompt.size() % bs == 0) continue;
    PrefixChain at;
    for (size_t i = 0; i < n_full; ++i)
      cache_->follow(std::span<const int32_t>(prompt).subspan(i * bs, bs), at);
    const std::span<const int32_t> rest = std::span<const int32_t>(prompt).subspan(n_full * bs);
    const int32_t tail = cache_->peek_tail(rest, at);
    if (tail < 0 || index_of.count(tail)) continue;
    PrefixBlock b;
    b.parent = parent;
    b.tokens.assign(rest.begin(), rest.end());
    index_of.emplace(tail, int32_t(out.blocks.size()));
    order.push_back(tail);
    out.blocks.push_back(std::move(b));
  }
  out.storage.resize(out.blocks.size() * size_t(out.block_bytes));
  for (size_t i = 0; i < out.blocks.size(); ++i) {
    std::span<uint8_t> dst(out.storage.data() + i * size_t(out.block_bytes),
                           size_t(out.block_bytes));
    KILN_TRY(backend_.read_kv_block(order[i], dst));
    // A prompt's partial last block: its unwritten slots hold whatever the
    // pool had there (the CUDA pool is not cleared), so they go out as zeros
    // and a bake's warm.bin does not depend on them.
    if (out.blocks[i].tokens.size() < bs)
      clear_kv_slots(dst, model_.hparams(), cfg_.kv.type, out.block_size, int32_t(out.blocks[i].tokens.size()));
    out.blocks[i].kv = dst;
  }
  return out;
}

std::vector<std::vector<int32_t>> prefix_chains(const PrefixBlocks& blocks) {
  const auto& b = blocks.blocks;
  std::vector<bool> parent(b.size(), false);
  for (const auto& x : b)
    if (x.parent >= 0 && size_t(x.parent) < b.size()) parent[size_t(x.parent)] = true;
  std::vector<std::vector<int32_t>> out;
  for (size_t leaf = 0; leaf < b.size(); ++leaf) {
    if (parent[leaf]) continue;
    std::vector<size_t> path;  // leaf back to the root (parents precede children)
    for (int64_t i = int64_t(leaf); i >= 0;) {
      path.push_back(size_t(i));
      const int32_t p = b[size_t(i)].parent;
      i = p >= 0 && p < i ? p : -1;
    }
    std::vector<int32_t> tokens;
    for (auto it = path.rbegin(); it != path.rend(); ++it)
      tokens.insert(tokens.end(), b[*it].tokens.begin(), b[*it].tokens.end());
    out.push_back(std::move(tokens));
  }
  return out;
}

std::vector<int32_t> longest_prefix_chain(const PrefixBlocks& blocks) {
  std::vector<int32_t> best;
  for (auto& c : prefix_chains(blocks))
    if (c.size() > best.size()) best = std::move(c);
  return best;
}

}  // namespace kiln::engine
