// What `--model` names for kiln serve / generate: a GGUF file or a baked
// artifact directory (`kiln bake --out`). An artifact is verified (every
// checksum of weights.bin and warm.bin) before anything uses it, and its
// fingerprint decides the KV settings its warm prefixes need.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "kiln/artifact/artifact.h"
#include "kiln/core/status.h"
#include "kiln/engine/prefix_blocks.h"
#include "kiln/tokenizer/known_prefixes.h"

namespace kiln {
class StartupTimeline;
}
namespace kiln::engine {
class Engine;
}
namespace kiln::model {
class Model;
}

namespace kiln::cli {

struct ModelSource {
  std::unique_ptr<model::Model> model;
  std::unique_ptr<artifact::Artifact> artifact;  // null for a GGUF file (model moved out of it)
  // A GPU weight image whose body checksums were left to the loader
  // (defer_image_body): serve must have them verified before it is ready.
  bool image_body_unverified = false;
};

// Loads a GGUF file, or verifies and opens an artifact directory. Marks
// "weights_read" on the timeline (and adds "weights_verified" for artifacts).
Result<ModelSource> load_model_source(const std::string& path, StartupTimeline* timeline,
                                      const char* command, bool defer_image_body = false);
// Verifies a deferred weight-image body now (when no loader can do it).
Status verify_image_body(ModelSource& src);

// The serving KV settings, where flags the user did not give take the
// artifact's values (a plain `kiln serve --model DIR` just works) and given
// ones must match (else check_serve_settings refuses). A no-op for GGUF
// files. Reads only warm.bin's fingerprint (unverified: full verification
// follows at load, before anything is served).
struct KvFlags {
  std::string kv_type;
  int kv_block_size = 0;
  int ctx_size = 0;
  bool kv_type_given = false, kv_block_size_given = false, ctx_size_given = false;
};
void adopt_artifact_kv_settings(const std::string& path, KvFlags& f, const char* command);

// Refuses serving settings that contradict the artifact's fingerprint (the
// message names the field and the bake command). Success without an
// artifact. Called before the weights go to the device, so it fails fast.
Status check_artifact_settings(const ModelSource& src, const std::string& kv_type,
                               int kv_block_size, int ctx_size, const std::string& backend_name);

// Restores the baked prefix blocks into the engine (which must not be
// started yet) and marks "prefixes_restored". Without an artifact, or with
// the prefix cache off, it only says so. When every block went in, *longest
// (if given) receives the tokens of the longest restored chain, for the
// warm-up to run a request on it.
Status restore_artifact_prefixes(const ModelSource& src, engine::Engine& eng, bool prefix_cache_on,
                                 StartupTimeline* timeline, std::vector<int32_t>* longest = nullptr);

// The texts of the baked prompts (each chain of blocks, decoded), learned for
// completions (BOS added by the tokenizer) and chat (the template writes
// it) requests. Null when none could be learned (e.g. a SentencePiece
// vocabulary).
std::unique_ptr<KnownPrefixes> learn_baked_prompts(const Tokenizer& tok, const engine::PrefixBlocks& blocks);

}  // namespace kiln::cli
