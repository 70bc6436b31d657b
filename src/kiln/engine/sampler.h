// Token sampling for one sequence: penalties, top-k, temperature, min-p,
// top-p and a seeded draw, plus the log-probabilities OpenAI's `logprobs` reports.
// Depends only on kiln_core; deterministic bit for bit across platforms (own PRNG,
// own exp, a total order on candidates), so a fixed seed replays a generation.
#pragma once

#include <cstdint>
#include <deque>
#include <span>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "kiln/core/status.h"

namespace kiln::engine {

// What a request asks of the sampler. Defaults are "off", except temperature,
// which defaults to OpenAI's 1.
struct SamplingParams {
  float temperature = 1.0f;  // 0 = greedy (argmax, lowest id wins ties)
  int32_t top_k = 0;         // 0 (or -1) = off
  float top_p = 1.0f;        // 1 = off; in (0, 1]
  float min_p = 0.0f;        // 0 = off; in [0, 1], relative to the top token
  // llama.cpp style: over the distinct tokens among the last `penalty_last_n`
  // tokens of the context (prompt + generated), positive logits are divided by
  // it and negative ones multiplied, so > 1 always discourages repeats.
  float repetition_penalty = 1.0f;  // 1 = off
  int32_t penalty_last_n = 64;      // window of repetition_penalty; 0 = none, -1 = whole context
  // OpenAI semantics, over the generated tokens only:
  // logit -= presence_penalty * [count > 0] + frequency_penalty * count.
  float presence_penalty = 0.0f;   // [-2, 2]
  float frequency_penalty = 0.0f;  // [-2, 2]
  // OpenAI `logit_bias`: added to the logit after the penalties.
  std::vector<std::pair<int32_t, float>> logit_bias;
  // The same seed and the same logits give the same tokens on every platform.
  // The server picks a random seed when a request names none.
  uint64_t seed = 0;
  // Never sample an end-of-generation token (their ids are given to the
  // Sampler); the engine then stops on max_tokens only.
  bool ignore_eos = false;

  bool greedy() const { return temperature == 0.0f; }
};

// Checks every field; the message names the field and the allowed range.
// n_vocab > 0 also checks logit_bias ids against the vocabulary.
Status validate(const SamplingParams& p, int32_t n_vocab = 0);

// xoshiro256** seeded through splitmix64 (both public-domain algorithms by
// Blackman and Vigna): small, fast and specified bit for bit, unlike
// std::*_distribution whose output differs between standard libraries.
class Rng {
 public:
  explicit Rng(uint64_t seed);
  uint64_t next_u64();
  // Uniform in [0, 1) with 53 random bits.
  double next_double() { return double(next_u64() >> 11) * 0x1.0p-53; }

  // One step of splitmix64 on `state` (advances it); exposed for tests.
  static uint64_t splitmix64(uint64_t& state);

 private:
  uint64_t s_[4];
};

struct TokenLogprob {
  int32_t id = -1;
  float logprob = 0.0f;
};
struct Logprobs {
  TokenLogprob chosen;
  std::vector<TokenLogprob> top;  // n_top best, highest first; ties: lowest id first
};

// Log-probabilities for OpenAI's `logprobs` / `top_logprobs`: the log-softmax
// of the *raw* logits, i.e. the model's own distribution before penalties,
// logit_bias, temperature and truncation. That is what the number means to a
// client (how likely the model found the token), it does not collapse to 0 /
// -inf under greedy or top-k, and it matches what vLLM reports by default.
Logprobs compute_logprobs(std::span<const float> logits, int32_t n_vocab, int32_t chosen,
                          int32_t n_top);

// exp(x) for the sampler's x <= 0 (and -inf -> exactly 0); relative error
// about 2e-7. Written out (no libm) so weights are the same bits everywhere.
float exp_nonpos(float x);
// y[i] = exp_nonpos(x[i]), vectorized; the same bits as the scalar function.
void exp_nonpos_n(const float* x, float* y, int64_t n);

// The sampling state of one sequence: its RNG and the token history the
// penalties need. Not thread-safe; one per sequence, used by the engine thread.
class Sampler {
 public:
  // `params` must have passed validate(). `eog_ids`: the vocabulary's
  // end-of-generation tokens, masked out when params.ignore_eos is set.
  explicit Sampler(SamplingParams params, std::span<const int32_t> eog_ids = {});

  const SamplingParams& params() const { return params_; }

  // Context tokens before generation (the prompt): they count for
  // repetition_penalty only, not for presence/frequency penalties.
  void add_context(std::span<const int32_t> tokens);
  // Records a generated token chosen elsewhere (sample() records its own).
  void accept(int32_t token);
  // True when sample() would return the plain argmax of the raw logits (no
  // penalty, bias or ban changes them): then a backend's own argmax of the
  // row can stand in for it, and the row need not be read at all.
  bool plain_argmax() const;

  // Chooses the next token from logits[0 .. n_vocab) (a longer span, e.g. a
  // padded output row, is fine) and records it as generated.
  // Order: penalties + bias -> top-k -> temperature -> min-p -> top-p -> draw.
  // Equivalent to: u = peek_uniform(); t = choose(logits, n_vocab, u); then
  // accept_drawn(t) when t came from a draw, else accept(t).
  int32_t sample(std::span<const float> logits, int32_t n_vocab);

  // --- sampling elsewhere (a GPU backend) with this sequence's randomness ---
  // True when sample() needs nothing but the raw logits and one uniform draw:
  // temperature > 0 with any top-k (but 1) / top-p / min-p, and no penalty,
  // logit_bias or EOG ban. Then a backend may choose the token from the row
  // on the device with u = peek_uniform() (backend.h DeviceSampleRow) and the
  // engine records it with accept_drawn(). The engine also requires that no
  // logprobs are wanted (they need the row on the host anyway).
  bool device_samplable() const;
  // The uniform in [0, 1) that the next draw of sample() will use; changes
  // nothing, so a row the device declines can still go through sample().
  double peek_uniform() const;
  // Records a token chosen elsewhere from the draw peek_uniform() returned:
  // the RNG advances exactly as sample() advances it for one draw, then
  // accept(token). Sequences of tokens and RNG states are those of sample().
  void accept_drawn(int32_t token);
  // The token sample() would return if its draw were u, changing no state
  // (scratch only): the reference the device sampler is tested against.
  int32_t choose(std::span<const float> logits, int32_t n_vocab, double u);

  // The logits as the truncation steps see them: after repetition, presence
  // and frequency penalties, logit_bias and EOG masking. Points at `logits`
  // itself when nothing applies, else at scratch valid until the next call.
  std::span<const float> adjusted_logits(std::span<const float> logits, int32_t n_vocab);

  int64_t n_generated() const { return n_generated_; }

 private:
  struct Candidate {
    int32_t id;
    float logit;
    float weight = 0.0f;  // exp((logit - max) / temperature), once known
  };
  const float* apply_penalties(const float* raw, int32_t n_vocab);
  // sample() without its bookkeeping; *drew tells whether u was used.
  int32_t choose(const float* raw, int32_t n_vocab, double u, bool* drew);
  int32_t draw_dense(int32_t n_vocab, double u);
  size_t nucleus(double target);
  int32_t draw_nucleus(size_t n_keep, double u);
  int32_t draw_candidates(size_t n_keep, double u);
  void push_context(int32_t token);

  SamplingParams params_;
  Rng rng_;
  std::vector<int32_t> eog_ids_;
  std::deque<int32_t> window_;                          // last penalty_last_n context tokens
  std::unordered_map<int32_t, int32_t> window_counts_;  // id -> occurrences in window_
  std::unordered_map<int32_t, int32_t> gen_counts_;     // id -> occurrences among generated
  int64_t n_generated_ = 0;

  // Scratch reused across steps so a step allocates nothing once warm.
  std::vector<float> adjusted_;        // [n_vocab] logits after penalties (when any apply)
  std::vector<float> weights_;         // [n_vocab] unnormalized probabilities (dense path)
  std::vector<double> block_sums_;     // [ceil(n_vocab / 256)] partial sums of weights_
  std::vector<Candidate> candidates_;  // tokens still in the running after truncation
  std::vector<Candidate> by_id_;       // candidates_ in id order, before nucleus() permutes them
};

// Index of the largest value in v[0..n), lowest index on ties; NaN never wins
// (all NaN: 0).
int32_t argmax(const float* v, int32_t n);

}  // namespace kiln::engine
