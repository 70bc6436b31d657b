// Checks a weight image's body chunks on background threads while the GPU
// loader cannot run yet (the CUDA context is still being created: 0.2-0.3 s
// on an H100 host), so the loader skips the chunks already checked.
//
// Why: hashing inside the loader's read → copy pipeline costs a third of its
// rate. On an H100 host (bench/NOTES.md, load probe) 8 threads read and copy
// 4.5 GB at 29-31 GB/s, and at 20-21 GB/s with XXH3 of each chunk in the
// same threads, while the context-creation window has idle cores and an idle
// memory bus. A chunk is either checked here, before the loader starts, or by
// the loader as it reads it: every byte served is checked once, and a
// corrupt chunk fails the start either way.
//
// A chunk whose pages are all in the page cache is hashed through the
// file's mapping (no copy); any other is read with one large pread into the
// thread's buffer, so for a cold file the disk reads start before the
// context exists and leave the chunks in the page cache for the loader.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "kiln/artifact/checksum.h"
#include "kiln/core/status.h"

namespace kiln::gguf {
class MappedFile;
}

namespace kiln::artifact {

class EarlyVerifier {
 public:
  // `file` is the whole mapped file (it must outlive this object) and `in`
  // its trailer; `path` names it in messages and is opened for the reads
  // of chunks not in the page cache. Starts `threads` threads that take body
  // chunks in file order.
  EarlyVerifier(std::span<const uint8_t> file, Integrity in, std::string path, int threads);
  // The same for the file at `path`, mapped and its trailer read here (one
  // small read), so the checks (and a cold disk's reads) start at once:
  // `kiln serve` calls this first thing, before the CUDA driver starts.
  // Errors (no such file, a damaged trailer) are left for the full open to
  // report: the result is then null.
  static std::unique_ptr<EarlyVerifier> start(const std::string& path, int threads);
  ~EarlyVerifier();
  EarlyVerifier(const EarlyVerifier&) = delete;
  EarlyVerifier& operator=(const EarlyVerifier&) = delete;

  // Stops taking chunks and waits for those being hashed. Returns the first
  // mismatch found (the file is corrupt: refuse it), else success.
  Status stop();
  // After stop(): chunk i was hashed here and matched.
  bool verified(uint64_t i) const;
  uint64_t n_verified() const;
  uint64_t n_chunks() const { return n_chunks_; }
  // The trailer's digest: chunk i means the same bytes to another reader
  // only when its Integrity has this digest.
  const std::string& digest() const { return in_.digest; }
  // Every thread has run out of chunks (or met a mismatch): stop() would
  // not wait.
  bool finished() const { return running_.load() == 0; }

 private:
  void run();

  std::unique_ptr<gguf::MappedFile> map_;  // start()'s own mapping of the file
  std::span<const uint8_t> file_;
  const Integrity in_;
  std::string name_;
  int fd_ = -1;  // for chunks not in the page cache; -1: hash through the mapping
  uint64_t n_chunks_ = 0;
  std::unique_ptr<std::atomic<bool>[]> ok_;  // [n_chunks] set when chunk i matched
  std::atomic<uint64_t> next_{0};
  std::atomic<bool> stopping_{false};
  std::atomic<int> running_{0};
  std::mutex err_mu_;
  std::string first_err_;
  std::vector<std::thread> threads_;
};

}  // namespace kiln::artifact
