// The GPU weight image (backend/weight_image.h): the plan that `kiln bake
// --target-arch sm_*` writes and the CUDA backend binds. Checked on the CPU:
// merge rules, the planar byte layout against the source blocks, adjacency
// of merged parts in the written file, reproducibility, and that the CPU
// backend refuses such a file.
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>

#include "common/tiny_model.h"
#include "kiln/backend/cpu/cpu_backend.h"
#include "kiln/backend/weight_image.h"
#include "kiln/gguf/gguf.h"
#include "kiln/model/model.h"

namespace kiln {
namespace {

namespace fs = std::filesystem;

fs::path temp_path(const std::string& name) {
  return fs::temp_directory_path() / fmt::format("kiln-wimg-{}-{}", ::getpid(), name);
}

fs::path write_bytes(const std::string& name, const std::vector<uint8_t>& bytes) {
  const fs::path p = temp_path(name);
  std::ofstream(p, std::ios::binary).write(reinterpret_cast<const char*>(bytes.data()), long(bytes.size()));
  return p;
}

// Shapes where Q, K, V and gate, up have byte sizes that are multiples of the
// image alignment, so they merge.
test::TinySpec mergeable_spec(DType t) {
  test::TinySpec s;
  s.n_embd = 128, s.n_head = 4, s.n_head_kv = 2, s.n_ff = 128, s.n_vocab = 64, s.n_layer = 2;
  s.wtype = t;
  s.tied = false;
  return s;
}

std::unique_ptr<model::Model> load(const fs::path& p) {
  auto m = model::Model::load(p.string());
  EXPECT_TRUE(m) << m.message();
  return m ? std::move(*m) : nullptr;
}

// Writes the image of `src` with its metadata.
std::vector<uint8_t> image_bytes(const model::Model& src) {
  gguf::Writer w;
  w.copy_metadata(src.file());
  auto st = image::add_image_tensors(src, w);
  EXPECT_TRUE(st) << st.message();
  return w.to_bytes();
}

TEST(WeightImage, MergeRulesFollowTypeWidthAndAlignment) {
  model::Matrix a{"a", DType::Q4_0, reinterpret_cast<const void*>(1), 128, 128, 0};
  model::Matrix b{"b", DType::Q4_0, reinterpret_cast<const void*>(1), 128, 64, 0};
  model::Matrix c{"c", DType::Q8_0, reinterpret_cast<const void*>(1), 128, 64, 0};
  auto runs = image::split_runs({&a, &b, &c});
  ASSERT_EQ(runs.size(), 2u);  // q4_0 a|b merge; q8_0 c on its own
  EXPECT_EQ(runs[0].n_out, 192);
  EXPECT_TRUE(runs[0].planar);
  EXPECT_EQ(runs[0].bytes(), size_t(192) * 4 * 18);
  EXPECT_EQ(runs[0].quant_bytes(), size_t(192) * 64);
  EXPECT_EQ(runs[0].row_stride(), 64u);
  // 16 rows of one q4_0 block are 288 bytes: not a multiple of 256, so the
  // next matrix cannot follow without padding and is a run of its own.
  model::Matrix d{"d", DType::Q4_0, reinterpret_cast<const void*>(1), 32, 16, 0};
  model::Matrix e{"e", DType::Q4_0, reinterpret_cast<const void*>(1), 32, 16, 0};
  EXPECT_EQ(image::split_runs({&d, &e}).size(), 2u);
  model::Matrix f{"f", DType::Q4_K, reinterpret_cast<const void*>(1), 256, 64, 0};
  EXPECT_FALSE(image::split_runs({&f})[0].planar);
}

TEST(WeightImage, PlanarRunHoldsEachBlocksQuantsAndScale) {
  for (DType t : {DType::Q4_0, DType::Q8_0}) {
    const auto tiny = test::make_tiny_model(mergeable_spec(t));
    const auto src_path = write_bytes("src.gguf", tiny.bytes());
    auto src = load(src_path);
    ASSERT_TRUE(src);
    const auto& l = src->weights().layers[0];
    auto runs = image::split_runs({&l.wq, &l.wk, &l.wv});
    ASSERT_EQ(runs.size(), 1u) << dtype_name(t);
    std::vector<uint8_t> out(runs[0].bytes());
    image::write_run(runs[0], out);
    const size_t qb = t == DType::Q4_0 ? 16 : 32;
    // Block 5 of wk = global block (rows of wq) * blocks per row + 5.
    const size_t bpr = size_t(l.wq.n_in / 32);
    const size_t g = size_t(l.wq.n_out) * bpr + 5;
    const auto* blk = static_cast<const uint8_t*>(l.wk.data) + 5 * (2 + qb);
    EXPECT_EQ(std::memcmp(out.data() + runs[0].quant_bytes() + 2 * g, blk, 2), 0);
    EXPECT_EQ(std::memcmp(out.data() + qb * g, blk + 2, qb), 0);
    fs::remove(src_path);
  }
}

TEST(WeightImage, WrittenFileBindsWithMergedPartsAdjacent) {
  const auto tiny = test::make_tiny_model(mergeable_spec(DType::Q4_0));
  const auto src_path = write_bytes("src2.gguf", tiny.bytes());
  auto src = load(src_path);
  ASSERT_TRUE(src);
  const auto bytes = image_bytes(*src);
  EXPECT_EQ(bytes, image_bytes(*src)) << "the image must be reproducible";
  const auto img_path = write_bytes("img.gguf", bytes);
  auto img = load(img_path);
  ASSERT_TRUE(img);
  EXPECT_EQ(image::image_layout(img->file()), image::kCudaLayout);
  EXPECT_EQ(img->file().alignment(), image::kImageAlignment);
  for (size_t i = 0; i < img->weights().layers.size(); ++i) {
    const auto& li = img->weights().layers[i];
    const auto& ls = src->weights().layers[i];
    for (auto [mi, ms] : {std::pair{std::vector{&li.wq, &li.wk, &li.wv}, std::vector{&ls.wq, &ls.wk, &ls.wv}},
                          std::pair{std::vector{&li.w_gate, &li.w_up}, std::vector{&ls.w_gate, &ls.w_up}}}) {
      auto run_i = image::split_runs({mi.begin(), mi.end()});
      auto run_s = image::split_runs({ms.begin(), ms.end()});
      ASSERT_EQ(run_i.size(), 1u);
      // Adjacent: each part starts where the previous one ends.
      const auto* p = static_cast<const uint8_t*>(mi[0]->data);
      for (const auto* m : mi) {
        EXPECT_EQ(m->data, p) << m->name;
        p += size_t(m->n_out) * m->row_stride();
      }
      // And the bytes there are the source's run in planar layout.
      std::vector<uint8_t> want(run_s[0].bytes());
      image::write_run(run_s[0], want);
      EXPECT_EQ(std::memcmp(mi[0]->data, want.data(), want.size()), 0) << mi[0]->name;
    }
    // Norms are f32 in the image and equal to the source.
    ASSERT_EQ(li.attn_norm.n, ls.attn_norm.n);
    EXPECT_EQ(std::memcmp(li.attn_norm.data, ls.attn_norm.data, size_t(ls.attn_norm.n) * 4), 0);
  }
  // The CPU backend cannot read the planar bytes and says so.
  cpu::CpuOptions co;
  co.n_threads = 1;
  cpu::CpuBackend cpu(co);
  auto st = cpu.load_weights(*img);
  ASSERT_FALSE(st);
  EXPECT_NE(st.message().find("--device cuda"), std::string::npos) << st.message();
  fs::remove(src_path);
  fs::remove(img_path);
}

}  // namespace
}  // namespace kiln
