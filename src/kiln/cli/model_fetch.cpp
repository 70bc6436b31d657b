// The download-while-loading steps of `kiln serve --model URL` (see model_fetch.h).
#include "kiln/cli/model_fetch.h"

#include <fmt/format.h>

#include <cstdlib>
#include <filesystem>

#include "kiln/core/byte_size.h"
#include "kiln/core/startup_timeline.h"
#include "kiln/fetch/progress.h"
#include "kiln/gguf/gguf.h"
#include "kiln/model/model.h"

namespace kiln::cli {

Result<std::unique_ptr<fetch::BackgroundFetch>> start_model_download(
    const std::string& url, const ModelDownloadOptions& opts) {
  const auto chunk = parse_byte_size(opts.chunk_size);
  if (!chunk)
    return make_error("--download-chunk-size " + opts.chunk_size + ": give bytes, e.g. 64M or 16MiB");
  std::string dir = opts.dir;
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
  f.connections = opts.connections;
  f.chunk_size = *chunk;
  f.reuse_verified = true;  // a restarted server does not download the same bytes again
  // Log lines, not a bar: the loader prints from other threads meanwhile.
  f.progress = fetch::ProgressMode::log;
  f.log = [](const std::string& m) { fmt::print(stderr, "kiln serve: {}\n", m); };
  return std::make_unique<fetch::BackgroundFetch>(url, dir, std::move(f));
}

Result<ModelSource> open_downloading_model(fetch::BackgroundFetch& dl, StartupTimeline* timeline) {
  // Known once the download has begun: DEST.partial then exists at its final
  // size (fetch_to_file preallocates it), so it can be mapped whole now.
  auto size = dl.arrivals().wait_size();
  if (!size) return size.error();
  auto file = gguf::File::open_arriving(dl.arrivals().fd(), dl.final_path(), dl.range_wait());
  if (!file) return file.error();
  if ((*file)->file_size() != *size)
    return make_error(fmt::format("{}: {} bytes on disk, the download has {}", dl.final_path(),
                                  (*file)->file_size(), *size));
  auto m = model::Model::from_file(std::move(*file));
  if (!m) return m.error();
  ModelSource src;
  src.model = std::move(*m);
  if (timeline) timeline->mark("weights_read");
  return src;
}

Error download_load_failure(fetch::BackgroundFetch& dl, const std::string& url, const Error& e) {
  return make_error("--model " + url + ": " + dl.consumer_failed(e).message);
}

Status finish_model_download(fetch::BackgroundFetch& dl, const std::string& url,
                             std::chrono::steady_clock::time_point load_start,
                             std::chrono::steady_clock::time_point load_end,
                             StartupTimeline& timeline) {
  auto r = dl.finish();
  if (!r)
    return make_error("--model " + url + ": " + r.message() +
                      "; the weights loaded from it are discarded and the server does not start");
  const double download_s =
      std::chrono::duration<double>(dl.ended_at() - dl.started_at()).count();
  const double load_s = std::chrono::duration<double>(load_end - load_start).count();
  // The span the load and the download (with its checksum) shared; the
  // loader's waits for bytes fall inside it.
  const double overlap =
      fetch::overlap_seconds(load_start, load_end, dl.started_at(), dl.ended_at());
  const auto last_byte = dl.arrivals().all_arrived_at().value_or(dl.ended_at());
  const double tail_s = std::chrono::duration<double>(dl.ended_at() - last_byte).count();
  const auto w = dl.arrivals().wait_stats();
  timeline.add("download", download_s);
  timeline.add("download_overlap", overlap);
  timeline.mark("download_verified");  // how long start-up waited for the tail and checksum
  fmt::print(stderr,
             "kiln serve: weights loaded while downloading: {:.2f} s of overlap (load {:.2f} s, "
             "download {:.2f} s{}, {:.2f} s of it checksumming after the last byte; the loader "
             "waited for bytes {} time{})\n",
             overlap, load_s, download_s, r->reused ? " (reused)" : "", tail_s, w.blocked,
             w.blocked == 1 ? "" : "s");
  return Status::success();
}

}  // namespace kiln::cli
