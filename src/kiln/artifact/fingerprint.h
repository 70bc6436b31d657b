// The fingerprint of a baked artifact: everything a restored prefix cache and
// the weights depend on. warm.bin carries it in full; `kiln serve` compares it
// with its own settings and refuses a mismatch with a message naming the
// field, the serving flag and the `kiln bake` command that rebakes.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>

#include "kiln/core/status.h"

namespace kiln::artifact {

struct Fingerprint {
  // weights.bin side (also in its GGUF metadata, kiln.artifact.*)
  std::string model_hash;      // content hash of the source GGUF (checksum.h content_hash)
  std::string weights_digest;  // weights.bin's integrity digest (checksum.h Integrity::digest)
  std::string target;          // --target-arch
  std::string weight_layout;   // the target's layout name ("gguf", "cuda-image-v1")
  std::string weight_types;    // --quant preset, or "source" (types kept)
  // warm.bin side: what the KV blocks were computed in
  std::string kv_type;        // --kv-type
  int32_t kv_block_size = 0;  // --kv-block-size
  int32_t ctx_size = 0;       // --ctx-size
  // For messages only (how to rebake): the source model's file name.
  std::string source_name;
};

nlohmann::json to_json(const Fingerprint& f);
Result<Fingerprint> fingerprint_from_json(const nlohmann::json& j);

// What `kiln serve` runs with. (Whether the backend can read the weight
// layout is its load_weights' call: the CPU backend refuses the CUDA image
// and names --target-arch cpu.)
struct ServeSettings {
  std::string kv_type;
  int32_t kv_block_size = 0;
  int32_t ctx_size = 0;
  std::string backend;  // Backend::name(): "cpu" suggests --target-arch cpu in messages
};

// Success when the artifact can be served with `s`; otherwise the first field
// that differs, e.g. "kv_type: the artifact was baked with --kv-type fp8 but
// kiln serve runs with --kv-type f16; ... rebake: kiln bake --model ... ".
// `dir` is the artifact path for the message.
Status check_serve_settings(const Fingerprint& f, const ServeSettings& s, const std::string& dir);

// The `kiln bake` command line that would produce an artifact for `s` from
// the same source (for messages).
std::string rebake_command(const Fingerprint& f, const ServeSettings& s, const std::string& dir);

}  // namespace kiln::artifact
