// Streams a byte range of a file into device memory as fast as the disk (or
// page cache) and the PCIe link allow: several threads pread fixed-size chunks
// into their own pair of pinned buffers (double-buffered: one is being read
// while the other's async copy runs) and copy each on their own stream.
// Used for the baked weight image, whose data section is copied verbatim.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <future>
#include <memory>
#include <span>
#include <string>

#include "kiln/core/status.h"

namespace kiln::cuda {

struct FileUploadOptions {
  int device = 0;
  int threads = 8;              // reader threads, each with its own stream
  size_t chunk_bytes = 16 << 20;  // bytes per pread / copy
  bool direct = false;          // O_DIRECT: bypass the page cache (cold files, no double caching)
  // Called on the reader thread for every chunk right after it is read
  // (chunk i = bytes [offset + i * chunk_bytes, ...)), while its copy runs:
  // lets a checksum ride along with the only read of the file. An error
  // stops the upload and is returned.
  std::function<Status(uint64_t i, std::span<const uint8_t> bytes)> on_chunk;
  // A file still being written (serve --model URL): called on the reader
  // thread before each chunk is read, with its file range; it blocks until
  // those bytes are in place. An error stops the upload and is returned.
  // Empty for a complete file. Chunks are claimed in file order, so the
  // readers follow the download.
  std::function<Status(uint64_t offset, uint64_t length)> wait_range;
  // Pinned (page-locked, CUDA-registered) host memory to use for the
  // readers' buffers when it holds them all (staging_bytes_needed);
  // otherwise the upload allocates its own.
  uint8_t* staging = nullptr;
  size_t staging_bytes = 0;
};

// Pinned bytes upload_file_range stages through with these options.
size_t staging_bytes_needed(const FileUploadOptions& opt, int threads);

// Page-locked host memory for upload_file_range, made off the start-up
// path: the pages are touched first (this needs no CUDA context, so it runs
// while the context is being created), then registered with CUDA (fast for
// touched memory; cudaHostAlloc of the same size pins as it allocates and
// took 0.115 s for 256 MiB on an H100 host).
class HostStaging {
 public:
  // Null when the memory cannot be mapped or registered (the upload then
  // allocates its own). Registers only once `go` is ready (the caller's
  // context set-up is done).
  static std::unique_ptr<HostStaging> prepare(size_t bytes, int device, std::shared_future<void> go);
  ~HostStaging();
  HostStaging(const HostStaging&) = delete;
  HostStaging& operator=(const HostStaging&) = delete;
  uint8_t* data() const { return p_; }
  size_t bytes() const { return bytes_; }

 private:
  HostStaging(uint8_t* p, size_t bytes) : p_(p), bytes_(bytes) {}
  uint8_t* p_;
  size_t bytes_;
};

struct FileUploadStats {
  uint64_t bytes = 0;
  double seconds = 0;       // wall time of the whole upload
  double setup_seconds = 0; // of which allocating the pinned staging buffers
  double read_seconds = 0;  // summed over threads: time inside pread
  int threads = 0;
};

// Copies bytes [offset, offset + n) of `path` to `dst` (device memory).
// Returns when every byte is on the device.
Result<FileUploadStats> upload_file_range(const std::string& path, uint64_t offset, uint64_t n,
                                          void* dst, const FileUploadOptions& opt);

}  // namespace kiln::cuda
