// Buffers of the CUDA backend's device sampling (cuda_sample.cpp): the rows
// of one sample_rows() call on their way to the kernel, and the chosen ids
// on their way back. Grown as needed, reused from step to step.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "kiln/backend/cuda/kernels/sample.cuh"
#include "kiln/core/status.h"

namespace kiln::cuda {

struct DeviceSampling {
  SampleRow* rows_host = nullptr;  // [cap] pinned
  int32_t* ids_host = nullptr;     // [cap] pinned
  SampleRow* rows_dev = nullptr;   // [cap]
  int32_t* ids_dev = nullptr;      // [cap]
  size_t cap = 0;
  std::vector<int32_t> by_row;  // [n_logits] token of each logits row from the last call, -1: none

  DeviceSampling() = default;
  DeviceSampling(const DeviceSampling&) = delete;
  DeviceSampling& operator=(const DeviceSampling&) = delete;
  ~DeviceSampling();
  Status reserve(size_t n);  // room for n rows

 private:
  void release();
};

}  // namespace kiln::cuda
