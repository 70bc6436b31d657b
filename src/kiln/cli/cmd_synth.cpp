// `kiln synth --preset NAME --vocab VOCAB.gguf --quant TYPE -o OUT.gguf`:
// writes a random-weight Llama-architecture model with a real tokenizer, e.g.
// the reference benchmark model (`--preset llama3-8b --quant q4_0`).
#include <fmt/format.h>

#include <memory>
#include <string>

#include "kiln/cli/commands.h"
#include "kiln/model/presets.h"
#include "kiln/model/synth.h"
#include "kiln/quant/mix.h"

namespace kiln::cli {
namespace {

int run_synth(const model::SynthOptions& base) {
  model::SynthOptions opts = base;
  opts.progress = [](const std::string& line) { fmt::print(stderr, "synth: {}\n", line); };
  auto r = model::synth_model(opts);
  if (!r) {
    fmt::print(stderr, "kiln synth: {}\n", r.message());
    return 1;
  }
  fmt::print(stderr,
             "synth: wrote {} ({:.2f} GiB, {:.2f} B parameters, vocab {}): generate {:.1f} s, "
             "write {:.1f} s\n",
             opts.out_path, double(r->file_bytes) / (1 << 30), double(r->n_params) / 1e9,
             r->n_vocab, r->generate_s, r->write_s);
  return 0;
}

std::string preset_help() {
  std::string s;
  for (const auto& p : model::model_presets()) s += fmt::format("\n  {:<12} {}", p.name, p.summary);
  return s;
}

}  // namespace

void register_synth(CLI::App& root, Runner& run) {
  auto o = std::make_shared<model::SynthOptions>();
  auto* sub = root.add_subcommand(
      "synth",
      "Write a GGUF model of random weights (architecture llama) with the tokenizer of a vocab "
      "GGUF: every weight matrix in TYPE (std 0.02), norms in f32. Presets:" +
          preset_help());
  sub->add_option("--preset", o->preset, "Model shape: " + model::model_preset_names())->required();
  sub->add_option("--vocab", o->vocab_path,
                  "GGUF whose tokenizer.* metadata is copied (e.g. ggml-vocab-llama-bpe.gguf); "
                  "it also sets the vocabulary size")
      ->required();
  sub->add_option("--quant", o->type, "Weight type or mix: " + quant::quant_preset_names())
      ->required();
  sub->add_option("-o,--output", o->out_path, "GGUF file to write (atomically)")->required();
  sub->add_option("--seed", o->seed, "Random seed: the same seed gives the same file (default 0)");
  sub->add_option("-t,--threads", o->n_threads, "Worker threads (default: all hardware threads)");
  sub->callback([o, &run] { run = [o] { return run_synth(*o); }; });
}

}  // namespace kiln::cli
