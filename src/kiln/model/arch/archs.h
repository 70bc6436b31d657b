// Declarations of the architectures in model/arch/ (registered in arch.cpp).
#pragma once

#include "kiln/model/arch.h"

namespace kiln::model::arch {

extern const ArchSpec llama;
extern const ArchSpec qwen2;
extern const ArchSpec qwen3;

}  // namespace kiln::model::arch
