// The cold-start floor: a process that only creates a CUDA context and exits.
// `kiln serve` cannot be ready sooner than this on the same machine.
#include <cuda_runtime.h>
#include <cstdio>

int main() {
  if (cudaFree(nullptr) != cudaSuccess) {
    std::fprintf(stderr, "no CUDA context\n");
    return 1;
  }
  return 0;
}
