// Targets of `kiln bake --target-arch` and the weight layout each writes into
// weights.bin. "gguf": GGUF's own block layout, tensors as in the source (the
// CPU backend's, and a plain GGUF for any reader). "cuda-image-v1": the CUDA
// backend's device image (backend/weight_image.h: merged Q|K|V and gate|up,
// q4_0/q8_0 split into quant and scale planes), which the CUDA loader copies
// to the GPU in one streamed pass and the CPU backend refuses. A new layout is
// a new LayoutWriter here plus the loader that reads it.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <string_view>

#include "kiln/core/status.h"

namespace kiln::gguf {
class Writer;
}
namespace kiln::model {
class Model;
}

namespace kiln::artifact {

// Adds every tensor of `model` (already requantized) to `w` in the target's
// layout: may reorder bytes, change types, merge or split tensors, and set
// the alignment. Must be deterministic (weights.bin is byte-for-byte
// reproducible) and depend on nothing but the model.
using LayoutWriter = std::function<Status(const model::Model& model, gguf::Writer& w)>;

struct TargetInfo {
  std::string_view name;    // "cpu", "sm_89", "sm_90", "sm_120"
  std::string_view layout;  // "gguf", "cuda-image-v1"
  LayoutWriter write;
};

std::span<const TargetInfo> targets();
const TargetInfo* find_target(std::string_view name);
std::string target_names();  // "cpu sm_89 sm_90 sm_120" for messages

// The identity layout: every tensor of the model's file as stored, in file
// order, 4096-byte aligned (page-aligned reads straight into pinned memory).
Status write_gguf_layout(const model::Model& model, gguf::Writer& w);

}  // namespace kiln::artifact
