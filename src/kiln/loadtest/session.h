// One load-test session as the CLI runs it: an optional warm-up, then one
// level (`run`, `replay`) or several (`sweep`), with a live progress line,
// the table, and the files in --out (results.csv, results.json,
// requests.csv, and for sweeps chart.svg) plus --json-out.
#pragma once

#include <cstdio>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "kiln/core/status.h"
#include "kiln/loadtest/client.h"
#include "kiln/loadtest/recommend.h"
#include "kiln/loadtest/stats.h"
#include "kiln/loadtest/workload.h"

namespace kiln::loadtest {

struct SessionOptions {
  RunOptions run;       // target, mode, timeouts; duration per level
  double warmup_s = 0;  // warm-up before the first level (results dropped)
  int32_t warmup_concurrency = 4;
  std::vector<int32_t> levels;  // sweep: closed-loop concurrencies, increasing
  Slo slo;
  std::optional<double> price_per_hour;
  DeployHints deploy;
  bool keep_going = false;  // sweep: go on after a level misses the SLO
  std::string out_dir;      // "" : no files but --json-out
  std::string json_out;
  std::string label;             // single runs: the table's level label
  nlohmann::ordered_json meta;   // recorded as "run" in the JSON
  std::FILE* out = stdout;       // table and summary
  std::FILE* progress = stderr;  // live progress (nullptr: none)
};

struct SessionResult {
  std::vector<LevelSummary> levels;
  std::optional<Recommendation> rec;  // sweeps
  std::optional<KilnCapacity> kiln;
  nlohmann::ordered_json json;
};

Result<SessionResult> run_sweep(const SessionOptions& o, const Workload& w);
Result<SessionResult> run_single(const SessionOptions& o, const Workload& w);

}  // namespace kiln::loadtest
