// Snapshot files of the response caches (format: cache_snapshot.h).
#include "kiln/cache/cache_snapshot.h"

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

namespace kiln::cache {

namespace fs = std::filesystem;

namespace {
constexpr const char* kFile = "responses.jsonl";
}

Status save_snapshot(const std::string& dir, const SnapshotHeader& header,
                     const std::vector<EntryPtr>& entries) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return make_error("--cache-dir " + dir + ": cannot create it: " + ec.message());
  const fs::path final_path = fs::path(dir) / kFile;
  const fs::path tmp = fs::path(dir) / (std::string(kFile) + ".tmp");
  {
    std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
    if (!f) return make_error("--cache-dir " + dir + ": cannot write " + tmp.string());
    nlohmann::json h;
    h["kiln_response_cache"] = 1;
    h["embedder"] = header.embedder;
    h["dim"] = header.dim;
    f << h.dump() << '\n';
    for (const auto& e : entries) f << entry_to_json(*e) << '\n';
    f.flush();
    if (!f) return make_error("--cache-dir " + dir + ": write failed (disk full?)");
  }
  fs::rename(tmp, final_path, ec);
  if (ec) return make_error("--cache-dir " + dir + ": cannot rename the snapshot: " + ec.message());
  return Status::success();
}

Result<LoadedSnapshot> load_snapshot(const std::string& dir) {
  LoadedSnapshot out;
  const fs::path path = fs::path(dir) / kFile;
  std::ifstream f(path, std::ios::binary);
  if (!f) return out;
  std::string line;
  if (!std::getline(f, line)) return out;
  auto h = nlohmann::json::parse(line, nullptr, false);
  if (h.is_discarded() || !h.is_object() || h.value("kiln_response_cache", 0) != 1)
    return make_error(path.string() +
                      ": not a kiln response-cache snapshot (or a newer version); move it away or "
                      "point --cache-dir elsewhere");
  out.header.embedder = h.value("embedder", std::string());
  out.header.dim = h.value("dim", 0);
  while (std::getline(f, line)) {
    if (line.empty()) continue;
    auto e = entry_from_json(line);
    if (!e) {
      ++out.skipped;  // a torn last line after a crash: keep the rest
      continue;
    }
    out.entries.push_back(std::move(*e));
  }
  return out;
}

}  // namespace kiln::cache
