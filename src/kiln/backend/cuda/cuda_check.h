// CUDA_CHECK: aborts with file:line when a CUDA call fails (a broken
// invariant: expected failures such as out-of-memory return a Status instead).
#pragma once

#include <cuda_runtime.h>

#include <cstdio>
#include <cstdlib>

#define CUDA_CHECK(expr)                                                              \
  do {                                                                                \
    cudaError_t kiln_cuda_err_ = (expr);                                              \
    if (kiln_cuda_err_ != cudaSuccess) {                                              \
      std::fprintf(stderr, "kiln: CUDA error %s: %s (%s:%d)\n", #expr,                \
                   cudaGetErrorString(kiln_cuda_err_), __FILE__, __LINE__);            \
      std::abort();                                                                   \
    }                                                                                 \
  } while (0)

// After a launch: catches bad configurations at the launch site.
#define CUDA_CHECK_LAUNCH() CUDA_CHECK(cudaGetLastError())
