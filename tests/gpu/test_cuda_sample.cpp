// The CUDA sampler (kernels/sample.cuh, CudaBackend::sample_rows) against the
// host sampler (engine/sampler.h) with the same uniform draw: the same token
// on every row it takes, exactly. The kernel matches the host's float64 sums
// bit for bit where it can afford their order and otherwise differs from
// them by rounding alone (sample.cu says which), so a mismatch would take a
// draw within ~1e-16 of the edge between two tokens: none is allowed here.
// Rows it declines (too many candidates, masked rows) must be ones it may
// decline. Logits: fresh each run (seed printed), shaped like a model's (a
// few strong tokens over a broad low bulk), with ties, NaN / -inf, and flat
// rows; vocabularies of 128256 (Llama 3), 1000 and 37 ids.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <numeric>
#include <random>
#include <vector>

#include "common/tiny_model.h"
#include "gpu_test_util.h"
#include "kiln/backend/cuda/cuda_backend.h"
#include "kiln/backend/cuda/kernels/sample.cuh"
#include "kiln/engine/sampler.h"
#include "kiln/gguf/gguf.h"
#include "kiln/model/model.h"

namespace {

using namespace kiln;
using namespace kiln::test::gpu;
using cuda::SampleRow;

const float kNaN = std::nanf("");
const float kInf = std::numeric_limits<float>::infinity();

// What a model's logits look like: a broad normal bulk, a few dozen strong
// tokens well above it.
std::vector<float> peaked_row(size_t n) {
  std::normal_distribution<float> bulk(0.0f, 1.5f);
  std::uniform_real_distribution<float> boost(4.0f, 14.0f);
  std::vector<float> l(n);
  for (auto& x : l) x = bulk(rng());
  for (size_t k = 0; k < std::min<size_t>(64, n / 4 + 1); ++k)
    l[size_t(rng()() % n)] += boost(rng());
  return l;
}

// The same in steps of 1/4: every value shared by many ids (top-k and the
// sort must break ties by the lowest id), and the best value by three.
std::vector<float> tied_row(size_t n) {
  auto l = peaked_row(n);
  for (auto& x : l) x = std::round(x * 4.0f) / 4.0f;
  const float best = *std::max_element(l.begin(), l.end());
  for (int k = 0; k < 2; ++k) l[size_t(rng()() % n)] = best;
  return l;
}

// NaN and -inf sprinkled in (never drawn; NaN never the reference).
std::vector<float> masked_row(size_t n) {
  auto l = peaked_row(n);
  for (size_t k = 0; k < n / 20 + 1; ++k) l[size_t(rng()() % n)] = kNaN;
  for (size_t k = 0; k < n / 20 + 1; ++k) l[size_t(rng()() % n)] = -kInf;
  return l;
}

struct Params {
  float temperature;
  int32_t top_k;
  float top_p;
  float min_p;
};

engine::SamplingParams to_sampling(const Params& p) {
  engine::SamplingParams s;
  s.temperature = p.temperature;
  s.top_k = p.top_k;
  s.top_p = p.top_p;
  s.min_p = p.min_p;
  return s;
}

// Every path of the sampler: plain temperature, top-k (2 .. beyond the
// kernel's cap, and beyond the vocabulary), top-p alone (tiny to wide),
// min-p alone, and mixes; temperatures 0.3, 1 and 2.
const std::vector<Params> kParams = {
    {1.0f, 0, 1.0f, 0.0f},    {0.3f, 0, 1.0f, 0.0f},       {2.0f, 0, 1.0f, 0.0f},
    {1.0f, 2, 1.0f, 0.0f},    {1.0f, 40, 1.0f, 0.0f},      {0.3f, 40, 0.9f, 0.0f},
    {2.0f, 40, 0.95f, 0.05f}, {1.0f, 1000, 1.0f, 0.0f},    {1.0f, 4096, 0.9f, 0.0f},
    {1.0f, 5000, 1.0f, 0.0f}, {0.7f, 1 << 30, 1.0f, 0.0f}, {1.0f, 0, 0.05f, 0.0f},
    {1.0f, 0, 0.9f, 0.0f},    {0.3f, 0, 0.95f, 0.0f},      {2.0f, 0, 0.5f, 0.0f},
    {1.0f, 0, 1.0f, 0.05f},   {2.0f, 0, 1.0f, 0.1f},       {0.3f, 0, 1.0f, 0.01f},
    {1.0f, 0, 0.9f, 0.05f},   {2.0f, 0, 0.95f, 0.02f},     {1.0f, 40, 0.9f, 0.05f},
    {0.5f, 7, 0.3f, 0.2f},    {1.0f, 0, 0.99f, 0.0f},      {0.7f, 0, 0.98f, 0.05f},
};

// Whether the kernel may decline this row: everything masked or +inf, a
// top_k above its cap, or a crowded boundary: the kernel gathers whole bins
// of x = (l - max) / T, 0.0425 wide, down to where the count reaches top_k
// or a lower bound of the mass (within 1e-6) reaches the top-p target, and
// declines more than its cap of them. So a decline is fair when more than
// the cap lie within 0.05 of the k-th best token, or of the token where the
// mass reaches 1.05 * target (thousands of ties, or a flat distribution).
bool may_decline(const std::vector<float>& l, const Params& p) {
  const int32_t n = int32_t(l.size());
  float m = -kInf;
  for (float v : l)
    if (v > m) m = v;
  bool any = false;
  for (float v : l) any |= !std::isnan(v);
  if (!any || !(m > -kInf) || m == kInf) return true;
  const bool top_k = p.top_k > 0 && p.top_k < n;
  if (top_k && p.top_k > cuda::kSampleMaxCandidates) return true;
  if (!top_k && p.top_p >= 1.0f) return false;
  struct C {
    float l, x;
    int32_t id;
    double w;
  };
  std::vector<C> c;
  double total = 0.0;
  for (int32_t i = 0; i < n; ++i) {
    const float x = (l[size_t(i)] - m) * (1.0f / p.temperature);
    const double w = engine::exp_nonpos(x);
    if (top_k || p.min_p <= 0.0f ? w > 0.0 : w >= p.min_p) {
      c.push_back({l[size_t(i)], x, i, w});
      total += w;
    }
  }
  std::sort(c.begin(), c.end(),
            [](const C& a, const C& b) { return a.l > b.l || (a.l == b.l && a.id < b.id); });
  size_t b = std::min(c.size(), size_t(std::max(p.top_k, 1))) - 1;
  if (!top_k) {
    double cum = 0.0;
    for (b = 0; b + 1 < c.size() && (cum += c[b].w) < 1.05 * double(p.top_p) * total; ++b) {
    }
  }
  const float xb = c[b].x - 0.05f;
  const auto crowd = std::count_if(c.begin(), c.end(), [&](const C& t) { return t.x >= xb; });
  return crowd > cuda::kSampleMaxCandidates;
}

struct Job {
  size_t row;  // into the logits rows
  Params p;
  double u;
};

// Runs the jobs in one launch; the tokens (or -1).
std::vector<int32_t> run_kernel(const std::vector<std::vector<float>>& rows,
                                const std::vector<Job>& jobs) {
  const size_t n = rows[0].size();
  std::vector<float> flat;
  for (const auto& r : rows) flat.insert(flat.end(), r.begin(), r.end());
  DevVec<float> logits(flat);
  std::vector<SampleRow> sr;
  for (const auto& j : jobs)
    sr.push_back(
        SampleRow{int32_t(j.row), j.p.top_k, j.p.temperature, j.p.top_p, j.p.min_p, 0.0f, j.u});
  DevVec<SampleRow> dev_rows(sr);
  DevVec<int32_t> out(jobs.size());
  out.poison();
  cuda::sample_rows(logits.get(), int64_t(n), dev_rows.get(), int32_t(jobs.size()), out.get(),
                    nullptr);
  return out.download();
}

TEST(CudaSample, WeightsAreTheHostsBitForBit) {
  KILN_REQUIRE_GPU();
  std::vector<float> x = {0.0f,
                          -0.0f,
                          -kInf,
                          kNaN,
                          -87.0f,
                          -87.00001f,
                          -86.99999f,
                          -1e-30f,
                          -1e-45f,
                          -0.5f * std::log(2.0f),
                          -std::log(2.0f),
                          -100.0f,
                          -1e30f};
  std::uniform_real_distribution<float> u(-90.0f, 0.0f);
  for (int i = 0; i < 1 << 20; ++i) x.push_back(i % 2 ? u(rng()) : u(rng()) * 1e-3f);
  std::vector<float> want(x.size());
  engine::exp_nonpos_n(x.data(), want.data(), int64_t(x.size()));
  DevVec<float> dx(x), dy(x.size());
  cuda::sample_exp_nonpos(dx.get(), dy.get(), int64_t(x.size()), nullptr);
  const auto got = dy.download();
  size_t bad = 0;
  for (size_t i = 0; i < x.size(); ++i)
    if (std::memcmp(&got[i], &want[i], 4) != 0 && bad++ < 5)
      ADD_FAILURE() << "x " << x[i] << ": device " << got[i] << ", host " << want[i];
  EXPECT_EQ(bad, 0u);
}

TEST(CudaSample, MatchesTheHostSamplerOnEveryPath) {
  KILN_REQUIRE_GPU();
  std::uniform_real_distribution<double> unif(0.0, 1.0);
  for (size_t n : {size_t(128256), size_t(1000), size_t(37)}) {
    std::vector<std::vector<float>> rows;
    for (int k = 0; k < 2; ++k) rows.push_back(peaked_row(n));
    rows.push_back(tied_row(n));
    rows.push_back(masked_row(n));
    rows.push_back(uniform(n));  // flat: wide top-p sets
    std::vector<Job> jobs;
    for (size_t r = 0; r < rows.size(); ++r)
      for (const auto& p : kParams)
        for (double u : {unif(rng()), unif(rng()), r == 0 ? 0.0 : 1.0 - 0x1.0p-53})
          jobs.push_back({r, p, u});
    const auto got = run_kernel(rows, jobs);
    size_t taken = 0, declined = 0;
    for (size_t j = 0; j < jobs.size(); ++j) {
      const Job& job = jobs[j];
      const auto& l = rows[job.row];
      const auto& p = job.p;
      if (got[j] < 0) {
        ++declined;
        EXPECT_EQ(got[j], -1);
        EXPECT_TRUE(may_decline(l, p))
            << "n " << n << " row " << job.row << ": T " << p.temperature << " top_k " << p.top_k
            << " top_p " << p.top_p << " min_p " << p.min_p << " declined";
        continue;
      }
      ++taken;
      engine::Sampler host(to_sampling(p));
      const int32_t want = host.choose(l, int32_t(n), job.u);
      EXPECT_EQ(got[j], want) << "n " << n << " row " << job.row << ": T " << p.temperature
                              << " top_k " << p.top_k << " top_p " << p.top_p << " min_p "
                              << p.min_p << " u " << job.u;
    }
    std::printf("[ sample         ] n_vocab %-6zu %zu rows equal to the host's, %zu declined\n", n,
                taken, declined);
    EXPECT_GT(taken, jobs.size() / 2);
  }
}

// A decode-sized batch of one sampler setting over many rows: every row
// the kernel takes agrees, and a model-shaped row is always taken.
TEST(CudaSample, ManyRowsOneLaunch) {
  KILN_REQUIRE_GPU();
  const size_t n = 128256;
  std::vector<std::vector<float>> rows;
  for (int k = 0; k < 64; ++k) rows.push_back(k % 8 == 7 ? tied_row(n) : peaked_row(n));
  std::vector<Job> jobs;
  std::uniform_real_distribution<double> unif(0.0, 1.0);
  const Params p{0.8f, 50, 0.95f, 0.02f}, q{1.0f, 0, 0.9f, 0.0f};
  for (size_t r = 0; r < rows.size(); ++r) jobs.push_back({r, r % 2 ? p : q, unif(rng())});
  const auto got = run_kernel(rows, jobs);
  for (size_t j = 0; j < jobs.size(); ++j) {
    engine::Sampler host(to_sampling(jobs[j].p));
    EXPECT_EQ(got[j], host.choose(rows[jobs[j].row], int32_t(n), jobs[j].u)) << "job " << j;
  }
}

TEST(CudaSample, DeclinesRowsItCannotTake) {
  KILN_REQUIRE_GPU();
  const size_t n = 5000;
  std::vector<std::vector<float>> rows = {std::vector<float>(n, -kInf), std::vector<float>(n, kNaN),
                                          peaked_row(n), std::vector<float>(n, 0.5f)};
  rows[2][17] = kInf;
  const std::vector<Job> jobs = {
      {0, {1.0f, 0, 1.0f, 0.0f}, 0.5},     // all -inf: the host draws nothing
      {1, {1.0f, 40, 1.0f, 0.0f}, 0.5},    // all NaN
      {2, {1.0f, 0, 0.9f, 0.0f}, 0.5},     // +inf
      {3, {1.0f, 4097, 1.0f, 0.0f}, 0.5},  // top_k over the cap
      {3, {1.0f, 0, 0.9f, 0.0f}, 0.5},     // 4500 tied tokens in the nucleus
      {3, {1.0f, 40, 1.0f, 0.0f}, 0.5},    // 5000 ties in the boundary bin
      {3, {1.0f, 0, 1.0f, 0.0f}, 0.5},     // but the plain draw is fine
      {3, {1.0f, 0, 1.0f, 0.5f}, 0.5}};    // and so is min-p
  const auto got = run_kernel(rows, jobs);
  for (size_t j = 0; j < 6; ++j) EXPECT_EQ(got[j], -1) << "job " << j;
  for (size_t j = 6; j < 8; ++j) {
    EXPECT_EQ(got[j], engine::Sampler(to_sampling(jobs[j].p)).choose(rows[3], int32_t(n), 0.5));
    EXPECT_EQ(got[j], 2500);  // equal weights: u = 0.5 lands on the middle id
  }
}

// Through the backend: rows of a real forward pass, a subset of them
// sampled, the others left at -1.
TEST(CudaSample, BackendSamplesTheRowsItIsGiven) {
  KILN_REQUIRE_GPU();
  kiln::test::TinySpec s;
  s.n_embd = 128;
  s.n_ff = 256;
  s.n_head = 8;
  s.n_head_kv = 2;
  s.n_vocab = 300;
  const auto tiny = kiln::test::make_tiny_model(s);
  auto loaded = kiln::test::load_tiny_model(tiny);
  ASSERT_TRUE(loaded.ok()) << loaded.message();
  auto* model = &loaded->model;
  auto be = cuda::CudaBackend::create(cuda::CudaOptions{});
  ASSERT_TRUE(be.ok()) << be.message();
  cuda::CudaBackend& gpu = **be;
  ASSERT_TRUE(gpu.load_weights(**model).ok());
  ASSERT_TRUE(gpu.init_kv_cache({KvType::f16, 16, 4}).ok());
  const std::vector<int32_t> blocks = {0, 1, 2, 3};
  Batch b;
  const int32_t q = b.add_seq(blocks);
  for (int32_t i = 0; i < 5; ++i) b.add((i * 37 + 11) % 300, i, q, true);
  ASSERT_TRUE(gpu.forward(b).ok());
  ASSERT_TRUE(gpu.synchronize().ok());
  ASSERT_TRUE(gpu.supports_sampling());
  const std::vector<DeviceSampleRow> rows = {{3, 20, 0.9f, 0.95f, 0.0f, 0.25},
                                             {0, 0, 1.5f, 1.0f, 0.0f, 0.75},
                                             {4, 0, 0.7f, 0.8f, 0.01f, 0.5}};
  ASSERT_TRUE(gpu.sample_rows(rows).ok());
  for (int32_t i : {1, 2}) EXPECT_EQ(gpu.sampled(i), -1);
  for (const auto& r : rows) {
    engine::SamplingParams sp = to_sampling({r.temperature, r.top_k, r.top_p, r.min_p});
    EXPECT_EQ(gpu.sampled(r.row), engine::Sampler(sp).choose(gpu.logits(r.row), 300, r.u))
        << "row " << r.row;
  }
  EXPECT_FALSE(gpu.sample_rows(std::vector<DeviceSampleRow>{{5, 0, 1.0f, 1.0f, 0.0f, 0.5}}).ok());
  EXPECT_FALSE(gpu.sample_rows(std::vector<DeviceSampleRow>{{0, 0, 1.0f, 1.0f, 0.0f, 1.0}}).ok());
}

// Per-row cost at the Llama 3 vocabulary: one row (latency) and a batch.
TEST(CudaSampleBench, Llama3Vocabulary) {
  KILN_REQUIRE_GPU();
  cudaDeviceProp prop{};
  cudaGetDeviceProperties(&prop, 0);
  const size_t n = 128256;
  std::vector<std::vector<float>> rows;
  for (int k = 0; k < 128; ++k) rows.push_back(peaked_row(n));
  std::vector<float> flat;
  for (const auto& r : rows) flat.insert(flat.end(), r.begin(), r.end());
  DevVec<float> logits(flat);
  const std::vector<std::pair<const char*, Params>> settings = {
      {"temperature 0.8", {0.8f, 0, 1.0f, 0.0f}},
      {"top_k 40 top_p 0.95", {0.8f, 40, 0.95f, 0.0f}},
      {"top_p 0.9", {1.0f, 0, 0.9f, 0.0f}},
      {"min_p 0.05", {1.0f, 0, 1.0f, 0.05f}}};
  cudaEvent_t a, b;
  cudaEventCreate(&a);
  cudaEventCreate(&b);
  for (const auto& [name, p] : settings)
    for (int n_rows : {1, 32, 128}) {
      std::vector<SampleRow> sr;
      for (int r = 0; r < n_rows; ++r)
        sr.push_back(SampleRow{r, p.top_k, p.temperature, p.top_p, p.min_p, 0.0f, 0.37});
      DevVec<SampleRow> dev_rows(sr);
      DevVec<int32_t> out(sr.size());
      cuda::sample_rows(logits.get(), int64_t(n), dev_rows.get(), n_rows, out.get(),
                        nullptr);  // warm-up
      const int iters = 20;
      cudaEventRecord(a);
      for (int i = 0; i < iters; ++i)
        cuda::sample_rows(logits.get(), int64_t(n), dev_rows.get(), n_rows, out.get(), nullptr);
      cudaEventRecord(b);
      cudaEventSynchronize(b);
      float ms = 0;
      cudaEventElapsedTime(&ms, a, b);
      const auto ids = out.download();
      EXPECT_TRUE(std::all_of(ids.begin(), ids.end(), [](int32_t t) { return t >= 0; })) << name;
      std::printf("[ sample bench   ] %s  %-22s %3d rows: %7.1f us per launch\n", prop.name, name,
                  n_rows, 1000.0 * ms / iters);
    }
  cudaEventDestroy(a);
  cudaEventDestroy(b);
}

}  // namespace
