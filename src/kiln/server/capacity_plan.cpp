// Memory plan and rule-of-thumb concurrency.
#include "kiln/server/capacity_plan.h"

#include <fmt/format.h>

#include <algorithm>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

namespace kiln::server {

Result<std::vector<BenchPoint>> parse_bench_results(const std::string& text) {
  std::vector<BenchPoint> pts;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    auto j = nlohmann::json::parse(line, nullptr, false);
    if (j.is_discarded() || !j.is_object()) continue;
    auto t = j.find("test");
    auto tps = j.find("tokens_per_s");
    if (t == j.end() || !t->is_string() || tps == j.end() || !tps->is_number()) continue;
    const std::string name = t->get<std::string>();
    if (name.rfind("streams", 0) != 0) continue;
    try {
      const int n = std::stoi(name.substr(7));
      if (n > 0) pts.push_back({n, tps->get<double>()});
    } catch (...) {
    }
  }
  if (pts.empty())
    return make_error(
        "--bench-result: no {\"test\":\"streams<N>\",\"tokens_per_s\":...} line; "
        "write one with `kiln bench --streams 8,32,64,128 --json-out FILE`");
  std::sort(pts.begin(), pts.end(),
            [](const BenchPoint& a, const BenchPoint& b) { return a.streams < b.streams; });
  return pts;
}

Result<std::vector<BenchPoint>> read_bench_results(const std::string& path) {
  std::ifstream f(path);
  if (!f) return make_error("--bench-result " + path + ": cannot read the file");
  std::stringstream ss;
  ss << f.rdbuf();
  auto r = parse_bench_results(ss.str());
  if (!r) return make_error(r.message() + " (in " + path + ")");
  return r;
}

IdealBatch ideal_batch_size(std::span<const BenchPoint> points, int32_t n_parallel) {
  IdealBatch ib;
  if (points.empty()) {
    ib.size = std::max(1, n_parallel);
    ib.estimated = true;
    ib.how = fmt::format(
        "estimate: --parallel ({}); measure it with `kiln bench --streams` and "
        "pass --bench-result",
        ib.size);
    return ib;
  }
  double peak = 0;
  for (const auto& p : points) peak = std::max(peak, p.tokens_per_s);
  for (const auto& p : points) {
    if (p.tokens_per_s >= 0.9 * peak) {
      ib.size = p.streams;
      break;
    }
  }
  ib.estimated = false;
  ib.how = fmt::format("measured: {} streams reach {:.0f} tok/s, >= 90% of the peak {:.0f} tok/s",
                       ib.size,
                       std::find_if(points.begin(), points.end(),
                                    [&](const BenchPoint& p) { return p.streams == ib.size; })
                           ->tokens_per_s,
                       peak);
  return ib;
}

uint64_t kv_bytes_per_token(const MemoryPlanInput& in) {
  return in.block_size > 0 ? in.kv_bytes_per_block / uint64_t(in.block_size) : 0;
}

std::string format_bytes(uint64_t b) {
  const double gib = double(b) / double(1ull << 30);
  if (gib >= 1.0) return fmt::format("{:.2f} GiB", gib);
  return fmt::format("{:.1f} MiB", double(b) / double(1ull << 20));
}

Result<MemoryPlan> plan_memory(const MemoryPlanInput& in) {
  MemoryPlan p;
  if (in.kv_bytes_per_block == 0 || in.block_size <= 0 || in.ctx_size <= 0)
    return make_error("memory plan: KV block size and context size must be positive");
  p.blocks_per_seq = int32_t((int64_t(in.ctx_size) + in.block_size - 1) / in.block_size);
  const uint64_t cap_blocks =
      uint64_t(2) * uint64_t(std::max(1, in.n_parallel)) * uint64_t(p.blocks_per_seq);
  uint64_t kv_bytes = 0;
  if (in.kv_memory) {
    p.budget_bytes = *in.kv_memory;
    kv_bytes = *in.kv_memory;
    p.kv_limited_by = "--kv-memory";
  } else {
    p.budget_bytes = uint64_t(double(in.device_total) * in.gpu_memory_fraction);
    const uint64_t used = in.weight_bytes + in.scratch_bytes;
    if (p.budget_bytes <= used)
      return make_error(fmt::format(
          "memory plan: weights ({}) + scratch ({}) already exceed --gpu-memory-fraction {} of "
          "{}; raise the fraction, use a smaller quantization, or set --kv-memory",
          format_bytes(in.weight_bytes), format_bytes(in.scratch_bytes), in.gpu_memory_fraction,
          format_bytes(in.device_total)));
    kv_bytes = p.budget_bytes - used;
    p.kv_limited_by = "memory budget";
  }
  uint64_t blocks = kv_bytes / in.kv_bytes_per_block;
  if (in.cap_to_need && blocks > cap_blocks) {
    blocks = cap_blocks;
    p.kv_limited_by = "cap: 2 x --parallel x --ctx-size";
  }
  if (blocks > uint64_t(INT32_MAX)) blocks = uint64_t(INT32_MAX);
  p.n_blocks = int32_t(blocks);
  p.kv_bytes = blocks * in.kv_bytes_per_block;
  p.kv_tokens = int64_t(blocks) * in.block_size;
  p.full_ctx_seqs = int32_t(blocks / uint64_t(p.blocks_per_seq));
  if (p.full_ctx_seqs < 1)
    return make_error(fmt::format(
        "memory plan: the KV pool ({} blocks of {} tokens, {}) cannot hold one sequence of "
        "--ctx-size {}; lower --ctx-size, use --kv-type fp8/q8_0, or give more memory",
        blocks, in.block_size, format_bytes(p.kv_bytes), in.ctx_size));
  return p;
}

ConcurrencyAdvice advise_concurrency(const MemoryPlan& plan, int32_t n_parallel,
                                     const IdealBatch& ideal) {
  ConcurrencyAdvice a;
  a.ideal = ideal;
  a.recommended = n_parallel + ideal.size;
  if (plan.full_ctx_seqs < n_parallel)
    a.limited_by = fmt::format(
        "KV memory: {} full-context sequences fit, fewer than --parallel {} "
        "(longer requests will be preempted)",
        plan.full_ctx_seqs, n_parallel);
  else if (ideal.estimated)
    a.limited_by = "--parallel (ideal batch size is an estimate)";
  else
    a.limited_by = "--parallel and the measured ideal batch size";
  return a;
}

std::string format_plan(const MemoryPlanInput& in, const MemoryPlan& plan,
                        const ConcurrencyAdvice& advice, int32_t max_concurrency) {
  std::string s;
  s += fmt::format("memory plan: device {}, budget {} ({}), weights {}, scratch {}\n",
                   format_bytes(in.device_total), format_bytes(plan.budget_bytes),
                   in.kv_memory ? "--kv-memory"
                                : fmt::format("--gpu-memory-fraction {}", in.gpu_memory_fraction),
                   format_bytes(in.weight_bytes), format_bytes(in.scratch_bytes));
  s += fmt::format(
      "  KV pool: {} blocks x {} tokens = {} tokens, {} (limited by {}), {} bytes per token; {} "
      "sequences of --ctx-size {} fit at once\n",
      plan.n_blocks, in.block_size, plan.kv_tokens, format_bytes(plan.kv_bytes), plan.kv_limited_by,
      kv_bytes_per_token(in), plan.full_ctx_seqs, in.ctx_size);
  s += fmt::format(
      "concurrency: --parallel {} + ideal batch {} ({}) = {} recommended for Cloud "
      "Run's max concurrency; limited by {}\n",
      in.n_parallel, advice.ideal.size, advice.ideal.how, advice.recommended, advice.limited_by);
  s += fmt::format("  --max-concurrency {}: up to {} requests run, {} wait, more get 429\n",
                   max_concurrency, in.n_parallel, std::max(0, max_concurrency - in.n_parallel));
  return s;
}

}  // namespace kiln::server
