// Batched linear layers on tensor cores for repacked q4_0 / q8_0 weights
// (W4A16 / W8A16): each weight byte is read from memory once per 64 batch
// rows, dequantized to f16 in registers and multiplied with f16 activations by
// mma.sync (m16n8k16, f32 accumulation). Covers the batch sizes between the
// dp4a matvec (<= 8 rows) and prefill chunks, where dequantizing the whole
// weight to f16 for cuBLAS would move ~3.5x the weight bytes every step.
//
// Numerics: the f16 weights are exactly the values the dequantize + cuBLAS
// path uses (f16(d * (q - 8)), one rounding), activations are f16, products
// summed in f32: the same arithmetic as that path up to summation order. The
// K range may be split over blocks (split-K) whose partial sums are added in
// a fixed order by a second kernel, so results are deterministic.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "kiln/backend/cuda/device_types.h"

namespace kiln::cuda {

// Loads every instantiation of the kernels (CUDA loads a kernel lazily at its
// first launch, ~ms for the first request that needs it) and sizes their
// launch plans; safe on any thread.
void mma_prime();

// w can take the tensor-core path: repacked q4_0 / q8_0 with n_in % 128 == 0.
bool mma_supported(const DeviceMatrix& w);

// Floats of split-K partial sums linear_mma needs for this shape (0: none).
// force_splits > 0 (benchmarks only) overrides the planned split-K count.
size_t mma_partial_floats(const DeviceMatrix& w, int64_t n_rows, int n_sms, int force_splits = 0);

// y[j][0..n_out) (= or +=) W x_j (+ bias) for j < n_rows. x16: f16 rows
// [n_rows][ldx] (ldx % 8 == 0, 16-byte aligned); partial: at least
// mma_partial_floats(w, n_rows, n_sms) floats.
void linear_mma(const DeviceMatrix& w, const uint16_t* x16, int64_t ldx, int64_t n_rows, float* y,
                int64_t ldy, const float* bias, bool accumulate, float* partial, int n_sms,
                cudaStream_t stream, int force_splits = 0);

}  // namespace kiln::cuda
