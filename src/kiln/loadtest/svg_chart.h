// The sweep chart: throughput (x) against latency (y), one point per
// concurrency level, as a standalone SVG any browser opens. Two panels:
// TTFT and time per output token, p50 and p99, SLO lines dashed, the
// recommended level circled.
#pragma once

#include <span>
#include <string>

#include "kiln/loadtest/recommend.h"
#include "kiln/loadtest/stats.h"

namespace kiln::loadtest {

std::string sweep_chart_svg(std::span<const LevelSummary> levels, const Slo& slo,
                            int32_t recommended, const std::string& title,
                            const std::string& subtitle = "");

}  // namespace kiln::loadtest
