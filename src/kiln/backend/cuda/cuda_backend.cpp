// CudaBackend set-up: device and handles, weight upload (with q4_0/q8_0
// repacking and Q|K|V, gate|up merging), the KV pool, buffers, logits access
// and the memory report. The forward pass is in cuda_forward.cpp.
#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <initializer_list>
#include <utility>

#include "kiln/backend/cuda/cublas_dl.h"
#include "kiln/backend/cuda/cuda_compat.h"
#include "kiln/backend/cuda/cuda_impl.h"
#include "kiln/backend/cuda/cuda_check.h"
#include "kiln/backend/cuda/file_upload.h"
#include "kiln/backend/weight_image.h"
#include "kiln/gguf/gguf.h"
#include "kiln/backend/cuda/kernels/argmax.cuh"
#include "kiln/backend/cuda/kernels/attention.cuh"
#include "kiln/backend/cuda/kernels/attention_decode.cuh"
#include "kiln/backend/cuda/kernels/flash_attention.cuh"
#include "kiln/backend/cuda/kernels/kv_blocks.cuh"
#include "kiln/backend/cuda/kernels/matvec.cuh"
#include "kiln/backend/cuda/kernels/repack.cuh"
#include "kiln/backend/cuda/kernels/sample.cuh"
#include "kiln/core/assert.h"
#include "kiln/model/model.h"

namespace kiln::cuda {

Status cuda_status(cudaError_t err, const char* what) {
  if (err == cudaSuccess) return Status::success();
  return make_error(fmt::format("CUDA: {} failed: {}", what, cudaGetErrorString(err)));
}

#define KILN_CUDA_TRY(expr) KILN_TRY(cuda_status((expr), #expr))

bool DeviceBuffer::alloc(size_t bytes) {
  reset();
  if (bytes == 0) return true;
  if (cudaMalloc(&ptr_, bytes) != cudaSuccess) {
    (void)cudaGetLastError();  // clear the sticky-free error state
    ptr_ = nullptr;
    return false;
  }
  bytes_ = bytes;
  return true;
}

void DeviceBuffer::reset() {
  if (ptr_) cudaFree(ptr_);
  ptr_ = nullptr;
  bytes_ = 0;
}

int device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    (void)cudaGetLastError();
    return 0;
  }
  return n;
}

Status CudaBackend::Impl::wait_cublas() {
  if (!cublas_init.valid()) return cublas ? Status::success() : make_error("cuBLAS is not initialized");
  return cublas_init.get();
}

CudaBackend::Impl::~Impl() {
  if (cublas_init.valid()) cublas_init.wait();
  if (gemm_warm.valid()) gemm_warm.wait();
  if (stream) cudaStreamSynchronize(stream);
  if (staging_release.valid()) staging_release.wait();
  spare_staging.reset();
  for (int k = 0; k < 2; ++k) {
    if (kv_pinned[k]) cudaFreeHost(kv_pinned[k]);
    if (kv_copied[k]) cudaEventDestroy(kv_copied[k]);
  }
  drop_graphs();
  if (meta_host) cudaFreeHost(meta_host);
  if (logits_host) cudaFreeHost(logits_host);
  if (argmax_host) cudaFreeHost(argmax_host);
  if (cublas) blas::destroy(cublas);
  if (meta_done) cudaEventDestroy(meta_done);
  if (stream) cudaStreamDestroy(stream);
}

CudaBackend::CudaBackend(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
CudaBackend::~CudaBackend() {
  if (impl_) cudaSetDevice(impl_->opt.device);
}

// Kernels and cuBLAS heuristics the first requests would otherwise load on
// their own time. CUDA loads each kernel lazily at its first launch, and
// cuBLAS its GEMM kernels and heuristics at its first call (40+ ms on an
// H100). None of it needs the weights, so it runs in the background from the
// moment the context exists, beside the weight upload; every forward waits
// for it while graphs are on (a capture must not see its synchronizing
// calls), so even the warm-up request finds everything loaded.
static void warm_kernels(int dev) {
  cudaSetDevice(dev);
  mma_prime();
  flash_prime();
  for (KvType t : {KvType::f16, KvType::fp8, KvType::q8_0, KvType::f32}) attention_prime(t);
  attention_decode_prime();
  for (DType t : {DType::Q4_0, DType::Q8_0, DType::Q4_1, DType::Q5_0, DType::Q5_1, DType::Q4_K, DType::Q5_K,
                  DType::Q6_K, DType::F16, DType::BF16, DType::F32})
    matvec_prime(t);
  sample_prime();
  cublasHandle_t h = nullptr;
  cudaStream_t st = nullptr;
  void* buf = nullptr;
  constexpr int kDim = 256;  // same types and transposes as kernels/gemm.cu
  if (blas::create(&h) == CUBLAS_STATUS_SUCCESS &&
      cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking) == cudaSuccess &&
      cudaMallocAsync(&buf, size_t(kDim) * kDim * (2 + 2 + 4), st) == cudaSuccess) {
    blas::set_stream(h, st);
    const float alpha = 1.0f, beta = 0.0f;
    auto* m = static_cast<uint8_t*>(buf);
    blas::gemm_ex(h, CUBLAS_OP_T, CUBLAS_OP_N, kDim, 16, kDim, &alpha, m, CUDA_R_16F, kDim,
                 m + size_t(kDim) * kDim * 2, CUDA_R_16F, kDim, &beta, m + size_t(kDim) * kDim * 4,
                 CUDA_R_32F, kDim, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
    cudaFreeAsync(buf, st);
    cudaStreamSynchronize(st);
  }
  if (st) cudaStreamDestroy(st);
  if (h) blas::destroy(h);
  (void)cudaGetLastError();  // a failed warm-up call must not leave a sticky error
}

Result<std::unique_ptr<CudaBackend>> CudaBackend::create(const CudaOptions& options) {
  // First, so that touching its pages overlaps the context creation below.
  // The staging memory is registered with CUDA only once this function is
  // done: registering pins pages under driver locks that the calls below
  // would otherwise wait on.
  // (Declared first: on an early return the guard releases the thread
  // before this future's destructor waits for it.)
  std::future<std::unique_ptr<HostStaging>> staging;
  std::promise<void> created;
  struct SetOnExit {
    std::promise<void>& p;
    ~SetOnExit() { p.set_value(); }
  } set_created{created};
  if (options.prepare_image_staging) {
    // Sized for load_chunk_bytes, which is also the artifacts' checksum
    // chunk (16 MiB): with another chunk size the upload allocates its own.
    FileUploadOptions fo;
    fo.chunk_bytes = options.load_chunk_bytes;
    staging = std::async(std::launch::async, HostStaging::prepare,
                         staging_bytes_needed(fo, options.load_threads), options.device,
                         created.get_future().share());
  }
  using SteadyClock = std::chrono::steady_clock;
  auto seconds_since = [](SteadyClock::time_point t) {
    return std::chrono::duration<double>(SteadyClock::now() - t).count();
  };
  auto t0 = SteadyClock::now();
  const int n = device_count();  // the driver starts here, unless a caller asked before
  const double driver_seconds = seconds_since(t0);
  if (n == 0) return make_error("no CUDA device is available (no GPU or no driver); use --device cpu");
  if (options.device < 0 || options.device >= n)
    return make_error(fmt::format("CUDA device {} does not exist ({} found)", options.device, n));
  if (options.matvec_max_rows < -1 || options.matvec_max_rows > 8)
    return make_error("matvec_max_rows must be in [0, 8] (or -1: automatic)");
  auto impl = std::make_unique<Impl>();
  impl->opt = options;
  impl->staging = std::move(staging);
  if (const char* e = std::getenv("KILN_CUDA_GRAPHS"); e && std::strcmp(e, "0") == 0)
    impl->opt.use_graphs = false;
  if (const char* e = std::getenv("KILN_FLASH_ATTN"); e && std::strcmp(e, "0") == 0)
    impl->opt.flash_attention = false;
  if (const char* e = std::getenv("KILN_FLASH_MIN_ROWS"); e && *e)
    impl->opt.flash_min_rows = std::max(1, std::atoi(e));
  if (const char* e = std::getenv("KILN_MMA_MAX_ROWS"); e && *e)
    impl->opt.mma_max_rows = std::max(0, std::atoi(e));
  if (const char* e = std::getenv("KILN_MATVEC_MAX_ROWS"); e && *e)
    impl->opt.matvec_max_rows = std::clamp(std::atoi(e), 0, 8);
  impl->driver_seconds = driver_seconds;
  t0 = SteadyClock::now();
  KILN_CUDA_TRY(cudaSetDevice(options.device));  // creates the primary context
  impl->context_seconds = seconds_since(t0);
  t0 = SteadyClock::now();
  cudaDeviceProp prop{};
  KILN_CUDA_TRY(cudaGetDeviceProperties(&prop, options.device));
  impl->name = prop.name;
  impl->n_sms = prop.multiProcessorCount;
  KILN_CUDA_TRY(cudaStreamCreateWithFlags(&impl->stream, cudaStreamNonBlocking));
  KILN_CUDA_TRY(cudaEventCreateWithFlags(&impl->meta_done, cudaEventDisableTiming));
  impl->cublas_init = std::async(std::launch::async, [p = impl.get()]() -> Status {
    if (Status st = blas::open(); !st) return make_error("cuBLAS: " + st.message());
    if (cudaSetDevice(p->opt.device) != cudaSuccess || blas::create(&p->cublas) != CUBLAS_STATUS_SUCCESS)
      return make_error("cuBLAS could not be initialized");
    blas::set_stream(p->cublas, p->stream);
    return Status::success();
  });
  impl->gemm_warm = std::async(std::launch::async, warm_kernels, options.device);
  impl->after_context_seconds = seconds_since(t0);
  return std::unique_ptr<CudaBackend>(new CudaBackend(std::move(impl)));
}

std::string CudaBackend::device_name() const { return impl_->name; }
void CudaBackend::set_image_check(ImageChunkCheck check) { impl_->image_check = std::move(check); }

int32_t CudaBackend::argmax(int32_t i) const {
  KILN_ASSERT(i >= 0 && i < impl_->n_logits);
  return impl_->argmax_host[i];  // valid once the step is synchronized
}

const CudaLoadReport& CudaBackend::load_report() const { return impl_->load_report; }

double CudaBackend::peak_memory_bandwidth() const {
  return compat::peak_memory_bandwidth(impl_->opt.device);
}

const KvCacheConfig& CudaBackend::kv_config() const { return impl_->kv_cfg; }
int32_t CudaBackend::n_logits() const { return impl_->n_logits; }

std::span<const float> CudaBackend::logits(int32_t i) const {
  KILN_ASSERT(i >= 0 && i < impl_->n_logits);
  Impl& s = *impl_;
  const size_t n_vocab = size_t(s.model->hparams().n_vocab);
  if (!s.logits_on_host) {
    // First read since the step: bring every logit row over at once.
    cudaSetDevice(s.opt.device);
    CUDA_CHECK(cudaMemcpyAsync(s.logits_host, s.logits_dev.as<void>(),
                               size_t(s.n_logits) * n_vocab * 4, cudaMemcpyDeviceToHost, s.stream));
    CUDA_CHECK(cudaStreamSynchronize(s.stream));
    s.logits_on_host = true;
  }
  return {s.logits_host + size_t(i) * n_vocab, n_vocab};
}

Status CudaBackend::synchronize() {
  cudaSetDevice(impl_->opt.device);
  return cuda_status(cudaStreamSynchronize(impl_->stream), "synchronize");
}

// ---- weights -------------------------------------------------------------------

namespace {

// Every host-to-device copy here goes on the backend's stream: a plain
// cudaMemcpy from pageable memory may return before its DMA has finished (on
// the legacy stream), and the repack kernel and the forwards, on the
// non-blocking backend stream, would not wait for it. (A GPU test caught
// this once other threads were also using the device during the load.)
struct Uploader {
  CudaBackend::Impl& impl;
  DeviceBuffer staging;  // raw q4_0/q8_0 rows on their way to repacking
  // Image mode: the file's data section [host_base, host_end) already sits
  // on the device at dev_base, so weights are bound, not copied.
  const uint8_t* host_base = nullptr;
  const uint8_t* host_end = nullptr;
  uint8_t* dev_base = nullptr;
  // The mapped GGUF: a file still downloading (serve --model URL) makes each
  // copy below wait for its own bytes (File::await_at; a no-op otherwise).
  const gguf::File* file = nullptr;

  // The first file offset among ps (0 when none is in the file: converted
  // copies), to order the uploads as their bytes lie in the file.
  uint64_t file_offset(std::initializer_list<const void*> ps) const {
    const auto bytes = file->bytes();
    uint64_t first = UINT64_MAX;
    for (const void* p : ps) {
      const auto* b = static_cast<const uint8_t*>(p);
      if (b >= bytes.data() && b < bytes.data() + bytes.size())
        first = std::min<uint64_t>(first, uint64_t(b - bytes.data()));
    }
    return first == UINT64_MAX ? 0 : first;
  }

  bool in_image(const void* p, size_t n) const {
    const auto* b = static_cast<const uint8_t*>(p);
    return dev_base && b >= host_base && b + n <= host_end;
  }
  uint8_t* dev(const void* p) const { return dev_base + (static_cast<const uint8_t*>(p) - host_base); }

  Result<const float*> vector(const model::Vector& v) {
    if (!v) return static_cast<const float*>(nullptr);
    if (in_image(v.data, size_t(v.n) * 4)) return reinterpret_cast<const float*>(dev(v.data));
    KILN_TRY(file->await_at(v.data, size_t(v.n) * 4));
    DeviceBuffer b;
    if (!b.alloc(size_t(v.n) * 4)) return make_error(fmt::format("out of GPU memory uploading {}", v.name));
    KILN_CUDA_TRY(cudaMemcpyAsync(b.as<void>(), v.data, size_t(v.n) * 4, cudaMemcpyHostToDevice,
                                  impl.stream));
    const float* p = b.as<float>();
    impl.weight_bytes += b.bytes();
    impl.weight_bufs.push_back(std::move(b));
    return p;
  }

  // A run in a baked image: its parts must be adjacent in the file, in order
  // (kiln bake writes them so); then the device matrix is a slice of the image.
  Result<DeviceMatrix> bind(const image::Run& r) {
    const uint8_t* p = static_cast<const uint8_t*>(r.parts[0]->data);
    for (const auto* m : r.parts) {
      const size_t bytes = size_t(m->n_out) * m->row_stride();
      if (m->data != p || !in_image(p, bytes))
        return make_error(fmt::format("{} is not where the weight image layout puts it; the "
                                      "artifact is damaged or from another kiln: rebake it",
                                      m->name));
      p += bytes;
    }
    DeviceMatrix d;
    d.type = r.type;
    d.n_in = r.n_in;
    d.n_out = r.n_out;
    d.data = dev(r.parts[0]->data);
    d.row_stride = r.row_stride();
    if (r.planar) d.scales = reinterpret_cast<const uint16_t*>(d.data + r.quant_bytes());
    return d;
  }

  // The GGUF rows of `ms`, one after another, to device memory at dst.
  Status copy_rows(const std::vector<const model::Matrix*>& ms, uint8_t* dst) const {
    for (const auto* m : ms) {
      const size_t bytes = size_t(m->n_out) * m->row_stride();
      KILN_TRY(file->await_at(m->data, bytes));
      KILN_CUDA_TRY(cudaMemcpyAsync(dst, m->data, bytes, cudaMemcpyHostToDevice, impl.stream));
      dst += bytes;
    }
    return Status::success();
  }

  // Uploads one run (matrices of one type and input width, rows stacked).
  Result<DeviceMatrix> run(const image::Run& r) {
    if (dev_base) return bind(r);
    const std::vector<const model::Matrix*>& ms = r.parts;
    const model::Matrix& m0 = *ms[0];
    const int64_t n_out = r.n_out;
    const size_t raw_bytes = r.bytes();
    DeviceMatrix d;
    d.type = m0.type;
    d.n_in = m0.n_in;
    d.n_out = n_out;
    if (!r.planar) {
      DeviceBuffer b;
      if (!b.alloc(raw_bytes)) return make_error(fmt::format("out of GPU memory uploading {}", m0.name));
      KILN_TRY(copy_rows(ms, b.as<uint8_t>()));
      d.data = b.as<uint8_t>();
      d.row_stride = m0.row_stride();
      impl.weight_bytes += b.bytes();
      impl.weight_bufs.push_back(std::move(b));
      return d;
    }
    if (staging.bytes() < raw_bytes && !staging.alloc(raw_bytes))
      return make_error(fmt::format("out of GPU memory staging {}", m0.name));
    KILN_TRY(copy_rows(ms, staging.as<uint8_t>()));
    const size_t q_row = r.row_stride();
    DeviceBuffer q, s;
    if (!q.alloc(q_row * size_t(n_out)) || !s.alloc(size_t(n_out) * size_t(m0.n_in / 32) * 2))
      return make_error(fmt::format("out of GPU memory uploading {}", m0.name));
    repack_rows(m0.type, staging.as<uint8_t>(), m0.n_in, n_out, q.as<uint8_t>(), s.as<uint16_t>(),
                impl.stream);
    KILN_CUDA_TRY(cudaStreamSynchronize(impl.stream));  // staging is reused by the next matrix
    d.data = q.as<uint8_t>();
    d.scales = s.as<uint16_t>();
    d.row_stride = q_row;
    impl.weight_bytes += q.bytes() + s.bytes();
    impl.weight_bufs.push_back(std::move(q));
    impl.weight_bufs.push_back(std::move(s));
    return d;
  }

  // A group: runs of equal type are merged; biases concatenated (zeros where
  // one part has none).
  Result<LinearGroup> group(const std::vector<const model::Matrix*>& ms,
                            const std::vector<const model::Vector*>& biases) {
    LinearGroup g;
    for (const image::Run& r : image::split_runs(ms)) {
      auto d = run(r);
      if (!d) return d.error();
      g.parts.push_back({*d, g.n_out});
      g.n_out += d->n_out;
    }
    bool any_bias = false, all_adjacent = dev_base != nullptr;
    const float* next = nullptr;
    for (size_t k = 0; k < ms.size(); ++k) {
      const model::Vector* b = k < biases.size() ? biases[k] : nullptr;
      any_bias = any_bias || (b && *b);
      // In an image, Q, K, V biases usually sit back to back: bind, no copy.
      if (!(b && *b) || (next && b->data != next) || !in_image(b->data, size_t(b->n) * 4))
        all_adjacent = false;
      else
        next = b->data + b->n;
    }
    if (any_bias && all_adjacent) {
      g.bias = reinterpret_cast<const float*>(dev(biases[0]->data));
    } else if (any_bias) {
      std::vector<float> host(size_t(g.n_out), 0.0f);
      int64_t col = 0;
      for (size_t k = 0; k < ms.size(); ++k) {
        const model::Vector* b = k < biases.size() ? biases[k] : nullptr;
        if (b && *b) {
          KILN_TRY(file->await_at(b->data, size_t(b->n) * 4));
          std::memcpy(host.data() + col, b->data, size_t(b->n) * 4);
        }
        col += ms[k]->n_out;
      }
      model::Vector v;
      v.name = ms[0]->name + " (bias)";
      v.data = host.data();
      v.n = g.n_out;
      auto p = vector(v);
      if (!p) return p.error();
      g.bias = *p;
    }
    return g;
  }
};

bool cuda_supports(DType t) {
  switch (t) {
    case DType::F32: case DType::F16: case DType::BF16: case DType::Q4_0: case DType::Q4_1:
    case DType::Q5_0: case DType::Q5_1: case DType::Q8_0: case DType::Q4_K: case DType::Q5_K:
    case DType::Q6_K: return true;
    default: return false;
  }
}

}  // namespace

Status CudaBackend::load_weights(const model::Model& model) {
  Impl& s = *impl_;
  KILN_CUDA_TRY(cudaSetDevice(s.opt.device));
  const model::HParams& hp = model.hparams();
  const model::ModelWeights& w = model.weights();
  // Check everything before allocating anything.
  if (hp.head_dim_k > 256 || hp.head_dim_v > 256 || hp.head_dim_k % 8 != 0 || hp.head_dim_v % 8 != 0)
    return make_error(fmt::format("the CUDA backend needs head sizes that are multiples of 8 up to "
                                  "256 (this model: {}/{}); use --device cpu",
                                  hp.head_dim_k, hp.head_dim_v));
  std::vector<const model::Matrix*> all = {&w.tok_embd, &w.output};
  for (const auto& l : w.layers)
    for (const auto* m : {&l.wq, &l.wk, &l.wv, &l.wo, &l.w_gate, &l.w_up, &l.w_down}) all.push_back(m);
  for (const auto* m : all) {
    if (!cuda_supports(m->type))
      return make_error(fmt::format("{} is stored as {}, which the CUDA backend cannot compute "
                                    "with; use --device cpu or requantize the model",
                                    m->name, dtype_name(m->type)));
    if (m->n_in % 32 != 0)
      return make_error(fmt::format("{} has rows of {} elements; the CUDA backend needs multiples "
                                    "of 32 (use --device cpu)",
                                    m->name, m->n_in));
  }

  KILN_CUDA_TRY(cudaStreamSynchronize(s.stream));
  s.drop_graphs();
  s.weight_bufs.clear();
  s.layers.clear();
  s.weight_bytes = 0;
  s.model = &model;
  s.cap = 0;  // buffers depend on the model: re-reserved at the next forward
  s.max_in = 0;
  for (const auto* m : all) s.max_in = std::max(s.max_in, m->n_in);
  Uploader up{s, {}};
  up.file = &model.file();
  s.load_report = CudaLoadReport{};

  // A baked weight image: copy the whole data section to the GPU in one
  // streamed pass, then bind every weight to its slice (no per-tensor work).
  const gguf::File& file = model.file();
  const std::string layout = image::image_layout(file);
  if (!layout.empty() && layout != image::kCudaLayout)
    return make_error(fmt::format("{} holds weights in layout '{}', which this kiln cannot load "
                                  "(it reads '{}'); rebake the artifact with this kiln",
                                  file.path(), layout, image::kCudaLayout));
  if (layout == image::kCudaLayout) {
    uint64_t n = file.file_size() - file.data_offset();
    FileUploadOptions fo;
    ImageChunkCheck check = std::exchange(s.image_check, ImageChunkCheck{});
    if (check.verify) {
      // Verify-while-loading: the checked body is exactly the data section
      // (the integrity trailer after it is not uploaded).
      if (check.offset != file.data_offset() || check.body_bytes > n || check.chunk_bytes == 0)
        return make_error(fmt::format("{}: the checksum layout does not match the weight image; "
                                      "rebake the artifact",
                                      file.path()));
      n = check.body_bytes;
      fo.chunk_bytes = check.chunk_bytes;
      fo.on_chunk = std::move(check.verify);
    }
    DeviceBuffer slab;
    if (!slab.alloc(n))
      return make_error(fmt::format("out of GPU memory: the weights need {:.2f} GiB; use a larger "
                                    "GPU or a smaller quantization",
                                    double(n) / double(1ull << 30)));
    fo.device = s.opt.device;
    fo.threads = s.opt.load_threads;
    if (!fo.on_chunk) fo.chunk_bytes = s.opt.load_chunk_bytes;
    fo.direct = s.opt.load_direct;
    std::unique_ptr<HostStaging> staged = s.staging.valid() ? s.staging.get() : nullptr;
    if (staged) {
      fo.staging = staged->data();
      fo.staging_bytes = staged->bytes();
    }
    if (file.arriving())  // each chunk waits for its bytes (read_path: the name may not exist yet)
      fo.wait_range = [&file](uint64_t off, uint64_t len) { return file.await(off, len); };
    auto st = upload_file_range(file.read_path(), file.data_offset(), n, slab.as<void>(), fo);
    if (!st) return st.error();
    // Kept for the baked KV blocks restored next; let go once they are (or
    // at the first forward).
    s.spare_staging = std::move(staged);
    up.host_base = file.bytes().data() + file.data_offset();
    up.host_end = file.bytes().data() + file.data_offset() + n;
    up.dev_base = slab.as<uint8_t>();
    s.weight_bytes += slab.bytes();
    s.weight_bufs.push_back(std::move(slab));
    s.load_report = {true, st->bytes, st->seconds, st->threads, st->setup_seconds};
    s.load_report.driver_seconds = s.driver_seconds;
    s.load_report.context_seconds = s.context_seconds;
    s.load_report.setup_seconds_after_context = s.after_context_seconds;
  }

  // Uploads go in the order their bytes lie in the file (each fills its own
  // slot, so nothing else depends on the order): a file still downloading
  // (serve --model URL) arrives in roughly that order, so each upload waits
  // only for its own bytes while later ones download.
  if (s.staging.valid()) s.staging.get();  // not an image: nothing to stage
  const bool tied = w.output_tied || w.output.data == w.tok_embd.data;
  s.layers.assign(w.layers.size(), DeviceLayer{});
  s.mma_shapes_ok.clear();  // shapes checked for another model's matrices
  std::vector<std::pair<uint64_t, std::function<Status()>>> jobs;
  auto vec = [&](const model::Vector& v, const float*& slot) {
    jobs.emplace_back(up.file_offset({v.data}), [&up, &v, &slot]() -> Status {
      auto p = up.vector(v);
      if (!p) return p.error();
      slot = *p;
      return Status::success();
    });
  };
  auto grp = [&](std::vector<const model::Matrix*> ms, std::vector<const model::Vector*> bs,
                 LinearGroup& slot) {
    uint64_t at = UINT64_MAX;
    for (const auto* m : ms) at = std::min(at, up.file_offset({m->data}));
    jobs.emplace_back(at, [&up, ms, bs, &slot]() -> Status {
      auto g = up.group(ms, bs);
      if (!g) return g.error();
      slot = std::move(*g);
      return Status::success();
    });
  };
  jobs.emplace_back(up.file_offset({w.tok_embd.data}), [&]() -> Status {
    auto e = up.run(image::split_runs({&w.tok_embd})[0]);
    if (!e) return e.error();
    s.tok_embd = *e;
    return Status::success();
  });
  if (!tied) grp({&w.output}, {}, s.output);
  vec(w.output_norm, s.output_norm);
  for (size_t i = 0; i < w.layers.size(); ++i) {
    const model::LayerWeights& l = w.layers[i];
    DeviceLayer& d = s.layers[i];
    vec(l.attn_norm, d.attn_norm);
    vec(l.ffn_norm, d.ffn_norm);
    vec(l.q_norm, d.q_norm);
    vec(l.k_norm, d.k_norm);
    grp({&l.wq, &l.wk, &l.wv}, {&l.bq, &l.bk, &l.bv}, d.qkv);
    grp({&l.wo}, {&l.bo}, d.wo);
    grp({&l.w_gate, &l.w_up}, {}, d.gate_up);
    grp({&l.w_down}, {}, d.down);
  }
  std::stable_sort(jobs.begin(), jobs.end(),
                   [](const auto& a, const auto& b) { return a.first < b.first; });
  for (auto& job : jobs) KILN_TRY(job.second());
  if (tied) {
    s.output = LinearGroup{};
    s.output.parts.push_back({s.tok_embd, 0});
    s.output.n_out = s.tok_embd.n_out;
  }

  // Batches above matvec size never need cuBLAS when every weight has a
  // tensor-core kernel (then their decode steps can be graphs as well).
  s.mma_everywhere = true;
  auto all_mma = [&](const LinearGroup& g) {
    for (const auto& p : g.parts) s.mma_everywhere = s.mma_everywhere && mma_supported(p.m);
  };
  all_mma(s.output);
  for (const auto& l : s.layers) all_mma(l.qkv), all_mma(l.wo), all_mma(l.gate_up), all_mma(l.down);
  s.matvec_rows = s.opt.matvec_max_rows >= 0 ? s.opt.matvec_max_rows
                  : s.mma_everywhere && s.opt.mma_max_rows > 2 ? 2 : 8;

  // RoPE frequencies exactly as the CPU backend forms them (cpu/rope.cpp).
  std::vector<double> inv(size_t(hp.n_rot / 2));
  if (w.rope_freqs) KILN_TRY(file.await_at(w.rope_freqs.data, size_t(w.rope_freqs.n) * 4));
  for (size_t i = 0; i < inv.size(); ++i) {
    double f = std::pow(hp.rope_freq_base, -2.0 * double(i) / double(hp.n_rot));
    if (w.rope_freqs) f /= double(w.rope_freqs.data[i]);
    if (hp.rope_scaling == model::RopeScaling::linear) f /= hp.rope_scale_factor;
    inv[i] = f;
  }
  DeviceBuffer ib;
  if (!ib.alloc(std::max<size_t>(inv.size(), 1) * 8)) return make_error("out of GPU memory (rope)");
  if (!inv.empty())
    KILN_CUDA_TRY(cudaMemcpyAsync(ib.as<void>(), inv.data(), inv.size() * 8, cudaMemcpyHostToDevice,
                                  s.stream));
  s.inv_freq = ib.as<double>();
  s.weight_bufs.push_back(std::move(ib));
  KILN_CUDA_TRY(cudaStreamSynchronize(s.stream));
  KILN_TRY(s.wait_cublas());  // it initialized while the weights were copied
  return Status::success();
}

// ---- KV cache ----------------------------------------------------------------------

Status CudaBackend::init_kv_cache(const KvCacheConfig& cfg) {
  Impl& s = *impl_;
  if (!s.model) return make_error("init_kv_cache: load the model's weights first");
  KILN_CUDA_TRY(cudaSetDevice(s.opt.device));
  const model::HParams& hp = s.model->hparams();
  KILN_TRY(check_kv_config(hp, cfg));
  KILN_CUDA_TRY(cudaStreamSynchronize(s.stream));
  s.drop_graphs();
  KvLayout k;
  k.type = cfg.type;
  k.block_size = cfg.block_size;
  k.n_blocks = cfg.n_blocks;
  k.k_row = kv_row_bytes(cfg.type, hp.head_dim_k);
  k.v_row = kv_row_bytes(cfg.type, hp.head_dim_v);
  k.k_head_stride = k.k_row * size_t(cfg.block_size);
  k.v_head_stride = k.v_row * size_t(cfg.block_size);
  k.k_block_stride = k.k_head_stride * size_t(hp.n_head_kv);
  k.v_block_stride = k.v_head_stride * size_t(hp.n_head_kv);
  k.v_offset = k.k_block_stride * size_t(cfg.n_blocks);
  k.layer_stride = k.v_offset + k.v_block_stride * size_t(cfg.n_blocks);
  const size_t total = k.layer_stride * size_t(hp.n_layer);
  s.kv_buf.reset();
  if (!s.kv_buf.alloc(total))
    return make_error(fmt::format("KV cache: cannot allocate {:.1f} MiB of GPU memory for {} "
                                  "blocks of {} positions; use fewer blocks or --kv-type fp8/q8_0",
                                  double(total) / (1 << 20), cfg.n_blocks, cfg.block_size));
  // The pool is not cleared: 67 GB for an 8B model on an H100 took 23 ms
  // of start-up (engine phase 0.028-0.030 s against 0.005-0.007 s without).
  // No kernel reads a slot that was not written: attention reads the
  // positions below each row's context, the tensor-core tiles fill the
  // positions past it with zeros, and an export clears a partial block's
  // unwritten slots (clear_kv_slots).
  k.base = s.kv_buf.as<uint8_t>();
  s.kv = k;
  s.kv_cfg = cfg;
  // Split-attention partials: sized once for the common shapes (up to ~10k
  // row x head x split records of head size 128), so a first long-context
  // prefill does not stop the stream to grow it; larger plans still grow it.
  const size_t work = size_t(12) << 20;  // floats
  if (s.attn_work.bytes() < work * 4 && !s.attn_work.alloc(work * 4))
    return make_error("out of GPU memory for the attention workspace");
  return Status::success();
}

Status CudaBackend::copy_kv_block(int32_t src, int32_t dst) {
  Impl& s = *impl_;
  const int32_t n = s.kv_cfg.n_blocks;
  if (!s.kv.base || src < 0 || dst < 0 || src >= n || dst >= n)
    return make_error(fmt::format("copy_kv_block({}, {}): block ids must be in [0, {})", src, dst, n));
  if (src == dst) return Status::success();
  KILN_CUDA_TRY(cudaSetDevice(s.opt.device));
  // Layers are layer_stride apart: one strided copy for K, one for V (the
  // engine copies a baked tail this way before the step that continues it).
  const size_t n_layer = size_t(s.model->hparams().n_layer);
  KILN_CUDA_TRY(cudaMemcpy2DAsync(s.kv.k_layer(0) + size_t(dst) * s.kv.k_block_stride, s.kv.layer_stride,
                                  s.kv.k_layer(0) + size_t(src) * s.kv.k_block_stride, s.kv.layer_stride,
                                  s.kv.k_block_stride, n_layer, cudaMemcpyDeviceToDevice, s.stream));
  KILN_CUDA_TRY(cudaMemcpy2DAsync(s.kv.v_layer(0) + size_t(dst) * s.kv.v_block_stride, s.kv.layer_stride,
                                  s.kv.v_layer(0) + size_t(src) * s.kv.v_block_stride, s.kv.layer_stride,
                                  s.kv.v_block_stride, n_layer, cudaMemcpyDeviceToDevice, s.stream));
  return Status::success();
}

namespace {

// Checks a block id and buffer size for KV block I/O.
Status check_kv_io(const CudaBackend::Impl& s, int32_t block, size_t bytes) {
  if (!s.kv.base) return make_error("KV block I/O: the KV cache is not initialized");
  if (block < 0 || block >= s.kv_cfg.n_blocks)
    return make_error(fmt::format("KV block {} is not in the pool of {} blocks", block, s.kv_cfg.n_blocks));
  const size_t want = (s.kv.k_block_stride + s.kv.v_block_stride) * size_t(s.model->hparams().n_layer);
  if (bytes != want)
    return make_error(fmt::format("KV block I/O: the buffer has {} bytes, a block has {}", bytes, want));
  return Status::success();
}

}  // namespace

Status CudaBackend::read_kv_block(int32_t block, std::span<uint8_t> out) const {
  Impl& s = *impl_;
  KILN_TRY(check_kv_io(s, block, out.size()));
  KILN_CUDA_TRY(cudaSetDevice(s.opt.device));
  if (s.kv_stage.bytes() < out.size() && !s.kv_stage.alloc(out.size()))
    return make_error("out of GPU memory for KV block staging");
  kv_block_gather(s.kv, s.model->hparams().n_layer, block, s.kv_stage.as<uint8_t>(), s.stream);
  KILN_CUDA_TRY(cudaMemcpyAsync(out.data(), s.kv_stage.as<void>(), out.size(), cudaMemcpyDeviceToHost,
                                s.stream));
  return cuda_status(cudaStreamSynchronize(s.stream), "read_kv_block");
}

void CudaBackend::Impl::release_spare_staging() {
  for (cudaEvent_t e : kv_copied)
    if (e) cudaEventSynchronize(e);  // no DMA still reads it
  // Unregistering and unmapping 256 MiB takes milliseconds: off the
  // caller's thread (the first forward waits for it).
  staging_release = std::async(std::launch::async, [dev = opt.device, p = std::move(spare_staging)]() mutable {
    cudaSetDevice(dev);
    p.reset();
  });
}

Status CudaBackend::write_kv_block(int32_t block, std::span<const uint8_t> in) {
  const KvBlockWrite one{block, in};
  return write_kv_blocks({&one, 1});
}

// Blocks travel in batches: a batch is copied into pinned memory by several
// threads (the bytes usually come from a mapped warm.bin), goes over in one
// DMA to device staging, and each block is scattered into the pool by a
// kernel. Two batches alternate, so the host copy of one overlaps the DMA of
// the other. Right after start-up the image loader's pinned staging (256 MiB,
// kept for this) holds the batches, and is let go after them; otherwise two
// pinned buffers of one block each, allocated at the first write.
Status CudaBackend::write_kv_blocks(std::span<const KvBlockWrite> writes) {
  Impl& s = *impl_;
  if (writes.empty()) return Status::success();
  for (const auto& w : writes) KILN_TRY(check_kv_io(s, w.block, w.kv.size()));
  KILN_CUDA_TRY(cudaSetDevice(s.opt.device));
  const size_t bb = writes[0].kv.size();  // every block has this size (check_kv_io)
  for (int k = 0; k < 2; ++k)
    if (!s.kv_copied[k]) {
      KILN_CUDA_TRY(cudaEventCreateWithFlags(&s.kv_copied[k], cudaEventDisableTiming));
      KILN_CUDA_TRY(cudaEventRecord(s.kv_copied[k], s.stream));
    }
  constexpr size_t kBatchBytes = size_t(32) << 20;  // one DMA; 2 x this of device staging
  size_t per = 1;  // blocks per batch
  uint8_t* host[2] = {nullptr, nullptr};
  if (s.spare_staging && s.spare_staging->bytes() >= 2 * bb) {
    per = std::min({writes.size(), std::max<size_t>(1, kBatchBytes / bb), s.spare_staging->bytes() / (2 * bb)});
    host[0] = s.spare_staging->data();
    host[1] = host[0] + per * bb;
  } else {
    if (s.kv_pinned_bytes < bb) {
      KILN_CUDA_TRY(cudaStreamSynchronize(s.stream));
      for (int k = 0; k < 2; ++k) {
        if (s.kv_pinned[k]) cudaFreeHost(s.kv_pinned[k]);
        s.kv_pinned[k] = nullptr;
      }
      s.kv_pinned_bytes = 0;
      for (int k = 0; k < 2; ++k)
        KILN_CUDA_TRY(cudaMallocHost(reinterpret_cast<void**>(&s.kv_pinned[k]), bb));
      s.kv_pinned_bytes = bb;
    }
    host[0] = s.kv_pinned[0], host[1] = s.kv_pinned[1];
  }
  if (s.kv_stage.bytes() < 2 * per * bb) {
    KILN_CUDA_TRY(cudaStreamSynchronize(s.stream));
    if (!s.kv_stage.alloc(2 * per * bb)) return make_error("out of GPU memory for KV block staging");
  }
  if (!s.kv_copy_pool)
    s.kv_copy_pool = std::make_unique<ThreadPool>(std::clamp(int(std::thread::hardware_concurrency()), 1, 8));
  constexpr size_t kPiece = size_t(256) << 10;
  const size_t pieces_per_block = (bb + kPiece - 1) / kPiece;
  const int n_layer = int(s.model->hparams().n_layer);
  for (size_t i0 = 0; i0 < writes.size(); i0 += per) {
    const size_t cnt = std::min(per, writes.size() - i0);
    // Buffer k is free once its previous DMA left it; its staging half is
    // reused in stream order, after the previous scatters from it.
    const int k = s.kv_next;
    s.kv_next ^= 1;
    KILN_CUDA_TRY(cudaEventSynchronize(s.kv_copied[k]));
    uint8_t* dst = host[k];
    s.kv_copy_pool->parallel_for(int64_t(cnt * pieces_per_block), [&](int64_t p, int) {
      const size_t j = size_t(p) / pieces_per_block, at = (size_t(p) % pieces_per_block) * kPiece;
      std::memcpy(dst + j * bb + at, writes[i0 + j].kv.data() + at, std::min(kPiece, bb - at));
    });
    uint8_t* stage = s.kv_stage.as<uint8_t>() + size_t(k) * per * bb;
    KILN_CUDA_TRY(cudaMemcpyAsync(stage, dst, cnt * bb, cudaMemcpyHostToDevice, s.stream));
    KILN_CUDA_TRY(cudaEventRecord(s.kv_copied[k], s.stream));
    for (size_t j = 0; j < cnt; ++j) kv_block_scatter(s.kv, n_layer, writes[i0 + j].block, stage + j * bb, s.stream);
  }
  if (per > 1) {
    // A restore's staging (up to 64 MiB of device memory) is not kept
    // beside the KV pool; freeing it waits for the scatters.
    KILN_CUDA_TRY(cudaStreamSynchronize(s.stream));
    s.kv_stage.reset();
    if (s.spare_staging) s.release_spare_staging();  // while the engine starts
  }
  return Status::success();
}

// ---- buffers -------------------------------------------------------------------------

Status CudaBackend::Impl::reserve_rows(int64_t n) {
  if (n <= cap) return Status::success();
  const model::HParams& hp = model->hparams();
  KILN_CUDA_TRY(cudaStreamSynchronize(stream));
  drop_graphs();
  const int64_t c = std::max<int64_t>(n, 16);
  const size_t rows = size_t(c);
  const int64_t n_qkv = hp.n_q() + hp.n_k() + hp.n_v();
  bool ok = x.alloc(rows * size_t(hp.n_embd) * 4) && x2.alloc(rows * size_t(hp.n_embd) * 4) &&
            xn.alloc(rows * size_t(hp.n_embd) * 4) && qkv.alloc(rows * size_t(n_qkv) * 4) &&
            attn.alloc(rows * size_t(hp.n_attn_out()) * 4) && gu.alloc(rows * size_t(2 * hp.n_ff) * 4) &&
            act.alloc(rows * size_t(hp.n_ff) * 4) && cs.alloc(rows * size_t(std::max<int64_t>(hp.n_rot, 2)) * 4) &&
            xq.alloc(rows * size_t(max_in)) && xq2.alloc(rows * size_t(max_in)) &&
            xds.alloc(rows * size_t(max_in / 32) * 16) && ssq.alloc(rows * size_t(max_in / 32) * 4) &&
            x16.alloc(rows * size_t(max_in) * 2);
  if (!ok) {
    cap = 0;
    return make_error(fmt::format("out of GPU memory for the activations of {} batch rows; use "
                                  "smaller batches",
                                  n));
  }
  cap = c;
  return Status::success();
}

Status CudaBackend::Impl::reserve_logits(int64_t n) {
  const size_t want = size_t(std::max<int64_t>(n, 1)) * size_t(model->hparams().n_vocab);
  if (logits_dev.bytes() < want * 4) {
    KILN_CUDA_TRY(cudaStreamSynchronize(stream));
    drop_graphs();
    if (!logits_dev.alloc(want * 4)) return make_error("out of GPU memory for the logits");
  }
  if (logits_host_cap < want) {
    KILN_CUDA_TRY(cudaStreamSynchronize(stream));
    drop_graphs();
    if (logits_host) cudaFreeHost(logits_host);
    logits_host = nullptr;
    logits_host_cap = 0;
    KILN_CUDA_TRY(cudaMallocHost(reinterpret_cast<void**>(&logits_host), want * 4));
    logits_host_cap = want;
  }
  const size_t want_ids = size_t(std::max<int64_t>(n, 1));
  const size_t want_part = argmax_partials_bytes(int64_t(want_ids), model->hparams().n_vocab);
  if (argmax_done.bytes() < want_ids * 4 || argmax_part.bytes() < want_part) {
    KILN_CUDA_TRY(cudaStreamSynchronize(stream));
    drop_graphs();
    if (!argmax_done.alloc(want_ids * 4) || !argmax_part.alloc(want_part))
      return make_error("out of GPU memory for the argmax workspace");
    KILN_CUDA_TRY(cudaMemsetAsync(argmax_done.as<void>(), 0, want_ids * 4, stream));
  }
  if (argmax_dev.bytes() < want_ids * 4 || argmax_host_cap < want_ids) {
    KILN_CUDA_TRY(cudaStreamSynchronize(stream));
    drop_graphs();
    if (!argmax_dev.alloc(want_ids * 4)) return make_error("out of GPU memory for the argmax ids");
    if (argmax_host) cudaFreeHost(argmax_host);
    argmax_host = nullptr;
    argmax_host_cap = 0;
    KILN_CUDA_TRY(cudaMallocHost(reinterpret_cast<void**>(&argmax_host), want_ids * 4));
    argmax_host_cap = want_ids;
  }
  return Status::success();
}

Status CudaBackend::Impl::reserve_meta(size_t n) {
  if (n <= meta_cap) return Status::success();
  KILN_CUDA_TRY(cudaStreamSynchronize(stream));
  drop_graphs();
  const size_t c = std::max<size_t>({n, 2 * meta_cap, size_t(1) << 16});
  if (meta_host) cudaFreeHost(meta_host);
  meta_host = nullptr;
  meta_cap = 0;
  KILN_CUDA_TRY(cudaMallocHost(reinterpret_cast<void**>(&meta_host), c * 4));
  if (!meta_dev.alloc(c * 4)) return make_error("out of GPU memory for batch metadata");
  meta_cap = c;
  return Status::success();
}

Status CudaBackend::Impl::ensure_w16() {
  if (w16.bytes() > 0) return Status::success();
  // Up to 64 Mi weights per chunk (128 MiB): one cuBLAS call for every layer
  // matrix of an 8B model, a few for its output projection.
  int64_t biggest = 0;
  auto consider = [&](const LinearGroup& g) {
    for (const auto& p : g.parts) biggest = std::max(biggest, p.m.n_in * p.m.n_out);
  };
  consider(output);
  for (const auto& l : layers) {
    consider(l.qkv), consider(l.wo), consider(l.gate_up), consider(l.down);
  }
  const size_t elems = size_t(std::min<int64_t>(biggest, int64_t(64) << 20));
  if (!w16.alloc(std::max<size_t>(elems, size_t(max_in)) * 2))
    return make_error("out of GPU memory for the GEMM workspace");
  return Status::success();
}

Status CudaBackend::reserve_batch(int32_t max_rows, int32_t max_ctx) {
  Impl& s = *impl_;
  if (!s.model) return make_error("reserve_batch before load_weights");
  if (max_rows < 1 || max_ctx < 1) return make_error("reserve_batch: rows and context must be positive");
  if (max_rows > kMaxBatchRows)
    return make_error(fmt::format("{} tokens a step is over the CUDA backend's {}; use a smaller "
                                  "--max-batch-tokens", max_rows, kMaxBatchRows));
  KILN_TRY(s.reserve_rows(max_rows));
  // Split-attention partials for the worst step: any row count over the
  // longest context (decode graphs plan for its power-of-two bucket), per-row
  // or tensor-core prefill attention with its fewest tiles (one sequence).
  // Growing it later drops every captured graph: a first long prompt after
  // start-up, e.g. one on a baked preamble, would pay for that.
  {
    const int32_t ctx = std::max(max_ctx, Impl::ctx_bucket(max_ctx));
    AttentionArgs probe;
    probe.n_head = int(s.model->hparams().n_head);
    probe.n_head_kv = int(s.model->hparams().n_head_kv);
    const int64_t per_tile = probe.n_head_kv > 0 && probe.n_head % probe.n_head_kv == 0 &&
                                     probe.n_head / probe.n_head_kv <= 16
                                 ? flash_rows_per_tile(probe)
                                 : 1;
    size_t want = 0;
    for (int64_t n = 1; n <= max_rows; ++n) {
      Impl::Step st;
      st.n = st.n_logits = n;
      st.max_ctx = st.max_ctx_logits = ctx;
      st.n_tiles = s.opt.flash_attention && n >= s.opt.flash_min_rows ? (n + per_tile - 1) / per_tile : 0;
      // The KV type is not known yet: f16 takes attention_decode.cu's plan
      // for small batches, the other types attention.cu's.
      for (KvType t : {KvType::f16, KvType::q8_0}) want = std::max(want, s.attention_work_floats(st, t));
    }
    KILN_TRY(s.grow_attention_work(want));
  }
  // The tensor-core workspace for every row count up to max_rows, over each
  // distinct matrix shape (layers repeat theirs): 4-5 shapes x ~250 counts.
  std::vector<std::array<int64_t, 3>> seen;  // (type, n_in, n_out)
  size_t want = 0;
  auto consider = [&](const LinearGroup& g) {
    for (const auto& p : g.parts) {
      const std::array<int64_t, 3> key{int64_t(p.m.type), p.m.n_in, p.m.n_out};
      if (std::find(seen.begin(), seen.end(), key) != seen.end()) continue;
      seen.push_back(key);
      for (int64_t r = 1; r <= std::min<int64_t>(max_rows, s.opt.mma_max_rows); ++r)
        if (s.use_mma(p.m, r)) want = std::max(want, mma_partial_floats(p.m, r, s.n_sms));
    }
  };
  consider(s.output);
  for (const auto& l : s.layers) consider(l.qkv), consider(l.wo), consider(l.gate_up), consider(l.down);
  if (s.mma_part.bytes() < want * 4) {
    KILN_CUDA_TRY(cudaStreamSynchronize(s.stream));
    s.drop_graphs();
    if (!s.mma_part.alloc(std::max(want * 4, size_t(1) << 20)))
      return make_error("out of GPU memory for the tensor-core GEMM workspace");
  }
  return Status::success();
}

Status CudaBackend::Impl::reserve_mma(int64_t n_rows, int64_t n_logits) {
  // The buffer only grows, so a step shape checked once stays covered: the
  // per-matrix plans are worked out once per shape, not every step.
  const uint64_t shape = uint64_t(n_rows) << 32 | uint64_t(n_logits);
  if (mma_shapes_ok.count(shape)) return Status::success();
  // The last layer and the output projection run over the logit rows only.
  size_t want = 0;
  auto consider = [&](const LinearGroup& g, int64_t rows) {
    for (const auto& p : g.parts)
      if (use_mma(p.m, rows)) want = std::max(want, mma_partial_floats(p.m, rows, n_sms));
  };
  for (const auto& l : layers)
    for (int64_t rows : {n_rows, n_logits}) {
      consider(l.qkv, rows), consider(l.wo, rows), consider(l.gate_up, rows), consider(l.down, rows);
    }
  consider(output, n_logits);
  if (mma_part.bytes() < want * 4) {
    KILN_CUDA_TRY(cudaStreamSynchronize(stream));
    drop_graphs();
    if (!mma_part.alloc(std::max(want * 4, size_t(1) << 20)))
      return make_error("out of GPU memory for the tensor-core GEMM workspace");
  }
  mma_shapes_ok.insert(shape);
  return Status::success();
}

MemoryReport CudaBackend::memory() const {
  const Impl& s = *impl_;
  MemoryReport r;
  r.device = s.name;
  r.weight_bytes = s.weight_bytes;
  r.kv_bytes = s.kv_buf.bytes();
  for (const DeviceBuffer* b : {&s.x, &s.x2, &s.xn, &s.qkv, &s.attn, &s.gu, &s.act, &s.cs, &s.xq, &s.xq2,
                                &s.xds, &s.ssq, &s.x16, &s.w16, &s.mma_part, &s.attn_work, &s.meta_dev, &s.logits_dev})
    r.scratch_bytes += b->bytes();
  size_t free_b = 0, total_b = 0;
  cudaSetDevice(s.opt.device);
  if (cudaMemGetInfo(&free_b, &total_b) == cudaSuccess) {
    r.device_total = total_b;
    r.device_free = free_b;
  }
  return r;
}

}  // namespace kiln::cuda
