// Backend-independent pieces of backend.h: KV type names and sizes, batch checks.
#include "kiln/backend/backend.h"

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <cstdint>

#include "kiln/core/assert.h"
#include "kiln/model/hparams.h"

namespace kiln {
namespace {

struct KvTypeEntry {
  KvType type;
  std::string_view name;
};
constexpr std::array kKvTypes = {KvTypeEntry{KvType::f32, "f32"}, KvTypeEntry{KvType::f16, "f16"},
                                 KvTypeEntry{KvType::fp8, "fp8"},
                                 KvTypeEntry{KvType::q8_0, "q8_0"}};

}  // namespace

std::string_view kv_type_name(KvType t) {
  for (const auto& e : kKvTypes)
    if (e.type == t) return e.name;
  return "?";
}

std::optional<KvType> kv_type_from_name(std::string_view name) {
  for (const auto& e : kKvTypes)
    if (e.name == name) return e.type;
  return std::nullopt;
}

size_t kv_row_bytes(KvType t, int64_t head_dim) {
  switch (t) {
    case KvType::f32:
      return size_t(head_dim) * 4;
    case KvType::f16:
      return size_t(head_dim) * 2;
    case KvType::fp8:
      return size_t(head_dim);
    case KvType::q8_0:
      return size_t(head_dim / 32) * 34;  // f16 scale + 32 int8
  }
  return 0;
}

uint64_t kv_bytes_per_block(const model::HParams& hp, KvType type, int32_t block_size) {
  const uint64_t per_pos = uint64_t(hp.n_head_kv) *
                           (kv_row_bytes(type, hp.head_dim_k) + kv_row_bytes(type, hp.head_dim_v));
  return per_pos * uint64_t(block_size) * uint64_t(hp.n_layer);
}

void clear_kv_slots(std::span<uint8_t> block, const model::HParams& hp, KvType type, int32_t block_size,
                    int32_t first) {
  KILN_ASSERT(block.size() == kv_bytes_per_block(hp, type, block_size) && first >= 0 && first <= block_size);
  uint8_t* p = block.data();
  for (int64_t l = 0; l < hp.n_layer; ++l)
    for (const size_t row : {kv_row_bytes(type, hp.head_dim_k), kv_row_bytes(type, hp.head_dim_v)})
      for (int64_t h = 0; h < hp.n_head_kv; ++h, p += row * size_t(block_size))
        std::fill(p + row * size_t(first), p + row * size_t(block_size), uint8_t(0));
}

int32_t kv_blocks_for_bytes(const model::HParams& hp, KvType type, int32_t block_size,
                            uint64_t budget_bytes) {
  const uint64_t per_block = kv_bytes_per_block(hp, type, block_size);
  if (per_block == 0) return 0;
  return int32_t(std::min<uint64_t>(budget_bytes / per_block, uint64_t(INT32_MAX)));
}

Status check_kv_config(const model::HParams& hp, const KvCacheConfig& cfg) {
  if (cfg.block_size <= 0 || cfg.n_blocks <= 0)
    return make_error(
        fmt::format("KV cache: block size ({}) and block count ({}) must be "
                    "positive",
                    cfg.block_size, cfg.n_blocks));
  if (cfg.type == KvType::q8_0 && (hp.head_dim_k % 32 != 0 || hp.head_dim_v % 32 != 0))
    return make_error(
        fmt::format("KV cache type q8_0 needs head sizes divisible by 32 (this "
                    "model has {}/{}); use --kv-type f16",
                    hp.head_dim_k, hp.head_dim_v));
  return Status::success();
}

Status validate_batch(const Batch& batch, const model::HParams& hp, const KvCacheConfig& kv,
                      std::vector<int32_t>& last_pos) {
  const int32_t n_seqs = int32_t(batch.seqs.size());
  last_pos.assign(size_t(n_seqs), -1);
  for (size_t i = 0; i < batch.tokens.size(); ++i) {
    const BatchToken& t = batch.tokens[i];
    if (t.token < 0 || t.token >= hp.n_vocab)
      return make_error(
          fmt::format("batch row {}: token id {} is outside the vocabulary "
                      "[0, {})",
                      i, t.token, hp.n_vocab));
    if (t.seq < 0 || t.seq >= n_seqs)
      return make_error(
          fmt::format("batch row {}: sequence index {} but the batch has {} "
                      "sequences",
                      i, t.seq, n_seqs));
    if (t.pos < 0) return make_error(fmt::format("batch row {}: negative position {}", i, t.pos));
    if (t.pos <= last_pos[size_t(t.seq)])
      return make_error(
          fmt::format("batch row {}: position {} of sequence {} does not follow "
                      "its previous row's position {}",
                      i, t.pos, t.seq, last_pos[size_t(t.seq)]));
    last_pos[size_t(t.seq)] = t.pos;
    const auto& table = batch.seqs[size_t(t.seq)].block_table;
    const int64_t blk = t.pos / kv.block_size;
    if (blk >= int64_t(table.size()))
      return make_error(
          fmt::format("batch row {}: position {} needs KV block #{} but sequence "
                      "{} has {} blocks",
                      i, t.pos, blk, t.seq, table.size()));
  }
  // Every block the attention will read (positions 0..last) must exist.
  for (int32_t s = 0; s < n_seqs; ++s) {
    if (last_pos[size_t(s)] < 0) continue;
    const auto& table = batch.seqs[size_t(s)].block_table;
    const int64_t n_used = last_pos[size_t(s)] / kv.block_size + 1;
    for (int64_t b = 0; b < n_used; ++b)
      if (table[size_t(b)] < 0 || table[size_t(b)] >= kv.n_blocks)
        return make_error(
            fmt::format("sequence {}: block table entry {} is block id {}, "
                        "outside the pool [0, {})",
                        s, b, table[size_t(b)], kv.n_blocks));
  }
  return Status::success();
}

Status Backend::read_kv_block(int32_t block, std::span<uint8_t> out) const {
  return make_error(fmt::format(
      "the {} backend cannot read KV blocks yet, so prefix caches cannot be baked from it; "
      "bake on the CPU (kiln bake needs no GPU)",
      name()));
}

Status Backend::sample_rows(std::span<const DeviceSampleRow> rows) {
  return make_error(
      fmt::format("the {} backend does not sample on its device; sample the "
                  "rows on the host (engine/sampler.h)",
                  name()));
}

Status Backend::write_kv_blocks(std::span<const KvBlockWrite> writes) {
  for (const auto& w : writes) KILN_TRY(write_kv_block(w.block, w.kv));
  return Status::success();
}

Status Backend::write_kv_block(int32_t block, std::span<const uint8_t> in) {
  return make_error(fmt::format(
      "the {} backend cannot restore baked KV blocks yet; serve without the warm prefixes "
      "(rebake without --warm) or use --device cpu",
      name()));
}

}  // namespace kiln
