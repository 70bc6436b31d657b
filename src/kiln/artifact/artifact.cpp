// Opening and verifying an artifact directory (see artifact.h).
#include "kiln/artifact/artifact.h"

#include <fmt/format.h>

#include <chrono>
#include <filesystem>

#include "kiln/core/threadpool.h"
#include "kiln/gguf/gguf.h"
#include "kiln/gguf/mapped_file.h"
#include "kiln/model/model.h"

namespace kiln::artifact {

bool is_artifact_dir(const std::string& path) {
  std::error_code ec;
  return std::filesystem::is_directory(path, ec) &&
         std::filesystem::exists(std::filesystem::path(path) / kWeightsFileName, ec);
}

Result<Artifact> open_artifact(const std::string& dir, int n_threads, bool verify_weights_body) {
  using Clock = std::chrono::steady_clock;
  const auto secs = [](Clock::time_point t) {
    return std::chrono::duration<double>(Clock::now() - t).count();
  };
  const std::string weights_path = (std::filesystem::path(dir) / kWeightsFileName).string();
  const std::string warm_path = (std::filesystem::path(dir) / kWarmFileName).string();
  std::error_code ec;
  if (!std::filesystem::exists(warm_path, ec))
    return make_error(
        fmt::format("artifact {}: {} is missing; an artifact is the whole "
                    "directory `kiln bake --out` wrote: copy it again or rebake",
                    dir, kWarmFileName));
  Artifact a;
  a.dir = dir;
  ThreadPool pool(n_threads);

  // Checksums first, on their own mapping: a damaged file is refused with the
  // checksum's message before any parser reads it.
  auto t0 = Clock::now();
  {
    auto map = gguf::MappedFile::open(weights_path);
    if (!map) return map.error();
    auto in = read_integrity_trailer((*map)->bytes(), weights_path);
    if (!in) return in.error();
    KILN_TRY(verify_integrity((*map)->bytes(), *in, pool, weights_path, verify_weights_body));
    a.weights_integrity = std::move(*in);
  }
  auto warm = WarmFile::open(warm_path, pool);
  if (!warm) return warm.error();
  a.warm = std::move(*warm);
  a.verify_seconds = secs(t0);

  t0 = Clock::now();
  auto model = model::Model::load(weights_path);
  if (!model) return model.error();
  a.model = std::move(*model);
  auto header = read_weights_header(a.model->file());
  if (!header) return header.error();
  a.weights = std::move(*header);
  a.load_seconds = secs(t0);

  const Fingerprint& fp = a.warm->fingerprint();
  if (fp.weights_digest != a.weights_integrity.digest || fp.model_hash != a.weights.model_hash)
    return make_error(fmt::format(
        "artifact {}: warm.bin was baked against other weights (weights digest {} vs {}); "
        "the two files must come from one `kiln bake` run: copy the directory again or rebake",
        dir, fp.weights_digest, a.weights_integrity.digest));
  if (fp.target != a.weights.target || fp.weight_layout != a.weights.layout)
    return make_error(
        fmt::format("artifact {}: warm.bin and weights.bin disagree on the target "
                    "({} vs {}); rebake",
                    dir, fp.target, a.weights.target));
  return a;
}

}  // namespace kiln::artifact
