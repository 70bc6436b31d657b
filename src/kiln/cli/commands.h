// Registration of kiln's subcommands: one file per subcommand under cli/,
// each adding itself to the root CLI11 app and, when chosen, setting `run`.
#pragma once

#include <CLI/CLI.hpp>
#include <functional>

namespace kiln::cli {

// The chosen subcommand's body; returns the process exit code.
using Runner = std::function<int()>;

void register_inspect(CLI::App& root, Runner& run);
void register_generate(CLI::App& root, Runner& run);
void register_bench(CLI::App& root, Runner& run);
void register_tokenize(CLI::App& root, Runner& run);
void register_quantize(CLI::App& root, Runner& run);
void register_synth(CLI::App& root, Runner& run);
void register_template(CLI::App& root, Runner& run);
void register_serve(CLI::App& root, Runner& run);
void register_perplexity(CLI::App& root, Runner& run);
void register_pull(CLI::App& root, Runner& run);
void register_bake(CLI::App& root, Runner& run);
void register_plan(CLI::App& root, Runner& run);
void register_prefix_report(CLI::App& root, Runner& run);
void register_loadtest(CLI::App& root, Runner& run);

}  // namespace kiln::cli
