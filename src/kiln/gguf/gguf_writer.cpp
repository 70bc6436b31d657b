// GGUF v3 serialization (layout in gguf.h); atomic writes via temp + rename.
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "kiln/gguf/gguf.h"

namespace kiln::gguf {
namespace {

class Sink {
 public:
  virtual ~Sink() = default;
  virtual void put(const void* p, size_t n) = 0;
  virtual bool good() const = 0;
  template <class T>
  void pod(const T& v) { put(&v, sizeof v); }
  void str(const std::string& s) {
    pod(uint64_t(s.size()));
    put(s.data(), s.size());
  }
  uint64_t written = 0;
};

class VecSink : public Sink {
 public:
  std::vector<uint8_t> out;
  void put(const void* p, size_t n) override {
    const size_t at = out.size();
    out.resize(at + n);
    if (n) std::memcpy(out.data() + at, p, n);
    written += n;
  }
  bool good() const override { return true; }
};

class FileSink : public Sink {
 public:
  explicit FileSink(std::FILE* f) : f_(f) {}
  void put(const void* p, size_t n) override {
    if (ok_ && n > 0 && std::fwrite(p, 1, n, f_) != n) ok_ = false;
    written += n;
  }
  bool good() const override { return ok_; }

 private:
  std::FILE* f_;
  bool ok_ = true;
};

void put_value(Sink& s, const Value& v) {
  std::visit(
      [&](const auto& x) {
        using T = std::decay_t<decltype(x)>;
        if constexpr (std::is_same_v<T, std::string>) {
          s.str(x);
        } else if constexpr (std::is_same_v<T, Array>) {
          s.pod(uint32_t(x.elem_type));
          s.pod(uint64_t(x.items.size()));
          for (const auto& item : x.items) put_value(s, item);
        } else if constexpr (std::is_same_v<T, bool>) {
          s.pod(uint8_t(x ? 1 : 0));
        } else {
          s.pod(x);
        }
      },
      v.v);
}

uint64_t align_up(uint64_t x, uint64_t a) { return (x + a - 1) / a * a; }

}  // namespace

void Writer::set(std::string key, Value value) {
  for (auto& kv : kv_)
    if (kv.first == key) {
      kv.second = std::move(value);
      return;
    }
  kv_.emplace_back(std::move(key), std::move(value));
}

void Writer::copy_metadata(const File& src, std::string_view prefix) {
  for (const auto& [k, v] : src.metadata())
    if (k.compare(0, prefix.size(), prefix) == 0 && k != "general.alignment") set(k, v);
}

Status Writer::check_tensor(const std::string& name, DType type, const std::vector<int64_t>& ne,
                            size_t n_bytes) const {
  if (name.empty()) return make_error("tensor name is empty");
  for (const auto& t : tensors_)
    if (t.name == name) return make_error("tensor '" + name + "' added twice");
  if (ne.empty() || ne.size() > 4)
    return make_error("tensor '" + name + "' must have 1 to 4 dimensions");
  const auto& info = dtype_info(type);
  if (ne[0] % info.block_elems != 0)
    return make_error("tensor '" + name + "': row length " + std::to_string(ne[0]) +
                      " is not a multiple of " + std::string(info.name) + "'s block size " +
                      std::to_string(info.block_elems));
  int64_t n = 1;
  for (auto d : ne) {
    if (d < 0) return make_error("tensor '" + name + "' has a negative dimension");
    n *= d;
  }
  const size_t expect = size_t(n / info.block_elems) * info.block_bytes;
  if (expect != n_bytes)
    return make_error("tensor '" + name + "': " + std::to_string(n_bytes) + " bytes given, " +
                      std::to_string(expect) + " expected for its shape and type");
  return {};
}

Status Writer::add_tensor(std::string name, DType type, std::vector<int64_t> ne,
                          std::span<const uint8_t> data) {
  KILN_TRY(check_tensor(name, type, ne, data.size()));
  PendingTensor t{std::move(name), type, std::move(ne), {data.begin(), data.end()}, {},
                  data.size(), {}};
  tensors_.push_back(std::move(t));
  tensors_.back().data = tensors_.back().owned;
  return {};
}

Status Writer::add_tensor_ref(std::string name, DType type, std::vector<int64_t> ne,
                              std::span<const uint8_t> data) {
  KILN_TRY(check_tensor(name, type, ne, data.size()));
  tensors_.push_back(PendingTensor{std::move(name), type, std::move(ne), {}, data, data.size(), {}});
  return {};
}

Status Writer::add_tensor_fn(std::string name, DType type, std::vector<int64_t> ne, FillFn fill) {
  int64_t n = 1;
  for (auto d : ne) n *= d;
  const auto& info = dtype_info(type);
  const size_t n_bytes = ne.empty() || n < 0 ? 0 : size_t(n / info.block_elems) * info.block_bytes;
  KILN_TRY(check_tensor(name, type, ne, n_bytes));
  tensors_.push_back(PendingTensor{std::move(name), type, std::move(ne), {}, {}, n_bytes,
                                   std::move(fill)});
  return {};
}

namespace {

void serialize(Sink& s, const std::vector<std::pair<std::string, Value>>& kv,
               uint32_t alignment, const auto& tensors) {
  s.put("GGUF", 4);
  s.pod(uint32_t(3));
  s.pod(uint64_t(tensors.size()));
  const bool custom_align = alignment != 32;
  s.pod(uint64_t(kv.size() + (custom_align ? 1 : 0)));
  if (custom_align) {
    s.str("general.alignment");
    s.pod(uint32_t(ValueType::U32));
    s.pod(alignment);
  }
  for (const auto& [k, v] : kv) {
    s.str(k);
    s.pod(uint32_t(v.type()));
    put_value(s, v);
  }
  uint64_t offset = 0;
  for (const auto& t : tensors) {
    s.str(t.name);
    s.pod(uint32_t(t.ne.size()));
    for (auto d : t.ne) s.pod(uint64_t(d));
    s.pod(uint32_t(t.type));
    s.pod(offset);
    offset = align_up(offset + t.n_bytes, alignment);
  }
  static const uint8_t zeros[256] = {};
  auto pad = [&](uint64_t to) {
    while (s.written < to) s.put(zeros, std::min<uint64_t>(sizeof zeros, to - s.written));
  };
  pad(align_up(s.written, alignment));
  const uint64_t data_start = s.written;
  offset = 0;
  std::vector<uint8_t> buffer;  // reused by streamed tensors
  for (const auto& t : tensors) {
    pad(data_start + offset);
    if (t.fill) {
      buffer.assign(t.n_bytes, 0);
      t.fill(buffer);
      s.put(buffer.data(), buffer.size());
    } else {
      s.put(t.data.data(), t.data.size());
    }
    offset = align_up(offset + t.n_bytes, alignment);
  }
}

}  // namespace

std::vector<uint8_t> Writer::to_bytes() const {
  VecSink s;
  serialize(s, kv_, alignment_, tensors_);
  return std::move(s.out);
}

Status Writer::write(const std::string& path) const {
  if (alignment_ == 0 || (alignment_ & (alignment_ - 1)) != 0)
    return make_error("GGUF alignment must be a power of two");
  const std::string tmp = path + ".tmp." + std::to_string(::getpid());
  std::FILE* f = std::fopen(tmp.c_str(), "wb");
  if (!f) return make_error("cannot create '" + tmp + "': " + std::strerror(errno));
  FileSink s(f);
  serialize(s, kv_, alignment_, tensors_);
  const bool ok = s.good() && std::fflush(f) == 0 && ::fsync(fileno(f)) == 0;
  std::fclose(f);
  if (!ok) {
    std::remove(tmp.c_str());
    return make_error("writing '" + path + "' failed (disk full?): " + std::strerror(errno));
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    std::remove(tmp.c_str());
    return make_error("cannot rename '" + tmp + "' to '" + path + "': " + std::strerror(errno));
  }
  return {};
}

}  // namespace kiln::gguf
