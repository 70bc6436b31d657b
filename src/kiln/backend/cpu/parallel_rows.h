// for_rows: a row loop spread over the ThreadPool in contiguous chunks, for
// the CPU forward pass's per-row ops (norms, RoPE, KV writes, SwiGLU).
#pragma once

#include <algorithm>
#include <cstdint>

#include "kiln/core/threadpool.h"

namespace kiln::cpu {

// Runs fn(row) for every row in [0, n); larger batches are split into
// contiguous chunks over the pool. Only a pointer to the context is captured,
// so the std::function the pool takes stores it inline (no allocation).
template <class F>
void for_rows(ThreadPool& pool, int64_t n, const F& fn) {
  if (n < 8 || pool.size() == 1) {
    for (int64_t i = 0; i < n; ++i) fn(i);
    return;
  }
  struct Ctx {
    const F* fn;
    int64_t n;
    int64_t n_chunks;
  } ctx{&fn, n, std::min<int64_t>(n, int64_t(pool.size()) * 4)};
  pool.parallel_for(ctx.n_chunks, [&ctx](int64_t c, int) {
    const int64_t begin = ctx.n * c / ctx.n_chunks, end = ctx.n * (c + 1) / ctx.n_chunks;
    for (int64_t i = begin; i < end; ++i) (*ctx.fn)(i);
  });
}

}  // namespace kiln::cpu
