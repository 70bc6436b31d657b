// What the CPU backend reports about the machine it runs on.
#pragma once

#include <cstdint>
#include <string>

namespace kiln::cpu {

std::string cpu_model_name();  // "model name" from /proc/cpuinfo, or "unknown CPU"
uint64_t physical_memory_bytes();
uint64_t available_memory_bytes();

}  // namespace kiln::cpu
