// CPU matrix multiplication over stored (possibly quantized) weights: the one
// entry point the CPU forward pass uses for every linear layer.
//
// Two paths behind one signature:
//  * reference: weights dequantized exactly, float32 activations, double
//    accumulation per dot product — the oracle;
//  * fast: activations quantized per block to 8 bits (q8_0 / q8_1 / q8_K as
//    the weight type requires), integer dot products (AVX2 / AVX-512 /
//    AVX-512 VNNI chosen at run time), multithreaded over output rows.
// Both are batch-invariant: y[b, r] depends only on W row r and x row b,
// never on n_batch or on which thread computed it (fixed reduction order).
#pragma once

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>

#include "kiln/core/dtype.h"

namespace kiln {
class ThreadPool;
}

namespace kiln::cpu {

enum class MatmulPath { reference, fast };

// Reusable 64-byte-aligned storage for the quantized activations of a fast
// matmul call, so steady-state decode and prefill allocate nothing (a large
// per-call allocation is an mmap + page faults every time). One per caller;
// not thread-safe.
class MatmulScratch {
 public:
  uint8_t* get(size_t bytes);  // valid until the next get()

 private:
  struct Free {
    void operator()(uint8_t* p) const;
  };
  std::unique_ptr<uint8_t[], Free> buf_;
  size_t capacity_ = 0;
};

struct MatmulArgs {
  DType w_type = DType::F32;
  const void* w = nullptr;  // [n_out, n_in] rows in w_type, row-major
  int64_t n_out = 0;
  int64_t n_in = 0;          // multiple of w_type's block size
  const float* x = nullptr;  // [n_batch, n_in]
  int64_t n_batch = 0;
  float* y = nullptr;        // [n_batch, n_out]
  MatmulScratch* scratch = nullptr;  // nullptr: the call allocates its own
};

// How often each weight type's fast kernel ran (per call, any batch size):
// tests assert from this that the fast path really ran for every type.
struct KernelCounters {
  std::array<std::atomic<uint64_t>, 64> fast_calls{};  // index = DType id
  std::array<std::atomic<uint64_t>, 64> ref_calls{};
};
KernelCounters& kernel_counters();  // process-wide, read-only diagnostics

void matmul(MatmulPath path, const MatmulArgs& args, ThreadPool* pool);

// The ISA the fast path dispatches to on this CPU: "avx512vnni", "avx2" or
// "scalar"; KILN_CPU_ISA=avx2|scalar in the environment caps it (testing).
const char* fast_isa();

}  // namespace kiln::cpu
