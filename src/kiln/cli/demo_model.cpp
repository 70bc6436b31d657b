// Embeds models/kiln-demo.gguf into the executable with the assembler's
// .incbin (CMake passes the absolute path in KILN_DEMO_MODEL_FILE when the
// file exists at configure time) and exposes it as a file.
//
// Why a file and not a parsed in-memory image: every loader above this point
// takes a path (mmap in the CPU backend, the CUDA backend's parallel reads,
// bake fingerprints), so a memfd holding the bytes lets all of them work
// unchanged. The copy costs ~15 MB of page cache and ~10 ms at start-up, and
// only when the demo model is actually used.
#include "kiln/cli/demo_model.h"

#include <fmt/format.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <mutex>

#ifdef KILN_DEMO_MODEL_FILE
// 64-byte alignment keeps the image as aligned as a page-cache mapping would
// be for code that looks at the bytes directly.
asm(".section .rodata.kiln_demo_model,\"a\",@progbits\n"
    ".balign 64\n"
    ".globl kiln_demo_model_begin\n"
    ".hidden kiln_demo_model_begin\n"
    "kiln_demo_model_begin:\n"
    ".incbin \"" KILN_DEMO_MODEL_FILE "\"\n"
    ".globl kiln_demo_model_end\n"
    ".hidden kiln_demo_model_end\n"
    "kiln_demo_model_end:\n"
    ".previous\n");
extern "C" const uint8_t kiln_demo_model_begin[];
extern "C" const uint8_t kiln_demo_model_end[];
#endif

namespace kiln::cli {

std::string demo_model_path() {
#ifdef KILN_DEMO_MODEL_FILE
  // One memfd per process: the path stays valid for the process's lifetime
  // and every caller (serve, generate, perplexity) reads the same file.
  static std::once_flag once;
  static std::string path;
  std::call_once(once, [] {
    const int fd = memfd_create("kiln-demo.gguf", MFD_CLOEXEC);
    if (fd < 0) return;
    const uint8_t* p = kiln_demo_model_begin;
    size_t left = size_t(kiln_demo_model_end - kiln_demo_model_begin);
    while (left > 0) {
      const ssize_t n = write(fd, p, left);
      if (n <= 0) {
        close(fd);
        return;
      }
      p += n;
      left -= size_t(n);
    }
    path = fmt::format("/proc/self/fd/{}", fd);
  });
  return path;
#else
  return {};
#endif
}

}  // namespace kiln::cli
