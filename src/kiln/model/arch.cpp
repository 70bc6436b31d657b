// The table of supported architectures (one entry per file in model/arch/).
#include "kiln/model/arch.h"

#include <array>

#include "kiln/model/arch/archs.h"

namespace kiln::model {
namespace {

// Register a new architecture here.
constexpr std::array kArchs = {
    &arch::llama,
    &arch::qwen2,
    &arch::qwen3,
};

}  // namespace

const ArchSpec* find_arch(std::string_view name) {
  for (const ArchSpec* a : kArchs)
    if (a->name == name) return a;
  return nullptr;
}

std::string supported_archs() {
  std::string s;
  for (const ArchSpec* a : kArchs) {
    if (!s.empty()) s += ", ";
    s += std::string(a->name) + " (" + std::string(a->models) + ")";
  }
  return s;
}

}  // namespace kiln::model
