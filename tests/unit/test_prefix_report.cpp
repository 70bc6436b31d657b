// kiln prefix-report: block-aligned reuse, common preambles, and near-misses
// planted in a generated request log found at the token where they break.
#include <gtest/gtest.h>

#include <algorithm>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>

#include "common/paths.h"
#include "kiln/gguf/gguf.h"
#include "kiln/server/chat_renderer.h"
#include "kiln/server/metrics.h"
#include "kiln/server/preamble_metrics.h"
#include "kiln/server/prefix_report.h"
#include "kiln/tokenizer/tokenizer.h"

namespace {

using kiln::server::PromptTokens;
using Tokens = std::vector<int32_t>;

std::string ids_text(const Tokens& t) {
  std::string s;
  for (int32_t x : t) s += (s.empty() ? "" : " ") + std::to_string(x);
  return s;
}

Tokens range(int32_t from, int32_t n) {
  Tokens t;
  for (int32_t i = 0; i < n; ++i) t.push_back(from + i);
  return t;
}

Tokens cat(Tokens a, const Tokens& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

TEST(PrefixReport, ReuseIsWholeBlocksAndNeverTheLastToken) {
  kiln::server::PrefixReportOptions o;
  o.block_size = 16;
  std::vector<PromptTokens> ps = {{1, range(100, 50)},
                                  {2, cat(range(100, 50), {9})},  // 50 shared -> 48 reusable
                                  {3, range(100, 48)}};  // 48 long: last block not reusable
  const auto r = kiln::server::analyze_prefixes(ps, o, ids_text);
  EXPECT_EQ(r.n_requests, 3);
  EXPECT_EQ(r.prompt_tokens, 50 + 51 + 48);
  EXPECT_EQ(r.reusable_tokens, 48 + 32);
  ASSERT_FALSE(r.preambles.empty());
  EXPECT_EQ(r.preambles[0].n_tokens, 48);
  EXPECT_EQ(r.preambles[0].n_requests, 3);
}

TEST(PrefixReport, SyntheticNearMissAtItsPosition) {
  kiln::server::PrefixReportOptions o;
  const Tokens preamble = range(1000, 80);
  std::vector<PromptTokens> ps;
  for (int i = 0; i < 12; ++i) ps.push_back({i + 1, cat(preamble, range(5000 + 100 * i, 6 + i))});
  Tokens planted = preamble;
  planted[20] = 7777;                          // one-token id
  planted.insert(planted.begin() + 21, 7778);  // ... that tokenized into two
  ps.push_back({13, cat(planted, range(9000, 7))});
  const auto r = kiln::server::analyze_prefixes(ps, o, ids_text);
  ASSERT_EQ(r.near_misses.size(), 1u) << kiln::server::format_prefix_report(r, o);
  const auto& m = r.near_misses[0];
  EXPECT_EQ(m.line, 13);
  EXPECT_EQ(m.position, 20);
  EXPECT_EQ(m.variable, "7777 7778");
  EXPECT_EQ(m.common, "1020");
  EXPECT_EQ(m.common_support, 12);
  EXPECT_GT(r.reusable_if_fixed, r.reusable_tokens);
}

// A chat log through the real template and tokenizer: 60 requests share a
// system prompt; planted ones change a date, a name or an id inside it.
TEST(PrefixReport, PlantedNearMissesInAChatLog) {
  auto file = kiln::gguf::File::open(kiln::test::testdata("reference/llama3-f16.gguf"));
  ASSERT_TRUE(file) << file.message();
  auto tok = kiln::Tokenizer::from_gguf(**file);
  ASSERT_TRUE(tok) << tok.message();
  auto chat = kiln::server::make_chat_renderer(
      kiln::test::read_file(kiln::test::source_dir() + "/tests/e2e/chatml.jinja"), *tok);
  ASSERT_TRUE(chat) << chat.message();

  const std::string system =
      "You are the support assistant of Riverstone Bank. Today is {DATE}. The customer is "
      "{NAME}, case number {ID}. Answer in two short paragraphs, quote the relevant policy "
      "section, never ask for passwords or card numbers, and offer a human agent when the "
      "customer is upset or the question involves fraud, a deceased account holder, or a "
      "court order.";
  auto fill = [&](std::string date, std::string name, std::string id) {
    std::string s = system;
    s.replace(s.find("{DATE}"), 6, date);
    s.replace(s.find("{NAME}"), 6, name);
    s.replace(s.find("{ID}"), 4, id);
    return s;
  };
  const std::string common = fill("2026-11-26", "a retail customer", "unknown");
  const std::vector<std::string> words = {"card",   "loan",    "transfer", "fee",  "branch",
                                          "app",    "savings", "limit",    "wire", "statement",
                                          "cheque", "pin",     "mortgage", "rate", "address"};
  std::mt19937 rng(7);
  auto question = [&] {
    std::string q = "My question about the";
    for (int k = 0; k < 3 + int(rng() % 6); ++k) q += " " + words[rng() % words.size()];
    return q + "?";
  };
  struct Plant {
    int line;
    std::string system, changed;
  };
  std::vector<Plant> plants;
  const std::string path = ::testing::TempDir() + "/prefix_report_log.jsonl";
  {
    std::ofstream out(path);
    int line = 0;
    auto write = [&](const std::string& sys) {
      nlohmann::json j;
      j["messages"] = {{{"role", "system"}, {"content", sys}},
                       {{"role", "user"}, {"content", question()}}};
      out << j.dump() << "\n";
      return ++line;
    };
    for (int i = 0; i < 60; ++i) {
      write(common);
      if (i == 10)
        plants.push_back({write(fill("2026-11-27", "a retail customer", "unknown")), "", "27"});
      if (i == 25)
        plants.push_back({write(fill("2026-11-26", "Margaret", "unknown")), "", "Margaret"});
      if (i == 40)
        plants.push_back(
            {write(fill("2026-11-26", "a retail customer", "A-48213")), "", "A-48213"});
      if (i == 50) {  // a refused request in kiln's own log format is skipped
        out << R"({"time":"2026-11-26T10:00:00.000Z","endpoint":"/v1/completions","status":429,"error":"busy"})"
            << "\n";
        ++line;
      }
    }
  }
  // Where each planted request first differs from a common one, by token.
  auto render = [&](const std::string& sys) {
    nlohmann::ordered_json msgs = {{{"role", "system"}, {"content", sys}},
                                   {{"role", "user"}, {"content", "x"}}};
    nlohmann::ordered_json none;
    nlohmann::ordered_json vars = nlohmann::ordered_json::object();
    auto text = (*chat)(kiln::server::ChatRenderInput{msgs, none, true, vars});
    return tok->encode(*text, false, true);
  };
  const Tokens common_ids = render(common);

  int64_t skipped = 0;
  std::vector<std::string> warnings;
  auto prompts = kiln::server::load_prompts(path, *tok, *chat, skipped, warnings);
  ASSERT_TRUE(prompts) << prompts.message();
  EXPECT_EQ(skipped, 1);
  EXPECT_EQ(prompts->size(), 63u);
  kiln::server::PrefixReportOptions o;
  const auto r =
      kiln::server::analyze_prefixes(*prompts, o, [&](const Tokens& t) { return tok->decode(t); });
  const std::string text = kiln::server::format_prefix_report(r, o);

  ASSERT_EQ(r.near_misses.size(), plants.size()) << text;
  ASSERT_FALSE(r.preambles.empty());
  EXPECT_GE(r.preambles[0].n_requests, 60) << text;
  for (size_t i = 0; i < plants.size(); ++i) {
    const auto& m = r.near_misses[i];
    SCOPED_TRACE(plants[i].changed);
    EXPECT_EQ(m.line, plants[i].line) << text;
    auto it = std::find_if(prompts->begin(), prompts->end(),
                           [&](const PromptTokens& p) { return p.line == m.line; });
    ASSERT_NE(it, prompts->end());
    const Tokens& ids = it->tokens;
    size_t d = 0;
    while (d < ids.size() && d < common_ids.size() && ids[d] == common_ids[d]) ++d;
    EXPECT_EQ(m.position, int64_t(d)) << text;
    EXPECT_FALSE(m.variable.empty());
    EXPECT_NE(plants[i].changed.find(m.variable.substr(m.variable.find_first_not_of(' '))),
              std::string::npos)
        << "variable part '" << m.variable << "' is not inside '" << plants[i].changed << "'";
    EXPECT_GE(m.common_support, 60);
  }
  // The JSON report carries the same findings.
  auto j = nlohmann::json::parse(kiln::server::prefix_report_json(r, o));
  EXPECT_EQ(j["near_misses"].size(), plants.size());
  EXPECT_EQ(j["near_misses"][0]["position"], r.near_misses[0].position);
  EXPECT_GT(j["reusable_tokens"].get<int64_t>(), 0);
}

}  // namespace

namespace {

// /metrics carries the prefix hit share per preamble under the key the
// report prints for it.
TEST(PrefixReport, MetricsKeyMatchesTheServersPreambleLabel) {
  kiln::server::MetricsRegistry reg;
  kiln::server::PreambleMetrics pm(reg);
  const Tokens a = cat(range(1, 40), {500}), b = cat(range(1, 40), {600});
  pm.record(a, 0);
  pm.record(b, 32);
  pm.record(range(1, 5), 0);  // shorter than the key: "short"
  const std::string text = reg.render();
  const std::string key = kiln::server::preamble_key(a);
  ASSERT_EQ(key.size(), 16u);
  EXPECT_NE(text.find("kiln_preamble_prompt_tokens_total{preamble=\"" + key + "\"} 82"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("kiln_preamble_cached_tokens_total{preamble=\"" + key + "\"} 32"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("preamble=\"short\""), std::string::npos);

  kiln::server::PrefixReportOptions o;
  const auto r = kiln::server::analyze_prefixes({{1, a}, {2, b}}, o, ids_text);
  ASSERT_FALSE(r.preambles.empty());
  EXPECT_EQ(r.preambles[0].metrics_key, key);
}

}  // namespace
