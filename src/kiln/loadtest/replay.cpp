// Reading a request log for replay (see replay.h).
#include "kiln/loadtest/replay.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <fstream>
#include <nlohmann/json.hpp>

namespace kiln::loadtest {

using Json = nlohmann::ordered_json;

Result<double> parse_iso8601_utc(const std::string& s) {
  std::tm tm{};
  int ms = 0;
  char frac[16] = {0};
  if (std::sscanf(s.c_str(), "%4d-%2d-%2dT%2d:%2d:%2d", &tm.tm_year, &tm.tm_mon, &tm.tm_mday,
                  &tm.tm_hour, &tm.tm_min, &tm.tm_sec) != 6)
    return make_error("time '" + s + "': expected YYYY-MM-DDTHH:MM:SS[.mmm]Z");
  tm.tm_year -= 1900;
  tm.tm_mon -= 1;
  double sub = 0;
  const size_t dot = s.find('.');
  if (dot != std::string::npos && std::sscanf(s.c_str() + dot + 1, "%15[0-9]", frac) == 1) {
    ms = std::atoi(frac);
    sub = double(ms) / std::pow(10.0, double(std::strlen(frac)));
  }
  return double(timegm(&tm)) + sub;
}

Result<Workload> load_request_log(const std::string& path, const ReplayOptions& o) {
  std::ifstream f(path);
  if (!f) return make_error("replay: cannot open " + path);
  std::vector<RequestSpec> specs;
  std::string line;
  int lineno = 0, skipped = 0;
  double t0 = -1;
  while (std::getline(f, line)) {
    ++lineno;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    const auto j = Json::parse(line, nullptr, false);
    auto where = [&] { return fmt::format("replay: {}:{}: ", path, lineno); };
    if (j.is_discarded() || !j.is_object())
      return make_error(where() + "not a JSON object (is this a kiln --request-log file?)");
    const bool chat = j.contains("messages");
    if (!chat && !j.contains("prompt")) {
      ++skipped;  // a short line: refused, nothing to replay
      continue;
    }
    Json body;
    const std::string model = o.model.empty() ? j.value("model", std::string()) : o.model;
    if (!model.empty()) body["model"] = model;
    body[chat ? "messages" : "prompt"] = j[chat ? "messages" : "prompt"];
    int32_t max_tokens = 0;
    if (j.contains("params") && j["params"].is_object()) {
      for (const auto& [k, v] : j["params"].items()) {
        // Timing needs a stream; logprobs -1 means none; seed null: server's choice.
        if (k == "stream" || v.is_null()) continue;
        if (k == "logprobs") {
          const int lp = v.is_number_integer() ? v.get<int>() : -1;
          if (lp < 0) continue;
          if (chat) {
            body["logprobs"] = true;
            body["top_logprobs"] = lp;
          } else {
            body["logprobs"] = lp;
          }
          continue;
        }
        body[k] = v;
      }
      if (j["params"].contains("max_tokens") && j["params"]["max_tokens"].is_number_integer())
        max_tokens = j["params"]["max_tokens"].get<int32_t>();
    }
    if (max_tokens == 0 && j.contains("completion_tokens") &&
        j["completion_tokens"].is_number_integer())
      max_tokens = j["completion_tokens"].get<int32_t>();
    body["stream"] = true;
    if (o.include_usage) body["stream_options"] = {{"include_usage", true}};
    RequestSpec spec{chat ? "/v1/chat/completions" : "/v1/completions", body.dump(), max_tokens, 0};
    if (j.contains("time") && j["time"].is_string()) {
      auto t = parse_iso8601_utc(j["time"].get<std::string>());
      if (!t) return make_error(where() + t.message());
      if (t0 < 0) t0 = *t;
      spec.at_s = *t - t0;
    }
    specs.push_back(std::move(spec));
    if (o.max_requests > 0 && int64_t(specs.size()) >= o.max_requests) break;
  }
  if (specs.empty())
    return make_error(
        fmt::format("replay: {} has no full request lines to replay ({} refused "
                    "lines skipped); was kiln serve run with --request-log?",
                    path, skipped));
  // Arrivals must not go backwards (lines are written at the end of each
  // request, so a long request's line follows later arrivals).
  std::stable_sort(specs.begin(), specs.end(),
                   [](const RequestSpec& a, const RequestSpec& b) { return a.at_s < b.at_s; });
  const double span = specs.back().at_s - specs.front().at_s;
  std::string what =
      fmt::format("replay of {} ({} requests over {:.1f} s; {} refused lines skipped)", path,
                  specs.size(), span, skipped);
  return Workload::from_specs(std::move(specs), std::move(what));
}

}  // namespace kiln::loadtest
