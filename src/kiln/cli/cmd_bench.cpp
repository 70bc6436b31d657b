// `kiln bench -m MODEL -p 512 -n 128`: prefill (ppN: one sequence, N random
// tokens in one forward) and decode (tgN: batch 1, N steps from an empty
// context) throughput on the CPU backend. Prints a table, then one JSON line
// per test (also written to --json-out) with the mean and stddev over reps
// and a hash of the final logits, so numeric drift shows while optimizing.
// `--streams 8,32,...` instead runs batched decode: N sequences prefilled,
// then decoded together one token each per forward (greedy on the host).
#include <fmt/format.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
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
  std::vector<int> streams;  // --streams: batched-decode stream counts; skips pp/tg
  int depth = 0;             // --depth: positions already in the cache before pp/tg
};

using Clock = std::chrono::steady_clock;

int fail(const std::string& msg) {
  fmt::print(stderr, "kiln bench: {}\n", msg);
  return 1;
}

// FNV-1a over the bytes of the logits: equal hashes = bit-identical logits.
constexpr uint64_t fnv_basis = 1469598103934665603ull;
uint64_t fnv_update(uint64_t h, std::span<const float> logits) {
  const auto* p = reinterpret_cast<const uint8_t*>(logits.data());
  for (size_t i = 0; i < logits.size_bytes(); ++i) h = (h ^ p[i]) * 1099511628211ull;
  return h;
}
std::string hash_logits(std::span<const float> logits) {
  return fmt::format("{:016x}", fnv_update(fnv_basis, logits));
}

int32_t argmax(std::span<const float> v) {
  int32_t best = 0;
  for (size_t i = 1; i < v.size(); ++i)
    if (v[i] > v[size_t(best)]) best = int32_t(i);
  return best;
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
  int32_t depth = 0;  // tests start at this position (the cache holds [0, depth))

  // Fills positions [0, depth) of the cache with tokens, in forwards of at
  // most 512 (untimed: the context the tests then run over).
  Status fill_depth(const std::vector<int32_t>& tokens) {
    for (size_t at = 0; at < tokens.size(); at += 512) {
      batch.clear();
      const int32_t s = batch.add_seq(blocks);
      const size_t end = std::min(tokens.size(), at + 512);
      for (size_t i = at; i < end; ++i) batch.add(tokens[i], int32_t(i), s, i + 1 == end);
      KILN_TRY(be.forward(batch));
    }
    return be.synchronize();
  }
  // One forward of tokens at positions [depth, depth + n), logits for the last; seconds.
  Status prefill(const std::vector<int32_t>& tokens, double& secs) {
    batch.clear();
    const int32_t s = batch.add_seq(blocks);
    for (size_t i = 0; i < tokens.size(); ++i)
      batch.add(tokens[i], depth + int32_t(i), s, i + 1 == tokens.size());
    const auto t0 = Clock::now();
    KILN_TRY(be.forward(batch));
    KILN_TRY(be.synchronize());
    secs = std::chrono::duration<double>(Clock::now() - t0).count();
    return Status::success();
  }
  // n single-token steps at positions [depth, depth + n); seconds for all of them.
  Status decode(const std::vector<int32_t>& tokens, double& secs) {
    const auto t0 = Clock::now();
    for (size_t i = 0; i < tokens.size(); ++i) {
      batch.clear();
      batch.add(tokens[i], depth + int32_t(i), batch.add_seq(blocks), true);
      KILN_TRY(be.forward(batch));
      KILN_TRY(be.synchronize());
    }
    secs = std::chrono::duration<double>(Clock::now() - t0).count();
    return Status::success();
  }
};

// The greedy id of logits row i: the backend's own argmax when it has one
// (GPU: only ids cross to the host), else computed here.
int32_t greedy_id(const Backend& be, int32_t i) {
  const int32_t id = be.argmax(i);
  return id >= 0 ? id : argmax(be.logits(i));
}

// Batched decode over n_streams sequences, each with its own blocks in one
// pool: prefill every prompt (forwards of at most max_chunk tokens, packing
// several sequences into one), then n_gen steps of one token per sequence in
// a single batch, greedy (the backend's argmax: ids only reach the host). Decode time runs from the first
// timed forward to the last step's ids on the host.
struct StreamsResult {
  double prefill_s = 0, decode_s = 0;
  std::string logits_hash;  // over every stream's logits of the last step
};

Status run_streams(Backend& be, engine::KvBlockPool& pool, int n_streams, int n_prompt,
                   int n_gen, const std::function<std::vector<int32_t>(int)>& random_tokens,
                   StreamsResult& r) {
  constexpr int max_chunk = 512;
  const int32_t block_size = be.kv_config().block_size;
  const int64_t n_pos = int64_t(n_prompt) + n_gen;
  std::vector<std::vector<int32_t>> tables(static_cast<size_t>(n_streams));  // [n_streams][blocks]
  for (auto& t : tables)
    if (!pool.grow(t, n_pos, block_size))
      return make_error("KV pool too small for the streams (internal sizing error)");
  std::vector<std::vector<int32_t>> prompts;
  for (int i = 0; i < n_streams; ++i) prompts.push_back(random_tokens(n_prompt));

  Batch batch;
  batch.tokens.reserve(size_t(std::max(max_chunk, n_streams)));
  batch.seqs.reserve(size_t(n_streams));
  std::vector<int32_t> next(static_cast<size_t>(n_streams));   // [n_streams] next input token
  std::vector<int32_t> row_seq(static_cast<size_t>(n_streams));   // logits row -> stream, per forward

  // Prefill: walk the prompts in order, cutting forwards at max_chunk tokens.
  auto flush = [&]() -> Status {
    if (batch.tokens.empty()) return Status::success();
    KILN_TRY(be.forward(batch));
    KILN_TRY(be.synchronize());
    for (int32_t i = 0; i < be.n_logits(); ++i)
      next[size_t(row_seq[size_t(i)])] = greedy_id(be, i);
    batch.clear();
    return Status::success();
  };
  const auto t_pre = Clock::now();
  int32_t n_rows = 0;
  for (int s = 0; s < n_streams; ++s) {
    for (int pos = 0; pos < n_prompt;) {
      if (batch.n_tokens() == max_chunk) {
        KILN_TRY(flush());
        n_rows = 0;
      }
      const int32_t seq = batch.add_seq(tables[size_t(s)]);
      const int take = std::min(n_prompt - pos, max_chunk - batch.n_tokens());
      for (int k = 0; k < take; ++k, ++pos) {
        const bool last = pos + 1 == n_prompt;
        batch.add(prompts[size_t(s)][size_t(pos)], pos, seq, last);
        if (last) row_seq[size_t(n_rows++)] = s;
      }
    }
  }
  KILN_TRY(flush());
  r.prefill_s = std::chrono::duration<double>(Clock::now() - t_pre).count();
  if (n_prompt == 0)
    for (auto& t : next) t = random_tokens(1)[0];

  // One step: every stream's token at position pos in one batch.
  auto step = [&](int32_t pos) -> Status {
    batch.clear();
    for (int s = 0; s < n_streams; ++s)
      batch.add(next[size_t(s)], pos, batch.add_seq(tables[size_t(s)]), true);
    KILN_TRY(be.forward(batch));
    KILN_TRY(be.synchronize());
    for (int s = 0; s < n_streams; ++s) next[size_t(s)] = greedy_id(be, s);
    return Status::success();
  };
  // Warm-up (graph capture, workspace growth) at the first decode position;
  // the timed run then writes the same K/V there again, so results match.
  const std::vector<int32_t> first = next;
  KILN_TRY(step(n_prompt));
  next = first;
  const auto t0 = Clock::now();
  for (int k = 0; k < n_gen; ++k) KILN_TRY(step(n_prompt + k));
  r.decode_s = std::chrono::duration<double>(Clock::now() - t0).count();

  uint64_t h = fnv_basis;
  for (int s = 0; s < n_streams; ++s) h = fnv_update(h, be.logits(s));
  r.logits_hash = fmt::format("{:016x}", h);
  for (auto& t : tables) pool.release_all(t);
  return Status::success();
}

int run_bench(const BenchOptions& o) {
  if (!o.streams.empty() && o.depth > 0)
    return fail("--depth applies to the prefill and decode tests, not to --streams (whose "
                "prompts, -p, are their context)");
  auto model = model::Model::load(o.model);
  if (!model) return fail(model.message());
  const model::HParams& hp = (*model)->hparams();

  SingleSequenceSetup setup;
  setup.device = o.device;
  setup.cpu.n_threads = o.n_threads;
  setup.cpu.path = o.reference ? cpu::MatmulPath::reference : cpu::MatmulPath::fast;
  setup.cpu.act = o.act == "q8" ? cpu::ActQuant::q8 : cpu::ActQuant::q8x2;
  setup.kv_type = o.kv_type;
  setup.n_positions = o.streams.empty() ? o.depth + std::max(o.n_prompt, o.n_gen) : o.n_prompt + o.n_gen;
  auto opened = open_single_sequence_backend(**model, setup);
  if (!opened) return fail(opened.message());
  Backend& backend = **opened;
  const cpu::CpuBackend* cpu_be = as_cpu(backend);  // nullptr on the GPU
  const KvCacheConfig& kv = backend.kv_config();
  engine::KvBlockPool pool(kv.n_blocks);
  std::vector<int32_t> blocks;
  (void)pool.grow(blocks, o.depth + std::max(o.n_prompt, o.n_gen), kv.block_size);

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

  Bench bench{backend, blocks, {}, o.depth};
  if (o.streams.empty() && o.depth > 0)
    if (auto st = bench.fill_depth(random_tokens(o.depth)); !st) return fail(st.message());
  // llama-bench's names: pp512@d2048 is a 512-token prefill over 2,048 cached positions.
  const std::string at_depth = o.depth > 0 ? fmt::format("@d{}", o.depth) : "";
  std::vector<nlohmann::json> results;
  if (o.streams.empty()) {
    fmt::print("| model | size | path | isa | act | kv | threads | test | t/s |\n");
    fmt::print("| ----- | ---: | ---- | --- | --- | -- | ------: | ---- | --: |\n");
  }
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

  if (!o.streams.empty()) {
    if (o.n_gen == 0) return fail("--streams needs -n > 0 decode steps");
    fmt::print("| model | path | kv | prompt | gen | streams | t/s | t/s per stream |\n");
    fmt::print("| ----- | ---- | -- | -----: | --: | ------: | --: | -------------: |\n");
  }
  for (int n : o.streams) {
    // A fresh pool per stream count, so each N runs with N x (p + n) positions.
    if (auto st = resize_kv_for_sequences(backend, n, int64_t(o.n_prompt) + o.n_gen); !st)
      return fail(st.message());
    engine::KvBlockPool spool(backend.kv_config().n_blocks);
    StreamsResult r;
    if (auto st = run_streams(backend, spool, n, o.n_prompt, o.n_gen, random_tokens, r); !st)
      return fail(st.message());
    const double tps = double(n) * o.n_gen / r.decode_s;
    fmt::print("| {} | {} | {} | {} | {} | {} | {:.2f} | {:.2f} |\n", model_name, path_name,
               kv_type_name(backend.kv_config().type), o.n_prompt, o.n_gen, n, tps, tps / n);
    std::fflush(stdout);
    nlohmann::json j;
    j["test"] = fmt::format("streams{}", n);
    j["n_streams"] = n;
    j["tokens_per_s"] = tps;
    j["tokens_per_s_per_stream"] = tps / n;
    j["n_prompt"] = o.n_prompt;
    j["n_gen"] = o.n_gen;
    j["prefill_s"] = r.prefill_s;
    j["decode_s"] = r.decode_s;
    j["device"] = device;
    j["isa"] = isa;
    j["act"] = act;
    j["backend"] = backend.name();
    j["path"] = path_name;
    j["kv_type"] = kv_type_name(backend.kv_config().type);
    j["logits_hash"] = r.logits_hash;
    j["n_threads"] = n_threads;
    j["model"] = model_name;
    results.push_back(std::move(j));
  }

  if (o.streams.empty() && o.n_prompt > 0) {
    const auto tokens = random_tokens(o.n_prompt);
    double secs = 0;
    if (auto st = bench.prefill(tokens, secs); !st) return fail(st.message());  // warm-up
    std::vector<double> times;
    for (int r = 0; r < o.reps; ++r) {
      if (auto st = bench.prefill(tokens, secs); !st) return fail(st.message());
      times.push_back(secs);
    }
    report(fmt::format("pp{}{}", o.n_prompt, at_depth), o.n_prompt, times, false);
  }
  if (o.streams.empty() && o.n_gen > 0) {
    const auto tokens = random_tokens(o.n_gen);
    double secs = 0;
    if (auto st = bench.decode({tokens[0]}, secs); !st) return fail(st.message());  // warm-up
    std::vector<double> times;
    for (int r = 0; r < o.reps; ++r) {
      if (auto st = bench.decode(tokens, secs); !st) return fail(st.message());
      times.push_back(secs);
    }
    report(fmt::format("tg{}{}", o.n_gen, at_depth), o.n_gen, times, true);
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
  c->add_option("-d,--depth", o->depth,
                "Context already in the KV cache (random tokens, filled once, untimed) before "
                "each prefill and decode test: pp16 with -d 2544 times 16 prompt tokens over "
                "a 2,544-token prefix")
      ->check(CLI::Range(0, 1 << 20));
  c->add_option("--streams", o->streams,
                 "Batched decode instead of pp/tg: comma-separated stream counts, each N "
                 "sequences of -p prompt tokens decoded -n steps together (e.g. 8,32,64,128)")
      ->delimiter(',')
      ->check(CLI::PositiveNumber);
  add_device_option(c, o->device);
  c->callback([o, &run] { run = [o] { return run_bench(*o); }; });
}

}  // namespace kiln::cli
