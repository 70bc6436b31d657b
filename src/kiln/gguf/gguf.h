// GGUF reader (mmap, zero-copy tensor data, strict validation) and writer.
//
// On-disk layout (little-endian), versions 2 and 3:
//   magic "GGUF" | u32 version | u64 n_tensors | u64 n_kv
//   n_kv x { string key | u32 value_type | value }
//   n_tensors x { string name | u32 n_dims | n_dims x u64 ne | u32 type | u64 offset }
//   padding to general.alignment (default 32)
//   tensor data: each tensor at data_start + offset, offsets aligned
// string = u64 length + bytes (no terminator); array = u32 elem_type + u64 n + items.
// ne[0] is the innermost (row) dimension, as in ggml.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "kiln/core/dtype.h"
#include "kiln/core/status.h"

namespace kiln::gguf {

// Value type ids as stored in the file; also the index into Value::Storage.
enum class ValueType : uint32_t {
  U8 = 0, I8 = 1, U16 = 2, I16 = 3, U32 = 4, I32 = 5, F32 = 6, BOOL = 7,
  STRING = 8, ARRAY = 9, U64 = 10, I64 = 11, F64 = 12,
};
std::string_view value_type_name(ValueType t);

struct Value;
struct Array {
  ValueType elem_type = ValueType::U8;
  std::vector<Value> items;
};

struct Value {
  // Alternative index == ValueType id.
  using Storage = std::variant<uint8_t, int8_t, uint16_t, int16_t, uint32_t, int32_t, float,
                               bool, std::string, Array, uint64_t, int64_t, double>;
  Storage v;

  ValueType type() const { return ValueType(v.index()); }
  // Any integer type (not bool) widened; nullopt for other types or u64 > INT64_MAX.
  std::optional<int64_t> as_int() const;
  // f32/f64, or an integer converted.
  std::optional<double> as_float() const;
  const std::string* as_string() const { return std::get_if<std::string>(&v); }
  const Array* as_array() const { return std::get_if<Array>(&v); }
  std::optional<bool> as_bool() const;
  std::string to_display(size_t max_items = 8) const;  // for `kiln inspect`
};

struct TensorInfo {
  std::string name;
  DType type = DType::F32;
  std::vector<int64_t> ne;     // ne[0] = row length (innermost)
  uint64_t offset = 0;         // relative to the data section
  uint64_t n_bytes = 0;
  const uint8_t* data = nullptr;  // points into the mapping

  int64_t n_elements() const;
  int64_t n_rows() const { return ne.empty() ? 1 : n_elements() / ne[0]; }
};

class MappedFile;

// For a file whose bytes are still being written, e.g. downloaded (`kiln
// serve --model URL`): blocks until bytes [offset, offset + length) are in
// place, or fails (the download failed). Bytes not written yet read as zeros,
// so nothing may read a range before its wait succeeded.
using RangeWait = std::function<Status(uint64_t offset, uint64_t length)>;

class File {
 public:
  // Maps and validates a file. The error message names the file, the field
  // and its byte offset.
  static Result<std::unique_ptr<File>> open(const std::string& path);
  // Maps a file whose bytes are still arriving. `fd` must already have its
  // final size (a download preallocates it); it is duplicated, the caller
  // keeps its own. The header is parsed as `wait` reports its bytes in place
  // (its length is not known up front: it waits for growing prefixes); the
  // tensor data is not touched, and every reader of it must await its
  // bytes first (model binding and the backends' load_weights do). `name`
  // is what messages call the file.
  static Result<std::unique_ptr<File>> open_arriving(int fd, std::string name, RangeWait wait);
  // Validates an in-memory image; `bytes` must outlive the File (used by the
  // fuzzer and tests).
  static Result<std::unique_ptr<File>> parse(std::span<const uint8_t> bytes,
                                             std::string name = "<memory>");
  ~File();
  File(const File&) = delete;
  File& operator=(const File&) = delete;

  uint32_t version() const { return version_; }
  uint32_t alignment() const { return alignment_; }
  uint64_t data_offset() const { return data_offset_; }  // file offset of the data section
  uint64_t file_size() const { return bytes_.size(); }
  const std::string& path() const { return path_; }
  std::span<const uint8_t> bytes() const { return bytes_; }

  // Whether bytes of the file may still be missing (open_arriving).
  bool arriving() const { return bool(wait_); }
  // Blocks until bytes [offset, offset + length) are in place: a no-op (one
  // test of an empty function) for a complete file.
  Status await(uint64_t offset, uint64_t length) const {
    return wait_ ? wait_(offset, length) : Status::success();
  }
  // The same for n bytes at address p; addresses outside the mapping (e.g.
  // converted copies) have nothing to wait for.
  Status await_at(const void* p, uint64_t n) const;
  // A path that opens this very file again (for readers with their own
  // descriptor): path(), or /proc/self/fd/N for a file opened from a
  // descriptor, whose name may not exist yet (a download is renamed once
  // complete and verified).
  std::string read_path() const;

  // Metadata in file order.
  const std::vector<std::pair<std::string, Value>>& metadata() const { return kv_; }
  const Value* find(std::string_view key) const;
  std::optional<int64_t> get_int(std::string_view key) const;
  std::optional<double> get_float(std::string_view key) const;
  std::optional<std::string> get_string(std::string_view key) const;
  std::optional<bool> get_bool(std::string_view key) const;
  const Array* get_array(std::string_view key) const;

  const std::vector<TensorInfo>& tensors() const { return tensors_; }
  const TensorInfo* tensor(std::string_view name) const;

 private:
  File() = default;
  Status parse_all();

  std::unique_ptr<MappedFile> map_;
  std::span<const uint8_t> bytes_;
  std::string path_;
  RangeWait wait_;      // open_arriving only
  int arriving_fd_ = -1;  // open_arriving: a duplicate of its descriptor (read_path)
  uint32_t version_ = 0;
  uint32_t alignment_ = 32;
  uint64_t data_offset_ = 0;
  std::vector<std::pair<std::string, Value>> kv_;
  std::map<std::string, size_t, std::less<>> kv_index_;
  std::vector<TensorInfo> tensors_;
  std::map<std::string, size_t, std::less<>> tensor_index_;
};

// Builds a GGUF v3 file. Metadata keeps insertion order (a key set twice keeps
// its first position, last value). Tensor data is copied at add time unless
// added by reference, in which case it must stay valid until write().
class Writer {
 public:
  void set(std::string key, Value value);
  void set_u32(std::string key, uint32_t v) { set(std::move(key), Value{v}); }
  void set_i32(std::string key, int32_t v) { set(std::move(key), Value{v}); }
  void set_u64(std::string key, uint64_t v) { set(std::move(key), Value{v}); }
  void set_f32(std::string key, float v) { set(std::move(key), Value{v}); }
  void set_bool(std::string key, bool v) { set(std::move(key), Value{v}); }
  void set_string(std::string key, std::string v) { set(std::move(key), Value{std::move(v)}); }
  void set_alignment(uint32_t a) { alignment_ = a; }
  // Copies every metadata entry of `src` whose key starts with `prefix`.
  void copy_metadata(const File& src, std::string_view prefix = "");

  // ne[0] is the row length; data holds row_bytes(type, ne[0]) * rows bytes.
  Status add_tensor(std::string name, DType type, std::vector<int64_t> ne,
                    std::span<const uint8_t> data);
  Status add_tensor_ref(std::string name, DType type, std::vector<int64_t> ne,
                        std::span<const uint8_t> data);
  // Streams a tensor: write() calls fill(buffer) with a buffer of exactly the
  // tensor's byte size just before writing it, so huge models are produced in
  // bounded memory (one tensor at a time).
  using FillFn = std::function<void(std::span<uint8_t>)>;
  Status add_tensor_fn(std::string name, DType type, std::vector<int64_t> ne, FillFn fill);

  // Serializes to memory (tests) or writes path atomically (temp file + rename,
  // so a failure never leaves a half-written file under the final name).
  std::vector<uint8_t> to_bytes() const;
  Status write(const std::string& path) const;

 private:
  struct PendingTensor {
    std::string name;
    DType type;
    std::vector<int64_t> ne;
    std::vector<uint8_t> owned;
    std::span<const uint8_t> data;
    size_t n_bytes = 0;  // == data.size() unless streamed through fill
    FillFn fill;
  };
  Status check_tensor(const std::string& name, DType type, const std::vector<int64_t>& ne,
                      size_t n_bytes) const;
  std::vector<std::pair<std::string, Value>> kv_;
  std::vector<PendingTensor> tensors_;
  uint32_t alignment_ = 32;
};

// Convenience constructors for array values.
Value make_string_array(const std::vector<std::string>& items);
Value make_f32_array(const std::vector<float>& items);
Value make_i32_array(const std::vector<int32_t>& items);

}  // namespace kiln::gguf
