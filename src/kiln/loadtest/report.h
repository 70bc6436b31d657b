// What a load test leaves behind: the terminal table (one row per level),
// results.csv, results.json (schema in docs/loadtest.md; `kiln plan` reads
// its "recommendation" and "levels") and the SVG chart.
#pragma once

#include <nlohmann/json.hpp>
#include <optional>
#include <span>
#include <string>

#include "kiln/core/status.h"
#include "kiln/loadtest/recommend.h"
#include "kiln/loadtest/stats.h"

namespace kiln::loadtest {

std::string table_header();
std::string table_row(const LevelSummary& s, const Slo& slo);

std::string levels_csv(std::span<const LevelSummary> levels);

struct SweepReport {
  nlohmann::ordered_json meta;  // url, workload, duration, ... (free-form, "run" object)
  std::span<const LevelSummary> levels;
  Slo slo;
  std::optional<double> price_per_hour;
  Recommendation rec;
  std::optional<KilnCapacity> kiln;  // from the target's /metrics
  std::string gcloud;                // the deploy line
};
nlohmann::ordered_json sweep_json(const SweepReport& r);

// Writes `text` to `path` through a temporary file and a rename, so readers
// never see half a file.
Status write_file(const std::string& path, const std::string& text);

}  // namespace kiln::loadtest
