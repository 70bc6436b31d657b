// Micro-benchmark of the CPU fast matmul: GB/s of weights streamed at batch 1
// (decode) and GOP/s at batch 128 (prefill) per weight type and shape, plus
// (--model) the whole matmul set of a 1.5B Llama-shaped q4_0 model
// (llama3.2-1b preset: dim 2048, 8 KV heads of 64, FFN 8192, 16 layers, vocab
// 128256) as decode / prefill tokens per second. Prints a table and, with
// --json, one JSON line per measurement.
//
//   bench_matmul [--threads 1,2] [--types q4_0,q4_k,q6_k,q8_0] [--batch 1,128]
//                [--shapes 2048x2048,8192x2048,2048x8192] [--model] [--json] [--cpu-time]
// --cpu-time times with the calling thread's CPU clock instead of the wall
// clock: on a shared, loaded machine it keeps other processes' time slices
// out of single-thread figures (meaningless with --threads > 1). --hot keeps
// one weight copy at batch 1 (compute-bound decode when it fits in cache).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "kiln/backend/cpu/matmul.h"
#include "kiln/core/dtype.h"
#include "kiln/core/threadpool.h"
#include "kiln/quant/quant.h"

namespace {

using kiln::DType;
using Clock = std::chrono::steady_clock;  // wall clock unless --cpu-time

std::vector<std::string> split(const std::string& s) {
  std::vector<std::string> out;
  size_t p = 0;
  while (p <= s.size()) {
    const size_t q = std::min(s.find(',', p), s.size());
    if (q > p) out.push_back(s.substr(p, q - p));
    p = q + 1;
  }
  return out;
}

// n_out rows of t: 64 distinct quantized random rows repeated (speed does not
// depend on the values; quantizing every row would dominate start-up).
std::vector<uint8_t> make_weights(DType t, int64_t n_out, int64_t n_in, uint32_t seed) {
  const size_t rb = kiln::row_bytes(t, n_in);
  std::vector<uint8_t> w(rb * size_t(n_out));
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  std::vector<float> row(static_cast<size_t>(n_in));
  const int64_t distinct = std::min<int64_t>(64, n_out);
  for (int64_t r = 0; r < distinct; ++r) {
    for (auto& v : row) v = u(rng) * 0.02f;
    kiln::quant::quantize_row(t, row.data(), w.data() + rb * size_t(r), n_in);
  }
  for (int64_t r = distinct; r < n_out; ++r)
    std::memcpy(w.data() + rb * size_t(r), w.data() + rb * size_t(r % distinct), rb);
  return w;
}

struct Matrix {
  DType type;
  int64_t n_out, n_in;
  std::vector<uint8_t> w;
};

bool g_cpu_time = false;  // --cpu-time
bool g_hot = false;       // --hot: batch 1 reuses one weight copy (cache-resident when it fits)

double now_s() {
  if (g_cpu_time) {
    timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return double(ts.tv_sec) + 1e-9 * double(ts.tv_nsec);
  }
  return std::chrono::duration<double>(Clock::now().time_since_epoch()).count();
}

// Calls every matrix of `set` once per round (activations [batch, n_in] each)
// until min_s has passed; returns seconds per round.
double time_rounds(const std::vector<const Matrix*>& set, const std::vector<int64_t>& batch,
                   kiln::ThreadPool* pool, double min_s) {
  int64_t max_in = 0, max_out = 0, max_b = 0;
  for (size_t i = 0; i < set.size(); ++i) {
    max_in = std::max(max_in, set[i]->n_in * batch[i]);
    max_out = std::max(max_out, set[i]->n_out * batch[i]);
    max_b = std::max(max_b, batch[i]);
  }
  std::vector<float> x(static_cast<size_t>(max_in)), y(static_cast<size_t>(max_out));
  std::mt19937 rng(1);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  for (auto& v : x) v = u(rng);
  auto round = [&] {
    for (size_t i = 0; i < set.size(); ++i) {
      kiln::cpu::MatmulArgs a;
      a.w_type = set[i]->type;
      a.w = set[i]->w.data();
      a.n_out = set[i]->n_out;
      a.n_in = set[i]->n_in;
      a.x = x.data();
      a.n_batch = batch[i];
      a.y = y.data();
      kiln::cpu::matmul(kiln::cpu::MatmulPath::fast, a, pool);
    }
  };
  round();  // warm-up (page faults, pool wake-up)
  int rounds = 0;
  double best = 1e30;
  const double start = now_s();
  while (now_s() - start < min_s || rounds < 3) {
    const double t0 = now_s();
    round();
    best = std::min(best, now_s() - t0);
    ++rounds;
  }
  return best;  // best round: the machine is shared, the minimum is the least disturbed
}

struct Options {
  std::vector<int> threads{1, 2};
  std::vector<std::string> types{"q4_0", "q4_k", "q6_k", "q8_0"};
  std::vector<int64_t> batches{1, 128};
  std::vector<std::pair<int64_t, int64_t>> shapes{{2048, 2048}, {8192, 2048}, {2048, 8192}};
  bool model = false, json = false;
};

void bench_shapes(const Options& o, kiln::ThreadPool* pool, int n_threads) {
  for (const auto& tn : o.types) {
    const auto t = kiln::dtype_from_name(tn);
    if (!t) {
      std::fprintf(stderr, "unknown type %s\n", tn.c_str());
      continue;
    }
    for (auto [n_out, n_in] : o.shapes) {
      // Enough copies that batch-1 runs stream from memory, not from cache.
      const size_t bytes = kiln::row_bytes(*t, n_in) * size_t(n_out);
      const size_t copies = g_hot ? 1 : std::max<size_t>(1, (size_t(512) << 20) / bytes);
      std::vector<Matrix> mats;
      mats.push_back({*t, n_out, n_in, make_weights(*t, n_out, n_in, 7)});
      for (int64_t b : o.batches) {
        std::vector<const Matrix*> set;
        if (b == 1) {
          while (mats.size() < copies) mats.push_back(mats[0]);
          for (auto& m : mats) set.push_back(&m);
        } else {
          set.push_back(&mats[0]);
        }
        const double s =
            time_rounds(set, std::vector<int64_t>(set.size(), b), pool, 0.5) / double(set.size());
        const double gbs = double(bytes) / s / 1e9;
        const double gops = 2.0 * double(n_out) * double(n_in) * double(b) / s / 1e9;
        std::printf("%-5s %5lldx%-5lld batch %4lld threads %d  %9.3f ms  %7.2f GB/s  %8.1f GOP/s\n",
                    tn.c_str(), (long long)n_out, (long long)n_in, (long long)b, n_threads, s * 1e3,
                    gbs, gops);
        if (o.json)
          std::printf(
              "{\"test\":\"matmul\",\"type\":\"%s\",\"n_out\":%lld,\"n_in\":%lld,\"batch\":%lld,"
              "\"threads\":%d,\"isa\":\"%s\",\"ms\":%.4f,\"gb_s\":%.3f,\"gop_s\":%.2f}\n",
              tn.c_str(), (long long)n_out, (long long)n_in, (long long)b, n_threads,
              kiln::cpu::fast_isa(), s * 1e3, gbs, gops);
        std::fflush(stdout);
      }
    }
  }
}

// The llama3.2-1b matmuls, all q4_0: per layer q, k, v, o, gate, up, down,
// then the output projection.
void bench_model(const Options& o, kiln::ThreadPool* pool, int n_threads) {
  const int64_t dim = 2048, kv = 512, ffn = 8192, vocab = 128256, layers = 16;
  std::vector<Matrix> mats;
  size_t bytes = 0;
  const std::vector<uint8_t> sq = make_weights(DType::Q4_0, dim, dim, 1),
                             skv = make_weights(DType::Q4_0, kv, dim, 2);
  const std::vector<uint8_t> sup = make_weights(DType::Q4_0, ffn, dim, 3),
                             sdn = make_weights(DType::Q4_0, dim, ffn, 4);
  for (int64_t l = 0; l < layers; ++l) {
    mats.push_back({DType::Q4_0, dim, dim, sq});
    mats.push_back({DType::Q4_0, kv, dim, skv});
    mats.push_back({DType::Q4_0, kv, dim, skv});
    mats.push_back({DType::Q4_0, dim, dim, sq});
    mats.push_back({DType::Q4_0, ffn, dim, sup});
    mats.push_back({DType::Q4_0, ffn, dim, sup});
    mats.push_back({DType::Q4_0, dim, ffn, sdn});
  }
  mats.push_back({DType::Q4_0, vocab, dim, make_weights(DType::Q4_0, vocab, dim, 5)});
  std::vector<const Matrix*> set;
  double ops_layer = 0;
  for (auto& m : mats) {
    set.push_back(&m);
    bytes += m.w.size();
    if (m.n_out != vocab) ops_layer += 2.0 * double(m.n_out) * double(m.n_in);
  }
  const double t_dec = time_rounds(set, std::vector<int64_t>(set.size(), 1), pool, 3.0);
  std::vector<int64_t> pb(set.size(), 128);
  pb.back() = 1;  // prefill: logits for the last token only, as llama-bench's pp does
  const double t_pre = time_rounds(set, pb, pool, 3.0);
  std::printf(
      "model llama3.2-1b q4_0 (%.0f MB of weights) threads %d: decode %.2f tok/s (%.2f GB/s), "
      "prefill-128 %.1f tok/s (%.1f GOP/s in the layers)\n",
      double(bytes) / 1e6, n_threads, 1.0 / t_dec, double(bytes) / t_dec / 1e9, 128.0 / t_pre,
      ops_layer * 128.0 / t_pre / 1e9);
  if (o.json)
    std::printf(
        "{\"test\":\"model_matmuls\",\"model\":\"llama3.2-1b-q4_0\",\"threads\":%d,\"isa\":\"%s\","
        "\"decode_tok_s\":%.3f,\"decode_gb_s\":%.3f,\"prefill128_tok_s\":%.2f}\n",
        n_threads, kiln::cpu::fast_isa(), 1.0 / t_dec, double(bytes) / t_dec / 1e9, 128.0 / t_pre);
  std::fflush(stdout);
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() -> std::string { return i + 1 < argc ? argv[++i] : ""; };
    if (a == "--threads") {
      o.threads.clear();
      for (auto& s : split(next())) o.threads.push_back(std::stoi(s));
    } else if (a == "--types") {
      o.types = split(next());
    } else if (a == "--batch") {
      o.batches.clear();
      for (auto& s : split(next())) o.batches.push_back(std::stoll(s));
    } else if (a == "--shapes") {
      o.shapes.clear();
      for (auto& s : split(next())) {
        const size_t x = s.find('x');
        o.shapes.emplace_back(std::stoll(s.substr(0, x)), std::stoll(s.substr(x + 1)));
      }
    } else if (a == "--model") {
      o.model = true;
    } else if (a == "--json") {
      o.json = true;
    } else if (a == "--cpu-time") {
      g_cpu_time = true;
    } else if (a == "--hot") {
      g_hot = true;
    } else {
      std::fprintf(stderr,
                   "usage: bench_matmul [--threads 1,2] [--types q4_0,...] [--batch 1,128] "
                   "[--shapes 2048x2048,...] [--model] [--json] [--cpu-time] [--hot]\n");
      return 2;
    }
  }
  std::printf("fast path ISA: %s%s\n", kiln::cpu::fast_isa(),
              g_cpu_time ? " (thread CPU time)" : "");
  for (int n : o.threads) {
    std::unique_ptr<kiln::ThreadPool> pool;
    if (n > 1) pool = std::make_unique<kiln::ThreadPool>(n);
    if (o.model)
      bench_model(o, pool.get(), n);
    else
      bench_shapes(o, pool.get(), n);
  }
  return 0;
}
