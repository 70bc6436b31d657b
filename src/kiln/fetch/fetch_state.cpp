// Reading and writing the resume state and completion record (JSON).
#include "kiln/fetch/fetch_state.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>

namespace kiln::fetch {
namespace {
std::optional<nlohmann::json> read_json(const std::string& path) {
  std::ifstream f(path);
  if (!f) return std::nullopt;
  std::stringstream ss;
  ss << f.rdbuf();
  try {
    auto j = nlohmann::json::parse(ss.str());
    if (!j.is_object() || j.value("version", 0) != 1) return std::nullopt;
    return j;
  } catch (const nlohmann::json::exception&) {
    return std::nullopt;
  }
}
}  // namespace

Status write_file_atomic(const std::string& path, const std::string& text) {
  const std::string tmp = path + ".tmp";
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return make_error("cannot write " + tmp + ": " + std::strerror(errno));
  size_t off = 0;
  while (off < text.size()) {
    const ssize_t n = ::write(fd, text.data() + off, text.size() - off);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      const int e = errno;
      ::close(fd);
      return make_error("cannot write " + tmp + ": " + std::strerror(e));
    }
    off += size_t(n);
  }
  ::close(fd);
  if (std::rename(tmp.c_str(), path.c_str()) != 0)
    return make_error("cannot rename " + tmp + " to " + path + ": " + std::strerror(errno));
  return Status::success();
}

std::optional<FetchState> load_fetch_state(const std::string& path) {
  auto j = read_json(path);
  if (!j) return std::nullopt;
  try {
    FetchState s;
    s.url = j->at("url").get<std::string>();
    s.size = j->at("size").get<uint64_t>();
    s.validator = j->at("validator").get<std::string>();
    s.chunk_size = j->at("chunk_size").get<uint64_t>();
    if (s.chunk_size == 0) return std::nullopt;
    s.done.assign(size_t((s.size + s.chunk_size - 1) / s.chunk_size), false);
    for (const auto& i : j->at("done")) {
      const auto k = i.get<uint64_t>();
      if (k >= s.done.size()) return std::nullopt;
      s.done[k] = true;
    }
    return s;
  } catch (const nlohmann::json::exception&) {
    return std::nullopt;
  }
}

Status save_fetch_state(const std::string& path, const FetchState& s) {
  nlohmann::json j;
  j["version"] = 1;
  j["url"] = s.url;
  j["size"] = s.size;
  j["validator"] = s.validator;
  j["chunk_size"] = s.chunk_size;
  auto done = nlohmann::json::array();
  for (size_t i = 0; i < s.done.size(); ++i)
    if (s.done[i]) done.push_back(i);
  j["done"] = done;
  return write_file_atomic(path, j.dump() + "\n");
}

std::optional<FetchRecord> load_fetch_record(const std::string& path) {
  auto j = read_json(path);
  if (!j) return std::nullopt;
  try {
    FetchRecord r;
    r.url = j->at("url").get<std::string>();
    r.size = j->at("size").get<uint64_t>();
    r.validator = j->at("validator").get<std::string>();
    r.verified = j->value("verified", "");
    return r;
  } catch (const nlohmann::json::exception&) {
    return std::nullopt;
  }
}

Status save_fetch_record(const std::string& path, const FetchRecord& r) {
  nlohmann::json j;
  j["version"] = 1;
  j["url"] = r.url;
  j["size"] = r.size;
  j["validator"] = r.validator;
  j["verified"] = r.verified;
  return write_file_atomic(path, j.dump() + "\n");
}

}  // namespace kiln::fetch
