// --request-log FILE: one JSON line per request (schema: docs/request-log.md),
// the shape `kiln loadtest` replays and `kiln prefix-report` reads.
#pragma once

#include <cstdio>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>

#include "kiln/core/status.h"

namespace kiln::server {

class RequestLog {
 public:
  static Result<std::unique_ptr<RequestLog>> open(const std::string& path);
  ~RequestLog();
  // Writes `entry` as one line and flushes it (a crash loses nothing logged).
  void write(const nlohmann::ordered_json& entry);

 private:
  explicit RequestLog(std::FILE* f) : f_(f) {}
  std::mutex mu_;
  std::FILE* f_;
};

// ISO-8601 UTC with milliseconds of the current time, e.g. 2025-01-31T12:00:00.123Z.
std::string utc_now_iso8601();

}  // namespace kiln::server
