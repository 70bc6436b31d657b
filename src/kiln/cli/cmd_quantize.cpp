// `kiln quantize IN.gguf OUT.gguf TYPE`: rewrites a GGUF model with its weight
// matrices in another type (or a q4_k_m / q5_k_m mix), the way llama.cpp's
// llama-quantize chooses per-tensor types (rules in quant/mix.cpp).
#include <fmt/format.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "kiln/artifact/requant.h"
#include "kiln/cli/commands.h"
#include "kiln/core/threadpool.h"
#include "kiln/gguf/gguf.h"
#include "kiln/quant/mix.h"
#include "kiln/quant/quant.h"

namespace kiln::cli {
namespace {

struct QuantizeOptions {
  std::string input;
  std::string output;
  std::string type;
  bool pure = false;
  int threads = 0;
};

std::string shape_str(const std::vector<int64_t>& ne) {
  std::string s = "[";
  for (size_t i = 0; i < ne.size(); ++i) s += (i ? ", " : "") + std::to_string(ne[i]);
  return s + "]";
}

double mib(uint64_t bytes) {
  return double(bytes) / (1024.0 * 1024.0);
}

int run_quantize(const QuantizeOptions& o) {
  const auto preset = quant::quant_preset_from_name(o.type);
  if (!preset) {
    fmt::print(stderr, "kiln quantize: unknown type '{}'; valid types: {}\n", o.type,
               quant::quant_preset_names());
    return 2;
  }
  auto opened = gguf::File::open(o.input);
  if (!opened) {
    fmt::print(stderr, "kiln quantize: {}\n", opened.message());
    return 1;
  }
  const gguf::File& in = **opened;

  // Decide every tensor's type first, so unsupported inputs fail before any work.
  auto planned = artifact::plan_quantization(in, *preset, o.pure);
  if (!planned) {
    fmt::print(stderr, "kiln quantize: {}\n", planned.message());
    return 1;
  }
  const std::vector<artifact::QuantPlanEntry>& plan = *planned;

  gguf::Writer w;
  w.set_alignment(in.alignment());
  w.copy_metadata(in);
  w.set_u32("general.quantization_version", artifact::kQuantizationVersion);
  w.set_u32("general.file_type", preset->file_type);

  ThreadPool pool(o.threads);
  fmt::print("kiln quantize: {} -> {} as {}{} ({} tensors, {} threads)\n", o.input, o.output,
             preset->name, o.pure ? " (pure)" : "", plan.size(), pool.size());
  const auto t0 = std::chrono::steady_clock::now();
  std::vector<std::vector<uint8_t>> converted(plan.size());  // kept alive until write()
  uint64_t bytes_in = 0, bytes_out = 0;
  bool warned_requant = false;
  for (size_t i = 0; i < plan.size(); ++i) {
    const auto& t = *plan[i].tensor;
    const DType to = plan[i].to;
    std::span<const uint8_t> data(t.data, t.n_bytes);
    if (to != t.type) {
      if (!warned_requant && dtype_info(t.type).block_elems > 1) {
        fmt::print(
            "  note: requantizing from {} compounds quantization error; prefer an "
            "f16/bf16/f32 source\n",
            dtype_name(t.type));
        warned_requant = true;
      }
      if (auto st = artifact::convert_tensor(pool, t, to, converted[i]); !st) {
        fmt::print(stderr, "kiln quantize: {}\n", st.message());
        return 1;
      }
      data = converted[i];
    }
    if (auto s = w.add_tensor_ref(t.name, to, t.ne, data); !s) {
      fmt::print(stderr, "kiln quantize: {}\n", s.message());
      return 1;
    }
    bytes_in += t.n_bytes;
    bytes_out += data.size();
    fmt::print("[{:>4}/{:>4}] {:<36} {:<20} {:>5} -> {:<5} {:>9.2f} MiB -> {:>9.2f} MiB\n", i + 1,
               plan.size(), t.name, shape_str(t.ne), dtype_name(t.type), dtype_name(to),
               mib(t.n_bytes), mib(data.size()));
    std::fflush(stdout);
  }
  if (auto s = w.write(o.output); !s) {
    fmt::print(stderr, "kiln quantize: {}\n", s.message());
    return 1;
  }
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  fmt::print("kiln quantize: wrote {} ({:.2f} MiB of tensors, was {:.2f} MiB) in {:.1f} s\n",
             o.output, mib(bytes_out), mib(bytes_in), secs);
  return 0;
}

}  // namespace

void register_quantize(CLI::App& root, Runner& run) {
  auto o = std::make_shared<QuantizeOptions>();
  auto* sub = root.add_subcommand(
      "quantize",
      "Rewrite a GGUF model with its weight matrices in another type.\n"
      "TYPE: " +
          quant::quant_preset_names() +
          "\nq4_k_m / q5_k_m give more bits to the tensors that need them (as llama.cpp's "
          "presets do); the quantized types give the output projection q6_k (q8_0 keeps q8_0) "
          "unless --pure. 1-D tensors (norms, biases) are copied unchanged.");
  sub->add_option("input", o->input, "GGUF model to read (f32/f16/bf16, or any type kiln decodes)")
      ->required();
  sub->add_option("output", o->output, "GGUF file to write (atomically: temp file + rename)")
      ->required();
  sub->add_option("type", o->type, "Target type or mix")->required();
  sub->add_flag("--pure", o->pure,
                "Give every weight matrix TYPE (no per-tensor mix; rows that TYPE's blocks do not "
                "divide still fall back)");
  sub->add_option("-t,--threads", o->threads, "Worker threads (default: all hardware threads)");
  sub->callback([o, &run] { run = [o] { return run_quantize(*o); }; });
}

}  // namespace kiln::cli
