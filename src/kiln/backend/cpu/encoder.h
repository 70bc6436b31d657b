// The CPU forward pass of encoder-only embedding models (BERT family), apart
// from the causal decoder path: whole sequences at once, no KV cache,
// bidirectional attention, post-LayerNorm blocks, GELU FFN, then pooling and
// L2 normalization. Linear layers go through cpu::matmul (the same reference /
// fast paths as the decoder).
//
// Batch-invariant: several sequences are packed into one matmul per linear
// layer, but each output row depends only on its own sequence (matmul rows
// are independent with a fixed reduction order; attention never crosses a
// sequence), so a text embeds to the same bits alone or in a batch.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "kiln/backend/cpu/matmul.h"
#include "kiln/backend/cpu/parallel_rows.h"
#include "kiln/core/status.h"
#include "kiln/model/encoder.h"

namespace kiln {
class ThreadPool;
}

namespace kiln::cpu {

// One input must be non-empty, use ids of the vocabulary and fit the learned
// positions. The message says which and what to do.
Status check_encoder_input(const model::EncoderHParams& hp, std::span<const int32_t> ids);

class Encoder {
 public:
  // `pool` runs the matmuls, attention and row ops; both must outlive the
  // encoder. Not thread-safe: one call at a time (it owns its scratch).
  Encoder(const model::EncoderModel& model, ThreadPool& pool, MatmulPath path = MatmulPath::fast);

  // Last hidden states (after the final layer_output_norm) of every token,
  // sequences packed in input order: out [sum of lengths, n_embd].
  Status hidden_states(std::span<const std::vector<int32_t>> seqs, std::vector<float>& out);

  // One pooled, L2-normalized vector [n_embd] per sequence, in input order.
  Result<std::vector<std::vector<float>>> embed(std::span<const std::vector<int32_t>> seqs,
                                                model::Pooling pooling);

  MatmulPath path() const { return path_; }

 private:
  // Runs one group of packed sequences (at most kMaxGroupTokens tokens, or
  // one longer sequence) and writes their hidden states to out [n_tokens, n_embd].
  void run_group(std::span<const std::vector<int32_t>> seqs, float* out);
  void embed_tokens(std::span<const std::vector<int32_t>> seqs, int64_t n_tokens);
  void attention(std::span<const std::vector<int32_t>> seqs);
  void linear(const model::Matrix& w, const model::Vector& b, const float* x, int64_t n_rows,
              float* y);
  void layer_norm_rows(float* x, const model::Vector& w, const model::Vector& b, int64_t n_rows);
  // fn(row) for rows [0, n): over the pool when the group is big enough.
  template <class F>
  void each_row(int64_t n, const F& fn) {
    if (parallel_) {
      for_rows(pool_, n, fn);
    } else {
      for (int64_t i = 0; i < n; ++i) fn(i);
    }
  }

  const model::EncoderModel& model_;
  ThreadPool& pool_;
  MatmulPath path_;
  MatmulScratch mm_scratch_;
  bool parallel_ = false;  // this group's work is worth the pool (run_group decides)

  // Activations of one group, sized on first use for the largest group.
  std::vector<float> x_;    // [n_tokens, n_embd] residual stream
  std::vector<float> q_;    // [n_tokens, n_embd]
  std::vector<float> k_;    // [n_tokens, n_embd]
  std::vector<float> v_;    // [n_tokens, n_embd]
  std::vector<float> att_;  // [n_tokens, n_embd] attention output (heads side by side)
  std::vector<float> tmp_;  // [n_tokens, n_embd] projection outputs
  std::vector<float> ff_;   // [n_tokens, n_ff]
  std::vector<std::vector<double>> scores_;  // per thread [n_ctx_train]
  std::vector<int64_t> seq_start_;           // [n_seqs + 1] row offsets within the group
};

}  // namespace kiln::cpu
