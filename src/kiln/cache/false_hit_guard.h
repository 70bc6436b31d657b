// The semantic cache's second opinion: embeddings put "What is 2+2?" and
// "What is 2+3?" (or "Is X safe?" / "Is X not safe?", "capital of France" /
// "capital of Spain") very close, yet the answers differ. The guard compares
// the two texts themselves and rejects a hit when their numbers, negation or
// named entities differ. It is deliberately text-only and cheap, so it can be
// tested on committed pair lists without any embedding model.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace kiln::cache {

// What the guard extracts from one text (exposed for tests and logs).
struct GuardFeatures {
  std::vector<std::string> numbers;   // sorted: "3", "1000", "2.5", "ord2" (ordinals)
  bool negated = false;               // not / no / never / n't / without / ...
  std::vector<std::string> entities;  // sorted, lowercased: capitalized names, acronyms
  // Capitalized words at the start of a sentence that are not common
  // sentence openers: names only if the other text has no such word at all.
  std::vector<std::string> soft_entities;
  std::vector<std::string> words;  // sorted, lowercased, every word (for the soft check)
};

GuardFeatures guard_features(std::string_view text);

struct GuardVerdict {
  bool pass = true;
  std::string reason;  // why it was rejected, e.g. "numbers differ: [3] vs [4]"
};

// Whether the cached answer to `cached` may be served for `query`.
GuardVerdict false_hit_guard(std::string_view query, std::string_view cached);

}  // namespace kiln::cache
