// Byte counts of bound weights (bandwidth figures in `kiln bench`).
#include "kiln/model/weights.h"

namespace kiln::model {
namespace {

uint64_t vec_bytes(const Vector& v) {
  return v ? uint64_t(v.n) * sizeof(float) : 0;
}

uint64_t layer_bytes(const LayerWeights& l) {
  uint64_t b = 0;
  for (const Matrix* m : {&l.wq, &l.wk, &l.wv, &l.wo, &l.w_gate, &l.w_up, &l.w_down})
    b += m->n_bytes;
  for (const Vector* v :
       {&l.attn_norm, &l.bq, &l.bk, &l.bv, &l.bo, &l.q_norm, &l.k_norm, &l.ffn_norm})
    b += vec_bytes(*v);
  return b;
}

}  // namespace

uint64_t ModelWeights::bytes_read_per_token() const {
  uint64_t b = output.n_bytes + vec_bytes(output_norm) + vec_bytes(rope_freqs);
  if (tok_embd) b += tok_embd.row_stride();
  for (const auto& l : layers) b += layer_bytes(l);
  return b;
}

uint64_t ModelWeights::total_bytes() const {
  uint64_t b = tok_embd.n_bytes + vec_bytes(output_norm) + vec_bytes(rope_freqs);
  if (!output_tied) b += output.n_bytes;
  for (const auto& l : layers) b += layer_bytes(l);
  return b;
}

}  // namespace kiln::model
