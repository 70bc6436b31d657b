// WeightBinder: tensor lookup with type and shape checks (see binder.h).
#include "kiln/model/binder.h"

#include <fmt/format.h>

#include <cstring>

#include "kiln/core/fp16.h"
#include "kiln/gguf/gguf.h"

namespace kiln::model {
namespace {

std::string shape_str(const std::vector<int64_t>& ne) {
  std::string s = "[";
  for (size_t i = 0; i < ne.size(); ++i) s += (i ? ", " : "") + std::to_string(ne[i]);
  return s + "]";
}

}  // namespace

bool WeightBinder::has(const std::string& name) const {
  return file_.tensor(name) != nullptr;
}

void WeightBinder::check_all_used(std::string_view arch) {
  for (const auto& t : file_.tensors())
    if (!used_.count(t.name))
      fail(
          fmt::format("tensor '{}' is not part of the '{}' architecture as kiln knows it (a "
                      "different model variant?)",
                      t.name, arch));
}

Matrix WeightBinder::optional_matrix(const std::string& name, int64_t n_in, int64_t n_out) {
  if (!has(name)) return {};
  return matrix(name, n_in, n_out);
}

Matrix WeightBinder::matrix(const std::string& name, int64_t n_in, int64_t n_out) {
  const gguf::TensorInfo* t = file_.tensor(name);
  used_.insert(name);
  const std::string want = shape_str({n_in, n_out});
  if (!t) {
    fail(fmt::format("tensor '{}' is missing (expected shape {})", name, want));
    return {};
  }
  if (t->ne.size() != 2 || t->ne[0] != n_in || t->ne[1] != n_out) {
    fail(fmt::format("tensor '{}' has shape {}, expected {}", name, shape_str(t->ne), want));
    return {};
  }
  const DTypeInfo& info = dtype_info(t->type);
  if (!info.supported) {
    fail(
        fmt::format("tensor '{}' is stored as {}, which kiln cannot compute with (supported: "
                    "f32 f16 bf16 q8_0 q4_0 q4_1 q5_0 q5_1 q4_k q5_k q6_k); re-quantize the model",
                    name, info.name));
    return {};
  }
  if (n_in % info.block_elems != 0) {
    fail(fmt::format("tensor '{}': rows of {} elements are not whole {} blocks of {}", name, n_in,
                     info.name, info.block_elems));
    return {};
  }
  Matrix m;
  m.name = name;
  m.type = t->type;
  m.data = t->data;
  m.n_in = n_in;
  m.n_out = n_out;
  m.n_bytes = row_bytes(t->type, n_in) * size_t(n_out);
  return m;
}

Vector WeightBinder::optional_vector(const std::string& name, int64_t n) {
  if (!has(name)) return {};
  return vector(name, n);
}

Vector WeightBinder::vector(const std::string& name, int64_t n) {
  const gguf::TensorInfo* t = file_.tensor(name);
  used_.insert(name);
  if (!t) {
    fail(fmt::format("tensor '{}' is missing (expected shape [{}])", name, n));
    return {};
  }
  if (t->ne.size() != 1 || t->ne[0] != n) {
    fail(fmt::format("tensor '{}' has shape {}, expected [{}]", name, shape_str(t->ne), n));
    return {};
  }
  Vector v;
  v.name = name;
  v.n = n;
  const bool aligned = reinterpret_cast<uintptr_t>(t->data) % alignof(float) == 0;
  if (t->type == DType::F32 && aligned) {
    v.data = reinterpret_cast<const float*>(t->data);
    return v;
  }
  if (t->type != DType::F32 && t->type != DType::F16 && t->type != DType::BF16) {
    fail(fmt::format("tensor '{}' is stored as {}; 1-D tensors must be f32, f16 or bf16", name,
                     dtype_name(t->type)));
    return {};
  }
  // Converted now, so its bytes must be in place (a file still downloading).
  if (Status st = file_.await_at(t->data, t->n_bytes); !st) {
    fail(fmt::format("tensor '{}': {}", name, st.message()));
    return {};
  }
  std::vector<float>& out = storage_.emplace_back(size_t(n));
  for (int64_t i = 0; i < n; ++i) {
    if (t->type == DType::F32) {
      std::memcpy(&out[size_t(i)], t->data + 4 * i, 4);
    } else {
      uint16_t h;
      std::memcpy(&h, t->data + 2 * i, 2);
      out[size_t(i)] = t->type == DType::F16 ? fp16_to_f32(h) : bf16_to_f32(h);
    }
  }
  v.data = out.data();
  return v;
}

Status WeightBinder::status() const {
  if (errors_.empty()) return Status::success();
  std::string msg = fmt::format("{}: {} problem{} with the model's tensors:", file_.path(),
                                errors_.size(), errors_.size() == 1 ? "" : "s");
  const size_t shown = std::min<size_t>(errors_.size(), 12);
  for (size_t i = 0; i < shown; ++i) msg += "\n  " + errors_[i];
  if (shown < errors_.size()) msg += fmt::format("\n  ... and {} more", errors_.size() - shown);
  return make_error(msg);
}

}  // namespace kiln::model
