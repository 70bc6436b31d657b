// weights.bin of a baked artifact: a GGUF v3 file (kiln's model loader reads
// it as is) holding the source model's metadata unchanged (tokenizer,
// config), the tensors in the target's layout (weight_layout.h: plain GGUF
// blocks 4096-byte aligned for cpu, the CUDA device image for sm_*), the
// kiln.artifact.* keys below, and the integrity trailer (checksum.h) after
// the last tensor.
//
//   kiln.artifact.format_version  u32     1
//   kiln.artifact.target          string  --target-arch (cpu, sm_89, sm_90, sm_120)
//   kiln.artifact.layout          string  weight layout name ("gguf", "cuda-image-v1";
//                                         the image also sets kiln.weights.layout)
//   kiln.artifact.model_hash      string  content hash of the source GGUF file
//   kiln.artifact.weight_types    string  --quant preset, or "source"
//   kiln.artifact.tensor_types    string  e.g. "f32:13,q4_0:14" (tensor count per type, by name)
//
// Byte-for-byte reproducible: the same source, --quant and --target-arch give
// the same file (no time, host, thread count, kiln version, warm prompts or
// KV settings in it), so container image layers stay identical.
#pragma once

#include <cstdint>
#include <functional>
#include <string>

#include "kiln/artifact/checksum.h"
#include "kiln/core/status.h"

namespace kiln {
class ThreadPool;
}
namespace kiln::gguf {
class File;
}

namespace kiln::artifact {

inline constexpr uint32_t kWeightsFormatVersion = 1;

struct WeightsBakeOptions {
  std::string source;  // GGUF model to read
  std::string out;     // weights.bin to write (atomically, then the trailer)
  std::string quant;   // preset name (quant/mix.h); empty: keep the source's types
  bool pure = false;   // --quant without the per-tensor mix
  std::string target = "sm_89";
  std::function<void(const std::string&)> progress;  // one line per step; may be empty
};

struct WeightsHeader {
  uint32_t format_version = 0;
  std::string target;
  std::string layout;
  std::string model_hash;
  std::string weight_types;
  std::string tensor_types;
};

struct WeightsBakeResult {
  WeightsHeader header;
  Integrity integrity;
  // A plain GGUF with exactly the served weight values, for the CPU backend
  // to compute warm prompts with (it cannot read the CUDA image): the source,
  // weights.bin itself (cpu target), or the requantized intermediate, which
  // then is `gguf_path_temporary` and the caller removes it.
  std::string gguf_path;
  bool gguf_path_temporary = false;
};

Result<WeightsBakeResult> bake_weights(const WeightsBakeOptions& o, ThreadPool& pool);

// The kiln.artifact.* keys of an opened weights.bin; an error when they are
// missing (not a baked file) or from a newer format.
Result<WeightsHeader> read_weights_header(const gguf::File& f);

}  // namespace kiln::artifact
