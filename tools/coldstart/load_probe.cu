// Where does the weight copy of a cold start spend its time? Measures each
// leg of kiln's loader on its own, on the machine at hand:
//   h2d-pinned      8 streams copying pinned 16 MiB buffers (no reads)
//   pread-pinned    8 threads pread-ing the file into pinned buffers (no copies)
//   pread+h2d       both, double-buffered: what kiln's loader does (no hash)
//   pread+h2d+xxh3  the same with the per-chunk XXH3 the artifact check does
//   pread-pageable  8 threads pread-ing into ordinary (pre-faulted) memory,
//                   which could start before the CUDA context exists
//   h2d-pageable    8 streams copying from that ordinary memory
//   register        cudaHostRegister of that memory, then h2d from it
// Usage: load_probe FILE [GiB to use, default all]
// Build: nvcc -O2 -std=c++17 -I<dir with xxhash.h> load_probe.cu -o load_probe -lpthread
#include <cuda_runtime.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define XXH_INLINE_ALL
#include <xxhash.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <thread>
#include <vector>

namespace {

constexpr int kThreads = 8;
constexpr size_t kChunk = 16u << 20;

double now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

void check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) {
    std::fprintf(stderr, "%s: %s\n", what, cudaGetErrorString(e));
    std::exit(1);
  }
}

// Runs body(thread, chunk index) over n_chunks chunks claimed in order by kThreads threads.
void parallel(size_t n_chunks, const std::function<void(int, size_t)>& body) {
  std::atomic<size_t> next{0};
  std::vector<std::thread> ts;
  for (int t = 0; t < kThreads; ++t)
    ts.emplace_back([&, t] {
      for (size_t i; (i = next.fetch_add(1)) < n_chunks;) body(t, i);
    });
  for (auto& t : ts) t.join();
}

void report(const char* name, size_t bytes, double s) {
  std::printf("[ probe ] %-16s %6.2f GB in %.3f s = %6.2f GB/s\n", name, double(bytes) / 1e9, s,
              double(bytes) / 1e9 / s);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: load_probe FILE [GiB]\n");
    return 2;
  }
  const int fd = open(argv[1], O_RDONLY);
  struct stat sb {};
  if (fd < 0 || fstat(fd, &sb) != 0) {
    std::perror(argv[1]);
    return 1;
  }
  size_t bytes = size_t(sb.st_size);
  if (argc > 2) bytes = std::min(bytes, size_t(std::atof(argv[2]) * double(1ull << 30)));
  bytes = bytes / kChunk * kChunk;
  const size_t n_chunks = bytes / kChunk;

  double t0 = now();
  check(cudaFree(nullptr), "context");
  std::printf("[ probe ] context %.3f s\n", now() - t0);
  void* dev = nullptr;
  check(cudaMalloc(&dev, bytes), "cudaMalloc");
  auto* d = static_cast<uint8_t*>(dev);
  std::vector<cudaStream_t> st(kThreads);
  std::vector<void*> pin(2 * kThreads);
  std::vector<cudaEvent_t> ev(2 * kThreads);
  for (int t = 0; t < kThreads; ++t) check(cudaStreamCreateWithFlags(&st[t], cudaStreamNonBlocking), "stream");
  for (size_t k = 0; k < pin.size(); ++k) {
    check(cudaHostAlloc(&pin[k], kChunk, cudaHostAllocDefault), "cudaHostAlloc");
    std::memset(pin[k], 1, kChunk);
    check(cudaEventCreateWithFlags(&ev[k], cudaEventDisableTiming), "event");
  }
  auto sync_all = [&] {
    for (auto s : st) check(cudaStreamSynchronize(s), "sync");
  };
  auto pread_all = [&](uint8_t* buf, size_t off) {
    for (size_t got = 0; got < kChunk;) {
      const ssize_t r = pread(fd, buf + got, kChunk - got, off_t(off + got));
      if (r <= 0) {
        std::perror("pread");
        std::exit(1);
      }
      got += size_t(r);
    }
  };
  // Warm the page cache (and report how fast a first pass is).
  {
    t0 = now();
    std::vector<std::vector<uint8_t>> scratch(kThreads, std::vector<uint8_t>(kChunk));
    parallel(n_chunks, [&](int t, size_t i) { pread_all(scratch[t].data(), i * kChunk); });
    report("warm-pass", bytes, now() - t0);
  }

  for (int rep = 0; rep < 2; ++rep) {
    t0 = now();
    parallel(n_chunks, [&](int t, size_t i) {
      check(cudaMemcpyAsync(d + i * kChunk, pin[2 * t + (i & 1)], kChunk, cudaMemcpyHostToDevice, st[t]), "copy");
    });
    sync_all();
    report("h2d-pinned", bytes, now() - t0);
  }
  for (int rep = 0; rep < 2; ++rep) {
    t0 = now();
    parallel(n_chunks, [&](int t, size_t i) { pread_all(static_cast<uint8_t*>(pin[2 * t]), i * kChunk); });
    report("pread-pinned", bytes, now() - t0);
  }
  for (int hash = 0; hash < 2; ++hash)
    for (int rep = 0; rep < 2; ++rep) {
      std::vector<int> k(kThreads, 0);
      std::vector<char> used(pin.size(), 0);
      std::atomic<uint64_t> sink{0};
      t0 = now();
      parallel(n_chunks, [&](int t, size_t i) {
        const int b = 2 * t + k[t];
        k[t] ^= 1;
        if (used[b]) check(cudaEventSynchronize(ev[b]), "event sync");
        auto* buf = static_cast<uint8_t*>(pin[b]);
        pread_all(buf, i * kChunk);
        check(cudaMemcpyAsync(d + i * kChunk, buf, kChunk, cudaMemcpyHostToDevice, st[t]), "copy");
        check(cudaEventRecord(ev[b], st[t]), "record");
        used[b] = 1;
        if (hash) sink += XXH3_64bits(buf, kChunk);
      });
      sync_all();
      report(hash ? "pread+h2d+xxh3" : "pread+h2d", bytes, now() - t0);
    }

  // Every chunk of `src` to the device, 8 streams, `reps` timed passes.
  auto copy_from = [&](const uint8_t* src, const char* name, int reps) {
    for (int rep = 0; rep < reps; ++rep) {
      t0 = now();
      parallel(n_chunks, [&](int t, size_t i) {
        check(cudaMemcpyAsync(d + i * kChunk, src + i * kChunk, kChunk, cudaMemcpyHostToDevice, st[t]), "copy");
      });
      sync_all();
      report(name, bytes, now() - t0);
    }
  };

  // Ordinary memory, as a loader could fill it before the context exists.
  t0 = now();
  auto* host = static_cast<uint8_t*>(mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
  if (host == MAP_FAILED) {
    std::perror("mmap");
    return 1;
  }
  madvise(host, bytes, MADV_HUGEPAGE);
  parallel(n_chunks, [&](int, size_t i) { pread_all(host + i * kChunk, i * kChunk); });
  report("pread-pageable", bytes, now() - t0);  // first touch included
  t0 = now();
  parallel(n_chunks, [&](int, size_t i) { pread_all(host + i * kChunk, i * kChunk); });
  report("pread-pageable2", bytes, now() - t0);
  copy_from(host, "h2d-pageable", 2);
  t0 = now();
  check(cudaMemcpy(d, host, bytes, cudaMemcpyHostToDevice), "one copy");
  report("h2d-pageable-1", bytes, now() - t0);
  t0 = now();
  check(cudaHostRegister(host, bytes, cudaHostRegisterDefault), "cudaHostRegister");
  report("register", bytes, now() - t0);
  copy_from(host, "h2d-registered", 2);
  t0 = now();
  check(cudaMemcpy(d, host, bytes, cudaMemcpyHostToDevice), "one copy");
  report("h2d-registered-1", bytes, now() - t0);
  check(cudaHostUnregister(host), "unregister");
  munmap(host, bytes);

  // The file's own pages, mapped and registered read-only (no copy on the host).
  t0 = now();
  auto* map = static_cast<uint8_t*>(mmap(nullptr, bytes, PROT_READ, MAP_SHARED | MAP_POPULATE, fd, 0));
  if (map == MAP_FAILED) {
    std::perror("mmap file");
    return 1;
  }
  report("mmap-populate", bytes, now() - t0);
  t0 = now();
  const cudaError_t re = cudaHostRegister(map, bytes, cudaHostRegisterReadOnly);
  if (re != cudaSuccess) {
    std::printf("[ probe ] register-file failed: %s\n", cudaGetErrorString(re));
  } else {
    report("register-file", bytes, now() - t0);
    copy_from(map, "h2d-file-pages", 1);
    cudaHostUnregister(map);
  }
  munmap(map, bytes);
  return 0;
}
