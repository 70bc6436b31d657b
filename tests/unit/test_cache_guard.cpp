// The semantic cache's false-hit guard on the committed pair lists
// (tests/data/cache/). Both texts of a pair get embeddings with cosine
// similarity 0.98, above the 0.95 threshold, so the HNSW lookup always
// proposes the cached text and only the guard decides: none of the pairs
// that differ by a number, a negation or a name may hit, at least 90% of the
// paraphrases must. The held-out halves were written after the guard and
// not used to tune it; their figures are printed separately.
#include <gtest/gtest.h>

#include <fstream>
#include <sstream>

#include "common/paths.h"
#include "kiln/cache/false_hit_guard.h"
#include "kiln/cache/semantic_cache.h"
#include "kiln/cache/table_embedder.h"

namespace kiln::cache {
namespace {

struct Pair {
  std::string a, b, kind;
};

std::vector<Pair> read_pairs(const std::string& name) {
  std::ifstream f(test::source_dir() + "/tests/data/cache/" + name);
  EXPECT_TRUE(f) << name;
  std::vector<Pair> out;
  std::string line;
  while (std::getline(f, line)) {
    if (line.empty() || line[0] == '#') continue;
    std::stringstream ss(line);
    Pair p;
    std::getline(ss, p.a, '\t');
    std::getline(ss, p.b, '\t');
    std::getline(ss, p.kind, '\t');
    EXPECT_FALSE(p.a.empty() || p.b.empty()) << name << ": " << line;
    out.push_back(p);
  }
  return out;
}

struct Outcome {
  int hits = 0, total = 0;
  std::vector<std::string> wrong;  // for the failure message
};

// Each pair in its own partition of one cache, through the real lookup path.
Outcome run_pairs(const std::vector<Pair>& pairs, bool expect_hit) {
  TableEmbedder emb(32);
  SemanticConfig cfg;
  cfg.threshold = 0.95f;
  cfg.limits.ttl_ms = 0;
  SemanticCache cache(cfg, 32);
  Outcome o;
  for (size_t i = 0; i < pairs.size(); ++i) {
    const auto& p = pairs[i];
    const std::string part = "pair" + std::to_string(i);
    const auto va = emb.axis(int32_t(i % 32));
    const auto vb = TableEmbedder::rotated(va, int32_t((i + 1) % 32), 0.98f);
    CacheEntry e;
    e.partition = part;
    e.text = p.a;
    e.vec = va;
    e.payload = "answer to: " + p.a;
    EXPECT_TRUE(cache.insert(e, 1));
    auto hit = cache.lookup(part, p.b, vb, 2);
    ++o.total;
    if (hit) {
      ++o.hits;
      EXPECT_NEAR(hit->similarity, 0.98f, 1e-3);
    }
    if (bool(hit) != expect_hit)
      o.wrong.push_back(p.a + " | " + p.b + " (" + false_hit_guard(p.b, p.a).reason + ")");
  }
  return o;
}

std::string list(const std::vector<std::string>& v) {
  std::string s;
  for (const auto& x : v) s += "\n  " + x;
  return s;
}

TEST(CacheGuard, FalseHitPairsNeverHit) {
  for (const char* file : {"false_hits_tuned.tsv", "false_hits_heldout.tsv"}) {
    const auto pairs = read_pairs(file);
    EXPECT_GE(pairs.size(), 25u) << file;
    const Outcome o = run_pairs(pairs, /*expect_hit=*/false);
    std::printf("[guard] %s: %d/%d rejected\n", file, o.total - o.hits, o.total);
    EXPECT_EQ(o.hits, 0) << file << " served as hits:" << list(o.wrong);
  }
}

TEST(CacheGuard, ParaphrasePairsMostlyHit) {
  for (const char* file : {"paraphrases_tuned.tsv", "paraphrases_heldout.tsv"}) {
    const auto pairs = read_pairs(file);
    EXPECT_GE(pairs.size(), 25u) << file;
    const Outcome o = run_pairs(pairs, /*expect_hit=*/true);
    std::printf("[guard] %s: %d/%d hit (%.1f%%)\n", file, o.hits, o.total,
                100.0 * o.hits / std::max(1, o.total));
    EXPECT_GE(o.hits * 10, o.total * 9) << file << " missed:" << list(o.wrong);
    if (!o.wrong.empty()) std::printf("[guard] missed:%s\n", list(o.wrong).c_str());
  }
}

TEST(CacheGuard, WithoutTheGuardTheSameLookupsWouldBeFalseHits) {
  // The control: the embeddings alone serve every false-hit pair, so the
  // zero above is the guard's doing.
  const auto pairs = read_pairs("false_hits_tuned.tsv");
  TableEmbedder emb(32);
  SemanticConfig cfg;
  cfg.guard = false;
  SemanticCache cache(cfg, 32);
  int hits = 0;
  for (size_t i = 0; i < pairs.size(); ++i) {
    CacheEntry e;
    e.partition = "p" + std::to_string(i);
    e.text = pairs[i].a;
    e.vec = emb.axis(int32_t(i % 32));
    ASSERT_TRUE(cache.insert(e, 1));
    hits += bool(cache.lookup(e.partition, pairs[i].b,
                              TableEmbedder::rotated(e.vec, int32_t((i + 1) % 32), 0.98f), 2));
  }
  EXPECT_EQ(hits, int(pairs.size()));
}

TEST(CacheGuard, Features) {
  auto f = guard_features("Is the 1,000th visitor to Zürich's NASA museum not getting 2.50 USD?");
  EXPECT_EQ(f.numbers, (std::vector<std::string>{"2.5", "ord1000"}));
  EXPECT_TRUE(f.negated);
  EXPECT_EQ(f.entities, (std::vector<std::string>{"nasa", "usd", "z\xC3\xBCrich"}));
  EXPECT_TRUE(f.soft_entities.empty());  // "Is" opens the question
  EXPECT_EQ(guard_features("Name two rivers in World War II books").numbers,
            (std::vector<std::string>{"2", "2"}));
  EXPECT_TRUE(guard_features("I don\xE2\x80\x99t know").negated);  // typographic apostrophe
  EXPECT_FALSE(guard_features("I do know").negated);
  EXPECT_TRUE(false_hit_guard("what is three times 4", "What is 3 times four?").pass);
  EXPECT_FALSE(false_hit_guard("Berlin weather today", "Munich weather today").pass);
  // Typed in lower case: the name must still be the same word.
  EXPECT_TRUE(
      false_hit_guard("whats the capital of france", "What is the capital of France?").pass);
  EXPECT_FALSE(
      false_hit_guard("whats the capital of spain", "What is the capital of France?").pass);
}

}  // namespace
}  // namespace kiln::cache
