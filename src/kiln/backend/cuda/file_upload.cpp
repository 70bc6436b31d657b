// Parallel file → GPU streaming (see file_upload.h).
#include "kiln/backend/cuda/file_upload.h"

#include <cuda_runtime.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <deque>
#include <mutex>
#include <thread>
#include <vector>

namespace kiln::cuda {

namespace {

constexpr uint64_t kDirectAlign = 4096;  // O_DIRECT offset/length/buffer alignment

double now_s() {
  using namespace std::chrono;
  return duration<double>(steady_clock::now().time_since_epoch()).count();
}

// One reader: its file descriptor, stream and two pinned buffers (slices of
// one allocation shared by all readers).
struct Reader {
  int fd = -1;
  cudaStream_t stream = nullptr;
  uint8_t* buf[2] = {nullptr, nullptr};
  cudaEvent_t done[2] = {nullptr, nullptr};
  bool used[2] = {false, false};
  double read_s = 0;

  ~Reader() {
    if (stream) cudaStreamSynchronize(stream);
    for (auto& e : done)
      if (e) cudaEventDestroy(e);
    if (stream) cudaStreamDestroy(stream);
    if (fd >= 0) close(fd);
  }
};

// The readers' pinned staging memory, freed after every reader is gone.
struct PinnedBlock {
  void* p = nullptr;
  ~PinnedBlock() {
    if (p) cudaFreeHost(p);
  }
};

}  // namespace

std::unique_ptr<HostStaging> HostStaging::prepare(size_t bytes, int device, std::shared_future<void> go) {
  if (bytes == 0) return nullptr;
  void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
  if (p == MAP_FAILED) return nullptr;
  go.wait();
  if (cudaSetDevice(device) != cudaSuccess || cudaHostRegister(p, bytes, cudaHostRegisterDefault) != cudaSuccess) {
    (void)cudaGetLastError();
    munmap(p, bytes);
    return nullptr;
  }
  return std::unique_ptr<HostStaging>(new HostStaging(static_cast<uint8_t*>(p), bytes));
}

HostStaging::~HostStaging() {
  cudaHostUnregister(p_);
  munmap(p_, bytes_);
}

size_t staging_bytes_needed(const FileUploadOptions& opt, int threads) {
  return (opt.chunk_bytes + 2 * kDirectAlign) * 2 * size_t(std::max(threads, 1));
}

Result<FileUploadStats> upload_file_range(const std::string& path, uint64_t offset, uint64_t n,
                                          void* dst, const FileUploadOptions& opt) {
  FileUploadStats st;
  st.bytes = n;
  if (n == 0) return st;
  const double t0 = now_s();
  // Chunks stay exactly chunk_bytes when a checker relies on their bounds.
  const size_t chunk = opt.on_chunk ? opt.chunk_bytes
                                    : std::max<size_t>(opt.chunk_bytes / kDirectAlign * kDirectAlign, kDirectAlign);
  const uint64_t n_chunks = (n + chunk - 1) / chunk;
  const int n_threads = int(std::clamp<uint64_t>(uint64_t(std::max(opt.threads, 1)), 1, n_chunks));
  st.threads = n_threads;
  // O_DIRECT reads whole aligned pages around the chunk; the slack is copied past.
  const size_t buf_bytes = chunk + 2 * kDirectAlign;

  // Every reader's two buffers are slices of one pinned block: the caller's
  // (prepared off the start-up path) or one allocation made here, before any
  // reader starts (concurrent cudaHostAlloc calls serialize in the driver).
  PinnedBlock pinned;
  uint8_t* base = opt.staging;
  const size_t need = buf_bytes * 2 * size_t(n_threads);
  if (base == nullptr || opt.staging_bytes < need) {
    if (cudaSetDevice(opt.device) != cudaSuccess ||
        cudaHostAlloc(&pinned.p, need, cudaHostAllocDefault) != cudaSuccess)
      return make_error(fmt::format("cannot allocate {} MiB of pinned host memory for loading",
                                    need >> 20));
    base = static_cast<uint8_t*>(pinned.p);
  }
  st.setup_seconds = now_s() - t0;
  std::deque<Reader> readers(static_cast<size_t>(n_threads));  // not movable: deque
  for (size_t t = 0; t < readers.size(); ++t)
    for (int k = 0; k < 2; ++k) readers[t].buf[k] = base + (2 * t + size_t(k)) * buf_bytes;
  std::atomic<uint64_t> next{0};
  std::mutex err_mu;
  std::string first_err;
  auto fail = [&](std::string e) {
    std::lock_guard lk(err_mu);
    if (first_err.empty()) first_err = std::move(e);
    next.store(n_chunks);  // stop the others
  };

  auto work = [&](Reader& rd) {
    if (cudaSetDevice(opt.device) != cudaSuccess) return fail("cudaSetDevice failed");
    int flags = O_RDONLY | O_CLOEXEC;
    if (opt.direct) flags |= O_DIRECT;
    rd.fd = open(path.c_str(), flags);
    if (rd.fd < 0) return fail(fmt::format("cannot open {}: {}", path, std::strerror(errno)));
    if (!opt.direct) posix_fadvise(rd.fd, off_t(offset), off_t(n), POSIX_FADV_SEQUENTIAL);
    if (cudaStreamCreateWithFlags(&rd.stream, cudaStreamNonBlocking) != cudaSuccess)
      return fail("cudaStreamCreate failed");
    for (auto& e : rd.done)
      if (cudaEventCreateWithFlags(&e, cudaEventDisableTiming) != cudaSuccess)
        return fail("cudaEventCreate failed while loading");
    std::string err;
    for (int k = 0;; k ^= 1) {
      const uint64_t i = next.fetch_add(1);
      if (i >= n_chunks) break;
      const uint64_t begin = offset + i * chunk;
      const uint64_t len = std::min<uint64_t>(chunk, offset + n - begin);
      if (opt.wait_range)
        if (Status st = opt.wait_range(begin, len); !st) return fail(st.message());
      // Wait until this buffer's previous copy has left it.
      if (rd.used[k] && cudaEventSynchronize(rd.done[k]) != cudaSuccess)
        return fail("a host-to-device copy failed while loading");
      uint8_t* buf = rd.buf[k];
      uint64_t read_off = begin, read_len = len, skew = 0;
      if (opt.direct) {
        read_off = begin / kDirectAlign * kDirectAlign;
        skew = begin - read_off;
        read_len = (skew + len + kDirectAlign - 1) / kDirectAlign * kDirectAlign;
      }
      const double r0 = now_s();
      // With O_DIRECT the last page may run past the end of the file: only
      // the bytes we need must arrive.
      size_t got = 0;
      while (got < skew + len) {
        const ssize_t r = pread(rd.fd, buf + got, read_len - got, off_t(read_off + got));
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) {
          err = r < 0 ? std::strerror(errno) : "unexpected end of file";
          return fail(fmt::format("reading {} at byte {}: {}", path, read_off + got, err));
        }
        got += size_t(r);
      }
      rd.read_s += now_s() - r0;
      if (cudaMemcpyAsync(static_cast<uint8_t*>(dst) + (begin - offset), buf + skew, len,
                          cudaMemcpyHostToDevice, rd.stream) != cudaSuccess ||
          cudaEventRecord(rd.done[k], rd.stream) != cudaSuccess)
        return fail("cudaMemcpyAsync failed while loading weights");
      rd.used[k] = true;
      // A checksum reads the pinned buffer while the DMA reads it too.
      if (opt.on_chunk)
        if (Status st = opt.on_chunk(i, {buf + skew, size_t(len)}); !st) return fail(st.message());
    }
    if (cudaStreamSynchronize(rd.stream) != cudaSuccess) fail("a host-to-device copy failed");
  };

  std::vector<std::thread> threads;
  for (int t = 1; t < n_threads; ++t) threads.emplace_back(work, std::ref(readers[size_t(t)]));
  work(readers[0]);
  for (auto& t : threads) t.join();
  if (!first_err.empty()) return make_error(first_err);
  for (const auto& rd : readers) st.read_seconds += rd.read_s;
  st.seconds = now_s() - t0;
  return st;
}

}  // namespace kiln::cuda
