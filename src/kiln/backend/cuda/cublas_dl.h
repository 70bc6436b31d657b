// cuBLAS, opened on first use (dlopen) instead of linked into the binary.
//
// Why: a linked libcublas pulls in libcublasLt (0.5 GB), whose static
// initialization runs before main() on every start: 44 % of `kiln --version`
// on a 2-core CPU (0.45 s against 0.02 s for the CPU-only build) and most of
// the 0.06 s from exec to main on an H100 host, on the start-up path of a
// server that rarely needs cuBLAS (q4_0 / q8_0 batches run on kiln's own
// kernels). The CUDA backend opens it on its background threads (cuBLAS
// handle, kernel warm-up) while the weights upload.
//
// Only the four calls kiln makes are resolved; each returns
// CUBLAS_STATUS_NOT_INITIALIZED when the library could not be opened (the
// caller's cuBLAS error path then reports it).
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include "kiln/core/status.h"

namespace kiln::cuda::blas {

// Opens libcublas.so.<major of the headers> once (thread-safe); the error
// names the library and what to install.
Status open();

cublasStatus_t create(cublasHandle_t* handle);
cublasStatus_t destroy(cublasHandle_t handle);
cublasStatus_t set_stream(cublasHandle_t handle, cudaStream_t stream);
cublasStatus_t gemm_ex(cublasHandle_t handle, cublasOperation_t transa, cublasOperation_t transb,
                       int m, int n, int k, const void* alpha, const void* a, cudaDataType a_type,
                       int lda, const void* b, cudaDataType b_type, int ldb, const void* beta,
                       void* c, cudaDataType c_type, int ldc, cublasComputeType_t compute,
                       cublasGemmAlgo_t algo);

}  // namespace kiln::cuda::blas
