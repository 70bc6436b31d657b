// The request log writer.
#include "kiln/server/request_log.h"

#include <fmt/format.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <ctime>

namespace kiln::server {

Result<std::unique_ptr<RequestLog>> RequestLog::open(const std::string& path) {
  std::FILE* f = std::fopen(path.c_str(), "a");
  if (!f)
    return make_error(
        fmt::format("--request-log {}: cannot open for appending: {}", path, std::strerror(errno)));
  return std::unique_ptr<RequestLog>(new RequestLog(f));
}

RequestLog::~RequestLog() {
  if (f_) std::fclose(f_);
}

void RequestLog::write(const nlohmann::ordered_json& entry) {
  std::string line = entry.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace);
  line += '\n';
  std::lock_guard<std::mutex> lock(mu_);
  std::fwrite(line.data(), 1, line.size(), f_);
  std::fflush(f_);
}

std::string utc_now_iso8601() {
  const auto now = std::chrono::system_clock::now();
  const std::time_t t = std::chrono::system_clock::to_time_t(now);
  const auto ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count() % 1000;
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &tm);
  return fmt::format("{}.{:03d}Z", buf, int(ms));
}

}  // namespace kiln::server
