// A baked artifact directory (`kiln bake --out DIR`): weights.bin
// (weights_file.h) + warm.bin (warm_file.h). Opening one verifies every
// checksum of both files and their agreement (the same model, warm.bin baked
// against this very weights.bin) before anything is served.
#pragma once

#include <memory>
#include <string>

#include "kiln/artifact/fingerprint.h"
#include "kiln/artifact/warm_file.h"
#include "kiln/artifact/weights_file.h"
#include "kiln/core/status.h"

namespace kiln::model {
class Model;
}

namespace kiln::artifact {

inline constexpr const char* kWeightsFileName = "weights.bin";
inline constexpr const char* kWarmFileName = "warm.bin";

// True when `path` is a directory holding weights.bin (what --model takes
// for an artifact); a GGUF file or a URL is not.
bool is_artifact_dir(const std::string& path);

struct Artifact {
  std::string dir;
  std::unique_ptr<model::Model> model;  // loaded from weights.bin
  WeightsHeader weights;
  Integrity weights_integrity;
  std::unique_ptr<WarmFile> warm;  // verified
  double verify_seconds = 0;       // checksum time of both files
  double load_seconds = 0;         // mapping + parsing + binding weights.bin
};

// Verifies and opens an artifact directory; `n_threads` hash the chunks
// (<= 0: every hardware thread). Refuses missing files, checksum or size
// mismatches, and a warm.bin baked against other weights, each with a message
// saying what to do. verify_weights_body false leaves weights.bin's body
// chunks (not its trailer, sizes or header) to a loader that hashes them as
// it reads (checksum.h verify_chunk with Artifact::weights_integrity), so the
// bytes are read once; it must then refuse to serve on a mismatch.
Result<Artifact> open_artifact(const std::string& dir, int n_threads = 0,
                               bool verify_weights_body = true);

}  // namespace kiln::artifact
