// The demo model built into the kiln binary (models/kiln-demo.gguf, q8_0,
// trained by tools/demo-model): what `kiln serve`, `kiln generate` and
// `kiln perplexity` use when no --model is given.
#pragma once

#include <string>

namespace kiln::cli {

// A path that reads as the embedded GGUF ("/proc/self/fd/N" of an in-memory
// file holding its bytes), or "" when this kiln was built without the model
// file. Made on the first call; later calls return the same path.
std::string demo_model_path();

// Name the demo model is served under ("kiln-demo").
inline constexpr const char* kDemoModelName = "kiln-demo";

}  // namespace kiln::cli
