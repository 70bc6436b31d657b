// Tensor element types with GGUF's numeric ids and block geometry. Names are
// GGUF's lowercase spellings (f32 f16 bf16 q8_0 q4_0 q4_1 q5_0 q5_1 q4_k q5_k
// q6_k); types kiln reads but cannot compute with are still known by name so
// errors can say what a file contains.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string_view>

namespace kiln {

enum class DType : uint32_t {
  F32 = 0,
  F16 = 1,
  Q4_0 = 2,
  Q4_1 = 3,
  Q5_0 = 6,
  Q5_1 = 7,
  Q8_0 = 8,
  Q8_1 = 9,
  Q2_K = 10,
  Q3_K = 11,
  Q4_K = 12,
  Q5_K = 13,
  Q6_K = 14,
  Q8_K = 15,
  IQ2_XXS = 16,
  IQ2_XS = 17,
  IQ3_XXS = 18,
  IQ1_S = 19,
  IQ4_NL = 20,
  IQ3_S = 21,
  IQ2_S = 22,
  IQ4_XS = 23,
  I8 = 24,
  I16 = 25,
  I32 = 26,
  I64 = 27,
  F64 = 28,
  IQ1_M = 29,
  BF16 = 30,
  TQ1_0 = 34,
  TQ2_0 = 35,
};

struct DTypeInfo {
  std::string_view name;   // GGUF's lowercase name
  uint32_t block_elems;    // elements per block (1 for plain types)
  uint32_t block_bytes;    // bytes per block
  bool supported;          // kiln can dequantize / compute with it
};

// nullopt for ids GGUF has never assigned: the reader reports them as unknown.
std::optional<DTypeInfo> dtype_info(uint32_t id);
const DTypeInfo& dtype_info(DType t);  // t must be a known id

inline std::string_view dtype_name(DType t) { return dtype_info(t).name; }
// Parses a GGUF lowercase name ("q4_k", "f16", ...); case-insensitive.
std::optional<DType> dtype_from_name(std::string_view name);

// Bytes of one row of n elements; n must be a multiple of block_elems.
inline size_t row_bytes(DType t, int64_t n) {
  const auto& i = dtype_info(t);
  return size_t(n / i.block_elems) * i.block_bytes;
}

}  // namespace kiln
