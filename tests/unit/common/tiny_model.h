// Tiny random Llama-family models built in memory as GGUF images, for model
// loading and forward-pass tests. Header-only so the common test library does
// not need to link kiln_gguf / kiln_quant.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "kiln/gguf/gguf.h"
#include "kiln/model/model.h"
#include "kiln/quant/quant.h"

namespace kiln::test {

struct TinySpec {
  std::string arch = "llama";
  int64_t n_vocab = 64, n_embd = 32, n_layer = 2, n_head = 4, n_head_kv = 2, n_ff = 48;
  int64_t head_dim = 0;  // 0: n_embd / n_head (written as key_length when set)
  int64_t n_rot = 0;     // 0: head_dim
  float rope_base = 10000.0f;
  bool qkv_bias = false, qk_norm = false, rope_freqs = false, tied = true;
  DType wtype = DType::F32;  // type of the 2-D weights
  uint64_t seed = 1;
};

struct TinyTensor {
  std::string name;
  std::vector<int64_t> ne;
  std::vector<float> values;  // the exact values (after quantization round trip)
  DType type = DType::F32;
  std::vector<uint8_t> raw;  // stored bytes; filled from values when empty
};

struct TinyModel {
  TinySpec spec;
  std::vector<TinyTensor> tensors;
  std::set<std::string> drop_keys;  // metadata keys to leave out

  int64_t head_dim() const { return spec.head_dim ? spec.head_dim : spec.n_embd / spec.n_head; }
  int64_t n_rot() const { return spec.n_rot ? spec.n_rot : head_dim(); }

  TinyTensor* find(const std::string& name) {
    for (auto& t : tensors)
      if (t.name == name) return &t;
    return nullptr;
  }
  const TinyTensor& at(const std::string& name) const {
    for (auto& t : tensors)
      if (t.name == name) return t;
    std::abort();
  }
  void remove(const std::string& name) {
    std::erase_if(tensors, [&](const TinyTensor& t) { return t.name == name; });
  }

  gguf::Writer writer() const {
    gguf::Writer w;
    const std::string& a = spec.arch;
    auto set_u32 = [&](const std::string& k, int64_t v) {
      if (!drop_keys.count(k)) w.set_u32(k, uint32_t(v));
    };
    if (!drop_keys.count("general.architecture")) w.set_string("general.architecture", a);
    set_u32(a + ".vocab_size", spec.n_vocab);
    set_u32(a + ".embedding_length", spec.n_embd);
    set_u32(a + ".block_count", spec.n_layer);
    set_u32(a + ".feed_forward_length", spec.n_ff);
    set_u32(a + ".context_length", 256);
    set_u32(a + ".attention.head_count", spec.n_head);
    set_u32(a + ".attention.head_count_kv", spec.n_head_kv);
    if (spec.head_dim) set_u32(a + ".attention.key_length", spec.head_dim);
    if (spec.head_dim) set_u32(a + ".attention.value_length", spec.head_dim);
    set_u32(a + ".rope.dimension_count", n_rot());
    if (!drop_keys.count(a + ".rope.freq_base")) w.set_f32(a + ".rope.freq_base", spec.rope_base);
    if (!drop_keys.count(a + ".attention.layer_norm_rms_epsilon"))
      w.set_f32(a + ".attention.layer_norm_rms_epsilon", 1e-5f);
    for (const auto& t : tensors) {
      std::vector<uint8_t> bytes = t.raw;
      if (bytes.empty()) {
        bytes.resize(row_bytes(t.type, t.ne[0]) * size_t(t.values.size() / size_t(t.ne[0])));
        const int64_t rows = int64_t(t.values.size()) / t.ne[0];
        for (int64_t r = 0; r < rows; ++r)
          quant::quantize_row(t.type, t.values.data() + r * t.ne[0],
                              bytes.data() + size_t(r) * row_bytes(t.type, t.ne[0]), t.ne[0]);
      }
      auto st = w.add_tensor(t.name, t.type, t.ne, bytes);
      if (!st.ok()) std::abort();
    }
    return w;
  }
  std::vector<uint8_t> bytes() const { return writer().to_bytes(); }
};

// Random weights: matrices ~ U(-s, s) with s = 1/sqrt(n_in) (unit-scale
// activations), norms around 1, biases small.
inline TinyModel make_tiny_model(const TinySpec& spec) {
  TinyModel m;
  m.spec = spec;
  std::mt19937_64 rng(spec.seed);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  const int64_t hd = m.head_dim(), e = spec.n_embd;
  auto add = [&](const std::string& name, std::vector<int64_t> ne, bool matrix, float scale,
                 float offset) {
    TinyTensor t;
    t.name = name;
    t.ne = ne;
    t.type = matrix ? spec.wtype : DType::F32;
    int64_t n = 1;
    for (auto d : ne) n *= d;
    t.values.resize(size_t(n));
    for (auto& v : t.values) v = offset + scale * u(rng);
    if (t.type != DType::F32) {  // keep the exact stored values
      std::vector<uint8_t> q(row_bytes(t.type, ne[0]));
      for (int64_t r = 0; r < n / ne[0]; ++r) {
        quant::quantize_row(t.type, t.values.data() + r * ne[0], q.data(), ne[0]);
        quant::dequantize_row(t.type, q.data(), t.values.data() + r * ne[0], ne[0]);
      }
    }
    m.tensors.push_back(std::move(t));
  };
  auto mat = [&](const std::string& name, int64_t n_in, int64_t n_out) {
    add(name, {n_in, n_out}, true, 1.0f / std::sqrt(float(n_in)), 0.0f);
  };
  auto vec = [&](const std::string& name, int64_t n, float scale, float offset) {
    add(name, {n}, false, scale, offset);
  };
  add("token_embd.weight", {e, spec.n_vocab}, true, 1.0f, 0.0f);
  vec("output_norm.weight", e, 0.2f, 1.0f);
  if (!spec.tied) mat("output.weight", e, spec.n_vocab);
  if (spec.rope_freqs) vec("rope_freqs.weight", m.n_rot() / 2, 1.5f, 2.5f);
  for (int64_t l = 0; l < spec.n_layer; ++l) {
    const std::string p = "blk." + std::to_string(l) + ".";
    vec(p + "attn_norm.weight", e, 0.2f, 1.0f);
    mat(p + "attn_q.weight", e, spec.n_head * hd);
    mat(p + "attn_k.weight", e, spec.n_head_kv * hd);
    mat(p + "attn_v.weight", e, spec.n_head_kv * hd);
    mat(p + "attn_output.weight", spec.n_head * hd, e);
    if (spec.qkv_bias) {
      vec(p + "attn_q.bias", spec.n_head * hd, 0.5f, 0.0f);
      vec(p + "attn_k.bias", spec.n_head_kv * hd, 0.5f, 0.0f);
      vec(p + "attn_v.bias", spec.n_head_kv * hd, 0.5f, 0.0f);
    }
    if (spec.qk_norm) {
      vec(p + "attn_q_norm.weight", hd, 0.3f, 1.0f);
      vec(p + "attn_k_norm.weight", hd, 0.3f, 1.0f);
    }
    vec(p + "ffn_norm.weight", e, 0.2f, 1.0f);
    mat(p + "ffn_gate.weight", e, spec.n_ff);
    mat(p + "ffn_up.weight", e, spec.n_ff);
    mat(p + "ffn_down.weight", spec.n_ff, e);
  }
  return m;
}

// A tiny model parsed and bound as a Model; `bytes` holds the GGUF image the
// model reads, so the two travel together (moving keeps the buffer in place).
struct LoadedTiny {
  std::vector<uint8_t> bytes;
  std::unique_ptr<model::Model> model;
};
inline Result<LoadedTiny> load_tiny_model(const TinyModel& tiny) {
  LoadedTiny out;
  out.bytes = tiny.bytes();
  auto file = gguf::File::parse(out.bytes, "tiny.gguf");
  if (!file) return file.error();
  auto m = model::Model::from_file(std::move(file.value()));
  if (!m) return m.error();
  out.model = std::move(*m);
  return out;
}

}  // namespace kiln::test
