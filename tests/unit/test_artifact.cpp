// Baked artifact files without the engine: the integrity trailer catches
// truncation and any flipped byte; weights.bin is byte-for-byte reproducible
// per target and binds as the same model; warm.bin round-trips and refuses
// damage; the fingerprint check names the differing field and the bake flag.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>

#include "common/temp_dir.h"
#include "common/tiny_lm.h"
#include "kiln/artifact/artifact.h"
#include "kiln/artifact/checksum.h"
#include "kiln/artifact/early_verify.h"
#include "kiln/artifact/fingerprint.h"
#include "kiln/artifact/warm_file.h"
#include "kiln/artifact/weights_file.h"
#include "kiln/core/threadpool.h"
#include "kiln/gguf/gguf.h"
#include "kiln/gguf/mapped_file.h"
#include "kiln/model/model.h"

namespace {

using namespace kiln;
namespace fs = std::filesystem;

// A fresh directory per test.
struct TempDir : test::TempDir {
  TempDir() : test::TempDir("kiln-test-artifact") {}
};

std::vector<uint8_t> read_all(const std::string& p) {
  std::ifstream f(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(f), {}};
}
void write_all(const std::string& p, const std::vector<uint8_t>& b) {
  std::ofstream f(p, std::ios::binary | std::ios::trunc);
  f.write(reinterpret_cast<const char*>(b.data()), std::streamsize(b.size()));
}

std::string write_source(const TempDir& d, DType wtype = DType::F32, uint64_t seed = 7) {
  const std::string p = d / ("source-" + std::to_string(seed) + ".gguf");
  EXPECT_TRUE(test::tiny_lm_writer(wtype, seed).write(p).ok());
  return p;
}

Result<artifact::WeightsBakeResult> bake(const std::string& src, const std::string& out,
                                         const std::string& target, const std::string& quant = "") {
  ThreadPool pool(2);
  artifact::WeightsBakeOptions o;
  o.source = src;
  o.out = out;
  o.target = target;
  o.quant = quant;
  return artifact::bake_weights(o, pool);
}

// A 3,000-byte file (header 100 bytes) with its trailer: 6 body chunks of 512.
Result<artifact::Integrity> write_checked_file(const std::string& p, uint8_t mul, uint8_t add) {
  std::vector<uint8_t> bytes(3000);
  for (size_t i = 0; i < bytes.size(); ++i) bytes[i] = uint8_t(i * mul + add);
  write_all(p, bytes);
  ThreadPool pool(2);
  return artifact::append_integrity_trailer(p, 100, pool, /*chunk_size=*/512);
}

TEST(ArtifactChecksum, TrailerVerifiesAndCatchesDamage) {
  TempDir d;
  const std::string p = d / "f.bin";
  ThreadPool pool(2);
  auto in = write_checked_file(p, 31, 7);
  ASSERT_TRUE(in.ok()) << in.message();
  EXPECT_EQ(in->chunk_xxh3.size(), 6u);  // 2900 body bytes in chunks of 512
  const std::vector<uint8_t> good = read_all(p);
  EXPECT_EQ(good.size(), in->file_bytes());
  auto back = artifact::read_integrity_trailer(good, p);
  ASSERT_TRUE(back.ok()) << back.message();
  EXPECT_EQ(back->digest, in->digest);
  EXPECT_TRUE(artifact::verify_integrity(good, *back, pool, p).ok());

  // Every single flipped byte anywhere in the file is caught: header, body,
  // the checksums themselves, the trailer's sizes and its magic.
  for (size_t at : {size_t(0), size_t(99), size_t(100), size_t(1500), size_t(2999), size_t(3000),
                    good.size() - 20, good.size() - 1}) {
    std::vector<uint8_t> bad = good;
    bad[at] ^= 0x10;
    auto t = artifact::read_integrity_trailer(bad, p);
    const bool caught = !t.ok() || !artifact::verify_integrity(bad, *t, pool, p).ok();
    EXPECT_TRUE(caught) << "flip at " << at;
  }
  // Truncated anywhere (including just the last byte) or extended.
  for (size_t n : {good.size() - 1, good.size() - 60, size_t(2000), size_t(10)}) {
    std::vector<uint8_t> cut(good.begin(), good.begin() + ptrdiff_t(n));
    auto t = artifact::read_integrity_trailer(cut, p);
    EXPECT_FALSE(t.ok()) << "truncated to " << n;
    if (!t.ok()) EXPECT_NE(t.message().find("corrupt or truncated"), std::string::npos);
  }
  std::vector<uint8_t> longer = good;
  longer.push_back(0);
  EXPECT_FALSE(artifact::read_integrity_trailer(longer, p).ok());
}

// The background check that runs while the GPU context is created: every
// chunk it reports verified matched, and a damaged chunk is named, never
// reported verified, and ends the check.
TEST(ArtifactEarlyVerify, ChecksChunksAndNamesTheCorruptOne) {
  TempDir d;
  const std::string p = d / "f.bin";
  auto in = write_checked_file(p, 13, 1);
  ASSERT_TRUE(in.ok()) << in.message();
  const std::vector<uint8_t> good = read_all(p);
  auto wait = [](const artifact::EarlyVerifier& v) {
    for (int k = 0; k < 5000 && !v.finished(); ++k) usleep(1000);
    return v.finished();
  };
  {
    artifact::EarlyVerifier v(good, *in, p, 3);
    ASSERT_TRUE(wait(v));
    EXPECT_TRUE(v.stop().ok());
    EXPECT_EQ(v.n_chunks(), 6u);
    EXPECT_EQ(v.n_verified(), 6u);
    for (uint64_t i = 0; i < 6; ++i) EXPECT_TRUE(v.verified(i)) << i;
    EXPECT_FALSE(v.verified(6));
  }
  std::vector<uint8_t> bad = good;
  bad[100 + 3 * 512 + 5] ^= 0x01;  // body chunk 3
  {
    artifact::EarlyVerifier v(bad, *in, p, 1);  // one thread: chunks 0, 1, 2, then 3 fails
    ASSERT_TRUE(wait(v));
    const Status st = v.stop();
    ASSERT_FALSE(st.ok());
    EXPECT_NE(st.message().find("chunk 3 of 6"), std::string::npos) << st.message();
    EXPECT_TRUE(v.verified(0) && v.verified(1) && v.verified(2));
    EXPECT_FALSE(v.verified(3));
    EXPECT_FALSE(v.verified(4) || v.verified(5));  // nothing after the failure
  }
  {
    // Started from the path alone (serve's first step): its own mapping and
    // trailer, the same digest as the writer's.
    auto v = artifact::EarlyVerifier::start(p, 2);
    ASSERT_NE(v, nullptr);
    EXPECT_EQ(v->digest(), in->digest);
    ASSERT_TRUE(wait(*v));
    EXPECT_TRUE(v->stop().ok());
    EXPECT_EQ(v->n_verified(), 6u);
    // No file, or no trailer: nothing started; the full open reports why.
    EXPECT_EQ(artifact::EarlyVerifier::start(d / "missing.bin", 2), nullptr);
    write_all(d / "plain.bin", std::vector<uint8_t>(3000, 7));
    EXPECT_EQ(artifact::EarlyVerifier::start(d / "plain.bin", 2), nullptr);
  }
  {
    // Stopped at once (the context was already there): whatever it did
    // check matched, and the rest is left to the loader.
    artifact::EarlyVerifier v(good, *in, p, 2);
    EXPECT_TRUE(v.stop().ok());
    EXPECT_TRUE(v.finished());
    EXPECT_LE(v.n_verified(), 6u);
  }
}

TEST(ArtifactWeights, ReproducibleAndBindsAsTheSameModel) {
  TempDir d;
  const std::string src = write_source(d);
  auto a = bake(src, d / "a.bin", "cpu");
  ASSERT_TRUE(a.ok()) << a.message();
  auto b = bake(src, d / "b.bin", "cpu");
  ASSERT_TRUE(b.ok()) << b.message();
  EXPECT_EQ(read_all(d / "a.bin"), read_all(d / "b.bin"));  // byte for byte
  EXPECT_EQ(a->integrity.digest, b->integrity.digest);
  EXPECT_EQ(a->header.layout, "gguf");
  EXPECT_EQ(a->header.weight_types, "source");

  // The same tensors and metadata as the source, plus kiln.artifact.*.
  auto s = gguf::File::open(src);
  auto w = gguf::File::open(d / "a.bin");
  ASSERT_TRUE(s.ok() && w.ok());
  ASSERT_EQ((*s)->tensors().size(), (*w)->tensors().size());
  for (size_t i = 0; i < (*s)->tensors().size(); ++i) {
    const auto& x = (*s)->tensors()[i];
    const auto& y = (*w)->tensors()[i];
    EXPECT_EQ(x.name, y.name);
    ASSERT_EQ(x.n_bytes, y.n_bytes);
    EXPECT_EQ(std::memcmp(x.data, y.data, size_t(x.n_bytes)), 0) << x.name;
    EXPECT_EQ(y.offset % 4096, 0u);
  }
  for (const auto& [k, v] : (*s)->metadata()) EXPECT_NE((*w)->find(k), nullptr) << k;
  auto h = artifact::read_weights_header(**w);
  ASSERT_TRUE(h.ok()) << h.message();
  EXPECT_EQ(h->target, "cpu");
  EXPECT_EQ(h->model_hash, a->header.model_hash);
  auto m = model::Model::load(d / "a.bin");
  EXPECT_TRUE(m.ok()) << m.message();

  // Another source model hashes differently; the GPU image target is
  // reproducible too and differs from the CPU layout.
  const std::string src2 = write_source(d, DType::F32, 8);
  auto c = bake(src2, d / "c.bin", "cpu");
  ASSERT_TRUE(c.ok());
  EXPECT_NE(c->header.model_hash, a->header.model_hash);
  auto g1 = bake(src, d / "g1.bin", "sm_89");
  auto g2 = bake(src, d / "g2.bin", "sm_89");
  ASSERT_TRUE(g1.ok() && g2.ok()) << (g1.ok() ? g2.message() : g1.message());
  EXPECT_EQ(read_all(d / "g1.bin"), read_all(d / "g2.bin"));
  EXPECT_EQ(g1->header.layout, "cuda-image-v1");
  EXPECT_NE(g1->integrity.digest, a->integrity.digest);
  EXPECT_EQ(g1->header.model_hash, a->header.model_hash);  // the same source
  EXPECT_FALSE(bake(src, d / "x.bin", "sm_75").ok());
}

TEST(ArtifactWeights, QuantMatchesKilnQuantizeRules) {
  TempDir d;
  const std::string src = write_source(d);
  auto a = bake(src, d / "q.bin", "cpu", "q8_0");
  ASSERT_TRUE(a.ok()) << a.message();
  auto b = bake(src, d / "q2.bin", "cpu", "q8_0");
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(read_all(d / "q.bin"), read_all(d / "q2.bin"));
  EXPECT_EQ(a->header.weight_types, "q8_0");
  auto w = gguf::File::open(d / "q.bin");
  ASSERT_TRUE(w.ok());
  EXPECT_EQ((*w)->tensor("blk.0.attn_q.weight")->type, DType::Q8_0);
  EXPECT_EQ((*w)->tensor("output_norm.weight")->type, DType::F32);
  EXPECT_NE(a->header.tensor_types.find("q8_0:"), std::string::npos);
  EXPECT_FALSE(bake(src, d / "bad.bin", "cpu", "q3_zz").ok());
  // The requantized intermediate file is gone.
  EXPECT_FALSE(fs::exists(d / "q.bin.requant.gguf"));
}

artifact::WarmData sample_warm(std::vector<uint8_t>& storage) {
  artifact::WarmData w;
  w.fingerprint.model_hash = "m";
  w.fingerprint.weights_digest = "d";
  w.fingerprint.target = "cpu";
  w.fingerprint.weight_layout = "gguf";
  w.fingerprint.weight_types = "source";
  w.fingerprint.kv_type = "f16";
  w.fingerprint.kv_block_size = 4;
  w.fingerprint.ctx_size = 256;
  w.prefixes.block_size = 4;
  w.prefixes.block_bytes = 40;
  storage.resize(3 * 40);
  for (size_t i = 0; i < storage.size(); ++i) storage[i] = uint8_t(i);
  for (int i = 0; i < 3; ++i) {
    engine::PrefixBlock b;
    b.parent = i == 2 ? 0 : i - 1;
    b.tokens = {i, i + 1, i + 2, i + 3};
    b.kv = std::span<const uint8_t>(storage).subspan(size_t(i) * 40, 40);
    w.prefixes.blocks.push_back(b);
  }
  artifact::RecordedOutput o;
  o.request = {{"prompt", "w3 w4"}, {"max_tokens", 3}};
  o.prompt = "w3 w4";
  o.prompt_tokens = 3;
  o.sampling = {{"temperature", 0}};
  o.text = " w5 w6";
  o.finish_reason = "length";
  o.completion_tokens = 3;
  w.outputs.push_back(o);
  return w;
}

TEST(ArtifactWarm, RoundTripAndRefusesDamage) {
  TempDir d;
  std::vector<uint8_t> storage;
  const artifact::WarmData w = sample_warm(storage);
  ThreadPool pool(2);
  ASSERT_TRUE(artifact::write_warm_file(d / "warm.bin", w, pool).ok());
  auto f = artifact::WarmFile::open(d / "warm.bin", pool);
  ASSERT_TRUE(f.ok()) << f.message();
  const auto& r = (*f)->data();
  EXPECT_EQ(r.fingerprint.kv_block_size, 4);
  EXPECT_EQ(r.fingerprint.kv_type, "f16");
  ASSERT_EQ(r.prefixes.blocks.size(), 3u);
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_EQ(r.prefixes.blocks[i].parent, w.prefixes.blocks[i].parent);
    EXPECT_EQ(r.prefixes.blocks[i].tokens, w.prefixes.blocks[i].tokens);
    ASSERT_EQ(r.prefixes.blocks[i].kv.size(), 40u);
    EXPECT_EQ(std::memcmp(r.prefixes.blocks[i].kv.data(), w.prefixes.blocks[i].kv.data(), 40), 0);
  }
  ASSERT_EQ((*f)->recorded_outputs().size(), 1u);
  EXPECT_EQ((*f)->recorded_outputs()[0].text, " w5 w6");
  EXPECT_EQ((*f)->recorded_outputs()[0].request["max_tokens"], 3);

  // The same inputs give the same bytes.
  ASSERT_TRUE(artifact::write_warm_file(d / "warm2.bin", w, pool).ok());
  const auto good = read_all(d / "warm.bin");
  EXPECT_EQ(good, read_all(d / "warm2.bin"));

  for (size_t at : {size_t(10), size_t(40), good.size() / 2, good.size() - 100, good.size() - 30}) {
    std::vector<uint8_t> bad = good;
    bad[at] ^= 0x01;
    write_all(d / "bad.bin", bad);
    EXPECT_FALSE(artifact::WarmFile::open(d / "bad.bin", pool).ok()) << "flip at " << at;
  }
  std::vector<uint8_t> cut(good.begin(), good.end() - 7);
  write_all(d / "cut.bin", cut);
  auto t = artifact::WarmFile::open(d / "cut.bin", pool);
  ASSERT_FALSE(t.ok());
  EXPECT_NE(t.message().find("truncated"), std::string::npos) << t.message();
}

TEST(ArtifactFingerprint, MismatchNamesTheFieldAndTheBakeFlag) {
  artifact::Fingerprint f;
  f.target = "cpu";
  f.weight_types = "q4_k_m";
  f.kv_type = "fp8";
  f.kv_block_size = 16;
  f.ctx_size = 4096;
  f.source_name = "m.gguf";
  artifact::ServeSettings s{"fp8", 16, 4096, "cpu"};
  EXPECT_TRUE(artifact::check_serve_settings(f, s, "art").ok());

  s.kv_type = "f16";
  auto st = artifact::check_serve_settings(f, s, "art");
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.message().find("kv_type differs"), std::string::npos) << st.message();
  EXPECT_NE(st.message().find("--kv-type fp8"), std::string::npos);
  EXPECT_NE(st.message().find("kiln bake --model m.gguf --out art --kv-type f16"),
            std::string::npos)
      << st.message();
  EXPECT_NE(st.message().find("--quant q4_k_m"), std::string::npos);

  s = {"fp8", 32, 4096, "cpu"};
  st = artifact::check_serve_settings(f, s, "art");
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.message().find("kv_block_size differs"), std::string::npos);
  EXPECT_NE(st.message().find("--kv-block-size 32"), std::string::npos);

  s = {"fp8", 16, 2048, "cpu"};
  st = artifact::check_serve_settings(f, s, "art");
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.message().find("ctx_size differs"), std::string::npos);
  EXPECT_NE(st.message().find("--ctx-size 2048"), std::string::npos);

  auto back = artifact::fingerprint_from_json(artifact::to_json(f));
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(back->kv_type, "fp8");
  EXPECT_EQ(back->source_name, "m.gguf");
  EXPECT_FALSE(artifact::fingerprint_from_json(nlohmann::json::object()).ok());
}

// A whole directory: both files verified and tied together.
TEST(ArtifactDir, OpensVerifiedAndRefusesMixedOrDamagedFiles) {
  TempDir d;
  const std::string src = write_source(d);
  fs::create_directories(d.path / "art");
  auto w = bake(src, d / "art/weights.bin", "cpu");
  ASSERT_TRUE(w.ok()) << w.message();
  std::vector<uint8_t> storage;
  artifact::WarmData warm = sample_warm(storage);
  warm.fingerprint.model_hash = w->header.model_hash;
  warm.fingerprint.weights_digest = w->integrity.digest;
  ThreadPool pool(2);
  ASSERT_TRUE(artifact::write_warm_file(d / "art/warm.bin", warm, pool).ok());
  EXPECT_TRUE(artifact::is_artifact_dir(d / "art"));
  EXPECT_FALSE(artifact::is_artifact_dir(src));
  auto a = artifact::open_artifact(d / "art", 2);
  ASSERT_TRUE(a.ok()) << a.message();
  EXPECT_EQ(a->weights.target, "cpu");
  EXPECT_EQ(a->warm->data().prefixes.blocks.size(), 3u);
  ASSERT_NE(a->model, nullptr);

  // warm.bin of another bake (other weights) is refused.
  warm.fingerprint.weights_digest = "0123";
  ASSERT_TRUE(artifact::write_warm_file(d / "art/warm.bin", warm, pool).ok());
  auto mixed = artifact::open_artifact(d / "art", 2);
  ASSERT_FALSE(mixed.ok());
  EXPECT_NE(mixed.message().find("other weights"), std::string::npos) << mixed.message();
  warm.fingerprint.weights_digest = w->integrity.digest;
  ASSERT_TRUE(artifact::write_warm_file(d / "art/warm.bin", warm, pool).ok());

  // A flipped byte in the weights' body: refused, or, when the loader checks
  // the body itself, found by verify_chunk on the chunk that holds it.
  std::vector<uint8_t> bytes = read_all(d / "art/weights.bin");
  const uint64_t at = a->weights_integrity.header_bytes + 5;
  bytes[size_t(at)] ^= 0x02;
  write_all(d / "art/weights.bin", bytes);
  auto bad = artifact::open_artifact(d / "art", 2);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.message().find("never served"), std::string::npos) << bad.message();
  auto lazy = artifact::open_artifact(d / "art", 2, /*verify_weights_body=*/false);
  ASSERT_TRUE(lazy.ok()) << lazy.message();
  const auto& in = lazy->weights_integrity;
  const auto chunk = std::span<const uint8_t>(bytes).subspan(
      size_t(in.header_bytes), size_t(std::min(in.chunk_size, in.body_bytes)));
  EXPECT_FALSE(artifact::verify_chunk(in, 0, chunk, "weights.bin").ok());
  fs::remove(d / "art/warm.bin");
  auto missing = artifact::open_artifact(d / "art", 2);
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.message().find("warm.bin is missing"), std::string::npos);
}

}  // namespace
