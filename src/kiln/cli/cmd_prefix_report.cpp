// `kiln prefix-report FILE`: prefix-cache reuse, common preambles and
// near-misses of a request log (analysis in server/prefix_report).
#include <fmt/format.h>

#include <fstream>
#include <memory>
#include <sstream>

#include "kiln/cli/commands.h"
#include "kiln/gguf/gguf.h"
#include "kiln/server/chat_renderer.h"
#include "kiln/server/prefix_report.h"
#include "kiln/tokenizer/tokenizer.h"

namespace kiln::cli {
namespace {

struct PrefixReportCli {
  std::string file;
  std::string model;
  std::string chat_template;
  std::string json_out;
  bool json = false;
  server::PrefixReportOptions opt;
};

int fail(const std::string& msg) {
  fmt::print(stderr, "kiln prefix-report: {}\n", msg);
  return 1;
}

int run_prefix_report(const PrefixReportCli& o) {
  if (o.opt.block_size < 1 || o.opt.max_variable < 1 || o.opt.min_realign < 1)
    return fail("--kv-block-size, --max-variable and --min-realign must be positive");
  // The tokenizer and template live in the GGUF's metadata: no weights needed.
  auto file = gguf::File::open(o.model);
  if (!file) return fail(file.message());
  auto tok = Tokenizer::from_gguf(**file);
  if (!tok) return fail(tok.message());
  std::string source = tok->chat_template();
  if (!o.chat_template.empty()) {
    std::ifstream f(o.chat_template);
    if (!f) return fail("--chat-template " + o.chat_template + ": cannot read the file");
    std::stringstream ss;
    ss << f.rdbuf();
    source = ss.str();
  }
  server::ChatRenderer chat;
  if (!source.empty()) {
    auto r = server::make_chat_renderer(source, *tok);
    if (!r) return fail(r.message());
    chat = std::move(*r);
  }
  int64_t skipped = 0;
  std::vector<std::string> warnings;
  auto prompts = server::load_prompts(o.file, *tok, chat, skipped, warnings);
  if (!prompts) return fail(prompts.message());
  const Tokenizer& t = *tok;
  auto report = server::analyze_prefixes(
      *prompts, o.opt, [&t](const std::vector<int32_t>& ids) { return t.decode(ids); });
  report.n_skipped = skipped;
  report.warnings = std::move(warnings);
  const std::string json = server::prefix_report_json(report, o.opt);
  if (!o.json_out.empty()) {
    std::ofstream f(o.json_out);
    if (!(f << json)) return fail("--json-out " + o.json_out + ": cannot write");
  }
  fmt::print("{}", o.json ? json : server::format_prefix_report(report, o.opt));
  return 0;
}

}  // namespace

void register_prefix_report(CLI::App& root, Runner& run) {
  auto o = std::make_shared<PrefixReportCli>();
  auto* c = root.add_subcommand(
      "prefix-report",
      "Prefix-cache reuse of a request log: reusable prompt tokens, common preambles, and "
      "near-misses (a small variable part early in a preamble) with position and text");
  c->add_option("file", o->file,
                "JSONL of OpenAI request bodies, or `kiln serve --request-log` output")
      ->required();
  c->add_option("-m,--model", o->model, "GGUF whose tokenizer and chat template apply")->required();
  c->add_option("--chat-template", o->chat_template, "Jinja chat template overriding the model's");
  c->add_option("--kv-block-size", o->opt.block_size, "Tokens per KV block (reuse is per block)")
      ->capture_default_str();
  c->add_option("--min-preamble", o->opt.min_preamble, "Shortest shared prefix listed (tokens)")
      ->capture_default_str();
  c->add_option("--max-variable", o->opt.max_variable,
                "Longest variable part a near-miss may have (tokens)")
      ->capture_default_str();
  c->add_option("--min-realign", o->opt.min_realign,
                "Tokens that must match again after the variable part")
      ->capture_default_str();
  c->add_option("--top", o->opt.top, "Preambles listed")->capture_default_str();
  c->add_flag("--json", o->json, "Print JSON instead of text");
  c->add_option("--json-out", o->json_out, "Also write the JSON report to FILE");
  c->callback([o, &run] { run = [o] { return run_prefix_report(*o); }; });
}

}  // namespace kiln::cli
