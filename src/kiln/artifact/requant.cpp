// Requantization plan and conversion (see requant.h); moved here from
// cmd_quantize.cpp so `kiln bake --quant` gives the same bytes.
#include "kiln/artifact/requant.h"

#include <fmt/format.h>

#include <algorithm>
#include <atomic>
#include <cmath>

#include "kiln/core/threadpool.h"
#include "kiln/quant/quant.h"

namespace kiln::artifact {

quant::MixModel describe_mix_model(const gguf::File& in) {
  quant::MixModel m;
  m.arch = in.get_string("general.architecture").value_or("");
  m.n_layers = int(in.get_int(m.arch + ".block_count").value_or(0));
  m.n_experts = int(in.get_int(m.arch + ".expert_count").value_or(0));
  m.has_output = in.tensor("output.weight") != nullptr;
  const auto n_head = in.get_int(m.arch + ".attention.head_count");
  const auto n_head_kv = in.get_int(m.arch + ".attention.head_count_kv");
  m.is_70b_class = m.n_layers == 80 && n_head && n_head_kv && *n_head_kv < *n_head;
  return m;
}

Result<std::vector<QuantPlanEntry>> plan_quantization(const gguf::File& in,
                                                      const quant::QuantPreset& preset, bool pure) {
  const quant::MixModel model = describe_mix_model(in);
  std::vector<QuantPlanEntry> plan;
  for (const auto& t : in.tensors()) {
    DType to = t.type;
    if (quant::is_quantizable(t.name, t.ne))
      to = quant::tensor_type(preset, model, t.name, t.ne, pure);
    if (to != t.type && !dtype_info(t.type).supported)
      return make_error(fmt::format(
          "tensor {} is stored as {}, which kiln cannot decode; start from an f32/f16/bf16 "
          "model (or one in a type kiln supports)",
          t.name, dtype_name(t.type)));
    plan.push_back({&t, to});
  }
  return plan;
}

Status convert_tensor(ThreadPool& pool, const gguf::TensorInfo& t, DType to,
                      std::vector<uint8_t>& out) {
  const int64_t n_per_row = t.ne[0];
  const int64_t n_rows = t.n_rows();
  const size_t in_row = row_bytes(t.type, n_per_row), out_row = row_bytes(to, n_per_row);
  out.resize(out_row * size_t(n_rows));
  // ~64K elements per task: big enough to amortize dispatch, small enough to
  // balance over the threads even for narrow tensors.
  const int64_t rows_per_task = std::max<int64_t>(1, 65536 / n_per_row);
  const int64_t n_tasks = (n_rows + rows_per_task - 1) / rows_per_task;
  std::vector<std::vector<float>> scratch(size_t(pool.size()));  // [n_per_row] per thread
  std::atomic<int64_t> bad_row{-1};
  pool.parallel_for(n_tasks, [&](int64_t task, int thread) {
    auto& buf = scratch[size_t(thread)];
    buf.resize(size_t(n_per_row));
    const int64_t r0 = task * rows_per_task, r1 = std::min(n_rows, r0 + rows_per_task);
    for (int64_t r = r0; r < r1; ++r) {
      quant::dequantize_row(t.type, t.data + size_t(r) * in_row, buf.data(), n_per_row);
      for (float v : buf) {
        if (!std::isfinite(v)) {
          int64_t expected = -1;
          bad_row.compare_exchange_strong(expected, r);
          return;
        }
      }
      quant::quantize_row(to, buf.data(), out.data() + size_t(r) * out_row, n_per_row);
    }
  });
  if (bad_row.load() >= 0)
    return make_error(fmt::format(
        "tensor {} has a non-finite value (NaN or inf) in row {}; the input model is broken, "
        "re-export it",
        t.name, bad_row.load()));
  return Status::success();
}

}  // namespace kiln::artifact
