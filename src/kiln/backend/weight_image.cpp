// The GPU weight image plan and its CPU writer (see weight_image.h).
#include "kiln/backend/weight_image.h"

#include <fmt/format.h>

#include <cstring>
#include <memory>
#include <set>

#include "kiln/core/assert.h"
#include "kiln/gguf/gguf.h"
#include "kiln/model/model.h"

namespace kiln::image {

std::string image_layout(const gguf::File& file) {
  return file.get_string(kLayoutKey).value_or("");
}

bool planar_type(DType t) { return t == DType::Q4_0 || t == DType::Q8_0; }

size_t Run::bytes() const { return size_t(n_out) * row_bytes(type, n_in); }

size_t Run::quant_bytes() const {
  KILN_ASSERT(planar);
  return size_t(n_out) * size_t(type == DType::Q4_0 ? n_in / 2 : n_in);
}

size_t Run::row_stride() const {
  if (!planar) return row_bytes(type, n_in);
  return size_t(type == DType::Q4_0 ? n_in / 2 : n_in);
}

std::vector<Run> split_runs(const std::vector<const model::Matrix*>& ms) {
  std::vector<Run> runs;
  for (const model::Matrix* m : ms) {
    bool join = false;
    if (!runs.empty()) {
      const Run& r = runs.back();
      const size_t last_bytes = size_t(r.parts.back()->n_out) * r.parts.back()->row_stride();
      join = r.type == m->type && r.n_in == m->n_in && last_bytes % kImageAlignment == 0;
    }
    if (!join) {
      Run r;
      r.type = m->type;
      r.n_in = m->n_in;
      r.planar = planar_type(m->type) && m->n_in % 32 == 0;
      runs.push_back(std::move(r));
    }
    runs.back().parts.push_back(m);
    runs.back().n_out += m->n_out;
  }
  return runs;
}

void write_run(const Run& run, std::span<uint8_t> dst) {
  KILN_ASSERT(dst.size() == run.bytes());
  if (!run.planar) {
    size_t off = 0;
    for (const model::Matrix* m : run.parts) {
      const size_t b = size_t(m->n_out) * m->row_stride();
      std::memcpy(dst.data() + off, m->data, b);
      off += b;
    }
    return;
  }
  // GGUF blocks are [f16 d][quants]; the image keeps block b's quants at
  // quant_bytes_per_block * b and its scale at 2 * b of the scales plane.
  const size_t qb = run.type == DType::Q4_0 ? 16 : 32;
  uint8_t* quants = dst.data();
  uint8_t* scales = dst.data() + run.quant_bytes();
  size_t b = 0;
  for (const model::Matrix* m : run.parts) {
    const size_t n_blocks = size_t(m->n_out) * size_t(m->n_in / 32);
    const auto* src = static_cast<const uint8_t*>(m->data);
    for (size_t i = 0; i < n_blocks; ++i, ++b) {
      const uint8_t* blk = src + i * (2 + qb);
      std::memcpy(scales + 2 * b, blk, 2);
      std::memcpy(quants + qb * b, blk + 2, qb);
    }
  }
}

namespace {

// Streams the tensors of one run: the run's image is built once, when the
// writer asks for its first part, and each part writes its slice.
struct RunBlob {
  Run run;
  std::vector<uint8_t> bytes;
  size_t parts_left = 0;
};

Status add_run(const Run& run, gguf::Writer& w, std::set<std::string>& done) {
  auto blob = std::make_shared<RunBlob>();
  blob->run = run;
  blob->parts_left = run.parts.size();
  size_t off = 0;
  for (const model::Matrix* m : run.parts) {
    const size_t b = size_t(m->n_out) * m->row_stride();
    KILN_TRY(w.add_tensor_fn(m->name, m->type, {m->n_in, m->n_out},
                             [blob, off, b](std::span<uint8_t> dst) {
                               if (blob->bytes.empty()) {
                                 blob->bytes.resize(blob->run.bytes());
                                 write_run(blob->run, blob->bytes);
                               }
                               std::memcpy(dst.data(), blob->bytes.data() + off, b);
                               if (--blob->parts_left == 0) std::vector<uint8_t>().swap(blob->bytes);
                             }));
    done.insert(m->name);
    off += b;
  }
  return Status::success();
}

Status add_group(const std::vector<const model::Matrix*>& ms, gguf::Writer& w,
                 std::set<std::string>& done) {
  for (const Run& r : split_runs(ms)) KILN_TRY(add_run(r, w, done));
  return Status::success();
}

Status add_vector(const model::Vector& v, gguf::Writer& w, std::set<std::string>& done) {
  if (!v || done.count(v.name)) return Status::success();
  done.insert(v.name);
  return w.add_tensor_ref(v.name, DType::F32, {v.n},
                          {reinterpret_cast<const uint8_t*>(v.data), size_t(v.n) * 4});
}

}  // namespace

Status add_image_tensors(const model::Model& model, gguf::Writer& w) {
  const model::ModelWeights& mw = model.weights();
  w.set_alignment(kImageAlignment);
  w.set_string(kLayoutKey, kCudaLayout);
  std::set<std::string> done;
  KILN_TRY(add_group({&mw.tok_embd}, w, done));
  if (!mw.output_tied && mw.output.data != mw.tok_embd.data) KILN_TRY(add_group({&mw.output}, w, done));
  KILN_TRY(add_vector(mw.output_norm, w, done));
  KILN_TRY(add_vector(mw.rope_freqs, w, done));
  for (const auto& l : mw.layers) {
    for (const auto* v : {&l.attn_norm, &l.ffn_norm, &l.q_norm, &l.k_norm}) KILN_TRY(add_vector(*v, w, done));
    KILN_TRY(add_group({&l.wq, &l.wk, &l.wv}, w, done));
    // Biases adjacent in Q, K, V order so the merged bias is usually one slice.
    for (const auto* v : {&l.bq, &l.bk, &l.bv, &l.bo}) KILN_TRY(add_vector(*v, w, done));
    KILN_TRY(add_group({&l.wo}, w, done));
    KILN_TRY(add_group({&l.w_gate, &l.w_up}, w, done));
    KILN_TRY(add_group({&l.w_down}, w, done));
  }
  // Anything the architecture does not bind travels unchanged, so the file
  // still holds everything the source had.
  const gguf::File& f = model.file();
  for (const auto& t : f.tensors()) {
    if (done.count(t.name)) continue;
    KILN_TRY(w.add_tensor_ref(t.name, t.type, t.ne, {t.data, size_t(t.n_bytes)}));
  }
  return Status::success();
}

}  // namespace kiln::image
