// The vocabulary's flat hash tables (see vocab.h): string -> id, and
// (left id, right id) -> BPE merge.
#include "kiln/tokenizer/vocab.h"

#include <algorithm>
#include <bit>

namespace kiln::tok {
namespace {

uint32_t hash_text(std::string_view s) {
  return static_cast<uint32_t>(std::hash<std::string_view>{}(s));
}

// Table size: a power of two at least twice the entries (load factor <= 0.5).
size_t table_size(size_t n) { return std::bit_ceil(std::max<size_t>(n * 2, 16)); }

// MurmurHash3's 64-bit finalizer: every key bit reaches the low bits used as
// the slot index (both ids matter).
uint64_t mix(uint64_t k) {
  k ^= k >> 33;
  k *= 0xFF51AFD7ED558CCDull;
  k ^= k >> 33;
  k *= 0xC4CEB9FE1A85EC53ull;
  k ^= k >> 33;
  return k;
}

}  // namespace

void TextIndex::build(const std::vector<TokenData>& tokens) {
  slots_.assign(table_size(tokens.size()), Slot{0, -1});
  mask_ = slots_.size() - 1;
  for (size_t id = 0; id < tokens.size(); ++id) {
    const uint32_t h = hash_text(tokens[id].text);
    for (size_t i = h & mask_;; i = (i + 1) & mask_) {
      Slot& s = slots_[i];
      if (s.id < 0) {
        s = Slot{h, static_cast<int32_t>(id)};
        break;
      }
      if (s.hash == h && tokens[s.id].text == tokens[id].text) break;  // duplicate
    }
  }
}

int32_t TextIndex::find(const std::vector<TokenData>& tokens, std::string_view text) const {
  if (slots_.empty()) return -1;
  const uint32_t h = hash_text(text);
  for (size_t i = h & mask_;; i = (i + 1) & mask_) {
    const Slot& s = slots_[i];
    if (s.id < 0) return -1;
    if (s.hash == h && tokens[s.id].text == text) return s.id;
  }
}

void MergeTable::reserve(size_t n) {
  if (table_size(n) <= slots_.size()) return;
  std::vector<Slot> old = std::move(slots_);
  slots_.assign(table_size(n), Slot{kEmpty, {}});
  mask_ = slots_.size() - 1;
  n_ = 0;
  for (const Slot& s : old) {
    if (s.key != kEmpty) insert(int32_t(s.key >> 32), int32_t(s.key & 0xFFFFFFFFu), s.merge);
  }
}

void MergeTable::insert(int32_t left, int32_t right, Merge m) {
  if ((n_ + 1) * 2 > slots_.size()) reserve(std::max<size_t>(n_ * 2, 16));
  const uint64_t key = (uint64_t(uint32_t(left)) << 32) | uint32_t(right);
  for (size_t i = mix(key) & mask_;; i = (i + 1) & mask_) {
    Slot& s = slots_[i];
    if (s.key == kEmpty) {
      s = Slot{key, m};
      ++n_;
      return;
    }
    if (s.key == key) return;  // the earlier (lower-rank) merge stays
  }
}

const Merge* MergeTable::find(int32_t left, int32_t right) const {
  if (slots_.empty()) return nullptr;
  const uint64_t key = (uint64_t(uint32_t(left)) << 32) | uint32_t(right);
  for (size_t i = mix(key) & mask_;; i = (i + 1) & mask_) {
    const Slot& s = slots_[i];
    if (s.key == key) return &s.merge;
    if (s.key == kEmpty) return nullptr;
  }
}

}  // namespace kiln::tok
