// Every CUDA call whose spelling or signature differs between the CUDA 12.x and
// 13.x toolkits lives here, so the rest of the backend compiles with both
// (release images for the L4 are built with 12.x; development machines have 13).
// scripts/check-cuda-api fails CI when such an API is used anywhere else.
//
// What changed in 13 that matters to kiln:
//  * cudaDeviceProp::clockRate / memoryClockRate were removed: read them with
//    cudaDeviceGetAttribute (available in 12 as well).
//  * cuMemPrefetchAsync / cuMemAdvise (and the runtime's cudaMemPrefetchAsync /
//    cudaMemAdvise) take a location struct instead of a device id; kiln uses no
//    managed memory, so it calls neither.
//  * cuCtxCreate gained a params argument; kiln uses the runtime's primary context.
//  * cudaGraphInstantiate's flags form is the only one in both (12.0+).
//  * Programmatic dependent launch (launch_pdl) needs 12.3+ inside graphs.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <utility>

namespace kiln::cuda::compat {

// Peak clocks in kHz (0 when the device does not report them).
inline int sm_clock_khz(int device) {
  int v = 0;
  if (cudaDeviceGetAttribute(&v, cudaDevAttrClockRate, device) != cudaSuccess) v = 0;
  return v;
}
inline int memory_clock_khz(int device) {
  int v = 0;
  if (cudaDeviceGetAttribute(&v, cudaDevAttrMemoryClockRate, device) != cudaSuccess) v = 0;
  return v;
}
inline int memory_bus_width_bits(int device) {
  int v = 0;
  if (cudaDeviceGetAttribute(&v, cudaDevAttrGlobalMemoryBusWidth, device) != cudaSuccess) v = 0;
  return v;
}

// Theoretical DRAM bandwidth in bytes/s from the attributes (DDR: x2).
inline double peak_memory_bandwidth(int device) {
  return 2.0 * double(memory_clock_khz(device)) * 1e3 * double(memory_bus_width_bits(device)) / 8.0;
}

// Instantiates a captured graph (same signature in 12.x and 13.x).
inline cudaError_t graph_instantiate(cudaGraphExec_t* exec, cudaGraph_t graph) {
  return cudaGraphInstantiate(exec, graph, 0);
}

// Launches `kernel` with programmatic dependent launch allowed: on sm_90+ it
// may be scheduled while the previous kernel of the stream is finishing, and
// must call pdl_wait() (common.cuh) before touching anything earlier kernels
// wrote. cudaLaunchKernelEx and the attribute exist in 12.x and 13.x; devices
// before sm_90 ignore the attribute and serialize as usual. Captured into CUDA
// graphs as programmatic edges (CUDA 12.3+).
#ifndef KILN_CUDA_PDL
#define KILN_CUDA_PDL 1  // +3.4% decode on H100 (bench/NOTES.md); 0 turns it off
#endif

template <class... KArgs, class... Args>
inline cudaError_t launch_pdl(void (*kernel)(KArgs...), dim3 grid, dim3 block, size_t smem,
                              cudaStream_t stream, Args&&... args) {
  cudaLaunchConfig_t cfg{};
  cfg.gridDim = grid;
  cfg.blockDim = block;
  cfg.dynamicSmemBytes = smem;
  cfg.stream = stream;
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr[0].val.programmaticStreamSerializationAllowed = 1;
  cfg.attrs = attr;
  cfg.numAttrs = KILN_CUDA_PDL ? 1 : 0;
  return cudaLaunchKernelEx(&cfg, kernel, std::forward<Args>(args)...);
}

}  // namespace kiln::cuda::compat
