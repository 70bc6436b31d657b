// `kiln serve -m MODEL`: the OpenAI-compatible HTTP server. Opens the port
// first (readiness says `loading`), loads the model, plans memory and
// concurrency, starts the engine, runs a warm-up request (`warming`), then
// reports ready; on SIGTERM/SIGINT it drains (GUIDE §6) and exits 0.
#include <fmt/format.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <future>
#include <memory>
#include <sstream>
#include <vector>

#include "kiln/core/byte_size.h"
#include "kiln/artifact/checksum.h"
#include "kiln/artifact/early_verify.h"
#include "kiln/backend/cpu/cpu_backend.h"
#include "kiln/cli/backend_select.h"
#include "kiln/cli/commands.h"
#include "kiln/cli/serve_cache.h"
#include "kiln/server/response_caching.h"
#include "kiln/cli/demo_model.h"
#include "kiln/cli/model_source.h"
#include "kiln/core/startup_timeline.h"
#include "kiln/cli/model_fetch.h"
#include "kiln/fetch/remote_url.h"
#include "kiln/embed/bert_embedder.h"
#include "kiln/engine/engine.h"
#include "kiln/gguf/gguf.h"
#include "kiln/model/model.h"
#include "kiln/server/admission.h"
#include "kiln/server/cache_metrics.h"
#include "kiln/server/capacity_plan.h"
#include "kiln/server/chat_renderer.h"
#include "kiln/server/embedding_worker.h"
#include "kiln/server/http_server.h"
#include "kiln/server/request_log.h"
#include "kiln/server/routes.h"
#include "kiln/server/server_metrics.h"
#include "kiln/server/shutdown_signal.h"
#include "kiln/tokenizer/tokenizer.h"

namespace kiln::cli {
namespace {

// The edge's embedding hook, served by the engine (mean of the final-normed
// hidden states, L2-normalized; the engine computes it between decode steps).
class EngineEmbeddings final : public server::EmbeddingEngine {
 public:
  explicit EngineEmbeddings(engine::Engine& e) : engine_(e) {}
  int32_t n_embd() const override { return engine_.n_embd(); }
  Status submit_embeddings(std::vector<std::vector<int32_t>> inputs, Done done) override {
    return engine_.submit_embeddings(std::move(inputs), std::move(done));
  }

 private:
  engine::Engine& engine_;
};

using Clock = std::chrono::steady_clock;

struct ServeOptions {
  std::string model;
  DeviceOptions load;  // --load-threads, --load-direct (GPU weight loading)
  std::string model_name;
  std::string host = "0.0.0.0";
  int port = -1;  // -1: $PORT, else 8080
  int ctx_size = 4096;
  int parallel = 8;
  int max_concurrency = 0;  // 0: the rule-of-thumb recommendation
  double gpu_memory_fraction = 0.90;
  std::string kv_memory;
  int kv_block_size = 16;
  std::string kv_type = "f16";
  int max_batch_tokens = 512;
  std::string chat_template;
  std::string api_key;
  double drain_timeout = 8.0;
  std::string request_log;
  int threads = 0;
  std::string device;  // --device cpu|cuda (empty: cuda when a GPU is there)
  int http_threads = 2;
  std::string bench_result;
  ModelDownloadOptions download;  // --model URL: --download-dir, --download-connections, ...
  std::string embedding_model;       // --embedding-model: BERT encoder GGUF (optional)
  std::string embedding_model_name;  // its id in requests (default: file stem)
  int embedding_threads = 0;         // its CPU threads (0: min(4, hardware))
  ServeCacheOptions cache;           // response caches (serve_cache.h)
  bool no_prefix_cache = false;
  // Whether the flags were given: an artifact's fingerprint fills the others.
  bool kv_type_given = false, kv_block_size_given = false, ctx_size_given = false;
  size_t max_body_bytes = 8u << 20;
  size_t max_header_bytes = 16u << 10;
  double request_timeout = 15.0;
  double idle_timeout = 60.0;
};

int fail(const std::string& msg) {
  fmt::print(stderr, "kiln serve: {}\n", msg);
  return 1;
}

double since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

std::string read_text_file(const std::string& path, bool& ok) {
  std::ifstream f(path, std::ios::binary);
  ok = bool(f);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

// Runs one greedy request of two tokens through the engine and waits for its end.
Status run_to_end(engine::Engine& eng, std::vector<int32_t> prompt) {
  engine::GenerationRequest req;
  req.prompt = std::move(prompt);
  req.sampling.temperature = 0.0f;
  req.max_tokens = 2;
  auto ch = std::make_shared<engine::ResultChannel>();
  std::mutex mu;
  std::condition_variable cv;
  bool woke = false;
  ch->set_notifier([&] {
    std::lock_guard<std::mutex> lock(mu);
    woke = true;
    cv.notify_all();
  });
  struct ClearNotifier {
    engine::ResultChannel& ch;
    ~ClearNotifier() { ch.set_notifier(nullptr); }  // the lambda refers to this frame
  } clear{*ch};
  KILN_TRY(eng.submit(std::move(req), ch));
  std::vector<engine::TokenEvent> evs;
  const auto deadline = Clock::now() + std::chrono::minutes(5);
  for (;;) {
    {
      std::unique_lock<std::mutex> lock(mu);
      cv.wait_until(lock, deadline, [&] { return woke; });
      woke = false;
    }
    ch->drain(evs);
    for (const auto& e : evs) {
      if (e.finish == engine::FinishReason::error) return make_error("warm-up failed: " + e.error);
      if (e.finish != engine::FinishReason::none) return Status::success();
    }
    if (Clock::now() >= deadline) {
      ch->cancel();
      return make_error("warm-up request did not finish within 5 minutes");
    }
  }
}

// Readiness promises that a request can be served at its steady-state
// speed, so the whole path (scheduler, backend, sampler) must have run once:
// a prompt of a couple of tokens (the small-batch kernels, the decode
// graphs), then one of kWideRows tokens more (the batched-prefill kernels:
// a GPU takes its tensor-core path past 8 rows). When baked prefixes were
// restored, that second prompt extends the longest of them instead: a prefix
// hit has paths of its own (the baked tail block copied, attention over
// thousands of cached positions, the decode graphs of a deep context).
Status warm_up(engine::Engine& eng, const Tokenizer& tok, const std::vector<int32_t>& baked,
               int32_t ctx_size) {
  constexpr size_t kWideRows = 16;
  std::vector<int32_t> hello = tok.encode("Hello", /*add_special=*/true, /*parse_special=*/false);
  if (hello.empty()) hello.push_back(0);
  KILN_TRY(run_to_end(eng, hello));
  std::vector<int32_t> wide = baked.empty() ? hello : baked;
  wide.insert(wide.end(), kWideRows, hello.back());
  if (int64_t(wide.size()) + 2 > int64_t(ctx_size)) return Status::success();  // a tiny --ctx-size
  return run_to_end(eng, std::move(wide));
}

int run_serve(const ServeOptions& o) {
  StartupTimeline timeline;  // from the process's exec
  server::ShutdownSignal shutdown;
  shutdown.install();  // before any thread starts, so all inherit the mask
  timeline.mark("process_loaded");  // exec -> here: dynamic loading, static initialization

  // The backend (for CUDA: driver, context and cuBLAS, 0.1-0.5 s) is created
  // on another thread from the start, while flags are checked, the port
  // opens and the model is mapped, verified and parsed.
  DeviceOptions dev = o.load;
  dev.device = o.device;
  dev.cpu.n_threads = o.threads;
  dev.expect_image = !fetch::is_remote_url(o.model) && artifact::is_artifact_dir(o.model);
  // An artifact's weight image is read and its chunks checked on idle cores
  // from the first moment (artifact/early_verify.h), before the driver starts
  // and while the context is created; the loader checks only the rest. On a
  // cold disk this is where its reads begin: started after the port and the
  // model's header instead, they began 0.15 s after exec (bench/NOTES.md).
  // Not for O_DIRECT loads (this reads through the page cache), downloads
  // (their bytes are still arriving) nor the CPU backend (it verifies the
  // whole body itself). KILN_EARLY_VERIFY_THREADS sets its threads (default
  // --load-threads; 0: off).
  std::shared_ptr<artifact::EarlyVerifier> early;
  {
    int threads = dev.load_threads;
    if (const char* e = std::getenv("KILN_EARLY_VERIFY_THREADS"); e && *e) threads = std::atoi(e);
    if (dev.expect_image && !dev.load_direct && threads > 0 && may_verify_image_while_loading(dev.device))
      early = artifact::EarlyVerifier::start(
          (std::filesystem::path(o.model) / artifact::kWeightsFileName).string(), threads);
  }
  auto backend_future = std::async(std::launch::async, [&dev, &timeline] {
    const auto t0 = Clock::now();
    auto be = make_backend(dev);
    timeline.add("backend_created_in_parallel",
                 std::chrono::duration<double>(Clock::now() - t0).count());
    return be;
  });

  // ---- flags ------------------------------------------------------------
  if (o.parallel < 1) return fail("--parallel must be at least 1");
  if (o.max_concurrency != 0 && o.max_concurrency < o.parallel)
    return fail(
        fmt::format("--max-concurrency ({}) must be at least --parallel ({}): N run, up "
                    "to C-N wait",
                    o.max_concurrency, o.parallel));
  if (o.ctx_size < 8) return fail("--ctx-size must be at least 8");
  if (o.gpu_memory_fraction <= 0 || o.gpu_memory_fraction > 1)
    return fail("--gpu-memory-fraction must be in (0, 1]");
  const auto kv_type = kv_type_from_name(o.kv_type);
  if (!kv_type) return fail(fmt::format("--kv-type {}: use f16, fp8 or q8_0", o.kv_type));
  std::optional<uint64_t> kv_memory;
  if (!o.kv_memory.empty()) {
    kv_memory = parse_byte_size(o.kv_memory);
    if (!kv_memory)
      return fail(fmt::format("--kv-memory {}: give bytes, e.g. 2G or 512M", o.kv_memory));
  }
  server::ServerConfig cfg;
  cfg.host = o.host;
  int port = o.port;
  if (port < 0) {
    const char* env = std::getenv("PORT");
    port = env && *env ? std::atoi(env) : 8080;
  }
  if (port < 0 || port > 65535) return fail(fmt::format("port {} is out of range", port));
  cfg.port = uint16_t(port);
  cfg.io_threads = std::max(1, o.http_threads);
  cfg.max_concurrency = o.max_concurrency > 0 ? o.max_concurrency : o.parallel;
  cfg.max_body_bytes = o.max_body_bytes;
  cfg.max_header_bytes = o.max_header_bytes;
  cfg.request_timeout = std::chrono::milliseconds(int64_t(o.request_timeout * 1000));
  cfg.idle_timeout = std::chrono::milliseconds(int64_t(o.idle_timeout * 1000));
  cfg.drain_timeout = std::chrono::milliseconds(int64_t(o.drain_timeout * 1000));
  cfg.api_key = o.api_key;
  if (cfg.api_key.empty())
    if (const char* k = std::getenv("KILN_API_KEY")) cfg.api_key = k;
  cfg.model_id =
      !o.model_name.empty() ? o.model_name : std::filesystem::path(o.model).stem().string();
  // KILN_TRACE_STEPS=1: where each request's and each step's time goes (stderr).
  const bool trace = [] {
    const char* e = std::getenv("KILN_TRACE_STEPS");
    return e && *e && std::strcmp(e, "0") != 0;
  }();
  cfg.trace_requests = trace;
  std::vector<server::BenchPoint> bench;
  if (!o.bench_result.empty()) {
    auto b = server::read_bench_results(o.bench_result);
    if (!b) return fail(b.message());
    bench = std::move(*b);
  }
  std::string template_source;
  if (!o.chat_template.empty()) {
    bool ok = false;
    template_source = read_text_file(o.chat_template, ok);
    if (!ok) return fail("--chat-template " + o.chat_template + ": cannot read the file");
  }

  // ---- the port opens first ---------------------------------------------
  const auto t_start = Clock::now();
  server::ServerMetrics metrics;
  server::Admission admission(cfg.max_concurrency);
  std::unique_ptr<server::RequestLog> request_log;
  if (!o.request_log.empty()) {
    auto l = server::RequestLog::open(o.request_log);
    if (!l) return fail(l.message());
    request_log = std::move(*l);
  }
  std::unique_ptr<KnownPrefixes> known_prefixes;  // before the router: it points here
  server::Router router(cfg, metrics, admission, request_log.get());
  server::HttpServer http(
      cfg, [&router](const server::HttpRequest& r) { return router.handle(r); },
      [] { return server::Router::draining_response(); }, &metrics);
  if (auto st = http.start(); !st) return fail(st.message());
  fmt::print(stderr, "kiln serve: listening on http://{}:{} (phase: loading)\n", cfg.host,
             http.port());
  timeline.mark("http_listening");

  // ---- load ---------------------------------------------------------------
  // A URL downloads on a background thread (parallel ranged GETs, or a
  // verified earlier download reused from --download-dir) while the model
  // loads from the bytes already on disk: the header first, then each tensor
  // as its bytes arrive. Readiness stays `loading` until the download is
  // verified too.
  std::string model_path = o.model;
  std::unique_ptr<fetch::BackgroundFetch> download;
  if (fetch::is_remote_url(o.model)) {
    auto dl = start_model_download(o.model, o.download);
    if (!dl) return fail(dl.message());
    download = std::move(*dl);
  }
  const auto t_load = Clock::now();
  // A GGUF file, or a baked artifact directory (checksums verified first).
  auto source = [&]() -> Result<ModelSource> {
    if (!download) return load_model_source(model_path, &timeline, "serve", /*defer_image_body=*/true);
    auto src = open_downloading_model(*download, &timeline);
    if (!src) return download_load_failure(*download, o.model, src.error());
    model_path = download->final_path();
    return src;
  }();
  // The early checks count only for the very file the loader reads.
  if (early && !(source && source->image_body_unverified &&
                 early->digest() == source->artifact->weights_integrity.digest)) {
    (void)early->stop();  // a mismatch it found is the full open's to report
    early.reset();
  }
  auto made = backend_future.get();
  if (early) {
    if (auto st = early->stop(); !st) return fail(st.message());
    fmt::print(stderr, "kiln serve: {} of {} weight-image chunks checked while the backend started\n",
               early->n_verified(), early->n_chunks());
  }
  if (!made) return fail(made.message());
  std::unique_ptr<Backend> backend = std::move(*made);
  timeline.mark("backend_ready");
  if (!source) return fail(source.message());
  std::unique_ptr<model::Model>* model = &source->model;
  if (auto st = check_artifact_settings(*source, o.kv_type, o.kv_block_size, o.ctx_size,
                                        backend->name());
      !st)
    return fail(st.message());
  // The tokenizer (a large vocabulary takes ~0.1 s to index) is built while
  // the weights stream to the device.
  auto tok_future = std::async(std::launch::async, [m = model->get()] { return Tokenizer::from_gguf(m->file()); });
  if (source->image_body_unverified) {
    // A GPU weight image: its chunk checksums ride along with the loader's
    // only read of the file; a backend that cannot do that verifies first.
    const artifact::Integrity* in = &source->artifact->weights_integrity;
    const std::string name = (*model)->file().path();
    const bool streamed = verify_image_while_loading(
        *backend, in->header_bytes, in->body_bytes, in->chunk_size,
        [in, name, early](uint64_t i, std::span<const uint8_t> b) {
          if (early && early->verified(i)) return Status::success();
          return artifact::verify_chunk(*in, i, b, name);
        });
    if (!streamed)
      if (auto st = verify_image_body(*source); !st) return fail(st.message());
  }
  if (auto st = backend->load_weights(**model); !st)
    return fail(download ? download_load_failure(*download, o.model, st.error()).message
                         : st.message());
  source->image_body_unverified = false;  // verified by the load, or before it
  timeline.mark("weights_uploaded");
  // Weights uploaded from a download count only once its checksum held.
  if (download)
    if (auto st = finish_model_download(*download, o.model, t_load, Clock::now(), timeline); !st)
      return fail(st.message());
  auto tok = tok_future.get();
  if (!tok) return fail(tok.message());
  if (auto li = image_load_info(*backend))
    fmt::print(stderr, "kiln serve: weight image {:.2f} GB streamed to the GPU in {:.3f} s "
               "({:.1f} GB/s, {} reader threads; {:.3f} s of it allocating staging buffers); "
               "CUDA driver start {:.3f} s, context {:.3f} s, device set-up {:.3f} s\n",
               double(li->bytes) / 1e9, li->seconds,
               double(li->bytes) / 1e9 / std::max(li->seconds, 1e-9), li->threads,
               li->setup_seconds, li->driver_seconds, li->context_seconds,
               li->after_context_seconds);
  // The embedding model (CPU encoder) loads beside the chat model. The same
  // instance is the semantic cache's TextEmbedder (cache/embedder.h).
  std::unique_ptr<embed::BertEmbedder> embedder;
  if (!o.embedding_model.empty()) {
    embed::BertEmbedderOptions eo;
    eo.name = o.embedding_model_name;
    eo.n_threads = o.embedding_threads;
    auto e = embed::BertEmbedder::load(o.embedding_model, eo);
    if (!e) return fail("--embedding-model: " + e.message());
    embedder = std::move(*e);
    fmt::print(stderr, "kiln serve: embedding model '{}': {}\n", embedder->name(),
               model::describe(embedder->model().hparams()));
  }
  metrics.set_phase_seconds("load", since(t_load));
  if (shutdown.triggered()) {
    http.stop();
    return 0;
  }

  // ---- plan -----------------------------------------------------------------
  // The per-step buffers of the largest step, now: the first long prompt
  // does not pay for growing them, and the plan below counts them.
  if (auto st = backend->reserve_batch(o.max_batch_tokens, o.ctx_size); !st) return fail(st.message());
  const auto& hp = (*model)->hparams();
  const MemoryReport mem = backend->memory();
  server::MemoryPlanInput in;
  in.device_total = mem.device_total;
  in.weight_bytes = backend->name() == "cpu" ? (*model)->weights().total_bytes() : mem.weight_bytes;
  // Activations of a full step with margin: what the backend holds now is
  // before any batch ran.
  in.scratch_bytes = std::max<uint64_t>(mem.scratch_bytes, 256ull << 20);
  in.gpu_memory_fraction = o.gpu_memory_fraction;
  in.kv_memory = kv_memory;
  in.kv_bytes_per_block = kv_bytes_per_block(hp, *kv_type, o.kv_block_size);
  in.block_size = o.kv_block_size;
  in.ctx_size = o.ctx_size;
  in.n_parallel = o.parallel;
  in.cap_to_need = backend->name() == "cpu";
  auto plan = server::plan_memory(in);
  if (!plan) return fail(plan.message());
  const auto ideal = server::ideal_batch_size(bench, o.parallel);
  const auto advice = server::advise_concurrency(*plan, o.parallel, ideal);
  const int64_t max_concurrency =
      o.max_concurrency > 0 ? o.max_concurrency : std::max(advice.recommended, o.parallel);
  admission.set_max_concurrency(max_concurrency);
  fmt::print(stderr, "{}", server::format_plan(in, *plan, advice, int32_t(max_concurrency)));
  if (o.max_concurrency == 0)
    fmt::print(stderr,
               "  --max-concurrency not given: using the recommendation {}; set Cloud "
               "Run's max concurrency to the same\n",
               max_concurrency);
  auto& reg = metrics.registry();
  reg.gauge("kiln_capacity_parallel", "--parallel: sequences decoded together").set(o.parallel);
  reg.gauge("kiln_capacity_max_concurrency", "--max-concurrency: requests admitted before 429")
      .set(double(max_concurrency));
  reg.gauge("kiln_capacity_recommended_concurrency",
            "Rule of thumb: parallel + ideal batch size (GUIDE §6)")
      .set(advice.recommended);
  reg.gauge("kiln_capacity_ideal_batch_size", "Smallest decode batch reaching 90% of peak")
      .set(ideal.size);
  reg.gauge("kiln_capacity_ideal_batch_estimated", "1 when the ideal batch size is an estimate")
      .set(ideal.estimated ? 1 : 0);
  reg.gauge("kiln_capacity_kv_blocks_planned", "KV blocks the memory plan allocates")
      .set(plan->n_blocks);
  reg.gauge("kiln_capacity_kv_bytes", "Bytes of the KV pool").set(double(plan->kv_bytes));
  reg.gauge("kiln_capacity_full_context_sequences", "Sequences of --ctx-size the KV pool holds")
      .set(plan->full_ctx_seqs);

  // ---- engine -----------------------------------------------------------------
  const auto t_engine = Clock::now();
  engine::EngineConfig ecfg;
  ecfg.n_parallel = o.parallel;
  ecfg.max_batch_tokens = o.max_batch_tokens;
  ecfg.ctx_size = o.ctx_size;
  ecfg.kv.type = *kv_type;
  ecfg.kv.block_size = o.kv_block_size;
  ecfg.kv.n_blocks = plan->n_blocks;
  ecfg.prefix_cache = !o.no_prefix_cache;
  ecfg.trace_steps = trace;
  auto eng = engine::Engine::create(*backend, **model, *tok, ecfg);
  if (!eng) return fail(eng.message());
  metrics.set_phase_seconds("engine", since(t_engine));
  timeline.mark("engine_ready");
  // Baked prefixes go in before the engine thread starts (and before ready).
  std::vector<int32_t> baked_prefix;  // the warm-up's prefix-hit prompt
  if (auto st = restore_artifact_prefixes(*source, **eng, ecfg.prefix_cache, &timeline, &baked_prefix); !st)
    return fail(st.message());
  // A prompt past the context leaves nothing to warm up (the request would be refused).
  if (int64_t(baked_prefix.size()) + 24 > int64_t(o.ctx_size)) baked_prefix.clear();
  (*eng)->start();

  server::ChatRenderer chat;
  if (template_source.empty()) template_source = tok->chat_template();
  if (!template_source.empty()) {
    auto r = server::make_chat_renderer(template_source, *tok);
    if (!r) return fail(r.message());
    chat = std::move(*r);
  } else {
    fmt::print(stderr,
               "kiln serve: the model has no chat template; /v1/chat/completions "
               "answers 400 (pass --chat-template FILE)\n");
  }
  metrics.attach_engine(&(*eng)->stats());
  EngineEmbeddings embeddings(**eng);
  router.attach(eng->get(), &*tok, std::move(chat), &embeddings);
  std::unique_ptr<server::EmbeddingWorker> embedding_worker;
  if (embedder) {
    embedding_worker = std::make_unique<server::EmbeddingWorker>(
        embedder->dim(), [e = embedder.get()](const std::vector<std::vector<int32_t>>& in) {
          return e->embed_tokens(in);
        });
    router.attach_embedding_model(
        {embedder->name(), embedding_worker.get(), &embedder->tokenizer(), embedder->max_tokens()});
  }
  // Response caches: the embedding model doubles as the semantic cache's embedder.
  auto response_cache = make_response_cache(o.cache, embedder.get());
  if (!response_cache) {
    (*eng)->stop();
    return fail(response_cache.message());
  }
  if (*response_cache) {
    router.attach_cache({response_cache->get(),
                         serve_fingerprint(model_path, backend->name(), o.kv_type, o.ctx_size,
                                           template_source)});
    server::register_cache_metrics(metrics.registry(), **response_cache);
    // A baked artifact's recorded warm-prompt answers seed the exact cache,
    // so the first identical request after start is answered from it.
    if (source->artifact && source->artifact->warm) {
      int seeded = 0;
      std::string first_why;
      for (const auto& r : source->artifact->warm->recorded_outputs()) {
        const server::Api api =
            r.request.contains("messages") ? server::Api::chat : server::Api::completions;
        // The line as written plus the sampling bake actually used (e.g. its
        // greedy default), so the key is that of a request stating them.
        nlohmann::json req = r.request;
        if (r.sampling.is_object())
          for (const auto& [k, v] : r.sampling.items())
            if (!req.contains(k) && !v.is_null()) req[k] = v;
        std::string why;
        if (server::seed_from_request(router.cache_context(), *tok, req, r.prompt,
                                      server::make_record(api, {{r.text, r.finish_reason}},
                                                          r.prompt_tokens, r.completion_tokens),
                                      &why))
          ++seeded;
        else if (first_why.empty())
          first_why = why;
      }
      const size_t n = source->artifact->warm->recorded_outputs().size();
      if (n > 0)
        fmt::print(stderr, "kiln serve: exact cache seeded with {} of {} recorded outputs{}\n",
                   seeded, n, first_why.empty() ? "" : " (not cacheable: " + first_why + ")");
    }
    fmt::print(stderr, "kiln serve: response cache: exact{}{}{} ({} entries loaded)\n",
               (*response_cache)->semantic_enabled() ? " + semantic" : "",
               o.cache.dir.empty() ? "" : ", --cache-dir " + o.cache.dir,
               o.cache.redis.empty() ? "" : ", shared through Redis",
               (*response_cache)->loaded_from_disk());
  }

  // ---- warm-up, then ready --------------------------------------------------------
  router.set_phase(server::Phase::warming);
  const auto t_warm = Clock::now();
  // The baked prompts' texts and tokens, for prompts that start with one
  // (known_prefixes.h): ~10 ms of tokenizing, on another thread while the
  // warm-up keeps the GPU busy (not beside the engine's creation).
  std::future<std::unique_ptr<KnownPrefixes>> known_future;
  if (source->artifact && source->artifact->warm && !source->artifact->warm->data().prefixes.blocks.empty())
    known_future = std::async(std::launch::async, learn_baked_prompts, std::cref(*tok),
                              std::cref(source->artifact->warm->data().prefixes));
  if (auto st = warm_up(**eng, *tok, baked_prefix, o.ctx_size); !st) {
    (*eng)->stop();
    return fail(st.message());
  }
  if (embedder) {  // its weights paged in and its buffers grown before traffic
    if (auto r = embedder->embed("Hello"); !r) {
      (*eng)->stop();
      return fail("embedding model warm-up failed: " + r.message());
    }
  }
  if (known_future.valid()) known_prefixes = known_future.get();
  if (known_prefixes) {
    router.attach_known_prefixes(known_prefixes.get());
    fmt::print(stderr, "kiln serve: {} baked prompt texts tokenized ahead (a prompt starting with one "
               "reuses their tokens)\n", known_prefixes->size());
  }
  metrics.set_phase_seconds("warmup", since(t_warm));
  timeline.mark("warmup");
  for (const auto& p : timeline.phases()) metrics.set_phase_seconds(p.name, p.seconds);
  metrics.set_phase_seconds("total", timeline.since_start());
  router.set_phase(server::Phase::ready);
  fmt::print(stderr, "kiln serve: start-up: {}\n", timeline.format());
  fmt::print(stderr, "kiln serve: ready in {:.2f} s ({} on {}), model '{}'\n", since(t_start),
             backend->name(), backend->device_name(), cfg.model_id);

  shutdown.wait();
  fmt::print(stderr, "kiln serve: signal {}: draining (up to {:.1f} s)\n", shutdown.signal_number(),
             o.drain_timeout);
  const bool drained = server::graceful_shutdown(http, router, eng->get(), cfg.drain_timeout);
  fmt::print(stderr, "kiln serve: {}; bye\n",
             drained ? "all requests finished" : "drain timeout: remaining requests cancelled");
  return 0;
}

}  // namespace

void register_serve(CLI::App& root, Runner& run) {
  auto o = std::make_shared<ServeOptions>();
  auto* sub =
      root.add_subcommand("serve",
                          "OpenAI-compatible HTTP server (/v1/chat/completions, /v1/completions, "
                          "/v1/models, /v1/embeddings, /tokenize, /detokenize, /apply-template, "
                          "/health/live, /health/ready, /metrics)");
  sub->add_option("-m,--model", o->model,
                  "GGUF model file to serve, or a URL (https://, http://, gs://BUCKET/OBJECT): "
                  "downloaded with parallel ranged GETs while the weights load from the chunks "
                  "already there; ready only once the download's checksum holds (docs/pull.md). "
                  "Default: the demo model built into kiln (models/README.md)");
  sub->add_option("--download-dir", o->download.dir,
                  "Where --model URL is downloaded; a verified earlier download of the same "
                  "remote version is reused (default: $TMPDIR/kiln-models)");
  sub->add_option("--download-connections", o->download.connections,
                  "Parallel connections of the --model URL download")
      ->capture_default_str();
  sub->add_option("--download-chunk-size", o->download.chunk_size,
                  "Bytes per ranged GET of the --model URL download (e.g. 64M); the weights load "
                  "chunk by chunk as they complete")
      ->capture_default_str();
  sub->add_option("--model-name", o->model_name,
                  "Name /v1/models lists and responses echo (default: the file name without "
                  ".gguf); requests may name any model")
      ->capture_default_str();
  sub->add_option("--host", o->host, "Address to listen on")->capture_default_str();
  sub->add_option("--port", o->port,
                  "Port to listen on (default: $PORT, else 8080, as Cloud Run expects)");
  sub->add_option("--ctx-size", o->ctx_size,
                  "Most tokens (prompt + generated) of one request; longer prompts get 400")
      ->capture_default_str();
  sub->add_option("--parallel", o->parallel, "Sequences decoded together (N): the engine's slots")
      ->capture_default_str();
  sub->add_option("--max-concurrency", o->max_concurrency,
                  "Requests admitted at once (C >= N): N run, up to C-N wait in the engine's "
                  "FIFO, more get 429 with Retry-After. Set Cloud Run's max concurrency to the "
                  "same. Default: the printed rule-of-thumb (parallel + ideal batch size)");
  sub->add_option("--gpu-memory-fraction", o->gpu_memory_fraction,
                  "Share of device memory kiln may use (weights + KV pool + scratch)")
      ->capture_default_str();
  sub->add_option("--kv-memory", o->kv_memory,
                  "Size of the KV block pool outright (e.g. 4G, 512M); overrides "
                  "--gpu-memory-fraction for the KV pool");
  sub->add_option("--kv-block-size", o->kv_block_size, "Tokens per KV cache block")
      ->capture_default_str();
  sub->add_option("--kv-type", o->kv_type, "KV cache element type: f16, fp8 (e4m3) or q8_0")
      ->capture_default_str();
  sub->add_option("--max-batch-tokens", o->max_batch_tokens,
                  "Token budget of one engine step (decode tokens + prefill chunks)")
      ->capture_default_str();
  sub->add_flag("--no-prefix-cache", o->no_prefix_cache,
                "Turn off automatic prefix caching of full KV blocks");
  sub->add_option("--chat-template", o->chat_template,
                  "Jinja chat template file overriding the model's tokenizer.chat_template");
  sub->add_option("--api-key", o->api_key,
                  "Require 'Authorization: Bearer KEY' on every route but /health/* (401 "
                  "otherwise); also read from $KILN_API_KEY. Off by default");
  sub->add_option("--drain-timeout", o->drain_timeout,
                  "Seconds in-flight requests may run after SIGTERM before they are cancelled "
                  "(Cloud Run allows about 10)")
      ->capture_default_str();
  sub->add_option("--request-log", o->request_log,
                  "Append one JSON line per request to FILE (schema: docs/request-log.md)");
  sub->add_option("--embedding-model", o->embedding_model,
                  "BERT-family embedding GGUF (bge, MiniLM) run on the CPU beside the model: "
                  "answers /v1/embeddings requests whose \"model\" is its name, pooled as its "
                  "<arch>.pooling_type says, L2-normalized");
  sub->add_option("--embedding-model-name", o->embedding_model_name,
                  "Name of --embedding-model in requests and /v1/models (default: its file name "
                  "without .gguf)");
  sub->add_option("--embedding-threads", o->embedding_threads,
                  "CPU threads of --embedding-model (0: min(4, hardware threads))")
      ->capture_default_str();
  add_cache_options(sub, o->cache);
  add_device_option(sub, o->device);
  add_load_options(sub, o->load);
  sub->add_option("--threads", o->threads,
                  "Compute threads of the CPU backend (0: every hardware thread)")
      ->capture_default_str();
  sub->add_option("--http-threads", o->http_threads, "Threads serving HTTP connections")
      ->capture_default_str();
  sub->add_option("--bench-result", o->bench_result,
                  "JSON lines from `kiln bench --streams ... --json-out FILE` "
                  "({\"test\":\"streams<N>\",\"tokens_per_s\":X}): the ideal batch size for the "
                  "concurrency recommendation (else an estimate)");
  sub->add_option("--max-body-bytes", o->max_body_bytes, "Larger request bodies get 413")
      ->capture_default_str();
  sub->add_option("--max-header-bytes", o->max_header_bytes, "Larger request headers get 431")
      ->capture_default_str();
  sub->add_option("--request-timeout", o->request_timeout,
                  "Seconds a request may take to arrive once its first byte came (slow clients "
                  "are cut off)")
      ->capture_default_str();
  sub->add_option("--idle-timeout", o->idle_timeout,
                  "Seconds an idle keep-alive connection stays open")
      ->capture_default_str();
  sub->callback([o, &run, sub] {
    o->kv_type_given = sub->get_option("--kv-type")->count() > 0;
    o->kv_block_size_given = sub->get_option("--kv-block-size")->count() > 0;
    o->ctx_size_given = sub->get_option("--ctx-size")->count() > 0;
    run = [o] {
      // --model DIR: flags not given take the artifact's values.
      ServeOptions eff = *o;
      if (eff.model.empty()) {  // no --model: the demo model built into this binary
        eff.model = demo_model_path();
        if (eff.model.empty())
          return fail("no --model given, and this kiln was built without the demo model "
                      "(models/kiln-demo.gguf); pass -m MODEL");
        if (eff.model_name.empty()) eff.model_name = kDemoModelName;
      }
      KvFlags f{eff.kv_type, eff.kv_block_size, eff.ctx_size, eff.kv_type_given,
                eff.kv_block_size_given, eff.ctx_size_given};
      adopt_artifact_kv_settings(eff.model, f, "serve");
      eff.kv_type = f.kv_type;
      eff.kv_block_size = f.kv_block_size;
      eff.ctx_size = f.ctx_size;
      return run_serve(eff);
    };
  });
}

}  // namespace kiln::cli
