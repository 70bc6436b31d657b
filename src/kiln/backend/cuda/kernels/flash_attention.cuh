// Prefill attention on tensor cores (FlashAttention-2 style) for batches
// whose rows come in runs of one sequence: a block takes a tile of up to 64
// consecutive query rows (4 warps x 16 / group rows) and one KV head, loads
// each K/V tile of 64 positions once into shared memory for all of them, and
// computes Q K^T and P V with mma.sync (f16 inputs, f32 accumulation) and an
// online softmax. The long context of a few rows is split over blocks and the
// splits merged as in attention.cuh. The per-row kernel (attention.cuh) reads
// a sequence's K/V once per query row: 19 rows over a 2.5k-token cached
// preamble cost ~150 us per layer there.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <vector>

#include "kiln/backend/cuda/kernels/attention.cuh"

namespace kiln::cuda {

// Consecutive batch rows [row0, row0 + n) of one sequence at consecutive positions.
struct AttnTile {
  int32_t row0 = 0;
  int32_t n = 0;
};

// The shapes this kernel covers: f16 K/V, head size 64 or 128, 1/2/4/8 query heads
// per KV head, all batch rows (rows[i] == i).
bool flash_supported(const AttentionArgs& a);

// Tiles over batch rows from their sequences and positions (host arrays of
// n rows); at most rows_per_tile(a) rows each.
int flash_rows_per_tile(const AttentionArgs& a);
std::vector<AttnTile> flash_tiles(const int32_t* seq, const int32_t* pos, int64_t n, int max_rows);

// Loads the kernel's instantiations (CUDA loads kernels lazily at first
// launch); safe on any thread.
void flash_prime();

// Floats of split partials attention_flash needs (0: none).
size_t flash_workspace_floats(const AttentionArgs& a, int n_tiles, int n_sms);

// out[i] for every batch row i (a.n_rows rows, a.rows unused): tiles in
// device memory. a.out16 is honoured; a.outq must be empty.
void attention_flash(const AttentionArgs& a, const AttnTile* tiles, int n_tiles, float* work, int n_sms,
                     cudaStream_t stream);

}  // namespace kiln::cuda
