// Read-only memory mapping of a whole file (zero-copy tensor access).
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>

#include "kiln/core/status.h"

namespace kiln::gguf {

class MappedFile {
 public:
  static Result<std::unique_ptr<MappedFile>> open(const std::string& path);
  // Maps the whole file behind `fd` at its current size (the descriptor stays
  // the caller's; the mapping outlives it). `name` is for messages.
  static Result<std::unique_ptr<MappedFile>> map_fd(int fd, const std::string& name);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  std::span<const uint8_t> bytes() const { return {data_, size_}; }

 private:
  MappedFile() = default;
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
};

}  // namespace kiln::gguf
