// The CUDA backend: the Llama-family forward pass on one NVIDIA GPU, behind
// the same Backend interface as the CPU one (backend.h).
//
// Weights are uploaded once in their stored (quantized) form; q4_0 / q8_0 are
// split into quants + scales for aligned loads. One or two rows (decode) run
// fused dequantize-matvec kernels that read each weight byte once; q4_0 / q8_0
// batches of 3-256 rows (many streams, short prefills) run the tensor-core
// kernel (kernels/mma.cuh); larger chunks and other types dequantize to f16
// tiles and call cuBLAS. Attention runs over the paged KV cache (f32 / f16 /
// fp8 / q8_0 elements): per row for decode, on tensor cores for prefill runs
// of one sequence (kernels/flash_attention.cuh). Greedy and plain sampled
// rows pick their token on the device (argmax, cuda_sample.h).
//
// This header needs no CUDA headers: the implementation is behind Impl.
#pragma once

#include <functional>
#include <span>
#include <utility>
#include <memory>

#include "kiln/backend/backend.h"

namespace kiln::cuda {

struct CudaOptions {
  int device = 0;
  // Batches of at most this many rows use the fused matvec kernels (0..8;
  // KILN_MATVEC_MAX_ROWS overrides). -1: automatic, 2 when every weight has
  // a tensor-core kernel (from 3 rows it is faster on an H100,
  // bench/NOTES.md), else 8.
  int matvec_max_rows = -1;
  // Larger batches up to this many rows use the tensor-core kernels for
  // q4_0 / q8_0 weights (kernels/mma.cuh: each weight byte read once per 64
  // rows); beyond it, or for other types, dequantize + cuBLAS. 0: never.
  // KILN_MMA_MAX_ROWS in the environment overrides it.
  int mma_max_rows = 256;
  // Replay decode steps (matvec-sized batches, every row wanting logits) as
  // CUDA graphs. KILN_CUDA_GRAPHS=0 in the environment turns them off.
  bool use_graphs = true;
  // Prefill rows (runs of one sequence) take the tensor-core attention
  // (kernels/flash_attention.cuh) where it covers the shapes (f16 K/V, head
  // size 128). KILN_FLASH_ATTN=0 in the environment turns it off.
  bool flash_attention = true;
  // Fewest rows in a step for that attention (KILN_FLASH_MIN_ROWS overrides):
  // a short prompt over a long cached prefix (a prefix-cache hit) reads its
  // K/V once per tile instead of once per row.
  int flash_min_rows = 4;
  // Loading a baked weight image (see backend/weight_image.h): reader
  // threads, bytes per read, and O_DIRECT for files not in the page cache.
  int load_threads = 8;
  size_t load_chunk_bytes = size_t(16) << 20;
  bool load_direct = false;
  // A weight image will be loaded (serve --model ARTIFACT): from create()
  // on, a background thread prepares the loader's pinned staging buffers
  // (touched before the context exists, then registered with CUDA). Pinning
  // fresh memory with cudaHostAlloc took 0.115 s for 256 MiB on an H100
  // host, on the start-up path; registering touched memory runs at ~28 GB/s.
  bool prepare_image_staging = false;
};

// Checksums a baked weight image's data section as the loader reads it (the
// file is then read once): chunk i covers [offset + i * chunk_bytes, ...)
// within the body_bytes after offset, which must be the GGUF data section.
struct ImageChunkCheck {
  uint64_t offset = 0;
  uint64_t body_bytes = 0;
  uint64_t chunk_bytes = 0;
  std::function<Status(uint64_t i, std::span<const uint8_t> bytes)> verify;
};

// How the last load_weights went (for the start-up breakdown).
struct CudaLoadReport {
  bool image = false;        // a baked image streamed in one pass
  uint64_t bytes = 0;        // bytes copied from the file
  double upload_seconds = 0; // wall time of reading + copying
  int threads = 0;
  double setup_seconds = 0;  // of upload_seconds: allocating the pinned staging buffers
  // create(), for the breakdown: the driver's start (the first CUDA call of
  // the process), the primary context, then the device query, stream and
  // helper threads.
  double driver_seconds = 0, context_seconds = 0, setup_seconds_after_context = 0;
};

// Usable CUDA devices; 0 when there is no driver or no GPU (never fails).
int device_count();

class CudaBackend final : public Backend {
 public:
  static Result<std::unique_ptr<CudaBackend>> create(const CudaOptions& options);
  ~CudaBackend() override;

  std::string name() const override { return "cuda"; }
  std::string device_name() const override;
  Status load_weights(const model::Model& model) override;
  const CudaLoadReport& load_report() const;
  // The next load_weights of a weight image verifies it with `check` while
  // streaming (and fails on any mismatch) instead of trusting the file.
  void set_image_check(ImageChunkCheck check);
  Status init_kv_cache(const KvCacheConfig& cfg) override;
  Status reserve_batch(int32_t max_rows, int32_t max_ctx) override;
  const KvCacheConfig& kv_config() const override;
  Status forward(const Batch& batch) override;
  Status synchronize() override;
  int32_t n_logits() const override;
  int32_t argmax(int32_t i) const override;
  // Temperature / top-k / top-p / min-p on the GPU (cuda_sample.cpp).
  bool supports_sampling() const override { return true; }
  Status sample_rows(std::span<const DeviceSampleRow> rows) override;
  int32_t sampled(int32_t row) const override;
  std::span<const float> logits(int32_t i) const override;
  Status copy_kv_block(int32_t src, int32_t dst) override;
  // The device KV layout is the canonical one (device_types.h KvLayout), so
  // block I/O is one copy per layer for K and one for V.
  Status read_kv_block(int32_t block, std::span<uint8_t> out) const override;
  Status write_kv_block(int32_t block, std::span<const uint8_t> in) override;
  Status write_kv_blocks(std::span<const KvBlockWrite> writes) override;
  MemoryReport memory() const override;

  // Measured DRAM copy bandwidth would need a run; this is the datasheet-style
  // figure from the device attributes (bytes/s), for reports.
  double peak_memory_bandwidth() const;

  struct Impl;

 private:
  explicit CudaBackend(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace kiln::cuda
