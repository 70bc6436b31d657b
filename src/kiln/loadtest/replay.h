// `kiln loadtest replay LOG`: the full lines of a `kiln serve --request-log`
// file (docs/request-log.md) turned back into streamed requests with their
// original parameters and arrival times.
#pragma once

#include <string>

#include "kiln/core/status.h"
#include "kiln/loadtest/workload.h"

namespace kiln::loadtest {

struct ReplayOptions {
  std::string model;  // overrides the logged model when set
  bool include_usage = true;
  int64_t max_requests = 0;  // 0: every full line
};

// Short lines (refused requests) carry no prompt and are skipped; the
// description says how many. Fails on unreadable files or bad JSON lines.
Result<Workload> load_request_log(const std::string& path, const ReplayOptions& o);

// Seconds since the epoch of "2025-01-31T12:00:00.123Z"; fails on other shapes.
Result<double> parse_iso8601_utc(const std::string& s);

}  // namespace kiln::loadtest
