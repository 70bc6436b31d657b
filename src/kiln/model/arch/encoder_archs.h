// Declarations of the encoder (embedding) architectures in model/arch/
// (registered in model/encoder.cpp).
#pragma once

#include "kiln/model/encoder.h"

namespace kiln::model::arch {

extern const EncoderArchSpec bert;

}  // namespace kiln::model::arch
