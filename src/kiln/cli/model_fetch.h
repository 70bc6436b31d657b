// `kiln serve --model URL`: the download step before loading, kept out of
// cmd_serve.cpp so serving a local file reads the same as before.
#pragma once

#include <string>

#include "kiln/core/status.h"

namespace kiln::cli {

// Downloads `url` (https://, http://, gs://) into `download_dir` (empty:
// $TMPDIR/kiln-models, else /tmp/kiln-models) with the default fetch options,
// or reuses a complete, verified earlier download of the same remote
// version; returns the local path. Progress goes to stderr.
Result<std::string> fetch_model_for_serve(const std::string& url, const std::string& download_dir);

}  // namespace kiln::cli
