// Building the request pool of a load-test run (see workload.h).
#include "kiln/loadtest/workload.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>

namespace kiln::loadtest {

using Json = nlohmann::ordered_json;

int32_t LengthDist::sample(std::mt19937_64& rng) const {
  double v = a;
  switch (kind) {
    case Kind::fixed:
      break;
    case Kind::uniform:
      v = std::uniform_int_distribution<int64_t>(int64_t(a), int64_t(b))(rng);
      break;
    case Kind::normal:
      v = std::normal_distribution<double>(a, b)(rng);
      break;
    case Kind::exponential:
      v = std::exponential_distribution<double>(1.0 / a)(rng);
      break;
  }
  return int32_t(std::max(1.0, std::round(v)));
}

std::string LengthDist::describe() const {
  switch (kind) {
    case Kind::fixed:
      return fmt::format("{}", a);
    case Kind::uniform:
      return fmt::format("uniform {}..{}", a, b);
    case Kind::normal:
      return fmt::format("normal mean {} sd {}", a, b);
    case Kind::exponential:
      return fmt::format("exponential mean {}", a);
  }
  return "";
}

Result<LengthDist> parse_length_dist(const std::string& s, const std::string& flag) {
  auto bad = [&] {
    return make_error(flag + " '" + s +
                      "': expected N, uniform:MIN:MAX, normal:MEAN:SD or exp:MEAN "
                      "(positive numbers)");
  };
  std::vector<std::string> parts;
  size_t start = 0;
  for (;;) {
    const size_t c = s.find(':', start);
    parts.push_back(s.substr(start, c - start));
    if (c == std::string::npos) break;
    start = c + 1;
  }
  std::vector<double> nums;
  for (size_t i = (parts.size() == 1 ? 0 : 1); i < parts.size(); ++i) {
    try {
      size_t used = 0;
      nums.push_back(std::stod(parts[i], &used));
      if (used != parts[i].size() || !(nums.back() >= 0)) return bad();
    } catch (...) {
      return bad();
    }
  }
  LengthDist d;
  if (parts.size() == 1) {
    d.kind = LengthDist::Kind::fixed;
    d.a = nums[0];
    if (d.a < 1) return bad();
  } else if (parts[0] == "uniform" && nums.size() == 2 && nums[0] >= 1 && nums[1] >= nums[0]) {
    d = {LengthDist::Kind::uniform, nums[0], nums[1]};
  } else if (parts[0] == "normal" && nums.size() == 2 && nums[0] >= 1) {
    d = {LengthDist::Kind::normal, nums[0], nums[1]};
  } else if (parts[0] == "exp" && nums.size() == 1 && nums[0] >= 1) {
    d = {LengthDist::Kind::exponential, nums[0], 0};
  } else {
    return bad();
  }
  return d;
}

const std::vector<std::string>& serving_words() {
  static const std::vector<std::string> w = {"alpha",  "beta",   "gamma", "delta",  "river",
                                             "stone",  "cloud",  "light", "paper",  "window",
                                             "garden", "silver", "music", "number", "yellow"};
  return w;
}

Status apply_preset(const std::string& name, WorkloadOptions& o) {
  if (name != kServingPreset)
    return make_error("--preset '" + name + "': unknown; available: " + kServingPreset +
                      " (GUIDE §5: 300 random words, max_tokens 128, ignore_eos, temperature 0)");
  o.api = "completions";
  o.prompt_words = {LengthDist::Kind::fixed, 300, 0};
  o.output_tokens = {LengthDist::Kind::fixed, 128, 0};
  o.ignore_eos = true;
  o.temperature = 0;
  return {};
}

namespace {

std::string random_words(int32_t n, std::mt19937_64& rng) {
  const auto& w = serving_words();
  std::uniform_int_distribution<size_t> pick(0, w.size() - 1);
  std::string s;
  s.reserve(size_t(n) * 7);
  for (int32_t i = 0; i < n; ++i) {
    if (i) s += ' ';
    s += w[pick(rng)];
  }
  return s;
}

RequestSpec make_spec(const WorkloadOptions& o, Json content, bool chat, int32_t max_tokens) {
  Json j;
  if (!o.model.empty()) j["model"] = o.model;
  j[chat ? "messages" : "prompt"] = std::move(content);
  j["max_tokens"] = max_tokens;
  j["temperature"] = o.temperature;
  j["stream"] = true;
  if (o.include_usage) j["stream_options"] = {{"include_usage", true}};
  if (o.ignore_eos) j["ignore_eos"] = true;
  return {chat ? "/v1/chat/completions" : "/v1/completions", j.dump(), max_tokens, -1};
}

Result<std::vector<RequestSpec>> from_jsonl(const WorkloadOptions& o, std::mt19937_64& rng) {
  std::ifstream f(o.prompts_file);
  if (!f) return make_error("--prompts " + o.prompts_file + ": cannot open the file");
  std::vector<RequestSpec> out;
  std::string line;
  int lineno = 0;
  while (std::getline(f, line)) {
    ++lineno;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    const auto j = Json::parse(line, nullptr, false);
    auto where = [&] { return fmt::format("--prompts {}:{}: ", o.prompts_file, lineno); };
    if (j.is_discarded()) return make_error(where() + "not valid JSON");
    int32_t max_tokens = o.output_tokens.sample(rng);
    if (j.is_object() && j.contains("max_tokens") && j["max_tokens"].is_number_integer())
      max_tokens = j["max_tokens"].get<int32_t>();
    if (j.is_string()) {
      if (o.api == "chat")
        out.push_back(
            make_spec(o, Json::array({{{"role", "user"}, {"content", j}}}), true, max_tokens));
      else
        out.push_back(make_spec(o, j, false, max_tokens));
    } else if (j.is_object() && j.contains("messages") && j["messages"].is_array()) {
      out.push_back(make_spec(o, j["messages"], true, max_tokens));
    } else if (j.is_object() && j.contains("prompt")) {
      if (o.api == "chat" && j["prompt"].is_string())
        out.push_back(make_spec(o, Json::array({{{"role", "user"}, {"content", j["prompt"]}}}),
                                true, max_tokens));
      else
        out.push_back(make_spec(o, j["prompt"], false, max_tokens));
    } else {
      return make_error(where() + "expected a string or an object with \"prompt\" or \"messages\"");
    }
  }
  if (out.empty()) return make_error("--prompts " + o.prompts_file + ": no prompts in the file");
  return out;
}

}  // namespace

Result<Workload> Workload::build(const WorkloadOptions& o) {
  if (o.api != "completions" && o.api != "chat")
    return make_error("--api '" + o.api + "': expected completions or chat");
  std::mt19937_64 rng(o.seed);
  Workload w;
  const bool chat = o.api == "chat";
  if (!o.prompts_file.empty()) {
    auto specs = from_jsonl(o, rng);
    if (!specs) return specs.error();
    w.specs_ = std::move(*specs);
    w.description_ = fmt::format("{} prompts from {}", w.specs_.size(), o.prompts_file);
    return w;
  }
  if (o.n_preambles > 0 || o.n_questions > 0) {
    if (o.n_preambles <= 0 || o.n_questions <= 0)
      return make_error(
          "--shared-preamble N,M: both N (system prompts) and M (questions) must "
          "be positive");
    std::vector<std::string> preambles, questions;
    for (int32_t i = 0; i < o.n_preambles; ++i)
      preambles.push_back(fmt::format("You are assistant {}. ", i) +
                          random_words(o.preamble_words, rng));
    for (int32_t i = 0; i < o.n_questions; ++i)
      questions.push_back(random_words(o.prompt_words.sample(rng), rng));
    std::vector<std::pair<int32_t, int32_t>> combos;
    for (int32_t p = 0; p < o.n_preambles; ++p)
      for (int32_t q = 0; q < o.n_questions; ++q) combos.emplace_back(p, q);
    // Shuffled so that requests sharing a preamble interleave, as users do.
    std::shuffle(combos.begin(), combos.end(), rng);
    for (auto [p, q] : combos) {
      const int32_t n_out = o.output_tokens.sample(rng);
      if (chat)
        w.specs_.push_back(make_spec(o,
                                     Json::array({{{"role", "system"}, {"content", preambles[p]}},
                                                  {{"role", "user"}, {"content", questions[q]}}}),
                                     true, n_out));
      else
        w.specs_.push_back(make_spec(
            o, preambles[p] + "\n\nQuestion: " + questions[q] + "\nAnswer:", false, n_out));
    }
    w.description_ = fmt::format(
        "{} shared preambles ({} words) x {} questions ({} words), {} output tokens, {}",
        o.n_preambles, o.preamble_words, o.n_questions, o.prompt_words.describe(),
        o.output_tokens.describe(), o.api);
    return w;
  }
  const int32_t n = std::max(1, o.pool_size);
  for (int32_t i = 0; i < n; ++i) {
    const std::string text = random_words(o.prompt_words.sample(rng), rng);
    const int32_t n_out = o.output_tokens.sample(rng);
    if (chat)
      w.specs_.push_back(
          make_spec(o, Json::array({{{"role", "user"}, {"content", text}}}), true, n_out));
    else
      w.specs_.push_back(make_spec(o, text, false, n_out));
  }
  w.description_ = fmt::format("random words: prompt {} words, {} output tokens{}, {}",
                               o.prompt_words.describe(), o.output_tokens.describe(),
                               o.ignore_eos ? " (ignore_eos)" : "", o.api);
  return w;
}

Workload Workload::from_specs(std::vector<RequestSpec> specs, std::string description) {
  Workload w;
  w.specs_ = std::move(specs);
  w.description_ = std::move(description);
  return w;
}

}  // namespace kiln::loadtest
