// CPU name and memory from /proc and sysconf (see cpu_info.h).
#include "kiln/backend/cpu/cpu_info.h"

#include <unistd.h>

#include <fstream>

namespace kiln::cpu {

std::string cpu_model_name() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("model name", 0) != 0) continue;
    const auto colon = line.find(':');
    if (colon == std::string::npos) continue;
    std::string name = line.substr(colon + 1);
    const auto b = name.find_first_not_of(" \t");
    const auto e = name.find_last_not_of(" \t\r");
    if (b != std::string::npos) return name.substr(b, e - b + 1);
  }
  return "unknown CPU";
}

uint64_t physical_memory_bytes() {
  const long pages = sysconf(_SC_PHYS_PAGES), size = sysconf(_SC_PAGE_SIZE);
  return pages > 0 && size > 0 ? uint64_t(pages) * uint64_t(size) : 0;
}

uint64_t available_memory_bytes() {
  const long pages = sysconf(_SC_AVPHYS_PAGES), size = sysconf(_SC_PAGE_SIZE);
  return pages > 0 && size > 0 ? uint64_t(pages) * uint64_t(size) : 0;
}

}  // namespace kiln::cpu
