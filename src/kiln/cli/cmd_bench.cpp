// `kiln bench -m MODEL -p 512 -n 128`: prefill (ppN: one sequence, N random
// tokens in one forward) and decode (tgN: batch 1, N steps from an empty
// context) throughput on the CPU backend. Prints a table, then one JSON line
// per test (also written to --json-out) with the mean and stddev over reps
// and a hash of the final logits, so numeric drift shows while optimizing.
#include <fmt/format.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>

#include "kiln/backend/cpu/cpu_backend.h"
#include "kiln/cli/backend_select.h"
#include "kiln/cli/commands.h"
#include "kiln/engine/kv_block_pool.h"
#include "kiln/model/model.h"

namespace kiln::cli {
namespace {

struct BenchOptions {
  std::string model;
  int n_prompt = 512;
  int n_gen = 128;
  int n_threads = 0;
  int reps = 5;
  std::string json_out;
  bool reference = false;
  std::string kv_type;
  std::string device;  // cpu | cuda | "" (default)
  std::string act = "q8x2";
};

using Clock = std::chrono::steady_clock;

int fail(const std::string& msg) {
  fmt::print(stderr, "kiln bench: {}\n", msg);
  return 1;
}

// FNV-1a over the bytes of the logits: equal hashes = bit-identical logits.
std::string hash_logits(std::span<const float> logits) {
  uint64_t h = 1469598103934665603ull;
  const auto* p = reinterpret_cast<const uint8_t*>(logits.data());
  for (size_t i = 0; i < logits.size_bytes(); ++i) h = (h ^ p[i]) * 1099511628211ull;
  return fmt::format("{:016x}", h);
}

struct Stats {
  double mean = 0, stddev = 0;
};
Stats stats(const std::vector<double>& v) {
  Stats s;
  for (double x : v) s.mean += x;
  s.mean /= double(v.size());
  if (v.size() > 1) {
    for (double x : v) s.stddev += (x - s.mean) * (x - s.mean);
    s.stddev = std::sqrt(s.stddev / double(v.size() - 1));
  }
  return s;
}

struct Bench {
  Backend& be;
  std::span<const int32_t> blocks;
  Batch batch;

  // One forward of tokens at positions [0, n), logits for the last; seconds.
  Status prefill(const std::vector<int32_t>& tokens, double& secs) {
    batch.clear();
    const int32_t s = batch.add_seq(blocks);
    for (size_t i = 0; i < tokens.size(); ++i)
      batch.add(tokens[i], int32_t(i), s, i + 1 == tokens.size());
    const auto t0 = Clock::now();
    KILN_TRY(be.forward(batch));
    KILN_TRY(be.synchronize());
    secs = std::chrono::duration<double>(Clock::now() - t0).count();
    return Status::success();
  }
  // n single-token steps at positions [0, n); seconds for all of them.
  Status decode(const std::vector<int32_t>& tokens, double& secs) {
    const auto t0 = Clock::now();
    for (size_t i = 0; i < tokens.size(); ++i) {
      batch.clear();
      batch.add(tokens[i], int32_t(i), batch.add_seq(blocks), true);
      KILN_TRY(be.forward(batch));
      KILN_TRY(be.synchronize());
    }
    secs = std::chrono::duration<double>(Clock::now() - t0).count();
    return Status::success();
  }
};

int run_bench(const BenchOptions& o) {
  auto model = model::Model::load(o.model);
  if (!model) return fail(model.message());
  const model::HParams& hp = (*model)->hparams();

  SingleSequenceSetup setup;
  setup.device = o.device;
  setup.cpu.n_threads = o.n_threads;
  setup.cpu.path = o.reference ? cpu::MatmulPath::reference : cpu::MatmulPath::fast;
  setup.cpu.act = o.act == "q8" ? cpu::ActQuant::q8 : cpu::ActQuant::q8x2;
  setup.kv_type = o.kv_type;
  setup.n_positions = std::max(o.n_prompt, o.n_gen);
  auto opened = open_single_sequence_backend(**model, setup);
  if (!opened) return fail(opened.message());
  Backend& backend = **opened;
  const cpu::CpuBackend* cpu_be = as_cpu(backend);  // nullptr on the GPU
  const KvCacheConfig& kv = backend.kv_config();
  engine::KvBlockPool pool(kv.n_blocks);
  std::vector<int32_t> blocks;
  (void)pool.grow(blocks, std::max(o.n_prompt, o.n_gen), kv.block_size);

  // Fixed seed: the same token ids every run, so logits hashes compare.
  std::mt19937_64 rng(1234);
  std::uniform_int_distribution<int32_t> pick(0, int32_t(hp.n_vocab - 1));
  auto random_tokens = [&](int n) {
    std::vector<int32_t> t(static_cast<size_t>(n));
    for (auto& x : t) x = pick(rng);
    return t;
  };

  const bool fast = !cpu_be || cpu_be->path() == cpu::MatmulPath::fast;
  const std::string device = backend.device_name();
  const std::string isa = !cpu_be ? "cuda" : fast ? cpu::fast_isa() : "scalar (reference)";
  const std::string act = !cpu_be ? "q8 matvec / f16 gemm"
                          : fast  ? std::string(cpu::act_quant_name(cpu_be->act_quant()))
                                  : "f32";
  const std::string path_name = !cpu_be ? "cuda" : fast ? "fast" : "reference";
  const int n_threads = cpu_be ? cpu_be->n_threads() : 0;
  const double ref_bw = reference_bandwidth(backend);  // bytes/s, 0 when unknown
  const double size_gib = double((*model)->weights().total_bytes()) / double(1ull << 30);
  const double bytes_per_token = double((*model)->weights().bytes_read_per_token());

  Bench bench{backend, blocks, {}};
  std::vector<nlohmann::json> results;
  fmt::print("| model | size | path | isa | act | kv | threads | test | t/s |\n");
  fmt::print("| ----- | ---: | ---- | --- | --- | -- | ------: | ---- | --: |\n");
  const std::string model_name = std::filesystem::path(o.model).filename().string();

  auto report = [&](const std::string& test, int n_tokens, const std::vector<double>& secs,
                    bool decode) {
    std::vector<double> tps;
    for (double s : secs) tps.push_back(double(n_tokens) / s);
    const Stats st = stats(tps);
    fmt::print("| {} | {:.2f} GiB | {} | {} | {} | {} | {} | {} | {:.2f} ± {:.2f} |\n", model_name,
               size_gib, path_name, isa, act, kv_type_name(kv.type), n_threads, test, st.mean,
               st.stddev);
    nlohmann::json j;
    j["test"] = test;
    j["tokens_per_s"] = st.mean;
    j["tokens_per_s_stddev"] = st.stddev;
    if (decode) {
      j["gb_per_s"] = bytes_per_token * st.mean / 1e9;
      j["gb_per_s_stddev"] = bytes_per_token * st.stddev / 1e9;
      j["bytes_per_token"] = bytes_per_token;
      if (ref_bw > 0) {
        j["pct_of_copy_bandwidth"] = 100.0 * bytes_per_token * st.mean / ref_bw;
        j["copy_bandwidth_gb_per_s"] = ref_bw / 1e9;
        fmt::print("decode on {}: {:.1f} GB/s of weights = {:.1f}% of {:.0f} GB/s\n", device,
                   bytes_per_token * st.mean / 1e9, 100.0 * bytes_per_token * st.mean / ref_bw,
                   ref_bw / 1e9);
      }
    }
    j["device"] = device;
    j["isa"] = isa;
    j["act"] = act;
    j["backend"] = backend.name();
    j["path"] = path_name;
    j["kv_type"] = kv_type_name(kv.type);
    j["logits_hash"] = hash_logits(backend.logits(backend.n_logits() - 1));
    j["n_threads"] = n_threads;
    j["model"] = model_name;
    j["reps"] = int(secs.size());
    results.push_back(std::move(j));
  };

  if (o.n_prompt > 0) {
    const auto tokens = random_tokens(o.n_prompt);
    double secs = 0;
    if (auto st = bench.prefill(tokens, secs); !st) return fail(st.message());  // warm-up
    std::vector<double> times;
    for (int r = 0; r < o.reps; ++r) {
      if (auto st = bench.prefill(tokens, secs); !st) return fail(st.message());
      times.push_back(secs);
    }
    report(fmt::format("pp{}", o.n_prompt), o.n_prompt, times, false);
  }
  if (o.n_gen > 0) {
    const auto tokens = random_tokens(o.n_gen);
    double secs = 0;
    if (auto st = bench.decode({tokens[0]}, secs); !st) return fail(st.message());  // warm-up
    std::vector<double> times;
    for (int r = 0; r < o.reps; ++r) {
      if (auto st = bench.decode(tokens, secs); !st) return fail(st.message());
      times.push_back(secs);
    }
    report(fmt::format("tg{}", o.n_gen), o.n_gen, times, true);
  }

  std::ofstream json_file;
  if (!o.json_out.empty()) {
    json_file.open(o.json_out, std::ios::app);
    if (!json_file) return fail("cannot open --json-out file " + o.json_out);
  }
  for (const auto& j : results) {
    fmt::print("{}\n", j.dump());
    if (json_file) json_file << j.dump() << "\n";
  }
  return 0;
}

}  // namespace

void register_bench(CLI::App& root, Runner& run) {
  auto o = std::make_shared<BenchOptions>();
  CLI::App* c = root.add_subcommand("bench", "Measure prefill and decode throughput (CPU backend)");
  c->add_option("-m,--model", o->model, "GGUF model file")->required();
  c->add_option("-p,--n-prompt", o->n_prompt, "Prompt tokens for the prefill test (0 = skip)")
      ->check(CLI::NonNegativeNumber);
  c->add_option("-n,--n-gen", o->n_gen, "Tokens for the decode test (0 = skip)")
      ->check(CLI::NonNegativeNumber);
  c->add_option("-t,--threads", o->n_threads, "CPU threads (default: all)");
  c->add_option("-r,--reps", o->reps, "Repetitions (mean and stddev over them)")
      ->check(CLI::PositiveNumber);
  c->add_option("--json-out", o->json_out, "Append the JSON result lines to this file");
  c->add_flag("--reference", o->reference, "Benchmark the scalar reference path");
  c->add_option("--act", o->act,
                "Fast-path activations for quantized weights: q8x2 (~16-bit accurate, default) "
                "or q8 (llama.cpp's 8-bit scheme, faster prefill)")
      ->check(CLI::IsMember({"q8", "q8x2"}));
  c->add_option("--kv-type", o->kv_type, "KV cache type: f32, f16, fp8, q8_0");
  add_device_option(c, o->device);
  c->callback([o, &run] { run = [o] { return run_bench(*o); }; });
}

}  // namespace kiln::cli
