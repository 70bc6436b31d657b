// Background chunk checks of a weight image (see early_verify.h).
#include "kiln/artifact/early_verify.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "kiln/gguf/mapped_file.h"

namespace kiln::artifact {

namespace {

// Every page of [p, p + len) is in the page cache (a hash through the
// mapping then costs no disk wait).
bool resident(const uint8_t* p, uint64_t len) {
  const uintptr_t page = uintptr_t(sysconf(_SC_PAGESIZE));
  const uintptr_t a = reinterpret_cast<uintptr_t>(p) / page * page;
  const size_t span = size_t(reinterpret_cast<uintptr_t>(p) + len - a);
  std::vector<unsigned char> vec((span + page - 1) / page);
  if (mincore(reinterpret_cast<void*>(a), span, vec.data()) != 0) return false;
  for (unsigned char v : vec)
    if (!(v & 1)) return false;
  return true;
}

}  // namespace

std::unique_ptr<EarlyVerifier> EarlyVerifier::start(const std::string& path, int threads) {
  auto map = gguf::MappedFile::open(path);
  if (!map) return nullptr;
  auto in = read_integrity_trailer((*map)->bytes(), path);
  if (!in) return nullptr;
  auto v = std::make_unique<EarlyVerifier>((*map)->bytes(), std::move(*in), path, threads);
  v->map_ = std::move(*map);  // the mapping itself stays where it is
  return v;
}

EarlyVerifier::EarlyVerifier(std::span<const uint8_t> file, Integrity in, std::string path,
                             int threads)
    : file_(file), in_(std::move(in)), name_(std::move(path)), n_chunks_(in_.chunk_xxh3.size()) {
  fd_ = open(name_.c_str(), O_RDONLY | O_CLOEXEC);
  ok_ = std::make_unique<std::atomic<bool>[]>(n_chunks_);
  for (uint64_t i = 0; i < n_chunks_; ++i) ok_[i].store(false, std::memory_order_relaxed);
  // A file of another size fails the trailer check before anyone gets here;
  // this guards the reads below all the same.
  if (file_.size() < in_.header_bytes + in_.body_bytes || in_.chunk_size == 0) return;
  const int n = int(std::clamp<uint64_t>(uint64_t(std::max(threads, 1)), 1, std::max<uint64_t>(n_chunks_, 1)));
  running_.store(n);
  for (int t = 0; t < n; ++t)
    threads_.emplace_back([this] {
      run();
      running_.fetch_sub(1);
    });
}

EarlyVerifier::~EarlyVerifier() {
  (void)stop();
  if (fd_ >= 0) close(fd_);
}

void EarlyVerifier::run() {
  std::vector<uint8_t> buf;  // this thread's pread buffer, made at the first cold chunk
  while (!stopping_.load(std::memory_order_relaxed)) {
    const uint64_t i = next_.fetch_add(1);
    if (i >= n_chunks_) return;
    const uint64_t begin = in_.header_bytes + i * in_.chunk_size;
    const uint64_t len = std::min(in_.chunk_size, in_.header_bytes + in_.body_bytes - begin);
    const uint8_t* p = file_.data() + begin;
    if (fd_ >= 0 && !resident(p, len)) {
      // One large read instead of page faults of read-ahead size.
      buf.resize(size_t(len));
      size_t got = 0;
      while (got < len) {
        const ssize_t r = pread(fd_, buf.data() + got, size_t(len) - got, off_t(begin + got));
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) break;
        got += size_t(r);
      }
      if (got < len) return;  // a read error: leave this chunk and the rest to the loader
      p = buf.data();
    }
    if (Status st = verify_chunk(in_, i, {p, size_t(len)}, name_); !st) {
      std::lock_guard lk(err_mu_);
      if (first_err_.empty()) first_err_ = st.message();
      stopping_.store(true);
      return;
    }
    ok_[i].store(true, std::memory_order_release);
  }
}

Status EarlyVerifier::stop() {
  stopping_.store(true);
  for (auto& t : threads_) t.join();
  threads_.clear();
  std::lock_guard lk(err_mu_);
  if (!first_err_.empty()) return make_error(first_err_);
  return Status::success();
}

bool EarlyVerifier::verified(uint64_t i) const {
  return i < n_chunks_ && ok_[i].load(std::memory_order_acquire);
}

uint64_t EarlyVerifier::n_verified() const {
  uint64_t n = 0;
  for (uint64_t i = 0; i < n_chunks_; ++i) n += ok_[i].load(std::memory_order_acquire) ? 1 : 0;
  return n;
}

}  // namespace kiln::artifact
