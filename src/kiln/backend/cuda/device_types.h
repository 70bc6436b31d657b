// Plain structs shared by the CUDA backend's host code and its kernels: a
// weight matrix in device memory, quantized activations, the paged KV layout
// and the per-step batch metadata. No CUDA headers here, so host-only
// translation units (backend, tests) can include it.
#pragma once

#include <cstddef>
#include <cstdint>

#include "kiln/backend/backend.h"
#include "kiln/core/dtype.h"

// Member functions used on both sides are marked host+device under nvcc.
#ifdef __CUDACC__
#define KILN_HD __host__ __device__
#else
#define KILN_HD
#endif

namespace kiln::cuda {

// Most batch rows one step may have: the per-row kernels (norms, SwiGLU,
// attention, argmax) put the rows in the grid's y dimension, 65,535 at most.
constexpr int64_t kMaxBatchRows = 65535;

// A 2-D weight on the device, y = W x maps n_in -> n_out.
// Layouts:
//  * raw (every type): GGUF's own rows, [n_out][row_stride bytes];
//  * repacked q4_0: data = quants [n_out][n_in/2] (block b's 16 bytes at 16*b,
//    byte j = element j low nibble | element j+16 high nibble, as in GGUF),
//    scales = [n_out][n_in/32] f16; the split keeps every quant load 16-byte
//    aligned and coalesced;
//  * repacked q8_0: data = int8 [n_out][n_in], scales as above.
struct DeviceMatrix {
  DType type = DType::F32;
  int64_t n_in = 0;
  int64_t n_out = 0;
  const uint8_t* data = nullptr;    // see above
  const uint16_t* scales = nullptr; // repacked types only: f16 bits [n_out][n_in/32]
  size_t row_stride = 0;            // bytes per row of `data`

  KILN_HD bool repacked() const { return scales != nullptr; }
};

// Activations quantized to two 8-bit planes in blocks of 32 (for the dp4a
// matvec): x[r][i] ~= d1 * q1[r][i] + d2 * q2[r][i], where q1 is the 8-bit
// grid of x and q2 the 8-bit grid of what q1 misses (~16-bit accuracy; one
// plane alone, as llama.cpp uses, moves the random reference models' logits
// by 0.2-0.3 in log-probability). ds[r][i/32] = (d1, sum q1, d2, sum q2),
// sums exact in float.
struct ActQ8 {
  int8_t* q = nullptr;   // [n_rows][ld] grid plane
  int8_t* q2 = nullptr;  // [n_rows][ld] residual plane
  float* ds = nullptr;   // [n_rows][ld/32][4]
  int64_t ld = 0;        // elements per row (multiple of 32)
};

// Paged KV cache, same layout as the CPU backend's (cpu/kv_cache.h):
// per layer K: [n_blocks][n_head_kv][block_size][k_row bytes], then V likewise.
struct KvLayout {
  uint8_t* base = nullptr;
  KvType type = KvType::f16;
  int32_t block_size = 16;
  int32_t n_blocks = 0;
  size_t k_row = 0, v_row = 0;                  // bytes of one head's row
  size_t k_head_stride = 0, v_head_stride = 0;  // block_size rows
  size_t k_block_stride = 0, v_block_stride = 0;
  size_t v_offset = 0;                          // V after K within a layer
  size_t layer_stride = 0;

  KILN_HD uint8_t* k_layer(int64_t l) const { return base + size_t(l) * layer_stride; }
  KILN_HD uint8_t* v_layer(int64_t l) const { return base + size_t(l) * layer_stride + v_offset; }
};

// Per-step batch description in device memory (int32 arrays).
struct BatchMeta {
  const int32_t* tokens = nullptr;  // [n_tokens]
  const int32_t* pos = nullptr;     // [n_tokens]
  const int32_t* seq = nullptr;     // [n_tokens] sequence index of each row
  const int32_t* bt_off = nullptr;  // [n_seqs] offset of each sequence's table in bt
  const int32_t* bt = nullptr;      // block tables, concatenated
  int32_t n_tokens = 0;
  // [n_seqs] first position of each sequence written in this step (its
  // lowest row position): the cache rows below it were written by earlier
  // steps, so attention may read them before the previous kernel ends.
  // nullptr: no such reads.
  const int32_t* new0 = nullptr;
};

}  // namespace kiln::cuda
