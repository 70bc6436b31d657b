// cuBLAS through dlopen (see cublas_dl.h).
#include "kiln/backend/cuda/cublas_dl.h"

#include <dlfcn.h>
#include <fmt/format.h>

#include <mutex>
#include <string>

namespace kiln::cuda::blas {
namespace {

// The exported names behind cublas_v2.h's macros.
struct Api {
  decltype(&::cublasCreate_v2) create = nullptr;
  decltype(&::cublasDestroy_v2) destroy = nullptr;
  decltype(&::cublasSetStream_v2) set_stream = nullptr;
  // Spelled out: C++ sees an overload of cublasGemmEx (a cudaDataType
  // compute type) beside the exported C function, which takes this one.
  cublasStatus_t (*gemm_ex)(cublasHandle_t, cublasOperation_t, cublasOperation_t, int, int, int,
                            const void*, const void*, cudaDataType, int, const void*, cudaDataType,
                            int, const void*, void*, cudaDataType, int, cublasComputeType_t,
                            cublasGemmAlgo_t) = nullptr;
  std::string error;
};

// The directory of the CUDA runtime this process uses: cuBLAS ships beside it.
std::string cudart_dir() {
  Dl_info info{};
  if (dladdr(reinterpret_cast<void*>(&cudaGetDeviceCount), &info) == 0 || !info.dli_fname) return {};
  const std::string path = info.dli_fname;
  const auto slash = path.rfind('/');
  return slash == std::string::npos ? std::string() : path.substr(0, slash + 1);
}

const Api& api() {
  static Api a;
  static std::once_flag once;
  std::call_once(once, [] {
    const std::string name = fmt::format("libcublas.so.{}", CUBLAS_VER_MAJOR);
    void* lib = dlopen(name.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
      const std::string dir = cudart_dir();
      if (!dir.empty()) lib = dlopen((dir + name).c_str(), RTLD_NOW | RTLD_LOCAL);
    }
    if (!lib) {
      a.error = fmt::format("cannot open {} ({}); install the CUDA {} cuBLAS libraries", name,
                            dlerror(), CUBLAS_VER_MAJOR);
      return;
    }
    a.create = reinterpret_cast<decltype(a.create)>(dlsym(lib, "cublasCreate_v2"));
    a.destroy = reinterpret_cast<decltype(a.destroy)>(dlsym(lib, "cublasDestroy_v2"));
    a.set_stream = reinterpret_cast<decltype(a.set_stream)>(dlsym(lib, "cublasSetStream_v2"));
    a.gemm_ex = reinterpret_cast<decltype(a.gemm_ex)>(dlsym(lib, "cublasGemmEx"));
    if (!a.create || !a.destroy || !a.set_stream || !a.gemm_ex) {
      a.error = fmt::format("{} lacks the cuBLAS functions kiln calls", name);
      a.create = nullptr;
    }
  });
  return a;
}

}  // namespace

Status open() {
  const Api& a = api();
  return a.create ? Status::success() : make_error(a.error);
}

cublasStatus_t create(cublasHandle_t* handle) {
  const Api& a = api();
  return a.create ? a.create(handle) : CUBLAS_STATUS_NOT_INITIALIZED;
}

cublasStatus_t destroy(cublasHandle_t handle) {
  const Api& a = api();
  return a.create ? a.destroy(handle) : CUBLAS_STATUS_NOT_INITIALIZED;
}

cublasStatus_t set_stream(cublasHandle_t handle, cudaStream_t stream) {
  const Api& a = api();
  return a.create ? a.set_stream(handle, stream) : CUBLAS_STATUS_NOT_INITIALIZED;
}

cublasStatus_t gemm_ex(cublasHandle_t handle, cublasOperation_t transa, cublasOperation_t transb,
                       int m, int n, int k, const void* alpha, const void* a_, cudaDataType a_type,
                       int lda, const void* b, cudaDataType b_type, int ldb, const void* beta,
                       void* c, cudaDataType c_type, int ldc, cublasComputeType_t compute,
                       cublasGemmAlgo_t algo) {
  const Api& a = api();
  return a.create ? a.gemm_ex(handle, transa, transb, m, n, k, alpha, a_, a_type, lda, b, b_type,
                              ldb, beta, c, c_type, ldc, compute, algo)
                  : CUBLAS_STATUS_NOT_INITIALIZED;
}

}  // namespace kiln::cuda::blas
