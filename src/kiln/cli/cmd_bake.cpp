// `kiln bake --model MODEL --out DIR [...]`: writes a baked artifact at image
// build time, where there is no GPU: weights.bin (the target's weight layout,
// reproducible byte for byte) and warm.bin (fingerprint, the prefix cache of
// the warm prompts computed on the CPU, recorded outputs). Formats:
// artifact/weights_file.h, artifact/warm_file.h; user guide: docs/bake.md.
#include <fmt/format.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>

#include "kiln/artifact/artifact.h"
#include "kiln/artifact/warm_file.h"
#include "kiln/artifact/warm_prompts.h"
#include "kiln/artifact/weight_layout.h"
#include "kiln/artifact/weights_file.h"
#include "kiln/backend/cpu/cpu_backend.h"
#include "kiln/cli/commands.h"
#include "kiln/core/threadpool.h"
#include "kiln/engine/engine.h"
#include "kiln/engine/kv_block_pool.h"
#include "kiln/model/model.h"
#include "kiln/quant/mix.h"
#include "kiln/server/chat_renderer.h"
#include "kiln/server/openai_common.h"
#include "kiln/server/text_stream.h"
#include "kiln/tokenizer/tokenizer.h"

namespace kiln::cli {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

struct BakeOptions {
  std::string model;
  std::string out;
  std::string warm;
  std::string quant;
  bool pure = false;
  std::string kv_type = "f16";
  int kv_block_size = 16;
  int ctx_size = 4096;
  std::string target = "sm_89";
  bool record_outputs = false;
  int default_max_tokens = 64;
  std::string chat_template;
  int threads = 0;
};

int fail(const std::string& msg) {
  fmt::print(stderr, "kiln bake: {}\n", msg);
  return 1;
}

double since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

// The requests the warm prompts become: the prompt tokenized exactly as the
// server tokenizes that form (so a live request with the same preamble hits
// the same blocks), generating 1 token (its prompt's K/V is all that is
// kept) or, with --record-outputs, up to max_tokens.
struct PreparedPrompt {
  const artifact::WarmPrompt* src = nullptr;
  std::string text;
  std::vector<int32_t> tokens;
  int32_t max_tokens = 1;
};

Result<std::vector<PreparedPrompt>> prepare_prompts(const BakeOptions& o,
                                                    const std::vector<artifact::WarmPrompt>& ps,
                                                    const Tokenizer& tok) {
  server::ChatRenderer chat;
  std::string source;
  if (!o.chat_template.empty()) {
    std::ifstream f(o.chat_template, std::ios::binary);
    if (!f) return make_error("--chat-template " + o.chat_template + ": cannot read the file");
    std::stringstream ss;
    ss << f.rdbuf();
    source = ss.str();
  } else {
    source = tok.chat_template();
  }
  std::vector<PreparedPrompt> out;
  for (const auto& p : ps) {
    PreparedPrompt pp;
    pp.src = &p;
    if (p.chat) {
      if (!chat) {
        if (source.empty())
          return make_error(
              fmt::format("--warm line {}: a chat prompt, but the model has no chat template; pass "
                          "--chat-template FILE (the same one kiln serve will use)",
                          p.line));
        auto r = server::make_chat_renderer(source, tok);
        if (!r) return r.error();
        chat = std::move(*r);
      }
      const server::Json messages = server::Json::parse(p.request["messages"].dump());
      const server::Json tools = nullptr;
      const server::Json vars = server::Json::object();
      auto text = chat(server::ChatRenderInput{messages, tools, true, vars});
      if (!text) return make_error(fmt::format("--warm line {}: {}", p.line, text.message()));
      pp.text = *text;
      // As /v1/chat/completions: the template writes BOS itself.
      pp.tokens = tok.encode(pp.text, /*add_special=*/false, /*parse_special=*/true);
    } else {
      pp.text = p.prompt_text;
      pp.tokens = tok.encode(pp.text, /*add_special=*/true, /*parse_special=*/true);
    }
    if (pp.tokens.empty()) return make_error(fmt::format("--warm line {}: empty prompt", p.line));
    pp.max_tokens = o.record_outputs ? p.max_tokens.value_or(o.default_max_tokens) : 1;
    pp.max_tokens = std::max(pp.max_tokens, 1);  // the prompt runs only when a token is wanted
    if (int64_t(pp.tokens.size()) + pp.max_tokens > o.ctx_size)
      return make_error(fmt::format(
          "--warm line {}: the prompt ({} tokens) + {} generated tokens exceed --ctx-size {}; "
          "shorten it or raise --ctx-size (kiln serve must then use the same)",
          p.line, pp.tokens.size(), pp.max_tokens, o.ctx_size));
    out.push_back(std::move(pp));
  }
  return out;
}

// Runs the warm prompts on the CPU and collects what warm.bin stores.
Status run_warm(const BakeOptions& o, const model::Model& model, const Tokenizer& tok,
                KvType kv_type, artifact::WarmData& warm) {
  auto prompts = artifact::read_warm_prompts(o.warm);
  if (!prompts) return prompts.error();
  auto prepared = prepare_prompts(o, *prompts, tok);
  if (!prepared) return prepared.error();

  cpu::CpuOptions copt;
  copt.n_threads = o.threads;
  cpu::CpuBackend backend(copt);
  KILN_TRY(backend.load_weights(model));
  engine::EngineConfig cfg;
  cfg.cache_prompt_tails = true;  // the warm prompts' partial last blocks are baked too
  cfg.ctx_size = o.ctx_size;
  cfg.kv.type = kv_type;
  cfg.kv.block_size = o.kv_block_size;
  // Room for every prompt at once (and the copy of its partial last block):
  // no cached block is ever evicted before it is exported.
  int64_t n_blocks = 0;
  for (const auto& p : *prepared)
    n_blocks +=
        engine::KvBlockPool::blocks_for(int64_t(p.tokens.size()) + p.max_tokens, o.kv_block_size) + 1;
  cfg.kv.n_blocks = int32_t(std::max<int64_t>(n_blocks, 1));
  cfg.n_parallel = int32_t(std::min<size_t>(prepared->size(), 8));
  cfg.max_batch_tokens = std::max(512, cfg.n_parallel);
  cfg.prefix_cache = true;
  auto eng = engine::Engine::create(backend, model, tok, cfg);
  if (!eng) return eng.error();

  std::vector<engine::GenerationRequest> reqs;
  int64_t n_prompt_tokens = 0;
  for (const auto& p : *prepared) {
    engine::GenerationRequest r;
    r.prompt = p.tokens;
    r.sampling = p.src->sampling;
    r.max_tokens = p.max_tokens;
    reqs.push_back(std::move(r));
    n_prompt_tokens += int64_t(p.tokens.size());
  }
  fmt::print(stderr,
             "kiln bake: running {} warm prompts ({} prompt tokens) on {} ({} KV, "
             "blocks of {})\n",
             prepared->size(), n_prompt_tokens, backend.device_name(), kv_type_name(kv_type),
             o.kv_block_size);
  const auto t0 = Clock::now();
  (*eng)->start();
  auto results = artifact::run_warm_requests(**eng, std::move(reqs));
  (*eng)->stop();
  if (!results) return results.error();
  fmt::print(stderr, "kiln bake: warm prompts ran in {:.1f} s\n", since(t0));

  std::vector<std::vector<int32_t>> token_lists;
  for (const auto& p : *prepared) token_lists.push_back(p.tokens);
  auto blocks = (*eng)->export_prefix_blocks(token_lists);
  if (!blocks) return blocks.error();
  warm.prefixes = std::move(*blocks);

  if (o.record_outputs) {
    for (size_t i = 0; i < prepared->size(); ++i) {
      const auto& p = (*prepared)[i];
      const auto& r = (*results)[i];
      std::vector<int32_t> ids = r.output;
      if (r.finish == engine::FinishReason::stop && !ids.empty() && tok.is_eog(ids.back()))
        ids.pop_back();  // the end-of-generation token is not text
      artifact::RecordedOutput rec;
      rec.request = p.src->request;
      rec.prompt = p.text;
      rec.prompt_tokens = int32_t(p.tokens.size());
      rec.sampling = artifact::sampling_json(p.src->sampling, p.max_tokens);
      server::TokenTextDecoder text(tok);  // the bytes the server would send
      for (int32_t id : ids) rec.text += text.push(id);
      rec.text += text.flush();
      rec.finish_reason = engine::finish_reason_name(r.finish);
      rec.completion_tokens = int32_t(r.output.size());
      warm.outputs.push_back(std::move(rec));
    }
  }
  return Status::success();
}

// Moves the finished temporary directory into place. An existing artifact at
// `out` is replaced (renamed aside first, then removed); anything else there
// is left alone and refused.
Status publish(const fs::path& tmp, const fs::path& out) {
  std::error_code ec;
  if (fs::exists(out, ec)) {
    if (!artifact::is_artifact_dir(out.string()))
      return make_error(
          fmt::format("--out {} exists and is not a kiln artifact; choose another "
                      "path or remove it",
                      out.string()));
    const fs::path old = out.string() + ".old." + std::to_string(::getpid());
    fs::rename(out, old, ec);
    if (ec)
      return make_error(
          fmt::format("cannot move the old {} aside: {}", out.string(), ec.message()));
    fs::rename(tmp, out, ec);
    if (ec)
      return make_error(
          fmt::format("cannot rename {} to {}: {}", tmp.string(), out.string(), ec.message()));
    fs::remove_all(old, ec);
    return Status::success();
  }
  fs::rename(tmp, out, ec);
  if (ec)
    return make_error(
        fmt::format("cannot rename {} to {}: {}", tmp.string(), out.string(), ec.message()));
  return Status::success();
}

int run_bake(const BakeOptions& o) {
  const auto t_start = Clock::now();
  const auto kv_type = kv_type_from_name(o.kv_type);
  if (!kv_type) return fail(fmt::format("--kv-type {}: use f16, fp8, q8_0 (or f32)", o.kv_type));
  if (o.kv_block_size < 1) return fail("--kv-block-size must be at least 1");
  if (o.ctx_size < 8) return fail("--ctx-size must be at least 8");
  const artifact::TargetInfo* target = artifact::find_target(o.target);
  if (!target)
    return fail(fmt::format("--target-arch {}: use one of {}", o.target, artifact::target_names()));
  if (!o.warm.empty() && !fs::exists(o.warm)) return fail("--warm " + o.warm + ": no such file");

  fs::path out = fs::path(o.out).lexically_normal();
  if (out.filename().empty()) out = out.parent_path();  // "dir/" -> "dir"
  const fs::path tmp = out.string() + ".tmp." + std::to_string(::getpid());
  std::error_code ec;
  fs::remove_all(tmp, ec);
  if (!fs::create_directories(tmp, ec) || ec)
    return fail(fmt::format("cannot create {}: {}", tmp.string(), ec.message()));
  struct Cleanup {
    fs::path p;
    bool keep = false;
    ~Cleanup() {
      std::error_code e;
      if (!keep) fs::remove_all(p, e);
    }
  } cleanup{tmp};

  ThreadPool pool(o.threads);
  artifact::WeightsBakeOptions wo;
  wo.source = o.model;
  wo.out = (tmp / artifact::kWeightsFileName).string();
  wo.quant = o.quant;
  wo.pure = o.pure;
  wo.target = o.target;
  wo.progress = [](const std::string& line) { fmt::print(stderr, "kiln bake: {}\n", line); };
  auto weights = artifact::bake_weights(wo, pool);
  if (!weights) return fail(weights.message());
  fmt::print(stderr, "kiln bake: weights.bin: {:.1f} MiB, model hash {}, digest {}\n",
             double(weights->integrity.file_bytes()) / (1 << 20), weights->header.model_hash,
             weights->integrity.digest);

  // Everything below computes with the weights that will be served, in GGUF
  // layout (the CPU backend cannot read the CUDA image).
  struct RemoveTemp {
    std::string path;
    ~RemoveTemp() {
      std::error_code e;
      if (!path.empty()) fs::remove(path, e);
    }
  } remove_temp{weights->gguf_path_temporary ? weights->gguf_path : std::string()};
  auto model = model::Model::load(weights->gguf_path);
  if (!model) return fail(model.message());
  KvCacheConfig probe{*kv_type, o.kv_block_size, 1};
  if (auto st = check_kv_config((*model)->hparams(), probe); !st) return fail(st.message());

  artifact::WarmData warm;
  artifact::Fingerprint& fp = warm.fingerprint;
  fp.model_hash = weights->header.model_hash;
  fp.weights_digest = weights->integrity.digest;
  fp.target = weights->header.target;
  fp.weight_layout = weights->header.layout;
  fp.weight_types = weights->header.weight_types;
  fp.kv_type = o.kv_type;
  fp.kv_block_size = o.kv_block_size;
  fp.ctx_size = o.ctx_size;
  fp.source_name = fs::path(o.model).filename().string();
  warm.prefixes.block_size = o.kv_block_size;
  warm.prefixes.block_bytes = kv_bytes_per_block((*model)->hparams(), *kv_type, o.kv_block_size);
  if (!o.warm.empty()) {
    auto tok = Tokenizer::from_gguf((*model)->file());
    if (!tok) return fail(tok.message());
    if (auto st = run_warm(o, **model, *tok, *kv_type, warm); !st) return fail(st.message());
  }
  const std::string warm_path = (tmp / artifact::kWarmFileName).string();
  if (auto st = artifact::write_warm_file(warm_path, warm, pool); !st) return fail(st.message());
  model->reset();
  if (!remove_temp.path.empty()) {  // not part of the artifact
    fs::remove(remove_temp.path, ec);
    remove_temp.path.clear();
  }
  fmt::print(stderr,
             "kiln bake: warm.bin: {} prefix blocks ({:.1f} MiB of {} KV), {} recorded "
             "outputs\n",
             warm.prefixes.blocks.size(),
             double(warm.prefixes.blocks.size() * warm.prefixes.block_bytes) / (1 << 20), o.kv_type,
             warm.outputs.size());

  if (auto st = publish(tmp, out); !st) return fail(st.message());
  cleanup.keep = true;
  fmt::print(stderr,
             "kiln bake: wrote {} in {:.1f} s (target {}, serve with: kiln serve --model "
             "{} --kv-type {} --kv-block-size {} --ctx-size {})\n",
             out.string(), since(t_start), o.target, out.string(), o.kv_type, o.kv_block_size,
             o.ctx_size);
  return 0;
}

}  // namespace

void register_bake(CLI::App& root, Runner& run) {
  auto o = std::make_shared<BakeOptions>();
  auto* sub = root.add_subcommand(
      "bake",
      "Write a baked artifact directory (weights.bin + warm.bin) for fast, warm starts; needs "
      "no GPU. Serve it with `kiln serve --model DIR`. Guide: docs/bake.md");
  sub->add_option("-m,--model", o->model, "GGUF model to bake")->required();
  sub->add_option("-o,--out", o->out,
                  "Artifact directory to write (atomically: a temporary directory, then "
                  "renamed; an existing artifact there is replaced)")
      ->required();
  sub->add_option("--warm", o->warm,
                  "JSON lines of warm prompts, {\"messages\":[...]} or {\"prompt\":\"...\"} "
                  "(optional max_tokens, temperature, seed): their prefix KV blocks are baked");
  sub->add_option("--quant", o->quant,
                  "Requantize the weights: " + quant::quant_preset_names() +
                      " (as kiln quantize; best from f16/bf16/q8_0)");
  sub->add_flag("--pure", o->pure, "With --quant: no per-tensor mix");
  sub->add_option("--kv-type", o->kv_type, "KV cache type the server will use: f16, fp8, q8_0")
      ->capture_default_str();
  sub->add_option("--kv-block-size", o->kv_block_size, "KV block size the server will use")
      ->capture_default_str();
  sub->add_option("--ctx-size", o->ctx_size, "--ctx-size the server will use")
      ->capture_default_str();
  sub->add_option("--target-arch", o->target,
                  "Device the weights are laid out for: " + artifact::target_names() +
                      " (L4: sm_89, H100: sm_90, RTX PRO 6000: sm_120)")
      ->capture_default_str();
  sub->add_flag("--record-outputs", o->record_outputs,
                "Generate each warm prompt's answer (its max_tokens, default "
                "--default-max-tokens) and store it: the seed of the exact-match response cache");
  sub->add_option("--default-max-tokens", o->default_max_tokens,
                  "With --record-outputs: tokens to generate for prompts without max_tokens")
      ->capture_default_str();
  sub->add_option("--chat-template", o->chat_template,
                  "Jinja chat template for {\"messages\"} prompts (the same file kiln serve "
                  "gets; default: the model's)");
  sub->add_option("-t,--threads", o->threads, "CPU threads (default: all)");
  sub->callback([o, &run] { run = [o] { return run_bake(*o); }; });
}

}  // namespace kiln::cli
