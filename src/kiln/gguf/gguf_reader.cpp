// GGUF parsing and validation (layout in gguf.h). Every length read from the
// file is checked against the bytes that remain before anything is allocated,
// so a corrupt or hostile file costs at most a small multiple of its size.
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <limits>

#include "kiln/gguf/gguf.h"
#include "kiln/gguf/mapped_file.h"

namespace kiln::gguf {
namespace {

constexpr uint32_t kMaxDims = 4;             // ggml tensors have at most 4 dims
constexpr int kMaxArrayDepth = 8;            // nested arrays beyond this are refused
constexpr uint64_t kMaxArrayItems = 1ull << 24;  // per file, all arrays together
constexpr uint64_t kMaxStringLen = 1ull << 30;
// A header still arriving is waited for in growing prefixes: at least this
// much first, then at least twice what is there (a handful of waits for a
// multi-MB vocabulary instead of one per field).
constexpr uint64_t kFirstArrivalWait = 64u << 10;

// Smallest encoding of one value of a type: bounds element counts up front.
uint64_t min_value_size(ValueType t) {
  switch (t) {
    case ValueType::U8: case ValueType::I8: case ValueType::BOOL: return 1;
    case ValueType::U16: case ValueType::I16: return 2;
    case ValueType::U32: case ValueType::I32: case ValueType::F32: return 4;
    case ValueType::U64: case ValueType::I64: case ValueType::F64: return 8;
    case ValueType::STRING: return 8;
    case ValueType::ARRAY: return 12;
  }
  return 1;
}

bool valid_value_type(uint32_t t) { return t <= uint32_t(ValueType::F64); }

class Cursor {
 public:
  // `wait`: the file is still arriving (File::open_arriving); null: complete.
  Cursor(std::span<const uint8_t> b, const std::string& name, const RangeWait* wait = nullptr)
      : b_(b), name_(name), wait_(wait) {}

  uint64_t pos() const { return pos_; }
  uint64_t remaining() const { return b_.size() - pos_; }

  Error fail(const std::string& what) const {
    return make_error("invalid GGUF file '" + name_ + "': " + what + " (at byte offset " +
                      std::to_string(pos_) + ")");
  }

  template <class T>
  Status read(T& out, const char* field) {
    if (remaining() < sizeof(T))
      return fail(std::string("file ends inside ") + field + " (truncated file?)");
    if (wait_) KILN_TRY(arrive(sizeof(T)));
    std::memcpy(&out, b_.data() + pos_, sizeof(T));
    pos_ += sizeof(T);
    return {};
  }

  Status read_string(std::string& out, const char* field) {
    uint64_t len = 0;
    KILN_TRY(read(len, field));
    if (len > remaining() || len > kMaxStringLen) {
      pos_ -= 8;
      return fail(std::string(field) + " has length " + std::to_string(len) +
                  " but only " + std::to_string(remaining() - 8) + " bytes remain");
    }
    if (wait_) KILN_TRY(arrive(len));
    out.assign(reinterpret_cast<const char*>(b_.data() + pos_), len);
    pos_ += len;
    return {};
  }

 private:
  // Blocks until the next n bytes (within the file: callers checked) are in
  // place. Sizes are checked against the whole file, which already has its
  // final size, so only reads wait.
  Status arrive(uint64_t n) {
    if (pos_ + n <= ready_) return {};
    const uint64_t want =
        std::min<uint64_t>(b_.size(), std::max({pos_ + n, 2 * ready_, kFirstArrivalWait}));
    KILN_TRY((*wait_)(ready_, want - ready_));
    ready_ = want;
    return {};
  }

  std::span<const uint8_t> b_;
  const std::string& name_;
  uint64_t pos_ = 0;
  const RangeWait* wait_ = nullptr;
  uint64_t ready_ = 0;  // bytes [0, ready_) are in place
};

class Parser {
 public:
  Parser(Cursor& c) : c_(c) {}

  Status read_value(ValueType t, Value& out, const std::string& key, int depth) {
    switch (t) {
      case ValueType::U8: return read_scalar<uint8_t>(out, key);
      case ValueType::I8: return read_scalar<int8_t>(out, key);
      case ValueType::U16: return read_scalar<uint16_t>(out, key);
      case ValueType::I16: return read_scalar<int16_t>(out, key);
      case ValueType::U32: return read_scalar<uint32_t>(out, key);
      case ValueType::I32: return read_scalar<int32_t>(out, key);
      case ValueType::F32: return read_scalar<float>(out, key);
      case ValueType::U64: return read_scalar<uint64_t>(out, key);
      case ValueType::I64: return read_scalar<int64_t>(out, key);
      case ValueType::F64: return read_scalar<double>(out, key);
      case ValueType::BOOL: {
        uint8_t b = 0;
        KILN_TRY(c_.read(b, "bool value"));
        if (b > 1) return c_.fail("bool value of key '" + key + "' is " + std::to_string(b));
        out.v = bool(b);
        return {};
      }
      case ValueType::STRING: {
        std::string s;
        KILN_TRY(c_.read_string(s, "string value"));
        out.v = std::move(s);
        return {};
      }
      case ValueType::ARRAY: return read_array(out, key, depth);
    }
    return c_.fail("unknown value type");
  }

 private:
  template <class T>
  Status read_scalar(Value& out, const std::string& key) {
    T v{};
    KILN_TRY(c_.read(v, "metadata value"));
    out.v = v;
    return {};
  }

  Status read_array(Value& out, const std::string& key, int depth) {
    if (depth >= kMaxArrayDepth)
      return c_.fail("arrays nested deeper than " + std::to_string(kMaxArrayDepth) +
                     " levels in key '" + key + "'");
    uint32_t et = 0;
    KILN_TRY(c_.read(et, "array element type"));
    if (!valid_value_type(et))
      return c_.fail("array of key '" + key + "' has unknown element type " + std::to_string(et));
    uint64_t n = 0;
    KILN_TRY(c_.read(n, "array length"));
    const ValueType elem = ValueType(et);
    if (n > c_.remaining() / min_value_size(elem))
      return c_.fail("array of key '" + key + "' claims " + std::to_string(n) +
                     " elements of type " + std::string(value_type_name(elem)) +
                     ", more than the remaining " + std::to_string(c_.remaining()) +
                     " bytes can hold");
    total_items_ += n;
    if (total_items_ > kMaxArrayItems)
      return c_.fail("metadata arrays hold more than " + std::to_string(kMaxArrayItems) +
                     " elements in total (key '" + key + "')");
    Array arr;
    arr.elem_type = elem;
    arr.items.resize(n);
    for (uint64_t i = 0; i < n; ++i) KILN_TRY(read_value(elem, arr.items[i], key, depth + 1));
    out.v = std::move(arr);
    return {};
  }

  Cursor& c_;
  uint64_t total_items_ = 0;
};

bool mul_overflows(uint64_t a, uint64_t b, uint64_t& out) {
  return __builtin_mul_overflow(a, b, &out);
}

}  // namespace

Result<std::unique_ptr<File>> File::open(const std::string& path) {
  auto m = MappedFile::open(path);
  if (!m) return m.error();
  std::unique_ptr<File> f(new File());
  f->map_ = std::move(m.value());
  f->bytes_ = f->map_->bytes();
  f->path_ = path;
  KILN_TRY(f->parse_all());
  return f;
}

Result<std::unique_ptr<File>> File::parse(std::span<const uint8_t> bytes, std::string name) {
  std::unique_ptr<File> f(new File());
  f->bytes_ = bytes;
  f->path_ = std::move(name);
  KILN_TRY(f->parse_all());
  return f;
}

Result<std::unique_ptr<File>> File::open_arriving(int fd, std::string name, RangeWait wait) {
  std::unique_ptr<File> f(new File());
  f->arriving_fd_ = ::fcntl(fd, F_DUPFD_CLOEXEC, 0);
  if (f->arriving_fd_ < 0)
    return make_error("cannot duplicate the descriptor of '" + name + "': " + std::strerror(errno));
  auto m = MappedFile::map_fd(fd, name);
  if (!m) return m.error();
  f->map_ = std::move(m.value());
  f->bytes_ = f->map_->bytes();
  f->path_ = std::move(name);
  f->wait_ = std::move(wait);
  KILN_TRY(f->parse_all());
  return f;
}

File::~File() {
  if (arriving_fd_ >= 0) ::close(arriving_fd_);
}

Status File::await_at(const void* p, uint64_t n) const {
  if (!wait_) return {};
  const auto* b = static_cast<const uint8_t*>(p);
  if (b < bytes_.data() || b >= bytes_.data() + bytes_.size()) return {};
  const uint64_t off = uint64_t(b - bytes_.data());
  return wait_(off, std::min<uint64_t>(n, bytes_.size() - off));
}

std::string File::read_path() const {
  return arriving_fd_ >= 0 ? "/proc/self/fd/" + std::to_string(arriving_fd_) : path_;
}

Status File::parse_all() {
  // A file still arriving: its reads wait for their bytes (see Cursor::arrive).
  Cursor c(bytes_, path_, wait_ ? &wait_ : nullptr);
  char magic[4] = {};
  if (bytes_.size() < 4) return c.fail("file is " + std::to_string(bytes_.size()) +
                                       " bytes, too short to be GGUF");
  KILN_TRY(c.read(magic, "magic"));
  if (std::memcmp(magic, "GGUF", 4) != 0)
    return make_error("'" + path_ + "' is not a GGUF file (bad magic at byte offset 0; "
                      "expected \"GGUF\")");
  KILN_TRY(c.read(version_, "version"));
  if (version_ == 1)
    return c.fail("GGUF version 1 is obsolete and not supported; re-convert the model "
                  "with a current converter");
  if (version_ != 2 && version_ != 3) {
    const bool big_endian = (version_ == 0x02000000u || version_ == 0x03000000u);
    return c.fail("unsupported GGUF version " + std::to_string(version_) +
                  (big_endian ? " (this looks like a big-endian GGUF; kiln reads little-endian files)"
                              : " (kiln reads versions 2 and 3)"));
  }
  uint64_t n_tensors = 0, n_kv = 0;
  KILN_TRY(c.read(n_tensors, "tensor count"));
  KILN_TRY(c.read(n_kv, "metadata count"));
  // A metadata entry takes at least 8 (key len) + 4 (type) + 1 bytes; a tensor
  // info at least 8 + 4 + 4 + 8.
  if (n_kv > c.remaining() / 13)
    return c.fail("metadata count " + std::to_string(n_kv) + " cannot fit in the remaining " +
                  std::to_string(c.remaining()) + " bytes");
  if (n_tensors > c.remaining() / 24)
    return c.fail("tensor count " + std::to_string(n_tensors) + " cannot fit in the remaining " +
                  std::to_string(c.remaining()) + " bytes");

  Parser p(c);
  kv_.reserve(n_kv);
  for (uint64_t i = 0; i < n_kv; ++i) {
    std::string key;
    KILN_TRY(c.read_string(key, "metadata key"));
    if (key.empty()) return c.fail("metadata entry " + std::to_string(i) + " has an empty key");
    if (kv_index_.count(key)) return c.fail("duplicate metadata key '" + key + "'");
    uint32_t t = 0;
    KILN_TRY(c.read(t, "value type"));
    if (!valid_value_type(t))
      return c.fail("metadata key '" + key + "' has unknown value type " + std::to_string(t));
    Value v;
    KILN_TRY(p.read_value(ValueType(t), v, key, 0));
    kv_index_.emplace(key, kv_.size());
    kv_.emplace_back(std::move(key), std::move(v));
  }

  if (const Value* a = find("general.alignment")) {
    const auto av = a->as_int();
    if (a->type() != ValueType::U32 || !av || *av == 0 || (*av & (*av - 1)) != 0)
      return c.fail("general.alignment must be a u32 power of two, got " + a->to_display());
    alignment_ = uint32_t(*av);
  }

  tensors_.reserve(n_tensors);
  for (uint64_t i = 0; i < n_tensors; ++i) {
    TensorInfo ti;
    KILN_TRY(c.read_string(ti.name, "tensor name"));
    if (ti.name.empty()) return c.fail("tensor " + std::to_string(i) + " has an empty name");
    if (tensor_index_.count(ti.name)) return c.fail("duplicate tensor name '" + ti.name + "'");
    uint32_t n_dims = 0;
    KILN_TRY(c.read(n_dims, "tensor dimension count"));
    if (n_dims == 0 || n_dims > kMaxDims)
      return c.fail("tensor '" + ti.name + "' has " + std::to_string(n_dims) +
                    " dimensions (1 to 4 allowed)");
    uint64_t n_elems = 1;
    for (uint32_t d = 0; d < n_dims; ++d) {
      uint64_t ne = 0;
      KILN_TRY(c.read(ne, "tensor dimension"));
      if (ne > uint64_t(std::numeric_limits<int64_t>::max()) || mul_overflows(n_elems, ne, n_elems))
        return c.fail("tensor '" + ti.name + "' has dimensions whose element count overflows");
      ti.ne.push_back(int64_t(ne));
    }
    uint32_t type = 0;
    KILN_TRY(c.read(type, "tensor type"));
    const auto info = dtype_info(type);
    if (!info)
      return c.fail("tensor '" + ti.name + "' has unknown type id " + std::to_string(type));
    ti.type = DType(type);
    if (ti.ne[0] % info->block_elems != 0)
      return c.fail("tensor '" + ti.name + "' of type " + std::string(info->name) +
                    " has rows of " + std::to_string(ti.ne[0]) +
                    " elements, not a multiple of the block size " +
                    std::to_string(info->block_elems));
    uint64_t n_blocks = n_elems / info->block_elems;
    if (mul_overflows(n_blocks, info->block_bytes, ti.n_bytes))
      return c.fail("tensor '" + ti.name + "' byte size overflows");
    KILN_TRY(c.read(ti.offset, "tensor data offset"));
    if (ti.offset % alignment_ != 0)
      return c.fail("tensor '" + ti.name + "' data offset " + std::to_string(ti.offset) +
                    " is not a multiple of the alignment " + std::to_string(alignment_));
    tensor_index_.emplace(ti.name, tensors_.size());
    tensors_.push_back(std::move(ti));
  }

  // The data section starts at the next multiple of the alignment.
  data_offset_ = (c.pos() + alignment_ - 1) / alignment_ * alignment_;
  const uint64_t data_size = bytes_.size() >= data_offset_ ? bytes_.size() - data_offset_ : 0;
  if (!tensors_.empty() && bytes_.size() < data_offset_)
    return make_error("invalid GGUF file '" + path_ + "': file ends at byte " +
                      std::to_string(bytes_.size()) + " before the tensor data section (byte " +
                      std::to_string(data_offset_) + "); truncated file?");

  std::vector<const TensorInfo*> by_offset;
  for (auto& t : tensors_) {
    if (t.offset > data_size || t.n_bytes > data_size - t.offset)
      return make_error("invalid GGUF file '" + path_ + "': data of tensor '" + t.name +
                        "' (" + std::to_string(t.n_bytes) + " bytes at data offset " +
                        std::to_string(t.offset) + ", file offset " +
                        std::to_string(data_offset_ + t.offset) + ") extends past the end of "
                        "the file (" + std::to_string(bytes_.size()) + " bytes); truncated file?");
    t.data = bytes_.data() + data_offset_ + t.offset;
    by_offset.push_back(&t);
  }
  std::sort(by_offset.begin(), by_offset.end(),
            [](const TensorInfo* a, const TensorInfo* b) { return a->offset < b->offset; });
  for (size_t i = 1; i < by_offset.size(); ++i) {
    const TensorInfo& a = *by_offset[i - 1];
    const TensorInfo& b = *by_offset[i];
    if (a.offset + a.n_bytes > b.offset && a.n_bytes > 0 && b.n_bytes > 0)
      return make_error("invalid GGUF file '" + path_ + "': data of tensors '" + a.name +
                        "' and '" + b.name + "' overlap (data offsets " +
                        std::to_string(a.offset) + " and " + std::to_string(b.offset) + ")");
  }
  return {};
}

const Value* File::find(std::string_view key) const {
  auto it = kv_index_.find(key);
  return it == kv_index_.end() ? nullptr : &kv_[it->second].second;
}
std::optional<int64_t> File::get_int(std::string_view key) const {
  const Value* v = find(key);
  return v ? v->as_int() : std::nullopt;
}
std::optional<double> File::get_float(std::string_view key) const {
  const Value* v = find(key);
  return v ? v->as_float() : std::nullopt;
}
std::optional<std::string> File::get_string(std::string_view key) const {
  const Value* v = find(key);
  if (!v || !v->as_string()) return std::nullopt;
  return *v->as_string();
}
std::optional<bool> File::get_bool(std::string_view key) const {
  const Value* v = find(key);
  return v ? v->as_bool() : std::nullopt;
}
const Array* File::get_array(std::string_view key) const {
  const Value* v = find(key);
  return v ? v->as_array() : nullptr;
}
const TensorInfo* File::tensor(std::string_view name) const {
  auto it = tensor_index_.find(name);
  return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
}

}  // namespace kiln::gguf
