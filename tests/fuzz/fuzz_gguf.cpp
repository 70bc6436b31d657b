// libFuzzer target for the GGUF reader: any input must parse or be refused
// with an error, never crash, read out of bounds or allocate without bound.
#include <cstddef>
#include <cstdint>

#include "kiln/gguf/gguf.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto f = kiln::gguf::File::parse({data, size}, "fuzz");
  if (f.ok()) {
    // Touch what a loader would touch: metadata display and every tensor byte.
    volatile uint8_t sink = 0;
    for (const auto& [k, v] : (*f)->metadata()) sink = sink ^ uint8_t(v.to_display().size());
    for (const auto& t : (*f)->tensors())
      for (uint64_t i = 0; i < t.n_bytes; i += 64) sink = sink ^ t.data[i];
    (void)sink;
  }
  return 0;
}
