// The target table (see weight_layout.h).
#include "kiln/artifact/weight_layout.h"

#include <array>

#include "kiln/backend/weight_image.h"
#include "kiln/gguf/gguf.h"
#include "kiln/model/model.h"

namespace kiln::artifact {

inline constexpr uint32_t kGgufLayoutAlignment = 4096;

Status write_gguf_layout(const model::Model& model, gguf::Writer& w) {
  w.set_alignment(kGgufLayoutAlignment);
  for (const auto& t : model.file().tensors())
    KILN_TRY(w.add_tensor_ref(t.name, t.type, t.ne, {t.data, size_t(t.n_bytes)}));
  return Status::success();
}

std::span<const TargetInfo> targets() {
  // One image serves every CUDA arch today (its kernels are compiled per
  // arch, the bytes are not); a per-arch layout would get its own name.
  static const std::array<TargetInfo, 4> kTargets = {{
      {"cpu", "gguf", write_gguf_layout},
      {"sm_89", image::kCudaLayout, image::add_image_tensors},
      {"sm_90", image::kCudaLayout, image::add_image_tensors},
      {"sm_120", image::kCudaLayout, image::add_image_tensors},
  }};
  return kTargets;
}

const TargetInfo* find_target(std::string_view name) {
  for (const auto& t : targets())
    if (t.name == name) return &t;
  return nullptr;
}

std::string target_names() {
  std::string s;
  for (const auto& t : targets()) s += (s.empty() ? "" : " ") + std::string(t.name);
  return s;
}

}  // namespace kiln::artifact
