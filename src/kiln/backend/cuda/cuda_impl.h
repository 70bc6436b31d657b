// Internal state of the CUDA backend (cuda_backend.cpp: set-up, weights, KV;
// cuda_forward.cpp: the forward pass). Not part of the public interface.
#pragma once

#include <cublas_v2.h>

#include <future>
#include <cuda_runtime.h>

#include <string>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include "kiln/backend/cuda/cuda_backend.h"
#include "kiln/core/threadpool.h"
#include "kiln/backend/cuda/cuda_sample.h"
#include "kiln/backend/cuda/device_types.h"
#include "kiln/backend/cuda/file_upload.h"
#include "kiln/backend/cuda/kernels/gemm.cuh"
#include "kiln/backend/cuda/kernels/mma.cuh"
#include "kiln/backend/cuda/kernels/matvec.cuh"

namespace kiln::model {
class Model;
struct Matrix;
struct Vector;
}  // namespace kiln::model

namespace kiln::cuda {

// Owns one cudaMalloc allocation.
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  ~DeviceBuffer() { reset(); }
  DeviceBuffer(DeviceBuffer&& o) noexcept : ptr_(std::exchange(o.ptr_, nullptr)), bytes_(std::exchange(o.bytes_, 0)) {}
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept {
    if (this != &o) {
      reset();
      ptr_ = std::exchange(o.ptr_, nullptr);
      bytes_ = std::exchange(o.bytes_, 0);
    }
    return *this;
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;

  // False when the device is out of memory (the buffer is then empty).
  bool alloc(size_t bytes);
  void reset();
  template <class T>
  T* as() const { return static_cast<T*>(ptr_); }
  size_t bytes() const { return bytes_; }

 private:
  void* ptr_ = nullptr;
  size_t bytes_ = 0;
};

// One or more weight matrices with the same input, writing adjacent column
// ranges of one output (Q|K|V, gate|up). Matrices of one type are merged
// into a single DeviceMatrix at upload, so a decode step launches one kernel.
struct LinearGroup {
  struct Part {
    DeviceMatrix m;
    int64_t col = 0;  // first output column
  };
  std::vector<Part> parts;
  const float* bias = nullptr;  // [n_out] or nullptr
  int64_t n_out = 0;
};

struct DeviceLayer {
  const float* attn_norm = nullptr;  // [n_embd]
  const float* ffn_norm = nullptr;   // [n_embd]
  const float* q_norm = nullptr;     // optional [head_dim_k]
  const float* k_norm = nullptr;     // optional [head_dim_k]
  LinearGroup qkv;                   // -> [n_q + n_k + n_v]
  LinearGroup wo;                    // -> [n_embd]
  LinearGroup gate_up;               // -> [2 n_ff]: gate then up
  LinearGroup down;                  // -> [n_embd]
};

struct CudaBackend::Impl {
  CudaOptions opt;
  std::string name;
  int n_sms = 0;
  cudaStream_t stream = nullptr;
  cublasHandle_t cublas = nullptr;
  // cuBLAS initializes on its own thread (tens of ms) while the weights
  // stream in; everything that uses the handle calls wait_cublas() first.
  std::future<Status> cublas_init;
  std::future<void> gemm_warm;  // kernels and the first cuBLAS GEMM, loaded in the background from create()
  // The image loader's pinned buffers, prepared from create() when
  // opt.prepare_image_staging (file_upload.h HostStaging); null if that failed.
  std::future<std::unique_ptr<HostStaging>> staging;
  // The same memory once the image is on the device: baked KV blocks restored
  // right after the load go through it (write_kv_blocks). Let go on another
  // thread once they did, or at the first forward, which waits for that.
  std::unique_ptr<HostStaging> spare_staging;
  std::future<void> staging_release;
  void release_spare_staging();
  double driver_seconds = 0, context_seconds = 0, after_context_seconds = 0;  // create()
  Status wait_cublas();
  cudaEvent_t meta_done = nullptr;  // the last meta upload has left the pinned buffer

  // Weights.
  const model::Model* model = nullptr;
  std::vector<DeviceBuffer> weight_bufs;
  uint64_t weight_bytes = 0;
  CudaLoadReport load_report;
  ImageChunkCheck image_check;  // empty verify: none
  DeviceMatrix tok_embd;
  LinearGroup output;
  const float* output_norm = nullptr;
  const double* inv_freq = nullptr;  // [n_rot / 2]
  std::vector<DeviceLayer> layers;
  int64_t max_in = 0;                // widest matrix input (q8 activation rows)
  bool mma_everywhere = false;       // every linear weight has a tensor-core kernel (mma_supported)
  int matvec_rows = 8;               // opt.matvec_max_rows resolved for the loaded weights

  // KV cache.
  KvCacheConfig kv_cfg;
  DeviceBuffer kv_buf;
  DeviceBuffer kv_stage;  // two KV blocks in the canonical format (block I/O)
  // Pinned host copies for writing blocks, double-buffered so the host copy
  // of one block overlaps the DMA of the previous one.
  uint8_t* kv_pinned[2] = {nullptr, nullptr};
  cudaEvent_t kv_copied[2] = {nullptr, nullptr};
  size_t kv_pinned_bytes = 0;
  int kv_next = 0;
  // Threads for the host copy of a written block (a 2 MB block of an 8B
  // model, usually from a mapped warm.bin whose page faults dominate: one
  // thread restored 333 MB in 65 ms on an H100 host). Made at the first write.
  std::unique_ptr<ThreadPool> kv_copy_pool;
  KvLayout kv;

  // Activations for up to `cap` rows.
  int64_t cap = 0;
  DeviceBuffer x, x2;      // [cap, n_embd] residual stream (x2: compacted rows)
  DeviceBuffer xn;         // [cap, n_embd]
  DeviceBuffer qkv;        // [cap, n_q + n_k + n_v]
  DeviceBuffer attn;       // [cap, n_attn_out]
  DeviceBuffer gu;         // [cap, 2 n_ff]
  DeviceBuffer act;        // [cap, n_ff]
  DeviceBuffer cs;         // [cap, n_rot]
  DeviceBuffer xq, xq2;    // [cap, max_in] int8: ActQ8 planes
  DeviceBuffer xds;        // [cap, max_in / 32, 4] float
  DeviceBuffer ssq;        // [cap, max_in / 32] float: deferred RMSNorm partial sums
  DeviceBuffer x16;        // [cap, max_in] f16 (GEMM input)
  DeviceBuffer w16;        // dequantized weight rows (GEMM), allocated at first use
  DeviceBuffer mma_part;   // split-K partial sums of the tensor-core path, grown as needed
  std::unordered_set<uint64_t> mma_shapes_ok;  // (rows << 32 | logit rows) mma_part covers
  DeviceBuffer attn_work;  // split-attention partials, grown as needed

  // Per-step batch metadata: one pinned host buffer, one device copy.
  int32_t* meta_host = nullptr;
  size_t meta_cap = 0;  // int32 elements
  DeviceBuffer meta_dev;

  // Logits of the rows that want them.
  DeviceBuffer logits_dev;        // [n_logits, n_vocab]
  float* logits_host = nullptr;   // pinned copy
  size_t logits_host_cap = 0;     // floats
  // The rows are copied to logits_host only when someone reads them (the
  // first logits() call after a step); greedy rows use the device argmax.
  bool logits_on_host = false;
  DeviceBuffer argmax_dev;        // [n_logits] int32
  DeviceBuffer argmax_done;       // argmax_rows' per-row counters (zeroed at allocation)
  DeviceBuffer argmax_part;       // argmax_rows' partial results
  int32_t* argmax_host = nullptr; // pinned copy, written by every step
  size_t argmax_host_cap = 0;     // ints
  int32_t n_logits = 0;
  DeviceSampling sampling;        // sample_rows() (cuda_sample.cpp)
  std::vector<int32_t> validate_scratch;
  std::vector<int32_t> meta_scratch;

  // Shape of one forward step (what the launched kernels depend on).
  struct Step {
    int64_t n = 0, n_seqs = 0, n_logits = 0;
    int32_t max_ctx = 0, max_ctx_logits = 0;  // attention plans (bucketed under graphs)
    int64_t n_tiles = 0, tiles_off = 0;       // tensor-core prefill attention tiles in the metadata
    bool decode = false;                      // every row the only row of its sequence
  };
  std::unordered_map<uint64_t, cudaGraphExec_t> graphs;  // decode graphs by step shape

  ~Impl();
  void enqueue(const Step& st);  // every kernel of a step, on `stream`
  static int32_t ctx_bucket(int32_t max_ctx);
  bool graph_eligible(const Step& st) const;
  bool all_mma(int64_t n_rows) const;  // every linear layer takes the tensor-core path
  Status reserve_attention(const Step& st);
  size_t attention_work_floats(const Step& st, KvType type) const;  // attn_work a step needs
  Status grow_attention_work(size_t floats);            // drops graphs when it grows
  Status launch_graph(const Step& st);
  void drop_graphs();
  Status reserve_rows(int64_t n);
  Status reserve_logits(int64_t n);
  Status reserve_meta(size_t n);
  Status ensure_w16();
  Status reserve_mma(int64_t n_rows, int64_t n_logits);  // mma_part for a step's shapes
  // y (= or +=) group(x) for n_rows rows; q8 is the shared quantized input.
  struct Input {
    const float* x = nullptr;
    int64_t ldx = 0;
    bool q8_ready = false;  // xq/xds already hold x quantized
    RowScale scale;         // deferred RMSNorm scale of the quantized rows (q8 only)
    bool x16_ready = false; // x16 already holds x as f16 (tensor-core path)
  };
  // RMSNorm of x into the input of group g (deferred into its matvec when it can be).
  Input norm_input(const float* x, const float* w, const LinearGroup& g, int64_t n_rows);
  void linear(const LinearGroup& g, Input& in, int64_t n_rows, float* y, int64_t ldy,
              bool accumulate);
  bool use_matvec(int64_t n_rows) const { return n_rows <= matvec_rows; }
  bool use_mma(const DeviceMatrix& m, int64_t n_rows) const {
    return !use_matvec(n_rows) && n_rows <= opt.mma_max_rows && mma_supported(m);
  }
  ActQ8 act_q8() const { return ActQ8{xq.as<int8_t>(), xq2.as<int8_t>(), xds.as<float>(), max_in}; }
  GemmWorkspace gemm_ws() const {
    return GemmWorkspace{w16.as<uint16_t>(), w16.bytes() / 2, x16.as<uint16_t>(), x16.bytes() / 2};
  }
};

Status cuda_status(cudaError_t err, const char* what);

}  // namespace kiln::cuda
