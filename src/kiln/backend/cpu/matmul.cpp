// matmul(): the reference path (exact dequantization, double accumulation),
// the fast path's run-time ISA choice, activation quantization and the split
// of output rows over the thread pool.
#include "kiln/backend/cpu/matmul.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <new>
#include <string_view>
#include <vector>

#include "kiln/backend/cpu/matmul_kernels.h"
#include "kiln/core/assert.h"
#include "kiln/core/threadpool.h"
#include "kiln/quant/quant.h"

namespace kiln::cpu {

KernelCounters& kernel_counters() {
  static KernelCounters counters;
  return counters;
}

namespace detail {

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::avx512vnni:
      return "avx512vnni";
    case Isa::avx2:
      return "avx2";
    default:
      return "scalar";
  }
}

Isa detect_isa() {
#if defined(__x86_64__) || defined(__i386__)
  // __builtin_cpu_supports also checks that the OS saves the AVX / AVX-512 state.
  static const Isa best = [] {
    __builtin_cpu_init();
    const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
                      __builtin_cpu_supports("f16c");
    const bool avx512 = avx2 && __builtin_cpu_supports("avx512f") &&
                        __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
                        __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vnni");
    return avx512 ? Isa::avx512vnni : avx2 ? Isa::avx2 : Isa::scalar;
  }();
  return best;
#else
  return Isa::scalar;
#endif
}

Isa active_isa() {
  Isa isa = detect_isa();
  if (const char* cap = std::getenv("KILN_CPU_ISA")) {
    const std::string_view c(cap);
    if (c == "scalar")
      isa = Isa::scalar;
    else if (c == "avx2")
      isa = std::min(isa, Isa::avx2);
    // anything else (e.g. "avx512vnni"): no cap
  }
  return isa;
}

ActFormat act_format(DType t) {
  switch (t) {
    case DType::Q4_0:
    case DType::Q4_1:
    case DType::Q5_0:
    case DType::Q5_1:
    case DType::Q8_0:
      return ActFormat::q8_32;
    case DType::Q4_K:
    case DType::Q5_K:
    case DType::Q6_K:
      return ActFormat::q8_256;
    default:
      return ActFormat::f32;
  }
}

void check_args(const MatmulArgs& a) {
  const auto& info = dtype_info(a.w_type);
  KILN_ASSERT_MSG(info.supported, "matmul: weight type has no CPU kernel");
  KILN_ASSERT(a.n_out >= 0 && a.n_in >= 0 && a.n_batch >= 0);
  KILN_ASSERT_MSG(a.n_in % info.block_elems == 0,
                  "matmul: n_in must be a multiple of the block size");
  KILN_ASSERT((a.w && a.x && a.y) || a.n_out == 0 || a.n_batch == 0 || a.n_in == 0);
}

namespace {

const KernelSet& kernel_set(Isa isa) {
  switch (isa) {
    case Isa::avx512vnni:
      return kernels_avx512();
    case Isa::avx2:
      return kernels_avx2();
    default:
      return kernels_scalar();
  }
}

// Runs fn(task) for task in [0, n_tasks) on the pool, or inline without one.
template <class Fn>
void run_tasks(ThreadPool* pool, int64_t n_tasks, const Fn& fn) {
  if (pool && pool->size() > 1 && n_tasks > 1) {
    pool->parallel_for(n_tasks, [&](int64_t task, int) { fn(task); });
  } else {
    for (int64_t t = 0; t < n_tasks; ++t) fn(t);
  }
}

// Output rows per task: several tasks per thread so dynamic hand-out evens
// out the load, a multiple of 4 (the SIMD row tile), not so small that
// per-task set-up dominates, and for batches few enough that the task's
// weights (~256 KB) stay in L2 while every activation tile passes over them.
int64_t rows_per_task(int64_t n_out, int64_t n_batch, size_t w_stride, int n_threads) {
  const int64_t l2_rows = std::clamp<int64_t>(
      int64_t((size_t(256) << 10) / std::max<size_t>(w_stride, 1)) / 4 * 4, 16, 256);
  const int64_t cap = n_batch == 1 ? (n_threads <= 1 ? std::max<int64_t>(n_out, 1) : 64) : l2_rows;
  if (n_threads <= 1) return cap;
  const int64_t target_tasks = int64_t(n_threads) * (n_batch == 1 ? 16 : 8);
  const int64_t rows = round_up(std::max<int64_t>(n_out / target_tasks, 1), 4);
  return std::clamp<int64_t>(rows, 4, cap);
}

void matmul_reference(const MatmulArgs& a, ThreadPool* pool) {
  const size_t w_stride = row_bytes(a.w_type, a.n_in);
  const int n_threads = pool ? pool->size() : 1;
  const int64_t rows = rows_per_task(a.n_out, 2, w_stride, n_threads);
  const int64_t n_tasks = (a.n_out + rows - 1) / rows;
  run_tasks(pool, n_tasks, [&](int64_t task) {
    std::vector<float> w(size_t(a.n_in));  // one dequantized weight row
    const int64_t r1 = std::min(a.n_out, (task + 1) * rows);
    for (int64_t r = task * rows; r < r1; ++r) {
      quant::dequantize_row(a.w_type, static_cast<const uint8_t*>(a.w) + size_t(r) * w_stride,
                            w.data(), a.n_in);
      for (int64_t b = 0; b < a.n_batch; ++b) {
        const float* x = a.x + b * a.n_in;
        double acc = 0;  // plain left-to-right order: the oracle needs no cleverness
        for (int64_t i = 0; i < a.n_in; ++i) acc += double(w[size_t(i)]) * double(x[i]);
        a.y[b * a.n_out + r] = float(acc);
      }
    }
  });
}

struct AlignedFree {
  void operator()(uint8_t* p) const { ::operator delete[](p, std::align_val_t(64)); }
};

}  // namespace

void matmul_fast_at(Isa isa, const MatmulArgs& a, ThreadPool* pool) {
  KILN_ASSERT_MSG(isa <= detect_isa(), "matmul: ISA level not supported by this CPU");
  check_args(a);
  kernel_counters().fast_calls[size_t(a.w_type) & 63].fetch_add(1, std::memory_order_relaxed);
  if (a.n_out == 0 || a.n_batch == 0) return;
  if (a.n_in == 0) {
    for (int64_t i = 0; i < a.n_out * a.n_batch; ++i) a.y[i] = 0.0f;
    return;
  }
  const KernelSet& ks = kernel_set(isa);
  const TileFn tile = ks.tile(a.w_type);
  KILN_ASSERT_MSG(tile != nullptr, "matmul: no fast kernel for this weight type");

  TileArgs t;
  t.w_stride = row_bytes(a.w_type, a.n_in);
  t.n_batch = a.n_batch;
  t.n_in = a.n_in;
  t.ldy = a.n_out;
  const ActFormat fmt = act_format(a.w_type);
  t.act_layout = act_layout(fmt, a.n_in);
  t.act_stride = t.act_layout.row_bytes;

  const int n_threads = pool ? pool->size() : 1;
  // Quantized activations, once per call: [n_batch] rows of act_layout.
  std::unique_ptr<uint8_t[], AlignedFree> owned;
  uint8_t* act = nullptr;
  if (fmt == ActFormat::f32) {
    t.act = reinterpret_cast<const uint8_t*>(a.x);
  } else {
    const size_t bytes = t.act_stride * size_t(a.n_batch);
    if (a.scratch) {
      act = a.scratch->get(bytes);
    } else {
      owned.reset(static_cast<uint8_t*>(::operator new[](bytes, std::align_val_t(64))));
      act = owned.get();
    }
    // A few rows per task, about 4 tasks per thread (batch 1: inline).
    const int64_t per_task = std::max<int64_t>(1, a.n_batch / (4 * int64_t(n_threads)));
    run_tasks(pool, (a.n_batch + per_task - 1) / per_task, [&](int64_t task) {
      const int64_t b1 = std::min(a.n_batch, (task + 1) * per_task);
      for (int64_t b = task * per_task; b < b1; ++b)
        ks.quantize(a.w_type, a.x + b * a.n_in, act + size_t(b) * t.act_stride, a.n_in);
    });
    t.act = act;
  }

  const int64_t rows = rows_per_task(a.n_out, a.n_batch, t.w_stride, n_threads);
  run_tasks(pool, (a.n_out + rows - 1) / rows, [&](int64_t task) {
    TileArgs tt = t;
    const int64_t r0 = task * rows;
    tt.n_rows = std::min(a.n_out, r0 + rows) - r0;
    tt.w = static_cast<const uint8_t*>(a.w) + size_t(r0) * t.w_stride;
    tt.y = a.y + r0;
    tile(tt);
  });
}

}  // namespace detail

void MatmulScratch::Free::operator()(uint8_t* p) const {
  ::operator delete[](p, std::align_val_t(64));
}

uint8_t* MatmulScratch::get(size_t bytes) {
  if (bytes > capacity_) {
    buf_.reset(static_cast<uint8_t*>(::operator new[](bytes, std::align_val_t(64))));
    capacity_ = bytes;
  }
  return buf_.get();
}

void matmul(MatmulPath path, const MatmulArgs& args, ThreadPool* pool) {
  if (path == MatmulPath::fast) return detail::matmul_fast_at(detail::active_isa(), args, pool);
  detail::check_args(args);
  kernel_counters().ref_calls[size_t(args.w_type) & 63].fetch_add(1, std::memory_order_relaxed);
  if (args.n_out == 0 || args.n_batch == 0) return;
  detail::matmul_reference(args, pool);
}

const char* fast_isa() {
  return detail::isa_name(detail::active_isa());
}

}  // namespace kiln::cpu
