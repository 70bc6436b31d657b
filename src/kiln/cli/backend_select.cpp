// Backend factory for the CLI (see backend_select.h).
#include "kiln/cli/backend_select.h"

#include <fmt/format.h>

#include <cstdint>
#include <new>

#ifdef KILN_HAVE_CUDA
#include "kiln/backend/cuda/cuda_backend.h"
#endif

namespace kiln::cli {

bool cuda_built() {
#ifdef KILN_HAVE_CUDA
  return true;
#else
  return false;
#endif
}

std::string default_device() {
#ifdef KILN_HAVE_CUDA
  if (cuda::device_count() > 0) return "cuda";
#endif
  return "cpu";
}

void add_device_option(CLI::App* cmd, std::string& device) {
  cmd->add_option("--device", device,
                  "Compute device: cpu or cuda (default: cuda when built with CUDA and a GPU is "
                  "present)")
      ->check(CLI::IsMember({"cpu", "cuda"}));
}

Result<std::unique_ptr<Backend>> make_backend(const DeviceOptions& o) {
  // No --device: CUDA when a GPU answers. The first CUDA call starts the
  // driver (0.1 s or more), which create() times as part of the start-up
  // breakdown, so it is not asked beforehand.
  const std::string device = o.device.empty() ? (cuda_built() ? "cuda" : "cpu") : o.device;
  if (device == "cpu") return std::unique_ptr<Backend>(std::make_unique<cpu::CpuBackend>(o.cpu));
  if (device == "cuda") {
#ifdef KILN_HAVE_CUDA
    cuda::CudaOptions co;
    co.load_threads = o.load_threads;
    co.load_direct = o.load_direct;
    co.prepare_image_staging = o.expect_image;
    auto be = cuda::CudaBackend::create(co);
    if (!be && o.device.empty() && cuda::device_count() == 0)  // no GPU here: the CPU backend
      return std::unique_ptr<Backend>(std::make_unique<cpu::CpuBackend>(o.cpu));
    if (!be) return be.error();
    return std::unique_ptr<Backend>(std::move(be.value()));
#else
    return make_error("this kiln was built without the CUDA backend; use --device cpu or rebuild "
                      "with a CUDA toolkit (cmake -DKILN_CUDA=ON)");
#endif
  }
  return make_error(fmt::format("unknown device '{}': use cpu or cuda", device));
}

void add_load_options(CLI::App* cmd, DeviceOptions& o) {
  cmd->add_option("--load-threads", o.load_threads,
                  "Threads reading a baked weight image into GPU memory")
      ->check(CLI::Range(1, 64))
      ->capture_default_str();
  cmd->add_flag("--load-direct", o.load_direct,
                "Read baked weights with O_DIRECT (bypasses the page cache: faster for files "
                "that are not cached, and no second copy in host memory)");
}

std::optional<ImageLoadInfo> image_load_info(const Backend& be) {
#ifdef KILN_HAVE_CUDA
  if (const auto* c = dynamic_cast<const cuda::CudaBackend*>(&be)) {
    const auto& r = c->load_report();
    if (r.image)
      return ImageLoadInfo{r.upload_seconds, r.bytes,           r.threads,
                           r.setup_seconds,  r.driver_seconds,  r.context_seconds,
                           r.setup_seconds_after_context};
  }
#else
  (void)be;
#endif
  return std::nullopt;
}

bool verify_image_while_loading(Backend& be, uint64_t offset, uint64_t body_bytes,
                                uint64_t chunk_bytes, ChunkVerifier verify) {
#ifdef KILN_HAVE_CUDA
  if (auto* c = dynamic_cast<cuda::CudaBackend*>(&be)) {
    c->set_image_check({offset, body_bytes, chunk_bytes, std::move(verify)});
    return true;
  }
#else
  (void)be, (void)offset, (void)body_bytes, (void)chunk_bytes, (void)verify;
#endif
  return false;
}

bool may_verify_image_while_loading(const std::string& device) {
#ifdef KILN_HAVE_CUDA
  return device != "cpu";
#else
  (void)device;
  return false;
#endif
}

const cpu::CpuBackend* as_cpu(const Backend& be) { return dynamic_cast<const cpu::CpuBackend*>(&be); }

KvType default_kv_type(const Backend& be) {
  if (const auto* c = as_cpu(be)) return cpu::default_kv_type(c->path());
  return KvType::f16;
}

double reference_bandwidth(const Backend& be) {
#ifdef KILN_HAVE_CUDA
  if (const auto* c = dynamic_cast<const cuda::CudaBackend*>(&be)) {
    if (c->device_name().find("H100") != std::string::npos) return 3.0e12;
    return c->peak_memory_bandwidth();
  }
#endif
  (void)be;
  return 0.0;
}

Result<std::unique_ptr<Backend>> open_single_sequence_backend(const model::Model& model,
                                                              const SingleSequenceSetup& s) {
  DeviceOptions dopt;
  dopt.device = s.device;
  dopt.cpu = s.cpu;
  auto made = make_backend(dopt);
  if (!made) return made.error();
  std::unique_ptr<Backend> backend = std::move(*made);
  KILN_TRY(backend->load_weights(model));
  KvCacheConfig kv;
  kv.type = default_kv_type(*backend);
  if (!s.kv_type.empty()) {
    auto t = kv_type_from_name(s.kv_type);
    if (!t) return make_error("--kv-type must be one of f32, f16, fp8, q8_0");
    kv.type = *t;
  }
  kv.block_size = 16;
  kv.n_blocks = int32_t((s.n_positions + kv.block_size - 1) / kv.block_size);
  if (kv.n_blocks == 0) return make_error("nothing to run: no positions requested");
  KILN_TRY(backend->init_kv_cache(kv));
  return backend;
}

Status resize_kv_for_sequences(Backend& backend, int64_t n_seqs, int64_t positions_per_seq) {
  KvCacheConfig kv = backend.kv_config();
  const int64_t per_seq = (positions_per_seq + kv.block_size - 1) / kv.block_size;
  const int64_t n_blocks = n_seqs * per_seq;
  if (n_blocks <= 0) return make_error("nothing to run: no sequences or positions requested");
  if (n_blocks > INT32_MAX)
    return make_error(fmt::format("KV pool for {} sequences x {} positions needs {} blocks, "
                                  "more than a pool can index; use fewer streams or positions",
                                  n_seqs, positions_per_seq, n_blocks));
  kv.n_blocks = int32_t(n_blocks);
  Status st;
  try {
    st = backend.init_kv_cache(kv);
  } catch (const std::bad_alloc&) {  // the CPU pool lives in host vectors
    st = make_error("out of host memory");
  }
  if (!st)
    return make_error(fmt::format("cannot allocate the KV pool for {} sequences x {} positions "
                                  "({} blocks of {}): {}; use fewer streams, smaller -p/-n, or "
                                  "--kv-type fp8/q8_0",
                                  n_seqs, positions_per_seq, n_blocks, kv.block_size,
                                  st.message()));
  return Status::success();
}

}  // namespace kiln::cli
