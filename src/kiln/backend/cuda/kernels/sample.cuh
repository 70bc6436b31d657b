// Sampling on the device: temperature, top-k, top-p and min-p over each
// logits row, with the host sampler's rules (engine/sampler.cpp) and a
// uniform draw the host supplies, so a sampled decode step, like a greedy
// one, copies token ids rather than rows of n_vocab floats to the host.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace kiln::cuda {

// One row to sample: backend.h DeviceSampleRow as the kernel reads it.
struct SampleRow {
  int32_t row;        // logits row
  int32_t top_k;      // <= 0 or >= n_vocab: off (1 is argmax's job: declined)
  float temperature;  // > 0
  float top_p;        // (0, 1]
  float min_p;        // [0, 1]
  float unused;
  double u;  // [0, 1): the sequence's next draw (Sampler::peek_uniform)
};

// Most tokens the kernel sorts for one row: a top_k above it, or a top-p
// candidate set above it (a flat distribution), makes it decline the row.
constexpr int kSampleMaxCandidates = 4096;

// out[j] (device) = the token Sampler::sample would choose from
// logits[rows[j].row][0 .. n_vocab) (rows[] in device memory, logits rows
// n_vocab apart) with draw rows[j].u, or -1 where the kernel declines the
// row and leaves it to the host: every logit -inf or NaN (the host draws
// nothing then), a +inf logit, top_k 1 or above kSampleMaxCandidates, too
// many top-p candidates, or parameters out of range. One block per row.
void sample_rows(const float* logits, int64_t n_vocab, const SampleRow* rows, int32_t n_rows,
                 int32_t* out, cudaStream_t stream);

// y[i] = the sampler's exp for x <= 0 (engine/sampler.h exp_nonpos), as the
// kernel computes its weights: for the test that holds them to the host's
// bit for bit.
void sample_exp_nonpos(const float* x, float* y, int64_t n, cudaStream_t stream);

// Loads the sampling kernels now: CUDA loads a kernel lazily at its first
// launch, which would otherwise fall on the first sampled request.
void sample_prime();

}  // namespace kiln::cuda
