// The GPU weight image: how the CUDA backend lays a model's weights out in
// device memory, described without a GPU. Two users share this one plan so
// they can never disagree:
//  * `kiln bake --target-arch sm_*` (CPU only) writes weights.bin so that its
//    data section *is* the image: matrices pre-merged (Q|K|V, gate|up) and
//    q4_0/q8_0 pre-split into quants and scales, norms in f32;
//  * the CUDA backend binds its matrices to offsets in that image after
//    copying the data section to the GPU in one streamed pass.
// A GGUF file in this layout keeps every tensor's name, type and shape (so it
// still binds as a model), but the bytes of merged/split tensors are only
// meaningful as part of the image: other backends must refuse it (see
// `image_layout`).
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "kiln/core/dtype.h"
#include "kiln/core/status.h"

namespace kiln::gguf {
class File;
class Writer;
}  // namespace kiln::gguf
namespace kiln::model {
class Model;
struct Matrix;
struct Vector;
}  // namespace kiln::model

namespace kiln::image {

// Metadata key naming the layout of a weights file; absent = plain GGUF.
inline constexpr const char* kLayoutKey = "kiln.weights.layout";
// Value for the CUDA image. Bump the suffix whenever the image changes; the
// loader refuses any other value.
inline constexpr const char* kCudaLayout = "cuda-image-v1";
// Tensor alignment of image files: every merged run must be contiguous, and
// 256 bytes keeps every device pointer aligned for vector loads.
inline constexpr uint32_t kImageAlignment = 256;

// The layout a model file declares ("" for plain GGUF).
std::string image_layout(const gguf::File& file);

// q4_0 / q8_0: stored split, [n_out][quants] then [n_out][n_in/32] f16 scales.
bool planar_type(DType t);

// One device matrix: consecutive matrices of equal type and input width whose
// rows are stacked (a merged projection). In an image the parts are adjacent
// in the file, in order, and their bytes together form the run's layout.
struct Run {
  std::vector<const model::Matrix*> parts;
  DType type = DType::F32;
  int64_t n_in = 0;
  int64_t n_out = 0;
  bool planar = false;
  size_t bytes() const;        // total bytes (equals the parts' GGUF bytes)
  size_t quant_bytes() const;  // planar: bytes of the quants plane
  size_t row_stride() const;   // bytes per row of the data plane
};

// Splits a group of matrices sharing an input (Q,K,V or gate,up) into runs.
// Neighbours merge only when they have the same type and width *and* the
// earlier one's bytes are a multiple of kImageAlignment, so an image file
// can hold the run without padding inside it.
std::vector<Run> split_runs(const std::vector<const model::Matrix*>& ms);

// Writes the run's device layout to dst (run.bytes() bytes): raw rows
// concatenated, or for planar types all quants then all scales.
void write_run(const Run& run, std::span<uint8_t> dst);

// Adds every tensor of `model` to `w` in image order with image bytes, sets
// kLayoutKey and the alignment. 1-D tensors become f32. Metadata other than
// the layout key is the caller's business.
Status add_image_tensors(const model::Model& model, gguf::Writer& w);

}  // namespace kiln::image
