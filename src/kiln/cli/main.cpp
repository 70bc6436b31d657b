// kiln's entry point: parses the command line and runs one subcommand.
#include <cstdio>

#include "kiln/cli/commands.h"

int main(int argc, char** argv) {
  CLI::App app{
      "kiln: LLM inference for serverless GPUs (GGUF models, OpenAI-compatible API).\n"
      "Run `kiln <command> --help` for the options of each command."};
  app.require_subcommand(1);
  app.set_version_flag("--version", "kiln 0.1.0");

  kiln::cli::Runner run;
  kiln::cli::register_inspect(app, run);
  kiln::cli::register_generate(app, run);
  kiln::cli::register_bench(app, run);
  kiln::cli::register_tokenize(app, run);
  kiln::cli::register_quantize(app, run);
  kiln::cli::register_synth(app, run);
  kiln::cli::register_template(app, run);
  kiln::cli::register_serve(app, run);
  kiln::cli::register_perplexity(app, run);
  kiln::cli::register_pull(app, run);
  kiln::cli::register_bake(app, run);
  kiln::cli::register_plan(app, run);
  kiln::cli::register_prefix_report(app, run);
  kiln::cli::register_loadtest(app, run);

  CLI11_PARSE(app, argc, argv);
  if (!run) return 2;
  return run();
}
