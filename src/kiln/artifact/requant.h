// Whole-model requantization shared by `kiln quantize` and `kiln bake
// --quant`: which type each tensor gets (quant/mix.h, llama.cpp's rules) and
// the row-parallel conversion. Deterministic: every row is converted alone,
// so the bytes do not depend on the thread count.
#pragma once

#include <cstdint>
#include <vector>

#include "kiln/core/status.h"
#include "kiln/gguf/gguf.h"
#include "kiln/quant/mix.h"

namespace kiln {
class ThreadPool;
}

namespace kiln::artifact {

// ggml's quantization format version, stored as general.quantization_version
// (2 since the q4/q5/q8 block layouts settled in 2023).
inline constexpr uint32_t kQuantizationVersion = 2;

// What the mix rules need to know about the model as a whole.
quant::MixModel describe_mix_model(const gguf::File& in);

struct QuantPlanEntry {
  const gguf::TensorInfo* tensor = nullptr;
  DType to = DType::F32;  // == tensor->type: copied unchanged
};

// Every tensor's target type under `preset`, decided before any work so an
// unsupported input fails at once (the message names the tensor).
Result<std::vector<QuantPlanEntry>> plan_quantization(const gguf::File& in,
                                                      const quant::QuantPreset& preset, bool pure);

// Converts one tensor's rows to `to`, spread over the pool. Fails when the
// input holds non-finite values (the message names the tensor and row).
Status convert_tensor(ThreadPool& pool, const gguf::TensorInfo& t, DType to,
                      std::vector<uint8_t>& out);

}  // namespace kiln::artifact
