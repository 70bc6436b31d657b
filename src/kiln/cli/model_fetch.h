// `kiln serve --model URL`: the download runs on a background thread while
// the model loads from the bytes already on disk (docs/pull.md), kept out of
// cmd_serve.cpp so serving a local file reads the same as before.
#pragma once

#include <chrono>
#include <memory>
#include <string>

#include "kiln/cli/model_source.h"
#include "kiln/core/status.h"
#include "kiln/fetch/background.h"

namespace kiln::cli {

// Where and how `kiln serve --model URL` downloads.
struct ModelDownloadOptions {
  std::string dir;                // empty: $TMPDIR/kiln-models, else /tmp/kiln-models
  int connections = 8;            // --download-connections
  std::string chunk_size = "64M";  // --download-chunk-size: the loader waits for whole chunks
};

// Starts downloading `url` (https://, http://, gs://) on a background
// thread, or reuses a complete, verified earlier download of the same remote
// version. Progress goes to stderr as log lines.
Result<std::unique_ptr<fetch::BackgroundFetch>> start_model_download(
    const std::string& url, const ModelDownloadOptions& opts);

// The model over the file as it arrives: waits only for the GGUF header (and
// any 1-D tensor binding converts); its tensor data is waited for by the
// backend's load_weights. Marks "weights_read".
Result<ModelSource> open_downloading_model(fetch::BackgroundFetch& dl, StartupTimeline* timeline);

// Why a load over the download failed: the download's error when it failed,
// else `e` (BackgroundFetch::consumer_failed), naming the URL.
Error download_load_failure(fetch::BackgroundFetch& dl, const std::string& url, const Error& e);

// Once the weights are on the backend: waits for the download to end and be
// verified (an error means the start must fail: what was loaded came from
// bad bytes). Adds "download" and "download_overlap" (the span the load and
// the download shared) to the timeline, marks "download_verified", and logs
// them.
Status finish_model_download(fetch::BackgroundFetch& dl, const std::string& url,
                             std::chrono::steady_clock::time_point load_start,
                             std::chrono::steady_clock::time_point load_end,
                             StartupTimeline& timeline);

}  // namespace kiln::cli
