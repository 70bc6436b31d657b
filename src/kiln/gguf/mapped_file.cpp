// mmap-based MappedFile; empty files map to an empty span.
#include "kiln/gguf/mapped_file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace kiln::gguf {

Result<std::unique_ptr<MappedFile>> MappedFile::open(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return make_error("cannot open '" + path + "': " + std::strerror(errno));
  auto m = map_fd(fd, path);
  ::close(fd);
  return m;
}

Result<std::unique_ptr<MappedFile>> MappedFile::map_fd(int fd, const std::string& name) {
  struct stat st {};
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode))
    return make_error("'" + name + "' is not a regular file");
  std::unique_ptr<MappedFile> m(new MappedFile());
  m->size_ = size_t(st.st_size);
  if (m->size_ > 0) {
    void* p = mmap(nullptr, m->size_, PROT_READ, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED)
      return make_error("cannot map '" + name + "': " + std::strerror(errno));
    m->data_ = static_cast<const uint8_t*>(p);
  }
  return m;
}

MappedFile::~MappedFile() {
  if (data_) munmap(const_cast<uint8_t*>(data_), size_);
}

}  // namespace kiln::gguf
