// `kiln plan`: the memory and concurrency plan of a model on a GPU, before
// deploying it, with the same arithmetic `kiln serve` runs at start-up
// (server/capacity_plan), and the Cloud Run service.yaml carrying it.
#include <fmt/format.h>

#include <algorithm>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <sstream>

#include "kiln/core/byte_size.h"
#include "kiln/backend/backend.h"
#include "kiln/cli/commands.h"
#include "kiln/cli/model_source.h"
#include "kiln/model/model.h"
#include "kiln/server/capacity_plan.h"
#include "kiln/server/cloud_run_service.h"

namespace kiln::cli {
namespace {

struct PlanOptions {
  std::string model;
  std::string gpu = "l4";
  std::string gpu_memory;
  double gpu_memory_fraction = 0.90;
  std::string kv_memory;
  int ctx_size = 4096;
  std::string kv_type = "f16";
  int kv_block_size = 16;
  int parallel = 8;
  int max_batch_tokens = 512;
  std::string bench_result;
  std::string loadtest_result;
  std::string json_out;
  // service.yaml
  std::string service_out;
  std::string image = "REGION-docker.pkg.dev/PROJECT/kiln/kiln:latest";
  std::string service_name = "kiln";
  int min_instances = 0;
  int max_instances = 3;
  double startup_seconds = 0;  // 0: not measured, assume 60 s
  std::string model_url;
  std::string vpc_network;
  std::string vpc_subnet;
  std::string api_key_secret;
  std::vector<std::string> argv;  // as given, for the YAML's header
  bool kv_type_given = false, kv_block_size_given = false, ctx_size_given = false;
};

int fail(const std::string& msg) {
  fmt::print(stderr, "kiln plan: {}\n", msg);
  return 1;
}

// `kiln loadtest sweep --json-out FILE`: its top-level
// "recommendation": {"concurrency": N, ...} is the measured setting.
Result<int32_t> read_loadtest_recommendation(const std::string& path) {
  std::ifstream f(path);
  if (!f) return make_error("--loadtest-result " + path + ": cannot read the file");
  std::stringstream ss;
  ss << f.rdbuf();
  auto j = nlohmann::json::parse(ss.str(), nullptr, false);
  if (j.is_discarded() || !j.is_object())
    return make_error("--loadtest-result " + path + ": not a JSON object");
  auto r = j.find("recommendation");
  if (r == j.end() || !r->is_object() || !r->contains("concurrency") ||
      !(*r)["concurrency"].is_number_integer())
    return make_error("--loadtest-result " + path +
                      ": no \"recommendation\": {\"concurrency\": N}; write it with `kiln "
                      "loadtest sweep ... --json-out FILE`");
  const int64_t n = (*r)["concurrency"].get<int64_t>();
  if (n < 1 || n > 1000)
    return make_error(
        fmt::format("--loadtest-result {}: concurrency {} is outside 1..1000", path, n));
  return int32_t(n);
}

// Activations and workspaces of one engine step, rounded up generously: a
// step of max_batch_tokens rows through the widest layer, plus one logits
// row per parallel sequence. kiln serve measures the real figure at start.
uint64_t scratch_estimate(const model::HParams& hp, int max_batch_tokens, int parallel) {
  const uint64_t per_row = uint64_t(3 * hp.n_embd + 2 * hp.n_ff + hp.n_q() + 2 * hp.n_k()) * 4;
  const uint64_t est = uint64_t(max_batch_tokens) * per_row + uint64_t(parallel) * hp.n_vocab * 4;
  return std::max<uint64_t>(est, 256ull << 20);  // the floor kiln serve uses
}

// Sequences of each context length the pool holds, per KV type: what
// halving the context or a smaller KV element buys in parallel requests.
std::string tradeoff_table(const server::MemoryPlanInput& base, const model::HParams& hp) {
  std::string s = "trade-off: sequences of full context that fit, per --kv-type:\n";
  s += fmt::format("  {:>10} |", "--ctx-size");
  std::vector<KvType> types;
  for (auto t : {KvType::f16, KvType::fp8, KvType::q8_0}) {
    KvCacheConfig c;
    c.type = t;
    c.block_size = base.block_size;
    c.n_blocks = 1;
    if (!check_kv_config(hp, c)) continue;
    types.push_back(t);
    s += fmt::format(" {:>8}", kv_type_name(t));
  }
  s += "\n";
  std::vector<int32_t> ctxs = {1024, 2048, 4096, 8192, 16384, 32768, 131072};
  if (std::find(ctxs.begin(), ctxs.end(), base.ctx_size) == ctxs.end())
    ctxs.push_back(base.ctx_size);
  std::sort(ctxs.begin(), ctxs.end());
  for (int32_t ctx : ctxs) {
    if (hp.n_ctx_train > 0 && ctx > hp.n_ctx_train && ctx != base.ctx_size) continue;
    s += fmt::format("  {:>10} |", ctx);
    for (auto t : types) {
      server::MemoryPlanInput in = base;
      in.ctx_size = ctx;
      in.kv_bytes_per_block = kv_bytes_per_block(hp, t, base.block_size);
      auto p = server::plan_memory(in);
      s += fmt::format(" {:>8}", p ? std::to_string(p->full_ctx_seqs) : std::string("0"));
    }
    s += ctx == base.ctx_size ? "   <- chosen\n" : "\n";
  }
  return s;
}

int run_plan(PlanOptions o) {
  // A baked artifact brings its KV settings; flags not given take them, as
  // kiln serve does, so the plan describes what serve will run.
  KvFlags kf{o.kv_type, o.kv_block_size, o.ctx_size,
             o.kv_type_given, o.kv_block_size_given, o.ctx_size_given};
  adopt_artifact_kv_settings(o.model, kf, "plan");
  o.kv_type = kf.kv_type;
  o.kv_block_size = kf.kv_block_size;
  o.ctx_size = kf.ctx_size;

  const server::GpuShape* gpu = server::find_gpu_shape(o.gpu);
  if (!gpu) return fail(fmt::format("--gpu {}: use one of {}", o.gpu, server::gpu_shape_names()));
  const auto kv_type = kv_type_from_name(o.kv_type);
  if (!kv_type) return fail(fmt::format("--kv-type {}: use f16, fp8 or q8_0", o.kv_type));
  if (o.parallel < 1) return fail("--parallel must be at least 1");
  if (o.ctx_size < 8) return fail("--ctx-size must be at least 8");
  if (o.gpu_memory_fraction <= 0 || o.gpu_memory_fraction > 1)
    return fail("--gpu-memory-fraction must be in (0, 1]");
  uint64_t device_total = gpu->memory_bytes;
  if (!o.gpu_memory.empty()) {
    auto b = parse_byte_size(o.gpu_memory);
    if (!b)
      return fail(fmt::format("--gpu-memory {}: give bytes, e.g. 23034M or 24G", o.gpu_memory));
    device_total = *b;
  }
  std::optional<uint64_t> kv_memory;
  if (!o.kv_memory.empty()) {
    kv_memory = parse_byte_size(o.kv_memory);
    if (!kv_memory) return fail(fmt::format("--kv-memory {}: give bytes, e.g. 2G", o.kv_memory));
  }

  // A GGUF is mapped, not read; an artifact is verified as kiln serve would.
  auto src = load_model_source(o.model, nullptr, "plan");
  if (!src) return fail(src.message());
  const model::Model* model = src->model.get();
  const auto& hp = model->hparams();

  server::MemoryPlanInput in;
  in.device_total = device_total;
  in.weight_bytes = model->weights().total_bytes();
  in.scratch_bytes = scratch_estimate(hp, o.max_batch_tokens, o.parallel);
  in.gpu_memory_fraction = o.gpu_memory_fraction;
  in.kv_memory = kv_memory;
  in.kv_bytes_per_block = kv_bytes_per_block(hp, *kv_type, o.kv_block_size);
  in.block_size = o.kv_block_size;
  in.ctx_size = o.ctx_size;
  in.n_parallel = o.parallel;
  in.cap_to_need = false;  // a GPU gives the whole budget to KV (as kiln serve does)
  {
    KvCacheConfig c;
    c.type = *kv_type;
    c.block_size = o.kv_block_size;
    c.n_blocks = 1;
    if (auto st = check_kv_config(hp, c); !st) return fail(st.message());
  }
  auto plan = server::plan_memory(in);
  if (!plan) return fail(plan.message());

  std::vector<server::BenchPoint> bench;
  if (!o.bench_result.empty()) {
    auto b = server::read_bench_results(o.bench_result);
    if (!b) return fail(b.message());
    bench = std::move(*b);
  }
  const auto ideal = server::ideal_batch_size(bench, o.parallel);
  const auto advice = server::advise_concurrency(*plan, o.parallel, ideal);
  int32_t concurrency = advice.recommended;
  std::string source = ideal.estimated ? "rule of thumb (ideal batch size ESTIMATED)"
                                       : "rule of thumb (ideal batch size measured)";
  if (!o.loadtest_result.empty()) {
    auto r = read_loadtest_recommendation(o.loadtest_result);
    if (!r) return fail(r.message());
    concurrency = *r;
    source = "measured: kiln loadtest recommendation " + std::to_string(*r);
    // kiln serve needs --max-concurrency >= --parallel: more decode slots
    // than requests Cloud Run sends would only hold memory.
    if (concurrency < o.parallel) {
      fmt::print("note: --parallel {} lowered to the measured concurrency {}\n", o.parallel,
                 concurrency);
      o.parallel = concurrency;
    }
  }

  fmt::print("gpu: {} ({}), {} of device memory{}\n", gpu->name, gpu->note,
             server::format_bytes(device_total), o.gpu_memory.empty() ? " (nominal)" : "");
  fmt::print("model: {} ({} layers, {} KV heads x {}), weights {}, scratch {} (estimate)\n",
             o.model, hp.n_layer, hp.n_head_kv, hp.head_dim_k,
             server::format_bytes(in.weight_bytes), server::format_bytes(in.scratch_bytes));
  fmt::print("{}", server::format_plan(in, *plan, advice, concurrency));
  fmt::print("{}", tradeoff_table(in, hp));
  fmt::print("Cloud Run max concurrency: {} ({})\n", concurrency, source);
  fmt::print(
      "kiln serve flags: --ctx-size {} --kv-type {} --kv-block-size {} --parallel {} "
      "--max-concurrency {}{}\n",
      o.ctx_size, o.kv_type, o.kv_block_size, o.parallel, concurrency,
      kv_memory ? " --kv-memory " + o.kv_memory : "");

  if (!o.json_out.empty()) {
    nlohmann::ordered_json j;
    j["gpu"] = gpu->name;
    j["device_bytes"] = device_total;
    j["weight_bytes"] = in.weight_bytes;
    j["scratch_bytes"] = in.scratch_bytes;
    j["kv_bytes_per_token"] = server::kv_bytes_per_token(in);
    j["kv_pool_bytes"] = plan->kv_bytes;
    j["kv_blocks"] = plan->n_blocks;
    j["kv_tokens"] = plan->kv_tokens;
    j["full_context_sequences"] = plan->full_ctx_seqs;
    j["ideal_batch_size"] = ideal.size;
    j["ideal_batch_estimated"] = ideal.estimated;
    j["recommended_concurrency"] = advice.recommended;
    j["container_concurrency"] = concurrency;
    j["concurrency_source"] = source;
    std::ofstream f(o.json_out);
    if (!(f << j.dump(2) << "\n")) return fail("--json-out " + o.json_out + ": cannot write");
  }

  if (!o.service_out.empty()) {
    server::CloudRunServiceSpec s;
    s.name = o.service_name;
    s.image = o.image;
    s.gpu = gpu;
    s.container_concurrency = concurrency;
    s.min_instances = o.min_instances;
    s.max_instances = o.max_instances;
    s.startup_seconds = o.startup_seconds > 0 ? o.startup_seconds : 60;
    s.startup_measured = o.startup_seconds > 0;
    s.model_url = o.model_url;
    s.vpc_network = o.vpc_network;
    s.vpc_subnet = o.vpc_subnet;
    s.api_key_secret = o.api_key_secret;
    s.args = {"--ctx-size",        std::to_string(o.ctx_size),
              "--kv-type",         o.kv_type,
              "--kv-block-size",   std::to_string(o.kv_block_size),
              "--parallel",        std::to_string(o.parallel),
              "--max-concurrency", std::to_string(concurrency)};
    if (kv_memory) {
      s.args.push_back("--kv-memory");
      s.args.push_back(o.kv_memory);
    } else if (o.gpu_memory_fraction != 0.90) {
      s.args.push_back("--gpu-memory-fraction");
      s.args.push_back(fmt::format("{}", o.gpu_memory_fraction));
    }
    std::string cmd = "kiln plan";
    for (const auto& a : o.argv) cmd += " " + a;
    const auto probe = server::startup_probe_timing(s.startup_seconds);
    s.header = fmt::format(
        "Cloud Run service for kiln, written by:\n  {}\n"
        "containerConcurrency {}: {}.\n"
        "Start-up probe: {} s allowed ({} x {} s) for a start-up of {} s{}.\n"
        "Deploy: gcloud run services replace FILE --region REGION (docs/cloud-run.md).",
        cmd, concurrency, source, probe.window_s, probe.failure_threshold, probe.period_s,
        s.startup_seconds,
        s.startup_measured ? " (measured)" : " (assumed; pass --startup-seconds)");
    auto y = server::render_cloud_run_service(s);
    if (!y) return fail(y.message());
    std::ofstream f(o.service_out);
    if (!(f << *y)) return fail("--service-out " + o.service_out + ": cannot write");
    fmt::print("wrote {}\n", o.service_out);
  }
  return 0;
}

}  // namespace

void register_plan(CLI::App& root, Runner& run) {
  auto o = std::make_shared<PlanOptions>();
  auto* c = root.add_subcommand(
      "plan",
      "Memory and concurrency plan of a model on a GPU (the numbers kiln serve computes at "
      "start-up) and the Cloud Run service.yaml with them");
  c->add_option("-m,--model", o->model, "GGUF model or baked artifact")->required();
  c->add_option("--gpu", o->gpu, "GPU: l4, rtx-pro-6000 (Cloud Run) or h100 (plan only)")
      ->capture_default_str();
  c->add_option("--gpu-memory", o->gpu_memory,
                "Device memory in bytes (e.g. 23034M) instead of the GPU's nominal total");
  c->add_option("--gpu-memory-fraction", o->gpu_memory_fraction,
                "Share of device memory kiln may use, as for kiln serve")
      ->capture_default_str();
  c->add_option("--kv-memory", o->kv_memory, "KV pool size outright, as for kiln serve");
  c->add_option("--ctx-size", o->ctx_size, "Most tokens of one request")->capture_default_str();
  c->add_option("--kv-type", o->kv_type, "KV cache element type: f16, fp8, q8_0")
      ->capture_default_str();
  c->add_option("--kv-block-size", o->kv_block_size, "Tokens per KV block")->capture_default_str();
  c->add_option("--parallel", o->parallel, "Sequences decoded together")->capture_default_str();
  c->add_option("--max-batch-tokens", o->max_batch_tokens, "Token budget of one engine step")
      ->capture_default_str();
  c->add_option("--bench-result", o->bench_result,
                "JSON lines of `kiln bench --streams ... --json-out FILE`: measured ideal batch");
  c->add_option("--loadtest-result", o->loadtest_result,
                "JSON of `kiln loadtest sweep --json-out FILE`: its recommendation wins");
  c->add_option("--json-out", o->json_out, "Write the plan as one JSON object to FILE");
  c->add_option("--service-out", o->service_out, "Write a Cloud Run service YAML to FILE");
  c->add_option("--image", o->image, "Container image the service runs")->capture_default_str();
  c->add_option("--service-name", o->service_name, "Cloud Run service name")->capture_default_str();
  c->add_option("--min-instances", o->min_instances, "Instances kept warm (billed while idle)")
      ->capture_default_str();
  c->add_option("--max-instances", o->max_instances, "Most instances (GPU quota)")
      ->capture_default_str();
  c->add_option("--startup-seconds", o->startup_seconds,
                "Measured start-to-ready seconds (kiln_startup_seconds{phase=\"total\"}); sizes "
                "the start-up probe (default: 60 assumed)");
  c->add_option("--model-url", o->model_url,
                "Load the model from Cloud Storage (gs://...) at start instead of the image");
  c->add_option("--vpc-network", o->vpc_network, "Direct VPC egress network (with --model-url)");
  c->add_option("--vpc-subnet", o->vpc_subnet, "Direct VPC egress subnet (with --model-url)");
  c->add_option("--api-key-secret", o->api_key_secret,
                "Secret Manager secret whose latest version becomes KILN_API_KEY");
  c->callback([o, c, &run] {
    // The command as given (without the model path, which is machine-local)
    // goes into the YAML header so the file says how to regenerate it.
    o->argv.clear();
    for (const CLI::Option* opt : c->get_options()) {
      if (opt->count() == 0 || opt->get_name() == "--help" || opt->get_name() == "--service-out")
        continue;
      const std::string name = opt->get_name();  // the long name: "--model" for -m
      o->argv.push_back(name);
      o->argv.push_back(name == "--model" ? "MODEL" : opt->as<std::string>());
    }
    o->kv_type_given = c->get_option("--kv-type")->count() > 0;
    o->kv_block_size_given = c->get_option("--kv-block-size")->count() > 0;
    o->ctx_size_given = c->get_option("--ctx-size")->count() > 0;
    run = [o] { return run_plan(*o); };
  });
}

}  // namespace kiln::cli
