// `kiln generate -m MODEL -p TEXT -n N`: generates text for one prompt on the
// CPU backend and streams it to stdout as it comes; a timing line goes to stderr.
#include <fmt/format.h>

#include <chrono>
#include <cstdio>
#include <random>

#include "kiln/backend/cpu/cpu_backend.h"
#include "kiln/cli/backend_select.h"
#include "kiln/cli/commands.h"
#include "kiln/cli/demo_model.h"
#include "kiln/cli/model_source.h"
#include "kiln/engine/kv_block_pool.h"
#include "kiln/engine/sampler.h"
#include "kiln/model/model.h"
#include "kiln/tokenizer/tokenizer.h"

namespace kiln::cli {
namespace {

struct GenerateOptions {
  std::string model;
  std::string prompt;
  int n_predict = 128;
  float temperature = 0.8f;
  int top_k = 40;
  float top_p = 0.95f;
  float min_p = 0.05f;
  float repeat_penalty = 1.0f;
  int64_t seed = -1;  // < 0: random
  int n_threads = 0;
  bool reference = false;
  std::string device;   // cpu | cuda | "" (default)
  std::string kv_type;  // empty: the path's default
  std::string act = "q8x2";
  int prefill_chunk = 512;
};

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

int fail(const std::string& msg) {
  fmt::print(stderr, "kiln generate: {}\n", msg);
  return 1;
}

int run_generate(const GenerateOptions& o) {
  // A GGUF file, or a baked artifact directory (its checksums verified first;
  // one prompt needs no baked prefixes).
  // No --model: the demo model built into this binary.
  const std::string model_arg = o.model.empty() ? demo_model_path() : o.model;
  if (model_arg.empty())
    return fail("no --model given, and this kiln was built without the demo model; pass -m MODEL");
  auto source = load_model_source(model_arg, nullptr, "generate");
  if (!source) return fail(source.message());
  std::unique_ptr<model::Model>* model = &source->model;
  const model::HParams& hp = (*model)->hparams();
  auto tok = Tokenizer::from_gguf((*model)->file());
  if (!tok) return fail(tok.message());

  engine::SamplingParams sp;
  sp.temperature = o.temperature;
  sp.top_k = o.top_k;
  sp.top_p = o.top_p;
  sp.min_p = o.min_p;
  sp.repetition_penalty = o.repeat_penalty;
  sp.seed = o.seed >= 0 ? uint64_t(o.seed)
                        : (uint64_t(std::random_device{}()) << 32 | std::random_device{}());
  if (auto st = engine::validate(sp, int32_t(hp.n_vocab)); !st) return fail(st.message());

  const std::vector<int32_t> prompt = tok->encode(o.prompt, /*add_special=*/true,
                                                  /*parse_special=*/true);
  if (prompt.empty()) return fail("the prompt is empty and the vocabulary adds no BOS token");
  const int64_t n_total = int64_t(prompt.size()) + o.n_predict;
  if (n_total > hp.n_ctx_train)
    fmt::print(stderr,
               "kiln generate: warning: {} tokens exceed the model's training context "
               "of {}\n",
               n_total, hp.n_ctx_train);

  SingleSequenceSetup setup;
  setup.device = o.device;
  setup.cpu.n_threads = o.n_threads;
  setup.cpu.path = o.reference ? cpu::MatmulPath::reference : cpu::MatmulPath::fast;
  setup.cpu.act = o.act == "q8" ? cpu::ActQuant::q8 : cpu::ActQuant::q8x2;
  setup.kv_type = o.kv_type;
  setup.n_positions = n_total;
  auto opened = open_single_sequence_backend(**model, setup);
  if (!opened) return fail(opened.message());
  Backend& backend = **opened;
  const cpu::CpuBackend* cpu_be = as_cpu(backend);  // nullptr on the GPU
  const KvCacheConfig& kv = backend.kv_config();
  engine::KvBlockPool pool(kv.n_blocks);
  std::vector<int32_t> blocks;
  if (!pool.grow(blocks, n_total, kv.block_size)) return fail("KV pool too small");

  engine::Sampler sampler(sp, tok->eog_ids());
  sampler.add_context(prompt);

  std::fwrite(o.prompt.data(), 1, o.prompt.size(), stdout);
  std::fflush(stdout);

  // Prefill in chunks (bounded activation memory); logits for the last token only.
  Batch batch;
  const auto t_prefill = Clock::now();
  for (size_t start = 0; start < prompt.size(); start += size_t(o.prefill_chunk)) {
    batch.clear();
    const int32_t s = batch.add_seq(blocks);
    const size_t end = std::min(prompt.size(), start + size_t(o.prefill_chunk));
    for (size_t i = start; i < end; ++i)
      batch.add(prompt[i], int32_t(i), s, i + 1 == prompt.size());
    if (auto st = backend.forward(batch); !st) return fail(st.message());
  }
  if (auto st = backend.synchronize(); !st) return fail(st.message());
  const double prefill_s = seconds_since(t_prefill);

  const auto t_decode = Clock::now();
  int n_generated = 0;
  int32_t pos = int32_t(prompt.size());
  while (n_generated < o.n_predict) {
    const int32_t next = sampler.sample(backend.logits(0), int32_t(hp.n_vocab));
    if (tok->is_eog(next)) break;
    const std::string& piece = tok->token_to_piece(next);
    std::fwrite(piece.data(), 1, piece.size(), stdout);
    std::fflush(stdout);
    if (++n_generated == o.n_predict) break;  // no forward for a token nobody samples
    batch.clear();
    batch.add(next, pos++, batch.add_seq(blocks), true);
    if (auto st = backend.forward(batch); !st) return fail(st.message());
    if (auto st = backend.synchronize(); !st) return fail(st.message());
  }
  const double decode_s = seconds_since(t_decode);
  std::fputc('\n', stdout);
  std::fflush(stdout);

  fmt::print(stderr,
             "kiln generate: prompt {} tokens in {:.1f} ms ({:.1f} tok/s) | generated {} tokens "
             "in {:.1f} ms ({:.1f} tok/s) | {} path ({}), kv {}, {} | seed {}\n",
             prompt.size(), prefill_s * 1e3, double(prompt.size()) / prefill_s, n_generated,
             decode_s * 1e3, n_generated > 0 ? double(n_generated) / decode_s : 0.0,
             !cpu_be                                   ? "cuda"
             : cpu_be->path() == cpu::MatmulPath::fast ? "fast"
                                                       : "reference",
             cpu_be ? cpu_be->numerics() : std::string("q8 matvec / f16 gemm"),
             kv_type_name(kv.type), backend.device_name(), sp.seed);
  return 0;
}

}  // namespace

void register_generate(CLI::App& root, Runner& run) {
  auto o = std::make_shared<GenerateOptions>();
  CLI::App* c = root.add_subcommand("generate", "Generate text from a prompt (CPU backend)");
  c->add_option("-m,--model", o->model,
                "GGUF model file, or a baked artifact directory (default: the demo model built "
                "into kiln)");
  c->add_option("-p,--prompt", o->prompt, "Prompt text (special tokens are parsed)")->required();
  c->add_option("-n,--n-predict", o->n_predict, "Tokens to generate at most")
      ->check(CLI::NonNegativeNumber);
  c->add_option("--temp", o->temperature, "Temperature (0 = greedy)")
      ->check(CLI::NonNegativeNumber);
  c->add_option("--top-k", o->top_k, "Top-k (0 = off)");
  c->add_option("--top-p", o->top_p, "Top-p (1 = off)");
  c->add_option("--min-p", o->min_p, "Min-p (0 = off)");
  c->add_option("--seed", o->seed, "Sampling seed (default: random, printed at the end)");
  c->add_option("--repeat-penalty", o->repeat_penalty, "Repetition penalty (1 = off)");
  c->add_option("-t,--threads", o->n_threads, "CPU threads (default: all)");
  add_device_option(c, o->device);
  c->add_flag("--reference", o->reference,
              "Use the scalar reference path (also KILN_CPU_REFERENCE=1)");
  c->add_option("--act", o->act,
                "Fast-path activations for quantized weights: q8x2 (~16-bit accurate, default) "
                "or q8 (llama.cpp's 8-bit scheme, faster prefill)")
      ->check(CLI::IsMember({"q8", "q8x2"}));
  c->add_option("--kv-type", o->kv_type,
                "KV cache type: f32, f16, fp8, q8_0 "
                "(default: f16, f32 with --reference)");
  c->callback([o, &run] { run = [o] { return run_generate(*o); }; });
}

}  // namespace kiln::cli
