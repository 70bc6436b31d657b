// CudaBackend's sampling on the GPU (backend.h sample_rows): the rows the
// engine passes go up in one copy, one kernel launch samples them all
// (kernels/sample.cuh), one copy brings the ids back, one synchronization.
#include <cuda_runtime.h>
#include <fmt/format.h>

#include <algorithm>

#include "kiln/backend/cuda/cuda_impl.h"
#include "kiln/core/assert.h"
#include "kiln/model/model.h"

namespace kiln::cuda {

#define KILN_CUDA_TRY(expr) KILN_TRY(cuda_status((expr), #expr))

DeviceSampling::~DeviceSampling() {
  release();
}

void DeviceSampling::release() {
  if (rows_host) cudaFreeHost(rows_host);
  if (ids_host) cudaFreeHost(ids_host);
  if (rows_dev) cudaFree(rows_dev);
  if (ids_dev) cudaFree(ids_dev);
  rows_host = nullptr, ids_host = nullptr, rows_dev = nullptr, ids_dev = nullptr, cap = 0;
}

Status DeviceSampling::reserve(size_t n) {
  if (n <= cap) return Status::success();
  const size_t c = std::max<size_t>(n, 64);
  release();  // nothing is in flight: every call ends synchronized
  KILN_CUDA_TRY(cudaMallocHost(reinterpret_cast<void**>(&rows_host), c * sizeof(SampleRow)));
  KILN_CUDA_TRY(cudaMallocHost(reinterpret_cast<void**>(&ids_host), c * sizeof(int32_t)));
  if (cudaMalloc(reinterpret_cast<void**>(&rows_dev), c * sizeof(SampleRow)) != cudaSuccess ||
      cudaMalloc(reinterpret_cast<void**>(&ids_dev), c * sizeof(int32_t)) != cudaSuccess)
    return make_error("out of GPU memory for the sampling rows");
  cap = c;
  return Status::success();
}

Status CudaBackend::sample_rows(std::span<const DeviceSampleRow> rows) {
  Impl& s = *impl_;
  DeviceSampling& d = s.sampling;
  d.by_row.assign(size_t(s.n_logits), -1);
  if (rows.empty()) return Status::success();
  for (const DeviceSampleRow& r : rows) {
    // The engine passes validated SamplingParams; anything else is a bug there.
    if (r.row < 0 || r.row >= s.n_logits || !(r.temperature > 0.0f) ||
        !(r.top_p > 0.0f && r.top_p <= 1.0f) || !(r.min_p >= 0.0f && r.min_p <= 1.0f) ||
        !(r.u >= 0.0 && r.u < 1.0))
      return make_error(fmt::format(
          "sample_rows: row {} (of {}): temperature {}, top_p {}, min_p {}, u {} out of range",
          r.row, s.n_logits, r.temperature, r.top_p, r.min_p, r.u));
  }
  KILN_TRY(d.reserve(rows.size()));
  for (size_t j = 0; j < rows.size(); ++j) {
    const DeviceSampleRow& r = rows[j];
    d.rows_host[j] = SampleRow{r.row, r.top_k, r.temperature, r.top_p, r.min_p, 0.0f, r.u};
  }
  const int32_t n = int32_t(rows.size());
  KILN_CUDA_TRY(cudaSetDevice(s.opt.device));
  KILN_CUDA_TRY(cudaMemcpyAsync(d.rows_dev, d.rows_host, size_t(n) * sizeof(SampleRow),
                                cudaMemcpyHostToDevice, s.stream));
  cuda::sample_rows(s.logits_dev.as<float>(), s.model->hparams().n_vocab, d.rows_dev, n, d.ids_dev,
                    s.stream);
  KILN_CUDA_TRY(cudaMemcpyAsync(d.ids_host, d.ids_dev, size_t(n) * sizeof(int32_t),
                                cudaMemcpyDeviceToHost, s.stream));
  KILN_CUDA_TRY(cudaStreamSynchronize(s.stream));
  for (size_t j = 0; j < rows.size(); ++j) d.by_row[size_t(rows[j].row)] = d.ids_host[j];
  return Status::success();
}

int32_t CudaBackend::sampled(int32_t row) const {
  const DeviceSampling& d = impl_->sampling;
  return row >= 0 && size_t(row) < d.by_row.size() ? d.by_row[size_t(row)] : -1;
}

}  // namespace kiln::cuda
