// Per-request state inside the engine: the tokens so far (prompt +
// generated), how many of them have K/V in the cache, the block table, the
// sampler and the channel back to the edge. Owned by the scheduler, touched
// only by the engine thread.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <vector>

#include "kiln/core/status.h"
#include "kiln/engine/prefix_cache.h"
#include "kiln/engine/request.h"
#include "kiln/engine/sampler.h"

namespace kiln::engine {

enum class SeqPhase : uint8_t {
  waiting,   // in the FIFO: never admitted, or preempted (recompute later)
  running,   // holds a slot and KV blocks
  finished,  // done; removed from the scheduler at the end of the step
};

// Several embedding inputs submitted together: each input runs as its own
// sequence; `done` gets all vectors (input order) once the last one finishes,
// or the first error.
struct EmbeddingGroup {
  using Done = std::function<void(Result<std::vector<std::vector<float>>>)>;
  std::vector<std::vector<float>> vectors;  // [n_inputs][n_embd]
  int32_t n_left = 0;
  bool failed = false;
  Done done;
};

struct Sequence {
  uint64_t id = 0;  // submission order
  std::chrono::steady_clock::time_point arrival;  // the request's, at the edge (traces)
  // Tokens whose K/V the sequence needs: the prompt, then every generated
  // token. The last generated token has no K/V yet (it is fed next step).
  std::vector<int32_t> tokens;
  int32_t n_prompt = 0;
  int32_t max_tokens = 0;
  int32_t n_top_logprobs = -1;
  std::optional<Sampler> sampler;  // generation only
  std::shared_ptr<ResultChannel> channel;

  // Embedding requests: no sampling; the final-normed hidden states of all
  // tokens are summed, then averaged and L2-normalized.
  std::shared_ptr<EmbeddingGroup> embedding;
  int32_t embedding_index = -1;
  std::vector<double> hidden_sum;  // [n_embd]

  SeqPhase phase = SeqPhase::waiting;
  int32_t n_computed = 0;            // tokens[0, n_computed) have K/V in block_table
  std::vector<int32_t> block_table;  // KV block ids covering positions [0, n_computed + chunk)
  PrefixChain chain;                 // prefix-cache registration progress
  bool admitted_once = false;        // first admission done (its cache hit is what gets reported)
  int32_t n_cached_prompt = 0;  // prompt tokens served from the prefix cache at first admission
  bool first_event_sent = false;

  bool is_embedding() const { return embedding != nullptr; }
  int32_t n_tokens() const { return int32_t(tokens.size()); }
  int32_t n_generated() const { return n_tokens() - n_prompt; }
  int32_t n_remaining() const { return n_tokens() - n_computed; }  // tokens to run
  bool cancelled() const { return channel && channel->cancelled(); }
};

}  // namespace kiln::engine
