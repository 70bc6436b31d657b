// On-disk block layouts of GGUF's quantized types, byte-exact with GGUF files
// in the wild (little-endian; f16 scales stored as raw uint16 bits).
//
//   q4_0  [d:f16][qs:16 B]            x = d * (nibble - 8)       32 elems, 18 B
//   q4_1  [d:f16][m:f16][qs:16 B]     x = d * nibble + m         32 elems, 20 B
//   q5_0  [d:f16][qh:4 B][qs:16 B]    x = d * (5-bit - 16)       32 elems, 22 B
//   q5_1  [d][m][qh:4 B][qs:16 B]     x = d * 5-bit + m          32 elems, 24 B
//   q8_0  [d:f16][qs:32 x int8]       x = d * q                  32 elems, 34 B
//   Nibble layout of 32-element blocks: qs[j] low nibble = element j, high
//   nibble = element j + 16; q5 high bits: bit j of qh is bit 4 of element j.
//
//   q4_k  [d:f16][dmin:f16][scales:12 B][qs:128 B]               256 elems, 144 B
//   q5_k  [d][dmin][scales:12 B][qh:32 B][qs:128 B]              256 elems, 176 B
//   q6_k  [ql:128 B][qh:64 B][scales:16 x int8][d:f16]           256 elems, 210 B
//   q8_k  [d:f32][qs:256 x int8][bsums:16 x int16]  (activations only) 292 B
//   k-quant super-blocks hold 8 sub-blocks of 32 (q4_k/q5_k: 6-bit scale and
//   min per sub-block packed in 12 bytes) or 16 of 16 (q6_k: int8 scales).
#pragma once

#include <cstdint>

namespace kiln::quant {

constexpr int QK4_0 = 32, QK4_1 = 32, QK5_0 = 32, QK5_1 = 32, QK8_0 = 32, QK8_1 = 32;
constexpr int QK_K = 256;
constexpr int K_SCALE_SIZE = 12;

struct block_q4_0 {
  uint16_t d;
  uint8_t qs[QK4_0 / 2];
};
struct block_q4_1 {
  uint16_t d, m;
  uint8_t qs[QK4_1 / 2];
};
struct block_q5_0 {
  uint16_t d;
  uint8_t qh[4];
  uint8_t qs[QK5_0 / 2];
};
struct block_q5_1 {
  uint16_t d, m;
  uint8_t qh[4];
  uint8_t qs[QK5_1 / 2];
};
struct block_q8_0 {
  uint16_t d;
  int8_t qs[QK8_0];
};
// Activation block for the *_1 weight types: s = d * sum(qs) lets the kernel
// apply the weight's min term without touching the activations again.
struct block_q8_1 {
  uint16_t d, s;
  int8_t qs[QK8_1];
};
struct block_q4_K {
  uint16_t d, dmin;
  uint8_t scales[K_SCALE_SIZE];
  uint8_t qs[QK_K / 2];
};
struct block_q5_K {
  uint16_t d, dmin;
  uint8_t scales[K_SCALE_SIZE];
  uint8_t qh[QK_K / 8];
  uint8_t qs[QK_K / 2];
};
struct block_q6_K {
  uint8_t ql[QK_K / 2];
  uint8_t qh[QK_K / 4];
  int8_t scales[QK_K / 16];
  uint16_t d;
};
struct block_q8_K {
  float d;
  int8_t qs[QK_K];
  int16_t bsums[QK_K / 16];  // sum of each group of 16 qs
};

static_assert(sizeof(block_q4_0) == 18);
static_assert(sizeof(block_q4_1) == 20);
static_assert(sizeof(block_q5_0) == 22);
static_assert(sizeof(block_q5_1) == 24);
static_assert(sizeof(block_q8_0) == 34);
static_assert(sizeof(block_q8_1) == 36);
static_assert(sizeof(block_q4_K) == 144);
static_assert(sizeof(block_q5_K) == 176);
static_assert(sizeof(block_q6_K) == 210);
static_assert(sizeof(block_q8_K) == 292);

}  // namespace kiln::quant
