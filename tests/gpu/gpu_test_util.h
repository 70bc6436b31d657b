// Helpers for the GPU tests: device buffers, fresh random inputs, and the
// comparison metrics (NMSE over finite pairs, non-finite agreement).
#pragma once

#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <vector>

// Skips the test where there is no GPU (CI builds these tests but has none).
#define KILN_REQUIRE_GPU()                                            \
  do {                                                                \
    int kiln_n_dev_ = 0;                                              \
    if (cudaGetDeviceCount(&kiln_n_dev_) != cudaSuccess || kiln_n_dev_ == 0) \
      GTEST_SKIP() << "no CUDA device";                               \
  } while (0)

namespace kiln::test::gpu {

// Fresh seed each run (printed, so a failure can be replayed with KILN_TEST_SEED).
inline uint64_t test_seed() {
  static const uint64_t seed = [] {
    uint64_t s;
    if (const char* e = std::getenv("KILN_TEST_SEED"); e && *e) s = std::strtoull(e, nullptr, 10);
    else s = (uint64_t(std::random_device{}()) << 32) | std::random_device{}();
    std::printf("[ seed     ] KILN_TEST_SEED=%llu\n", static_cast<unsigned long long>(s));
    return s;
  }();
  return seed;
}

inline std::mt19937_64& rng() {
  static std::mt19937_64 r(test_seed());
  return r;
}

inline std::vector<float> uniform(size_t n, float lo = -1.0f, float hi = 1.0f) {
  std::uniform_real_distribution<float> u(lo, hi);
  std::vector<float> v(n);
  for (auto& x : v) x = u(rng());
  return v;
}

template <class T>
class DevVec {
 public:
  explicit DevVec(size_t n = 0) { resize(n); }
  explicit DevVec(const std::vector<T>& h) {
    resize(h.size());
    upload(h);
  }
  ~DevVec() {
    if (p_) cudaFree(p_);
  }
  DevVec(const DevVec&) = delete;
  DevVec& operator=(const DevVec&) = delete;
  void resize(size_t n) {
    if (p_) cudaFree(p_);
    p_ = nullptr;
    n_ = n;
    if (n) {
      EXPECT_EQ(cudaMalloc(&p_, n * sizeof(T)), cudaSuccess);
    }
  }
  void upload(const std::vector<T>& h) {
    ASSERT_LE(h.size(), n_);
    EXPECT_EQ(cudaMemcpy(p_, h.data(), h.size() * sizeof(T), cudaMemcpyHostToDevice), cudaSuccess);
  }
  // Fills with a poison byte pattern, so unwritten outputs show up as NaN.
  void poison() { EXPECT_EQ(cudaMemset(p_, 0xff, n_ * sizeof(T)), cudaSuccess); }
  std::vector<T> download() const {
    std::vector<T> h(n_);
    EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    EXPECT_EQ(cudaMemcpy(h.data(), p_, n_ * sizeof(T), cudaMemcpyDeviceToHost), cudaSuccess);
    return h;
  }
  T* get() const { return p_; }
  size_t size() const { return n_; }

 private:
  T* p_ = nullptr;
  size_t n_ = 0;
};

struct Compare {
  double nmse = 0.0;         // sum (got - ref)^2 / sum ref^2 over pairs finite in both
  size_t finite_mismatch = 0;  // positions finite in one and not the other
  size_t n = 0;
};

inline Compare compare(const float* got, const float* ref, size_t n) {
  Compare c;
  c.n = n;
  double num = 0.0, den = 0.0;
  for (size_t i = 0; i < n; ++i) {
    const bool fg = std::isfinite(got[i]), fr = std::isfinite(ref[i]);
    if (fg != fr) {
      ++c.finite_mismatch;
      continue;
    }
    if (!fg) continue;
    const double d = double(got[i]) - double(ref[i]);
    num += d * d;
    den += double(ref[i]) * double(ref[i]);
  }
  c.nmse = den > 0.0 ? num / den : num;
  return c;
}
inline Compare compare(const std::vector<float>& got, const std::vector<float>& ref) {
  EXPECT_EQ(got.size(), ref.size());
  return compare(got.data(), ref.data(), std::min(got.size(), ref.size()));
}

// Checks and prints one op's agreement ("[ op ] name: nmse ...").
inline void expect_close(const char* op, const std::string& what, const Compare& c, double max_nmse) {
  std::printf("[ %-14s ] %-34s nmse %.3e (max %.0e)  non-finite mismatches %zu / %zu\n", op,
              what.c_str(), c.nmse, max_nmse, c.finite_mismatch, c.n);
  EXPECT_LE(c.nmse, max_nmse) << op << " " << what;
  EXPECT_EQ(c.finite_mismatch, 0u) << op << " " << what;
}

}  // namespace kiln::test::gpu
