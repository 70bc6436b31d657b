// Prefix-variance analysis over tokenized prompts: an unbounded block-aligned
// prefix cache replayed in file order (reuse), LCP intervals over the
// lexicographically sorted prompts (common preambles), and a bounded
// re-alignment after each divergence point (near-misses).
#include "kiln/server/prefix_report.h"

#include <fmt/format.h>

#include <algorithm>
#include <fstream>
#include <numeric>
#include <unordered_set>

#include "kiln/server/openai_chat.h"
#include "kiln/server/preamble_metrics.h"
#include "kiln/tokenizer/tokenizer.h"

namespace kiln::server {
namespace {

using Tokens = std::vector<int32_t>;

int64_t lcp(const Tokens& a, const Tokens& b, size_t from_a = 0, size_t from_b = 0) {
  int64_t n = 0;
  while (from_a + n < a.size() && from_b + n < b.size() && a[from_a + n] == b[from_b + n]) ++n;
  return n;
}

// Range minimum over the adjacent-LCP array of the sorted order, so "how
// many requests share the first L tokens of this one" is two binary searches.
class RangeMin {
 public:
  explicit RangeMin(std::vector<int64_t> v) {
    levels_.push_back(std::move(v));
    for (size_t w = 1; 2 * w <= levels_[0].size(); w *= 2) {
      const auto& prev = levels_.back();
      std::vector<int64_t> next(prev.size() - w);
      for (size_t i = 0; i < next.size(); ++i) next[i] = std::min(prev[i], prev[i + w]);
      levels_.push_back(std::move(next));
    }
  }
  int64_t min(size_t lo, size_t hi) const {  // inclusive, lo <= hi
    size_t k = 0;
    while ((size_t(2) << k) <= hi - lo + 1) ++k;
    return std::min(levels_[k][lo], levels_[k][hi + 1 - (size_t(1) << k)]);
  }

 private:
  std::vector<std::vector<int64_t>> levels_;
};

struct Sorted {
  std::vector<size_t> order;  // sorted position -> prompt index
  std::vector<size_t> rank;   // prompt index -> sorted position
  std::vector<int64_t> adj;   // [n] adj[p] = lcp(order[p-1], order[p]); adj[0] = 0
};

Sorted sort_prompts(const std::vector<PromptTokens>& ps) {
  Sorted s;
  s.order.resize(ps.size());
  std::iota(s.order.begin(), s.order.end(), size_t(0));
  std::sort(s.order.begin(), s.order.end(),
            [&](size_t a, size_t b) { return ps[a].tokens < ps[b].tokens; });
  s.rank.resize(ps.size());
  for (size_t p = 0; p < s.order.size(); ++p) s.rank[s.order[p]] = p;
  s.adj.assign(ps.size(), 0);
  for (size_t p = 1; p < s.order.size(); ++p)
    s.adj[p] = lcp(ps[s.order[p - 1]].tokens, ps[s.order[p]].tokens);
  return s;
}

// Requests whose first `len` tokens equal those of the request at sorted
// position p (itself included).
int64_t support(const Sorted& s, const RangeMin& rm, size_t p, int64_t len) {
  size_t lo = p, hi = p;
  // leftmost lo with min(adj[lo+1..p]) >= len
  for (size_t step = s.order.size(); step > 0; step /= 2)
    while (lo >= step && rm.min(lo - step + 1, p) >= len) lo -= step;
  for (size_t step = s.order.size(); step > 0; step /= 2)
    while (hi + step < s.order.size() && rm.min(p + 1, hi + step) >= len) hi += step;
  return int64_t(hi - lo + 1);
}

int64_t block_floor(int64_t n, int32_t block) {
  return n <= 0 ? 0 : n / block * block;
}

// Reuse an unbounded prefix cache gives each prompt, in arrival order:
// whole blocks only (the cache keys are full blocks), and never the last
// prompt token (its logits must be computed).
std::vector<int64_t> replay_cache(const std::vector<PromptTokens>& ps, int32_t block) {
  std::unordered_set<uint64_t> cached;
  std::vector<int64_t> reused(ps.size(), 0);
  for (size_t i = 0; i < ps.size(); ++i) {
    const Tokens& t = ps[i].tokens;
    uint64_t h = 1469598103934665603ull;
    bool hit = true;
    for (size_t end = size_t(block); end <= t.size(); end += size_t(block)) {
      for (size_t k = end - size_t(block); k < end; ++k)
        h = (h ^ uint64_t(uint32_t(t[k]))) * 1099511628211ull;  // chained FNV-1a
      if (hit && end + 1 <= t.size() && cached.count(h)) {
        reused[i] += block;
      } else {
        hit = false;
      }
      cached.insert(h);
    }
  }
  return reused;
}

struct Realign {
  int64_t a = 0, b = 0, m = 0;
};

// After the first difference at d, skip up to max_var tokens in each prompt
// and look for at least min_m matching tokens again; smallest skip first,
// substitutions of equal length before insertions.
Realign realign(const Tokens& r, const Tokens& s, int64_t d, const PrefixReportOptions& o) {
  for (int64_t span = 1; span <= 2 * int64_t(o.max_variable); ++span) {
    std::vector<std::pair<int64_t, int64_t>> cand;
    for (int64_t a = 0; a <= std::min<int64_t>(span, o.max_variable); ++a) {
      const int64_t b = span - a;
      if (b > o.max_variable) continue;
      cand.push_back({a, b});
    }
    std::stable_sort(cand.begin(), cand.end(), [](auto x, auto y) {
      return std::llabs(x.first - x.second) < std::llabs(y.first - y.second);
    });
    for (auto [a, b] : cand) {
      if (d + a + o.min_realign > int64_t(r.size()) || d + b + o.min_realign > int64_t(s.size()))
        continue;
      if (r[size_t(d + a)] != s[size_t(d + b)]) continue;
      const int64_t m = lcp(r, s, size_t(d + a), size_t(d + b));
      // A short run that ends both prompts is the template's generation
      // prompt after two different questions, not a preamble resuming.
      const bool tail_only =
          d + a + m == int64_t(r.size()) && d + b + m == int64_t(s.size()) && m < 4 * o.min_realign;
      if (m >= o.min_realign && !tail_only) return {a, b, m};
    }
  }
  return {};
}

std::string tail_text(const Tokens& t, int64_t end, int64_t n, const Detokenize& detok) {
  const int64_t begin = std::max<int64_t>(0, end - n);
  return detok(Tokens(t.begin() + begin, t.begin() + end));
}

}  // namespace

PrefixReport analyze_prefixes(const std::vector<PromptTokens>& ps, const PrefixReportOptions& o,
                              const Detokenize& detok) {
  PrefixReport rep;
  rep.n_requests = int64_t(ps.size());
  for (const auto& p : ps) rep.prompt_tokens += int64_t(p.tokens.size());
  if (ps.empty()) return rep;
  const std::vector<int64_t> reused = replay_cache(ps, o.block_size);
  for (int64_t r : reused) rep.reusable_tokens += r;

  const Sorted s = sort_prompts(ps);
  const RangeMin rm(s.adj);
  const size_t n = ps.size();

  // ---- common preambles: LCP intervals of the sorted order -----------------
  struct Interval {
    int64_t len, count, parent_len;
    size_t first;
  };
  std::vector<Interval> intervals;
  {
    struct Open {
      int64_t len;
      size_t lb;
    };
    std::vector<Open> st = {{0, 0}};
    for (size_t i = 1; i <= n; ++i) {
      const int64_t cur = i < n ? s.adj[i] : 0;
      size_t lb = i - 1;
      while (cur < st.back().len) {
        const Open top = st.back();
        st.pop_back();
        lb = top.lb;
        const int64_t parent = std::max(cur, st.back().len);
        intervals.push_back({top.len, int64_t(i - top.lb), parent, top.lb});
      }
      if (cur > st.back().len) st.push_back({cur, lb});
    }
  }
  std::vector<Interval> listed;
  for (const auto& iv : intervals) {
    if (iv.len < o.min_preamble || iv.count < 2) continue;
    // A child that adds less than a block to its parent reuses nothing more.
    if (iv.parent_len >= o.min_preamble && iv.len / o.block_size <= iv.parent_len / o.block_size)
      continue;
    listed.push_back(iv);
  }
  auto saved = [&](const Interval& iv) {
    return (iv.count - 1) * block_floor(iv.len, o.block_size);
  };
  std::sort(listed.begin(), listed.end(), [&](const Interval& x, const Interval& y) {
    return saved(x) != saved(y) ? saved(x) > saved(y) : x.len > y.len;
  });
  if (listed.size() > size_t(std::max(0, o.top))) listed.resize(size_t(std::max(0, o.top)));
  for (const auto& iv : listed) {
    const auto& t = ps[s.order[iv.first]];
    rep.preambles.push_back(
        {iv.len, iv.count, saved(iv), t.line,
         detok(Tokens(t.tokens.begin(), t.tokens.begin() + iv.len)),
         iv.len >= int64_t(kPreambleKeyTokens) ? preamble_key(t.tokens) : std::string()});
  }

  // ---- near-misses ------------------------------------------------------------
  for (size_t i = 0; i < n; ++i) {
    const Tokens& r = ps[i].tokens;
    const size_t pr = s.rank[i];
    std::vector<size_t> anchors;  // sorted positions
    for (int k = 1; k <= o.neighbours; ++k) {
      if (pr >= size_t(k)) anchors.push_back(pr - size_t(k));
      if (pr + size_t(k) < n) anchors.push_back(pr + size_t(k));
    }
    for (const auto& iv : listed) anchors.push_back(iv.first);
    NearMiss best;
    bool found = false;
    for (size_t pa : anchors) {
      if (pa == pr) continue;
      const Tokens& c = ps[s.order[pa]].tokens;
      const int64_t d = lcp(r, c);
      if (d >= int64_t(r.size()) || d >= int64_t(c.size())) continue;  // one is a prefix
      const Realign al = realign(r, c, d, o);
      if (al.m == 0) continue;
      // How many requests have each variant at this spot: the prefix through
      // the variable part and the first token after it (which also tells an
      // empty variable part apart from the other side's).
      const int64_t mine = support(s, rm, pr, d + al.a + 1);
      const int64_t theirs = support(s, rm, pa, d + al.b + 1);
      if (mine > theirs) continue;  // this request holds the more common variant
      const int64_t moved =
          block_floor(std::min<int64_t>(d + al.m, int64_t(r.size()) - 1), o.block_size);
      if (found && (moved < best.reusable_if_moved ||
                    (moved == best.reusable_if_moved && theirs <= best.common_support)))
        continue;
      found = true;
      best.line = ps[i].line;
      best.common_line = ps[s.order[pa]].line;
      best.position = d;
      best.before = tail_text(r, d, 8, detok);
      best.variable = detok(Tokens(r.begin() + d, r.begin() + d + al.a));
      best.common = detok(Tokens(c.begin() + d, c.begin() + d + al.b));
      best.realigned = al.m;
      best.reusable_if_moved = moved;
      best.common_support = theirs;
    }
    if (found) {
      rep.reusable_if_fixed += std::max<int64_t>(0, best.reusable_if_moved - reused[i]);
      rep.near_misses.push_back(std::move(best));
    }
  }
  rep.reusable_if_fixed += rep.reusable_tokens;
  return rep;
}

Result<std::vector<PromptTokens>> load_prompts(const std::string& path, const Tokenizer& tok,
                                               const ChatRenderer& chat, int64_t& n_skipped,
                                               std::vector<std::string>& warnings) {
  std::ifstream f(path);
  if (!f) return make_error(path + ": cannot read the file");
  std::vector<PromptTokens> out;
  std::string line;
  int64_t ln = 0;
  auto skip = [&](const std::string& why) {
    ++n_skipped;
    if (warnings.size() < 20) warnings.push_back(fmt::format("line {}: {}", ln, why));
  };
  while (std::getline(f, line)) {
    ++ln;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    Json j = Json::parse(line, nullptr, false);
    if (j.is_discarded() || !j.is_object()) {
      skip("not a JSON object");
      continue;
    }
    if (auto m = j.find("messages"); m != j.end() && !m->is_null()) {
      if (!chat)
        return make_error(
            fmt::format("{} line {}: a chat request, but the model has no chat template; pass "
                        "--chat-template FILE",
                        path, ln));
      Json messages, tools;
      if (auto e = parse_messages(*m, messages)) {
        skip(e->message);
        continue;
      }
      if (auto e = parse_tools(j, tools)) {
        skip(e->message);
        continue;
      }
      Json vars = Json::object();
      if (auto kw = j.find("chat_template_kwargs"); kw != j.end() && kw->is_object()) vars = *kw;
      const bool add_gen = j.value("add_generation_prompt", true);
      auto text = chat(ChatRenderInput{messages, tools, add_gen, vars});
      if (!text) {
        skip("chat template: " + text.message());
        continue;
      }
      // As kiln serve does: the template writes the special tokens itself.
      out.push_back({ln, tok.encode(*text, /*add_special=*/false, /*parse_special=*/true)});
      continue;
    }
    auto p = j.find("prompt");
    if (p == j.end() || p->is_null()) {
      skip("no prompt or messages (a refused request?)");
      continue;
    }
    auto one = [&](const Json& v) -> bool {
      if (v.is_string()) {
        out.push_back({ln, tok.encode(v.get<std::string>(), /*add_special=*/true,
                                      /*parse_special=*/true)});
        return true;
      }
      if (v.is_array() &&
          std::all_of(v.begin(), v.end(), [](const Json& x) { return x.is_number_integer(); })) {
        out.push_back({ln, v.get<Tokens>()});
        return true;
      }
      return false;
    };
    if (one(*p)) continue;
    if (p->is_array() && !p->empty() && std::all_of(p->begin(), p->end(), [](const Json& x) {
          return x.is_string() || x.is_array();
        })) {
      for (const auto& v : *p)
        if (!one(v)) skip("prompt list entry is neither text nor token ids");
      continue;
    }
    skip("'prompt' is neither text, token ids nor a list of those");
  }
  return out;
}

std::string format_prefix_report(const PrefixReport& r, const PrefixReportOptions& o) {
  auto pct = [](int64_t a, int64_t b) { return b > 0 ? 100.0 * double(a) / double(b) : 0.0; };
  auto oneline = [](std::string t, size_t max) {
    for (auto& c : t)
      if (c == '\n' || c == '\r' || c == '\t') c = ' ';
    if (t.size() > max) t = t.substr(0, max / 2) + " ... " + t.substr(t.size() - max / 2);
    return t;
  };
  std::string s;
  s += fmt::format("requests: {} ({} lines skipped), prompt tokens: {}\n", r.n_requests,
                   r.n_skipped, r.prompt_tokens);
  s += fmt::format(
      "prefix cache (blocks of {} tokens, unbounded, file order): {} tokens reusable ({:.1f}%)\n",
      o.block_size, r.reusable_tokens, pct(r.reusable_tokens, r.prompt_tokens));
  s +=
      fmt::format("  with every near-miss's variable part moved after the preamble: {} ({:.1f}%)\n",
                  r.reusable_if_fixed, pct(r.reusable_if_fixed, r.prompt_tokens));
  s += fmt::format("\ncommon preambles ({}):\n", r.preambles.size());
  for (size_t i = 0; i < r.preambles.size(); ++i) {
    const auto& p = r.preambles[i];
    s += fmt::format("  #{} {} tokens x {} requests (saves {} tokens; e.g. line {}{}): \"{}\"\n",
                     i + 1, p.n_tokens, p.n_requests, p.saved_tokens, p.example_line,
                     p.metrics_key.empty() ? "" : "; /metrics preamble=\"" + p.metrics_key + "\"",
                     oneline(p.text, 160));
  }
  s += fmt::format(
      "\nnear-misses ({}): requests whose preamble breaks early on a small variable part\n",
      r.near_misses.size());
  for (const auto& m : r.near_misses)
    s += fmt::format(
        "  line {}: token {} after \"{}\": \"{}\" where {} request(s) (e.g. line {}) have \"{}\"; "
        "{} tokens match again after it ({} reusable if it moved)\n",
        m.line, m.position, oneline(m.before, 60), oneline(m.variable, 60), m.common_support,
        m.common_line, oneline(m.common, 60), m.realigned, m.reusable_if_moved);
  for (const auto& w : r.warnings) s += "warning: " + w + "\n";
  return s;
}

std::string prefix_report_json(const PrefixReport& r, const PrefixReportOptions& o) {
  Json j;
  j["block_size"] = o.block_size;
  j["requests"] = r.n_requests;
  j["skipped_lines"] = r.n_skipped;
  j["prompt_tokens"] = r.prompt_tokens;
  j["reusable_tokens"] = r.reusable_tokens;
  j["reusable_tokens_if_fixed"] = r.reusable_if_fixed;
  j["preambles"] = Json::array();
  for (const auto& p : r.preambles)
    j["preambles"].push_back({{"tokens", p.n_tokens},
                              {"requests", p.n_requests},
                              {"saved_tokens", p.saved_tokens},
                              {"example_line", p.example_line},
                              {"metrics_key", p.metrics_key},
                              {"text", p.text}});
  j["near_misses"] = Json::array();
  for (const auto& m : r.near_misses)
    j["near_misses"].push_back({{"line", m.line},
                                {"position", m.position},
                                {"before", m.before},
                                {"variable", m.variable},
                                {"common", m.common},
                                {"common_line", m.common_line},
                                {"common_support", m.common_support},
                                {"realigned_tokens", m.realigned},
                                {"reusable_if_moved", m.reusable_if_moved}});
  j["warnings"] = r.warnings;
  return j.dump(2, ' ', false, Json::error_handler_t::replace) + "\n";
}

}  // namespace kiln::server
