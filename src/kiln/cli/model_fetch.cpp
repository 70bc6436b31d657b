// The download step of `kiln serve --model URL` (see model_fetch.h).
#include "kiln/cli/model_fetch.h"

#include <fmt/format.h>

#include <cstdlib>
#include <filesystem>

#include "kiln/fetch/fetch.h"
#include "kiln/fetch/progress.h"

namespace kiln::cli {

Result<std::string> fetch_model_for_serve(const std::string& url, const std::string& download_dir) {
  std::string dir = download_dir;
  if (dir.empty()) {
    const char* tmp = std::getenv("TMPDIR");
    dir = (std::filesystem::path(tmp && *tmp ? tmp : "/tmp") / "kiln-models").string();
  }
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec)
    return make_error("--download-dir " + dir + ": cannot create it (" + ec.message() +
                      "); give a writable directory");
  fetch::FetchOptions f;
  f.reuse_verified = true;  // a restarted server does not download the same bytes again
  f.log = [](const std::string& m) { fmt::print(stderr, "kiln serve: {}\n", m); };
  auto r = fetch::fetch_to_file(url, dir, f);
  if (!r) return make_error("--model " + url + ": " + r.message());
  return r->path;
}

}  // namespace kiln::cli
