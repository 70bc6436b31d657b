// `kiln perplexity -m MODEL -f TEXT`: perplexity of a model on a text, and with
// --kl-reference the KL divergence from stored reference log-probabilities
// (tools/demo-model/reference.py writes them for the f16 demo model), so that
// weight quantization and KV-cache types can be judged without the f16 file.
//
// Scoring: windows of --ctx-size tokens start every --stride tokens (a window
// must fit whole); each window scores its targets at positions
// max(1, ctx - stride) .. ctx - 1. With the default stride ctx/2 every scored
// token sees at least ctx/2 tokens of context and none is scored twice.
// The reference file fixes ctx, stride and the tokens, so the two agree.
#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "kiln/cli/backend_select.h"
#include "kiln/cli/commands.h"
#include "kiln/cli/demo_model.h"
#include "kiln/gguf/gguf.h"
#include "kiln/model/model.h"
#include "kiln/tokenizer/tokenizer.h"

namespace kiln::cli {
namespace {

struct PerplexityOptions {
  std::string model;
  std::string text_file;
  std::string kl_reference;
  int n_ctx = 0;     // 0: the reference's, else 512 capped by the model
  int stride = 0;    // 0: ctx / 2 (or the reference's)
  int n_batch = 4;   // windows per forward
  int max_windows = 0;
  bool json = false;
  std::string device;
  std::string kv_type;
  int n_threads = 0;
  bool reference_path = false;
};

int fail(const std::string& msg) {
  fmt::print(stderr, "kiln perplexity: {}\n", msg);
  return 1;
}

// What --kl-reference holds (layout: tools/demo-model/reference.py).
struct Reference {
  std::unique_ptr<gguf::File> file;
  int n_ctx = 0, stride = 0, n_windows = 0, top_k = 0;
  double ppl_all = 0, ppl_windows = 0;
  std::vector<int32_t> tokens;
  const float* top_ids = nullptr;       // [n_pos, top_k]
  const float* top_logprobs = nullptr;  // [n_pos, top_k]
  const float* lse = nullptr;           // [n_pos]
  const float* target_nll = nullptr;    // [n_pos]
  int64_t n_pos() const { return int64_t(n_windows) * stride; }
};

Result<Reference> load_reference(const std::string& path) {
  auto f = gguf::File::open(path);
  if (!f) return make_error(f.message());
  Reference r;
  r.file = std::move(*f);
  const gguf::File& g = *r.file;
  if (g.get_string("general.architecture").value_or("") != "kiln-reference")
    return make_error(path + ": not a kiln perplexity reference (general.architecture is not "
                      "'kiln-reference'); tools/demo-model/reference.py writes them");
  const auto u = [&](std::string_view k) { return int(g.get_int(k).value_or(0)); };
  r.n_ctx = u("reference.n_ctx");
  r.stride = u("reference.stride");
  r.n_windows = u("reference.n_windows");
  r.top_k = u("reference.top_k");
  r.ppl_all = g.get_float("reference.ppl").value_or(0);
  r.ppl_windows = g.get_float("reference.ppl_windows").value_or(0);
  const gguf::Array* toks = g.get_array("reference.tokens");
  if (!toks || r.n_ctx <= 1 || r.stride <= 0 || r.stride > r.n_ctx || r.n_windows <= 0 ||
      r.top_k <= 0)
    return make_error(path + ": reference.n_ctx/stride/n_windows/top_k/tokens missing or invalid");
  for (const auto& v : toks->items) r.tokens.push_back(int32_t(v.as_int().value_or(-1)));
  const int64_t need = int64_t(r.n_windows - 1) * r.stride + r.n_ctx;
  if (int64_t(r.tokens.size()) < need)
    return make_error(fmt::format("{}: {} tokens, but {} windows need {}", path, r.tokens.size(),
                                  r.n_windows, need));
  const auto tensor = [&](std::string_view name, int64_t n) -> const float* {
    const gguf::TensorInfo* t = g.tensor(name);
    if (!t || t->type != DType::F32 || t->n_elements() != n) return nullptr;
    return reinterpret_cast<const float*>(t->data);
  };
  r.top_ids = tensor("top_ids", r.n_pos() * r.top_k);
  r.top_logprobs = tensor("top_logprobs", r.n_pos() * r.top_k);
  r.lse = tensor("lse", r.n_pos());
  r.target_nll = tensor("target_nll", r.n_pos());
  if (!r.top_ids || !r.top_logprobs || !r.lse || !r.target_nll)
    return make_error(path + ": tensors top_ids/top_logprobs/lse/target_nll missing or of the "
                      "wrong shape or type (F32 expected)");
  return r;
}

// Running figures over the scored positions.
struct Tally {
  double sum_nll = 0, sum_nll2 = 0;
  int64_t n = 0;
  // KL mode
  std::vector<double> kl;
  int64_t top1_same = 0;
  double sum_abs_dlse = 0, sum_abs_dnll = 0;

  void add_nll(double nll) {
    sum_nll += nll;
    sum_nll2 += nll * nll;
    ++n;
  }
  double mean() const { return n ? sum_nll / double(n) : 0; }
  double ppl() const { return std::exp(mean()); }
  // Standard error of the mean NLL, carried to the perplexity (d exp(x) = exp(x) dx).
  double ppl_err() const {
    if (n < 2) return 0;
    const double m = mean();
    const double var = (sum_nll2 / double(n) - m * m) * double(n) / double(n - 1);
    return ppl() * std::sqrt(std::max(0.0, var) / double(n));
  }
};

// log-sum-exp of one row, in double (the row is n_vocab floats).
double log_sum_exp(std::span<const float> row) {
  const float mx = *std::max_element(row.begin(), row.end());
  double s = 0;
  for (float v : row) s += std::exp(double(v) - mx);
  return double(mx) + std::log(s);
}

// KL(P_ref || Q) from the reference's top-k and the whole of Q: the top-k
// terms plus one bucket for the rest of the vocabulary. Merging outcomes can
// only lower a KL divergence, so this is a lower bound of the full KL that is
// exact when the reference puts (nearly) all its mass in its top-k.
double kl_top_k(const float* ref_ids, const float* ref_lp, int top_k, std::span<const float> row,
                double lse_q) {
  double kl = 0, p_sum = 0, q_sum = 0;
  for (int j = 0; j < top_k; ++j) {
    const double lp = ref_lp[j];
    const double lq = double(row[size_t(ref_ids[j])]) - lse_q;
    const double p = std::exp(lp);
    kl += p * (lp - lq);
    p_sum += p;
    q_sum += std::exp(lq);
  }
  const double p_rest = 1.0 - p_sum, q_rest = 1.0 - q_sum;
  if (p_rest > 1e-12 && q_rest > 1e-12) kl += p_rest * std::log(p_rest / q_rest);
  return kl;
}

Result<std::vector<int32_t>> read_text_tokens(const std::string& path, const Tokenizer& tok) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return make_error("cannot open the text file '" + path + "'");
  std::stringstream ss;
  ss << in.rdbuf();
  // Plain text: special-token text is not parsed, no BOS added (what the
  // reference's Hugging Face tokenizer did with the same bytes).
  return tok.encode(ss.str(), /*add_special=*/false, /*parse_special=*/false);
}

int run_perplexity(PerplexityOptions o) {
  const std::string model_path = o.model.empty() ? demo_model_path() : o.model;
  if (model_path.empty()) return fail("no --model given and this kiln has no demo model");
  auto model = model::Model::load(model_path);
  if (!model) return fail(model.message());
  const model::HParams& hp = (*model)->hparams();
  auto tok = Tokenizer::from_gguf((*model)->file());
  if (!tok) return fail(tok.message());

  std::optional<Reference> ref;
  if (!o.kl_reference.empty()) {
    auto r = load_reference(o.kl_reference);
    if (!r) return fail(r.message());
    ref = std::move(*r);
    if ((o.n_ctx && o.n_ctx != ref->n_ctx) || (o.stride && o.stride != ref->stride))
      return fail(fmt::format("--ctx-size/--stride must match the reference's ({} / {}) or be "
                              "left out",
                              ref->n_ctx, ref->stride));
    o.n_ctx = ref->n_ctx;
    o.stride = ref->stride;
    for (int64_t i = 0; i < ref->n_pos() * ref->top_k; ++i) {
      if (!(ref->top_ids[i] >= 0 && ref->top_ids[i] < float(hp.n_vocab)))
        return fail("the reference's token ids do not fit this model's vocabulary of " +
                    std::to_string(hp.n_vocab) + "; it belongs to another model");
    }
  }

  std::vector<int32_t> tokens;
  if (!o.text_file.empty()) {
    auto t = read_text_tokens(o.text_file, *tok);
    if (!t) return fail(t.message());
    tokens = std::move(*t);
  }
  if (ref) {
    // The reference's tokens are what its log-probabilities belong to; a text
    // given too must tokenize to exactly them (checks the tokenizer as well).
    if (!tokens.empty()) {
      const size_t n = std::min(tokens.size(), ref->tokens.size());
      size_t i = 0;
      while (i < n && tokens[i] == ref->tokens[i]) ++i;
      if (i < n || tokens.size() != ref->tokens.size())
        return fail(fmt::format("the text tokenizes differently from the reference: first "
                                "difference at token {} (kiln {}, reference {}; {} vs {} tokens)",
                                i, i < tokens.size() ? tokens[i] : -1,
                                i < ref->tokens.size() ? ref->tokens[i] : -1, tokens.size(),
                                ref->tokens.size()));
    }
    tokens = ref->tokens;
  }
  if (tokens.empty()) return fail("give a text with -f (or a reference with --kl-reference)");

  if (o.n_ctx <= 0) o.n_ctx = int(std::min<int64_t>(512, hp.n_ctx_train));
  if (o.stride <= 0) o.stride = o.n_ctx / 2;
  if (o.stride > o.n_ctx) return fail("--stride must not exceed --ctx-size");
  if (o.n_ctx < 2) return fail("--ctx-size must be at least 2");
  int64_t n_windows = int64_t(tokens.size()) >= o.n_ctx
                          ? (int64_t(tokens.size()) - o.n_ctx) / o.stride + 1
                          : 0;
  if (ref) n_windows = std::min<int64_t>(n_windows, ref->n_windows);
  if (o.max_windows > 0) n_windows = std::min<int64_t>(n_windows, o.max_windows);
  if (n_windows == 0)
    return fail(fmt::format("the text has {} tokens, fewer than one window of {}", tokens.size(),
                            o.n_ctx));
  const int first_scored = std::max(1, o.n_ctx - o.stride);
  const int n_batch = std::max(1, int(std::min<int64_t>(o.n_batch, n_windows)));

  SingleSequenceSetup setup;
  setup.device = o.device;
  setup.cpu.n_threads = o.n_threads;
  setup.cpu.path = o.reference_path ? cpu::MatmulPath::reference : cpu::MatmulPath::fast;
  setup.kv_type = o.kv_type;
  setup.n_positions = o.n_ctx;
  auto opened = open_single_sequence_backend(**model, setup);
  if (!opened) return fail(opened.message());
  Backend& backend = **opened;
  if (auto st = resize_kv_for_sequences(backend, n_batch, o.n_ctx); !st) return fail(st.message());
  const KvCacheConfig& kv = backend.kv_config();
  const int32_t blocks_per_seq = (o.n_ctx + kv.block_size - 1) / kv.block_size;
  std::vector<std::vector<int32_t>> tables(static_cast<size_t>(n_batch));
  for (int s = 0; s < n_batch; ++s)
    for (int32_t b = 0; b < blocks_per_seq; ++b) tables[size_t(s)].push_back(s * blocks_per_seq + b);

  Tally tally;
  Batch batch;
  // Chunks of at most 512 positions per sequence keep activations bounded.
  const int chunk = std::min(o.n_ctx, 512);
  for (int64_t w0 = 0; w0 < n_windows; w0 += n_batch) {
    const int nb = int(std::min<int64_t>(n_batch, n_windows - w0));
    for (int c0 = 0; c0 < o.n_ctx; c0 += chunk) {
      const int c1 = std::min(o.n_ctx, c0 + chunk);
      batch.clear();
      for (int s = 0; s < nb; ++s) {
        const int32_t seq = batch.add_seq(tables[size_t(s)]);
        const int64_t base = (w0 + s) * o.stride;
        for (int p = c0; p < c1; ++p)
          batch.add(tokens[size_t(base + p)], p, seq, p >= first_scored - 1 && p < o.n_ctx - 1);
      }
      if (auto st = backend.forward(batch); !st) return fail(st.message());
      if (auto st = backend.synchronize(); !st) return fail(st.message());
      int32_t row = 0;
      for (int s = 0; s < nb; ++s) {
        const int64_t w = w0 + s;
        const int64_t base = w * o.stride;
        for (int p = std::max(c0, first_scored - 1); p < std::min(c1, o.n_ctx - 1); ++p, ++row) {
          std::span<const float> lg = backend.logits(row);
          const double lse = log_sum_exp(lg);
          const int32_t target = tokens[size_t(base + p + 1)];
          const double nll = lse - double(lg[size_t(target)]);
          tally.add_nll(nll);
          if (!ref) continue;
          const int64_t i = w * ref->stride + (p + 1 - first_scored);  // reference row
          const float* ids = ref->top_ids + i * ref->top_k;
          tally.kl.push_back(
              kl_top_k(ids, ref->top_logprobs + i * ref->top_k, ref->top_k, lg, lse));
          const auto argmax = std::max_element(lg.begin(), lg.end()) - lg.begin();
          tally.top1_same += argmax == int64_t(ids[0]);
          tally.sum_abs_dlse += std::abs(lse - double(ref->lse[i]));
          tally.sum_abs_dnll += std::abs(nll - double(ref->target_nll[i]));
        }
      }
    }
    if (!o.json)
      fmt::print(stderr, "\rkiln perplexity: {}/{} windows, ppl {:.4f}", w0 + nb, n_windows,
                 tally.ppl());
  }
  if (!o.json) fmt::print(stderr, "\n");

  nlohmann::json j;
  j["test"] = ref ? "kl" : "perplexity";
  j["model"] = model_path;
  j["kv_type"] = kv_type_name(kv.type);
  j["device"] = backend.device_name();
  j["n_ctx"] = o.n_ctx;
  j["stride"] = o.stride;
  j["n_windows"] = n_windows;
  j["n_scored"] = tally.n;
  j["ppl"] = tally.ppl();
  j["ppl_err"] = tally.ppl_err();
  if (ref) {
    std::vector<double> k = tally.kl;
    std::sort(k.begin(), k.end());
    double sum = 0;
    for (double v : k) sum += v;
    j["ref_ppl"] = ref->ppl_windows;
    j["ref_ppl_all"] = ref->ppl_all;
    j["ppl_ratio"] = tally.ppl() / ref->ppl_windows;
    j["kl_mean"] = sum / double(k.size());
    j["kl_p99"] = k[std::min(k.size() - 1, size_t(double(k.size()) * 0.99))];
    j["kl_max"] = k.back();
    j["top1_agree"] = double(tally.top1_same) / double(tally.n);
    j["lse_mae"] = tally.sum_abs_dlse / double(tally.n);
    j["nll_mae"] = tally.sum_abs_dnll / double(tally.n);
  }
  if (o.json) {
    fmt::print("{}\n", j.dump());
  } else {
    fmt::print("PPL = {:.4f} +/- {:.4f} ({} tokens scored in {} windows of {}, stride {}, kv {})\n",
               tally.ppl(), tally.ppl_err(), tally.n, n_windows, o.n_ctx, o.stride,
               kv_type_name(kv.type));
    if (ref)
      fmt::print("reference PPL {:.4f} (ratio {:.5f}) | KL mean {:.6f} p99 {:.6f} max {:.6f} | "
                 "top-1 agreement {:.2f}%\n",
                 ref->ppl_windows, double(j["ppl_ratio"]), double(j["kl_mean"]),
                 double(j["kl_p99"]), double(j["kl_max"]), 100.0 * double(j["top1_agree"]));
  }
  return 0;
}

}  // namespace

void register_perplexity(CLI::App& root, Runner& run) {
  auto o = std::make_shared<PerplexityOptions>();
  CLI::App* c = root.add_subcommand(
      "perplexity", "Perplexity on a text; KL divergence from stored reference log-probabilities");
  c->add_option("-m,--model", o->model, "GGUF model file (default: the built-in demo model)");
  c->add_option("-f,--file", o->text_file, "Text file to score");
  c->add_option("--kl-reference", o->kl_reference,
                "Reference GGUF (tools/demo-model/reference.py): score its tokens and report the "
                "KL divergence, top-1 agreement and perplexity ratio against it");
  c->add_option("-c,--ctx-size", o->n_ctx, "Window length in tokens (default 512)")
      ->check(CLI::NonNegativeNumber);
  c->add_option("--stride", o->stride, "Tokens between window starts (default ctx/2)")
      ->check(CLI::NonNegativeNumber);
  c->add_option("-b,--batch", o->n_batch, "Windows evaluated together")->check(CLI::PositiveNumber);
  c->add_option("--chunks", o->max_windows, "Score at most this many windows (0 = all)")
      ->check(CLI::NonNegativeNumber);
  c->add_flag("--json", o->json, "Print one JSON line with the results instead of text");
  c->add_option("-t,--threads", o->n_threads, "CPU threads (default: all)");
  add_device_option(c, o->device);
  c->add_option("--kv-type", o->kv_type, "KV cache type: f32, f16, fp8, q8_0");
  c->add_flag("--reference", o->reference_path, "Use the CPU's scalar reference path");
  c->callback([o, &run] { run = [o] { return run_perplexity(*o); }; });
}

}  // namespace kiln::cli
