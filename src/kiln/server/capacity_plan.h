// Start-up capacity plan: how many KV blocks the memory budget buys, how
// many full-context sequences that is, and the rule-of-thumb concurrency for
// Cloud Run (GUIDE §6): instances x parallel + instances x ideal batch size,
// with the ideal batch size from `kiln bench --streams ... --json-out` lines
// ({"test":"streams<N>","tokens_per_s":X}) or an estimate marked as such.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "kiln/core/status.h"

namespace kiln::server {

struct BenchPoint {
  int32_t streams = 0;
  double tokens_per_s = 0;
};

// Reads the streams<N> lines of a bench --json-out file (other lines are
// skipped). Fails when the file can't be read or holds no streams line.
Result<std::vector<BenchPoint>> read_bench_results(const std::string& path);
Result<std::vector<BenchPoint>> parse_bench_results(const std::string& text);

struct IdealBatch {
  int32_t size = 1;
  bool estimated = true;
  std::string how;  // one line: where the number comes from
};
// The smallest measured batch reaching 90% of the peak decode throughput;
// without measurements, an estimate of --parallel (the engine never decodes
// more sequences together).
IdealBatch ideal_batch_size(std::span<const BenchPoint> points, int32_t n_parallel);

struct MemoryPlanInput {
  uint64_t device_total = 0;   // bytes of device memory (CPU: RAM)
  uint64_t weight_bytes = 0;   // weights resident on the device
  uint64_t scratch_bytes = 0;  // activations and workspaces, with margin
  double gpu_memory_fraction = 0.9;
  std::optional<uint64_t> kv_memory;  // --kv-memory: the KV pool's size outright
  uint64_t kv_bytes_per_block = 0;
  int32_t block_size = 16;
  int32_t ctx_size = 4096;
  int32_t n_parallel = 8;
  // Cap the pool at 2 x parallel full contexts (beyond that it only serves
  // the prefix cache): right for a CPU host, whose RAM has other uses; a GPU
  // gives the whole budget to KV.
  bool cap_to_need = false;
};

struct MemoryPlan {
  uint64_t budget_bytes = 0;  // fraction x total (or --kv-memory)
  uint64_t kv_bytes = 0;      // n_blocks x bytes per block
  int32_t n_blocks = 0;
  int64_t kv_tokens = 0;       // n_blocks x block_size
  int32_t blocks_per_seq = 0;  // blocks one full-context sequence needs
  int32_t full_ctx_seqs = 0;   // sequences of --ctx-size the pool holds at once
  std::string kv_limited_by;   // "--kv-memory", "memory budget", "cap: 2 x parallel x ctx"
};

// K and V bytes of one position over all layers (a block is block_size of them).
uint64_t kv_bytes_per_token(const MemoryPlanInput& in);

// Fails with what to change when not even one full-context sequence fits.
Result<MemoryPlan> plan_memory(const MemoryPlanInput& in);

struct ConcurrencyAdvice {
  int32_t recommended = 0;  // parallel + ideal batch (one model instance)
  IdealBatch ideal;
  std::string limited_by;  // what bounds the number most
};
ConcurrencyAdvice advise_concurrency(const MemoryPlan& plan, int32_t n_parallel,
                                     const IdealBatch& ideal);

// The lines printed at start-up.
std::string format_plan(const MemoryPlanInput& in, const MemoryPlan& plan,
                        const ConcurrencyAdvice& advice, int32_t max_concurrency);

std::string format_bytes(uint64_t b);

}  // namespace kiln::server
