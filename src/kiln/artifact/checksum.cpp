// The artifact integrity trailer (layout in checksum.h), hashed with XXH3.
#include "kiln/artifact/checksum.h"

#include <fmt/format.h>
#include <unistd.h>
// Header-only use of xxHash: nothing to link, so kiln builds wherever the
// header is (GPU images without Debian's libxxhash runtime included).
#define XXH_INLINE_ALL
#include <xxhash.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>

#include "kiln/core/threadpool.h"
#include "kiln/gguf/mapped_file.h"

namespace kiln::artifact {
namespace {

constexpr char kMagic[8] = {'K', 'I', 'L', 'N', 'S', 'U', 'M', '1'};

uint64_t load_u64(const uint8_t* p) {
  uint64_t v;
  std::memcpy(&v, p, 8);  // the format is little-endian, as is every host kiln targets
  return v;
}
void store_u64(std::vector<uint8_t>& out, uint64_t v) {
  const size_t at = out.size();
  out.resize(at + 8);
  std::memcpy(out.data() + at, &v, 8);
}

std::string hex128(XXH128_hash_t h) {
  return fmt::format("{:016x}{:016x}", h.high64, h.low64);
}

uint64_t n_chunks_for(uint64_t body, uint64_t chunk) {
  return chunk ? (body + chunk - 1) / chunk : 0;
}

// Serializes everything of the trailer but its last two fields.
std::vector<uint8_t> trailer_prefix(const Integrity& in) {
  std::vector<uint8_t> t;
  t.reserve(size_t(in.trailer_bytes()));
  for (uint64_t c : in.chunk_xxh3) store_u64(t, c);
  store_u64(t, in.header_xxh3);
  store_u64(t, in.header_bytes);
  store_u64(t, in.body_bytes);
  store_u64(t, in.chunk_size);
  store_u64(t, in.chunk_xxh3.size());
  return t;
}

std::span<const uint8_t> body_chunk(std::span<const uint8_t> file, const Integrity& in,
                                    uint64_t i) {
  const uint64_t begin = in.header_bytes + i * in.chunk_size;
  const uint64_t n = std::min(in.chunk_size, in.header_bytes + in.body_bytes - begin);
  return file.subspan(size_t(begin), size_t(n));
}

}  // namespace

Result<Integrity> append_integrity_trailer(const std::string& path, uint64_t header_bytes,
                                           ThreadPool& pool, uint64_t chunk_size) {
  Integrity in;
  {
    auto map = gguf::MappedFile::open(path);
    if (!map) return map.error();
    const auto bytes = (*map)->bytes();
    if (header_bytes > bytes.size())
      return make_error(fmt::format("{}: header of {} bytes but the file has {}", path,
                                    header_bytes, bytes.size()));
    in.header_bytes = header_bytes;
    in.body_bytes = bytes.size() - header_bytes;
    in.chunk_size = chunk_size;
    in.chunk_xxh3.resize(size_t(n_chunks_for(in.body_bytes, chunk_size)));
    in.header_xxh3 = XXH3_64bits(bytes.data(), size_t(header_bytes));
    pool.parallel_for(int64_t(in.chunk_xxh3.size()), [&](int64_t i, int) {
      const auto c = body_chunk(bytes, in, uint64_t(i));
      in.chunk_xxh3[size_t(i)] = XXH3_64bits(c.data(), c.size());
    });
  }
  std::vector<uint8_t> t = trailer_prefix(in);
  in.digest = hex128(XXH3_128bits(t.data(), t.size()));
  store_u64(t, XXH3_64bits(t.data(), t.size()));
  t.insert(t.end(), kMagic, kMagic + 8);
  std::FILE* f = std::fopen(path.c_str(), "ab");
  if (!f) return make_error(fmt::format("cannot append to '{}': {}", path, std::strerror(errno)));
  const bool ok = std::fwrite(t.data(), 1, t.size(), f) == t.size() && std::fflush(f) == 0 &&
                  ::fsync(fileno(f)) == 0;
  std::fclose(f);
  if (!ok) return make_error(fmt::format("writing '{}' failed (disk full?)", path));
  return in;
}

Result<Integrity> read_integrity_trailer(std::span<const uint8_t> file, const std::string& name) {
  const auto bad = [&](const std::string& why) {
    return make_error(fmt::format(
        "{} is corrupt or truncated: {}; never served. Copy the artifact again or rebake it "
        "with `kiln bake`",
        name, why));
  };
  if (file.size() < kTrailerFixedBytes ||
      std::memcmp(file.data() + file.size() - 8, kMagic, 8) != 0)
    return bad(
        fmt::format("its integrity trailer is missing (no 'KILNSUM1' tag in its last 8 "
                    "bytes; {} bytes in all)",
                    file.size()));
  const uint8_t* fixed = file.data() + file.size() - kTrailerFixedBytes;
  Integrity in;
  in.header_xxh3 = load_u64(fixed);
  in.header_bytes = load_u64(fixed + 8);
  in.body_bytes = load_u64(fixed + 16);
  in.chunk_size = load_u64(fixed + 24);
  const uint64_t n_chunks = load_u64(fixed + 32);
  const uint64_t stored = load_u64(fixed + 40);
  if (in.chunk_size == 0 || n_chunks != n_chunks_for(in.body_bytes, in.chunk_size) ||
      n_chunks > (file.size() - kTrailerFixedBytes) / 8)
    return bad("its integrity trailer is inconsistent");
  const uint64_t trailer = 8 * n_chunks + kTrailerFixedBytes;
  const uint8_t* start = file.data() + file.size() - trailer;
  if (XXH3_64bits(start, size_t(trailer - 16)) != stored)
    return bad("the checksum of its integrity trailer does not match");
  if (in.header_bytes + in.body_bytes + trailer != file.size())
    return bad(fmt::format("it is {} bytes but its trailer describes {}", file.size(),
                           in.header_bytes + in.body_bytes + trailer));
  in.chunk_xxh3.resize(size_t(n_chunks));
  for (uint64_t i = 0; i < n_chunks; ++i) in.chunk_xxh3[size_t(i)] = load_u64(start + 8 * i);
  in.digest = hex128(XXH3_128bits(start, size_t(trailer - 16)));
  return in;
}

Status verify_chunk(const Integrity& in, uint64_t i, std::span<const uint8_t> chunk,
                    const std::string& name) {
  if (i >= in.chunk_xxh3.size() || XXH3_64bits(chunk.data(), chunk.size()) != in.chunk_xxh3[i])
    return make_error(fmt::format(
        "{} is corrupt: checksum mismatch in bytes [{}, {}) (chunk {} of {}); never served. "
        "Copy the artifact again or rebake it with `kiln bake`",
        name, in.header_bytes + i * in.chunk_size,
        in.header_bytes + i * in.chunk_size + chunk.size(), i, in.chunk_xxh3.size()));
  return Status::success();
}

Status verify_integrity(std::span<const uint8_t> file, const Integrity& in, ThreadPool& pool,
                        const std::string& name, bool body) {
  if (file.size() != in.file_bytes())
    return make_error(
        fmt::format("{}: {} bytes, expected {}; truncated?", name, file.size(), in.file_bytes()));
  if (XXH3_64bits(file.data(), size_t(in.header_bytes)) != in.header_xxh3)
    return make_error(fmt::format(
        "{} is corrupt: checksum mismatch in its header (bytes [0, {})); never served. Copy the "
        "artifact again or rebake it with `kiln bake`",
        name, in.header_bytes));
  if (!body) return Status::success();
  std::atomic<int64_t> first_bad{-1};
  pool.parallel_for(int64_t(in.chunk_xxh3.size()), [&](int64_t i, int) {
    const auto c = body_chunk(file, in, uint64_t(i));
    if (XXH3_64bits(c.data(), c.size()) != in.chunk_xxh3[size_t(i)]) {
      int64_t expected = -1;
      first_bad.compare_exchange_strong(expected, i);
    }
  });
  if (first_bad.load() >= 0) {
    const uint64_t i = uint64_t(first_bad.load());
    return verify_chunk(in, i, body_chunk(file, in, i), name);
  }
  return Status::success();
}

std::string content_hash(std::span<const uint8_t> bytes, ThreadPool& pool, uint64_t chunk_size) {
  const uint64_t n = n_chunks_for(bytes.size(), chunk_size);
  std::vector<uint64_t> h(size_t(n) + 1);
  pool.parallel_for(int64_t(n), [&](int64_t i, int) {
    const uint64_t begin = uint64_t(i) * chunk_size;
    const uint64_t len = std::min<uint64_t>(chunk_size, bytes.size() - begin);
    h[size_t(i)] = XXH3_64bits(bytes.data() + begin, size_t(len));
  });
  h[size_t(n)] = bytes.size();
  return hex128(XXH3_128bits(h.data(), h.size() * 8));
}

}  // namespace kiln::artifact
