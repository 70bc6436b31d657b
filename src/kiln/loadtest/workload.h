// What the load generator sends: request bodies built once before a run (so
// generating them costs nothing while timing), from a named preset, length
// distributions, a JSONL prompt file, shared-preamble combinations, or a
// replayed request log (replay.h).
#pragma once

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "kiln/core/status.h"

namespace kiln::loadtest {

// A length: "128" (fixed), "uniform:64:256", "normal:128:32" (mean, stddev),
// "exp:128" (exponential with that mean). Samples are at least 1.
struct LengthDist {
  enum class Kind { fixed, uniform, normal, exponential };
  Kind kind = Kind::fixed;
  double a = 1, b = 0;
  int32_t sample(std::mt19937_64& rng) const;
  std::string describe() const;
};
Result<LengthDist> parse_length_dist(const std::string& s, const std::string& flag);

struct WorkloadOptions {
  std::string api = "completions";  // completions | chat (a JSONL line with messages is chat)
  std::string model;                // "" leaves `model` out of the body
  LengthDist prompt_words{LengthDist::Kind::fixed, 300, 0};  // random words from the GUIDE §5 list
  LengthDist output_tokens{LengthDist::Kind::fixed, 128, 0};  // max_tokens
  std::string prompts_file;  // JSONL: {"prompt": ...} or {"messages": [...]}, optional "max_tokens"
  // Shared preambles: n_preambles distinct system prompts of preamble_words
  // words, each combined with n_questions questions (prompt_words long).
  int32_t n_preambles = 0, n_questions = 0;
  int32_t preamble_words = 400;
  bool ignore_eos = true;  // kiln/vLLM extension: every request makes max_tokens tokens
  double temperature = 0;
  bool include_usage = true;  // stream_options.include_usage: exact token and cache counts
  uint64_t seed = 1;
  // Distinct random requests generated, then used in order across the whole
  // session (warm-up and levels): 4,096 keeps a repeat far enough back that
  // the server's prefix cache has long dropped it.
  int32_t pool_size = 4096;
};

// The GUIDE §5 serving workload: /v1/completions, 300 random words of the
// list, max_tokens 128, ignore_eos, temperature 0, streaming.
constexpr const char* kServingPreset = "serving";
// Applies a preset to `o`; fails for an unknown name.
Status apply_preset(const std::string& name, WorkloadOptions& o);

// The words of the GUIDE §5 serving workload (≈1 Llama 3 token each).
const std::vector<std::string>& serving_words();

struct RequestSpec {
  std::string path;        // "/v1/completions" or "/v1/chat/completions"
  std::string body;        // JSON with "stream": true
  int32_t max_tokens = 0;  // expected output tokens (0: unknown)
  double at_s = -1;        // replay: arrival time from the start of the log; -1: none
};

class Workload {
 public:
  static Result<Workload> build(const WorkloadOptions& o);
  static Workload from_specs(std::vector<RequestSpec> specs, std::string description);

  // Request i of a run (the pool repeats when a run sends more).
  const RequestSpec& get(uint64_t i) const { return specs_[i % specs_.size()]; }
  size_t size() const { return specs_.size(); }
  const std::string& description() const { return description_; }

 private:
  std::vector<RequestSpec> specs_;
  std::string description_;
};

}  // namespace kiln::loadtest
