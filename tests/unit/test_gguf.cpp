// GGUF reader/writer: round trips, real files, and one handcrafted corrupt
// file per failure the reader must catch (each with a clear message).
#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>

#include "common/paths.h"
#include "kiln/gguf/gguf.h"

using namespace kiln;
using namespace kiln::gguf;

namespace {

std::vector<uint8_t> f32_bytes(const std::vector<float>& v) {
  std::vector<uint8_t> b(v.size() * 4);
  std::memcpy(b.data(), v.data(), b.size());
  return b;
}

// A small valid file: a few metadata types and two f32 tensors.
Writer small_writer() {
  Writer w;
  w.set_string("general.architecture", "llama");
  w.set_u32("llama.block_count", 2);
  w.set_f32("llama.rope.freq_base", 10000.0f);
  w.set_bool("tokenizer.ggml.add_bos_token", true);
  w.set("tokenizer.ggml.tokens", make_string_array({"a", "b", "c"}));
  EXPECT_TRUE(w.add_tensor("t0", DType::F32, {4, 2}, f32_bytes({1, 2, 3, 4, 5, 6, 7, 8})).ok());
  EXPECT_TRUE(w.add_tensor("t1", DType::F32, {3}, f32_bytes({9, 10, 11})).ok());
  return w;
}

std::string parse_error(const std::vector<uint8_t>& bytes) {
  auto r = File::parse(bytes, "corrupt.gguf");
  EXPECT_FALSE(r.ok()) << "corrupt file was accepted";
  return r.ok() ? std::string() : r.message();
}

void put_u32(std::vector<uint8_t>& b, size_t at, uint32_t v) { std::memcpy(&b[at], &v, 4); }
void put_u64(std::vector<uint8_t>& b, size_t at, uint64_t v) { std::memcpy(&b[at], &v, 8); }

// Byte offset of the first occurrence of a string's bytes (for locating fields).
size_t find_bytes(const std::vector<uint8_t>& b, const std::string& s) {
  auto it = std::search(b.begin(), b.end(), s.begin(), s.end());
  EXPECT_NE(it, b.end()) << s;
  return size_t(it - b.begin());
}

}  // namespace

TEST(Gguf, RoundTripAllValueTypes) {
  Writer w;
  w.set("u8", Value{uint8_t(7)});
  w.set("i8", Value{int8_t(-7)});
  w.set("u16", Value{uint16_t(65000)});
  w.set("i16", Value{int16_t(-32000)});
  w.set("u32", Value{uint32_t(4000000000u)});
  w.set("i32", Value{int32_t(-2000000000)});
  w.set("f32", Value{1.5f});
  w.set("bool", Value{true});
  w.set("str", Value{std::string("héllo")});
  w.set("u64", Value{uint64_t(1) << 40});
  w.set("i64", Value{int64_t(-1) << 40});
  w.set("f64", Value{0.25});
  Array inner;
  inner.elem_type = ValueType::I32;
  inner.items = {Value{int32_t(1)}, Value{int32_t(2)}};
  Array outer;
  outer.elem_type = ValueType::ARRAY;
  outer.items = {Value{inner}, Value{inner}};
  w.set("nested", Value{outer});
  const auto bytes = w.to_bytes();
  auto f = File::parse(bytes);
  ASSERT_TRUE(f.ok()) << f.message();
  EXPECT_EQ((*f)->version(), 3u);
  EXPECT_EQ((*f)->get_int("u8"), 7);
  EXPECT_EQ((*f)->get_int("i8"), -7);
  EXPECT_EQ((*f)->get_int("u16"), 65000);
  EXPECT_EQ((*f)->get_int("i16"), -32000);
  EXPECT_EQ((*f)->get_int("u32"), 4000000000ll);
  EXPECT_EQ((*f)->get_int("i32"), -2000000000);
  EXPECT_EQ((*f)->get_float("f32"), 1.5);
  EXPECT_EQ((*f)->get_bool("bool"), true);
  EXPECT_EQ((*f)->get_string("str"), "héllo");
  EXPECT_EQ((*f)->get_int("u64"), int64_t(1) << 40);
  EXPECT_EQ((*f)->get_int("i64"), int64_t(-1) << 40);
  EXPECT_EQ((*f)->get_float("f64"), 0.25);
  const Array* n = (*f)->get_array("nested");
  ASSERT_NE(n, nullptr);
  ASSERT_EQ(n->items.size(), 2u);
  ASSERT_NE(n->items[1].as_array(), nullptr);
  EXPECT_EQ(n->items[1].as_array()->items[1].as_int(), 2);
  EXPECT_EQ((*f)->metadata()[0].first, "u8");  // file order kept
  EXPECT_FALSE((*f)->get_int("str").has_value());
  EXPECT_EQ((*f)->find("missing"), nullptr);
}

TEST(Gguf, RoundTripTensorsAndAlignment) {
  for (uint32_t align : {32u, 64u, 4096u}) {
    Writer w = small_writer();
    w.set_alignment(align);
    const auto bytes = w.to_bytes();
    auto f = File::parse(bytes);
    ASSERT_TRUE(f.ok()) << f.message();
    EXPECT_EQ((*f)->alignment(), align);
    EXPECT_EQ((*f)->data_offset() % align, 0u);
    const TensorInfo* t = (*f)->tensor("t0");
    ASSERT_NE(t, nullptr);
    EXPECT_EQ(t->ne, (std::vector<int64_t>{4, 2}));
    EXPECT_EQ(t->n_rows(), 2);
    float v[8];
    std::memcpy(v, t->data, 32);
    EXPECT_EQ(v[7], 8.0f);
    EXPECT_EQ(uintptr_t(t->data - bytes.data()) % align, 0u);
    const TensorInfo* t1 = (*f)->tensor("t1");
    ASSERT_NE(t1, nullptr);
    std::memcpy(v, t1->data, 12);
    EXPECT_EQ(v[2], 11.0f);
  }
}

TEST(Gguf, WriteFileAtomicallyAndReopen) {
  const auto dir = std::filesystem::temp_directory_path() / "kiln_test_gguf";
  std::filesystem::create_directories(dir);
  const std::string path = (dir / "small.gguf").string();
  ASSERT_TRUE(small_writer().write(path).ok());
  auto f = File::open(path);
  ASSERT_TRUE(f.ok()) << f.message();
  EXPECT_EQ((*f)->tensors().size(), 2u);
  for (auto& e : std::filesystem::directory_iterator(dir))
    EXPECT_EQ(e.path().string().find(".tmp."), std::string::npos) << "temp file left behind";
  // A path in a missing directory fails cleanly and leaves nothing behind.
  auto st = small_writer().write((dir / "no/such/dir/x.gguf").string());
  EXPECT_FALSE(st.ok());
  std::filesystem::remove_all(dir);
}

TEST(Gguf, StreamedTensorsMatchCopiedOnes) {
  Writer a = small_writer();
  Writer b;
  b.set_string("general.architecture", "llama");
  b.set_u32("llama.block_count", 2);
  b.set_f32("llama.rope.freq_base", 10000.0f);
  b.set_bool("tokenizer.ggml.add_bos_token", true);
  b.set("tokenizer.ggml.tokens", make_string_array({"a", "b", "c"}));
  int calls = 0;
  ASSERT_TRUE(b.add_tensor_fn("t0", DType::F32, {4, 2}, [&](std::span<uint8_t> out) {
                 ++calls;
                 const auto v = f32_bytes({1, 2, 3, 4, 5, 6, 7, 8});
                 ASSERT_EQ(out.size(), v.size());
                 std::copy(v.begin(), v.end(), out.begin());
               }).ok());
  ASSERT_TRUE(b.add_tensor_fn("t1", DType::F32, {3}, [&](std::span<uint8_t> out) {
                 ++calls;
                 const auto v = f32_bytes({9, 10, 11});
                 std::copy(v.begin(), v.end(), out.begin());
               }).ok());
  EXPECT_EQ(a.to_bytes(), b.to_bytes());
  EXPECT_EQ(calls, 2);
}

TEST(Gguf, WriterRejectsBadTensors) {
  Writer w;
  EXPECT_FALSE(w.add_tensor("q", DType::Q4_0, {31}, std::vector<uint8_t>(18)).ok());
  EXPECT_FALSE(w.add_tensor("x", DType::F32, {4}, std::vector<uint8_t>(15)).ok());
  EXPECT_TRUE(w.add_tensor("x", DType::F32, {4}, std::vector<uint8_t>(16)).ok());
  EXPECT_FALSE(w.add_tensor("x", DType::F32, {4}, std::vector<uint8_t>(16)).ok());
}

TEST(Gguf, OpensEveryRealTestFile) {
  for (const char* rel :
       {"vocab/ggml-vocab-llama-spm.gguf", "vocab/ggml-vocab-llama-bpe.gguf",
        "vocab/ggml-vocab-qwen2.gguf", "vocab/ggml-vocab-bert-bge.gguf",
        "reference/spm-llama-f16.gguf", "reference/spm-llama-q4_k_m.gguf",
        "reference/spm-small-q5_1.gguf", "reference/llama3-f16.gguf", "reference/qwen2-f16.gguf"}) {
    auto f = File::open(test::testdata(rel));
    ASSERT_TRUE(f.ok()) << rel << ": " << f.message();
    EXPECT_TRUE((*f)->get_string("general.architecture").has_value()) << rel;
    EXPECT_NE((*f)->get_array("tokenizer.ggml.tokens"), nullptr) << rel;
  }
  auto f = File::open(test::testdata("reference/spm-llama-q4_k_m.gguf"));
  ASSERT_TRUE(f.ok());
  const TensorInfo* emb = (*f)->tensor("token_embd.weight");
  ASSERT_NE(emb, nullptr);
  EXPECT_EQ(emb->ne[0], 256);
  EXPECT_EQ(emb->ne[1], 32000);
}

TEST(Gguf, MissingFile) {
  auto f = File::open("/nonexistent/model.gguf");
  ASSERT_FALSE(f.ok());
  EXPECT_NE(f.message().find("cannot open"), std::string::npos);
}

// --- corrupt files: one per failure -------------------------------------

TEST(GgufCorrupt, TooShort) {
  EXPECT_NE(parse_error({'G', 'G'}).find("too short"), std::string::npos);
  EXPECT_NE(parse_error({}).find("too short"), std::string::npos);
}

TEST(GgufCorrupt, BadMagic) {
  auto b = small_writer().to_bytes();
  b[0] = 'X';
  EXPECT_NE(parse_error(b).find("bad magic"), std::string::npos);
}

TEST(GgufCorrupt, BadVersion) {
  auto b = small_writer().to_bytes();
  put_u32(b, 4, 1);
  EXPECT_NE(parse_error(b).find("version 1"), std::string::npos);
  put_u32(b, 4, 7);
  EXPECT_NE(parse_error(b).find("unsupported GGUF version 7"), std::string::npos);
  put_u32(b, 4, 0x03000000u);
  EXPECT_NE(parse_error(b).find("big-endian"), std::string::npos);
}

TEST(GgufCorrupt, Version2Accepted) {
  auto b = small_writer().to_bytes();
  put_u32(b, 4, 2);
  EXPECT_TRUE(File::parse(b).ok());
}

TEST(GgufCorrupt, HugeCounts) {
  auto b = small_writer().to_bytes();
  put_u64(b, 16, uint64_t(1) << 60);  // n_kv
  EXPECT_NE(parse_error(b).find("metadata count"), std::string::npos);
  b = small_writer().to_bytes();
  put_u64(b, 8, uint64_t(1) << 62);  // n_tensors
  EXPECT_NE(parse_error(b).find("tensor count"), std::string::npos);
}

TEST(GgufCorrupt, StringLengthPastEnd) {
  auto b = small_writer().to_bytes();
  put_u64(b, 24, uint64_t(1) << 40);  // length of the first key
  const auto msg = parse_error(b);
  EXPECT_NE(msg.find("metadata key has length"), std::string::npos) << msg;
  EXPECT_NE(msg.find("offset 24"), std::string::npos) << msg;
}

TEST(GgufCorrupt, ArrayLengthPastEnd) {
  auto b = small_writer().to_bytes();
  const size_t key = find_bytes(b, "tokenizer.ggml.tokens");
  // key bytes, then u32 type (ARRAY), u32 elem type, u64 count
  put_u64(b, key + 21 + 8, uint64_t(1) << 50);
  EXPECT_NE(parse_error(b).find("claims"), std::string::npos);
}

TEST(GgufCorrupt, UnknownValueType) {
  auto b = small_writer().to_bytes();
  const size_t key = find_bytes(b, "general.architecture");
  put_u32(b, key + 20, 99);
  EXPECT_NE(parse_error(b).find("unknown value type 99"), std::string::npos);
}

TEST(GgufCorrupt, UnknownArrayElementType) {
  auto b = small_writer().to_bytes();
  const size_t key = find_bytes(b, "tokenizer.ggml.tokens");
  put_u32(b, key + 21 + 4, 42);
  EXPECT_NE(parse_error(b).find("unknown element type 42"), std::string::npos);
}

TEST(GgufCorrupt, BadBool) {
  auto b = small_writer().to_bytes();
  const size_t key = find_bytes(b, "tokenizer.ggml.add_bos_token");
  b[key + 28 + 4] = 5;
  EXPECT_NE(parse_error(b).find("bool value"), std::string::npos);
}

TEST(GgufCorrupt, DuplicateKey) {
  Writer w;
  w.set_u32("a.b", 1);
  w.set_u32("a.c", 2);
  auto d = w.to_bytes();
  d[find_bytes(d, "a.c") + 2] = 'b';
  EXPECT_NE(parse_error(d).find("duplicate metadata key 'a.b'"), std::string::npos);
}

TEST(GgufCorrupt, DuplicateTensorName) {
  Writer w;
  ASSERT_TRUE(w.add_tensor("aa", DType::F32, {1}, f32_bytes({1})).ok());
  ASSERT_TRUE(w.add_tensor("ab", DType::F32, {1}, f32_bytes({2})).ok());
  auto b = w.to_bytes();
  b[find_bytes(b, "ab") + 1] = 'a';
  EXPECT_NE(parse_error(b).find("duplicate tensor name 'aa'"), std::string::npos);
}

TEST(GgufCorrupt, UnknownTensorType) {
  auto b = small_writer().to_bytes();
  const size_t name = find_bytes(b, "t1");
  // name, u32 n_dims (1), u64 ne0, u32 type
  put_u32(b, name + 2 + 4 + 8, 77);
  EXPECT_NE(parse_error(b).find("unknown type id 77"), std::string::npos);
}

TEST(GgufCorrupt, BadDimensionCount) {
  auto b = small_writer().to_bytes();
  const size_t name = find_bytes(b, "t1");
  put_u32(b, name + 2, 9);
  EXPECT_NE(parse_error(b).find("9 dimensions"), std::string::npos);
}

TEST(GgufCorrupt, ElementCountOverflow) {
  Writer w;
  ASSERT_TRUE(w.add_tensor("big", DType::F32, {1, 1, 1}, f32_bytes({1})).ok());
  auto b = w.to_bytes();
  const size_t name = find_bytes(b, "big");
  put_u64(b, name + 3 + 4, uint64_t(1) << 40);
  put_u64(b, name + 3 + 12, uint64_t(1) << 40);
  EXPECT_NE(parse_error(b).find("overflows"), std::string::npos);
}

TEST(GgufCorrupt, RowNotMultipleOfBlock) {
  Writer w;
  ASSERT_TRUE(w.add_tensor("q", DType::Q8_0, {32}, std::vector<uint8_t>(34)).ok());
  auto b = w.to_bytes();
  const size_t name = find_bytes(b, "q");
  put_u64(b, name + 1 + 4, 31);
  EXPECT_NE(parse_error(b).find("not a multiple of the block size"), std::string::npos);
}

TEST(GgufCorrupt, MisalignedOffset) {
  auto b = small_writer().to_bytes();
  const size_t name = find_bytes(b, "t1");
  put_u64(b, name + 2 + 4 + 8 + 4, 33);
  EXPECT_NE(parse_error(b).find("not a multiple of the alignment"), std::string::npos);
}

TEST(GgufCorrupt, DataPastEnd) {
  auto b = small_writer().to_bytes();
  const size_t name = find_bytes(b, "t1");
  put_u64(b, name + 2 + 4 + 8 + 4, 1 << 20);
  EXPECT_NE(parse_error(b).find("past the end"), std::string::npos);
}

TEST(GgufCorrupt, Truncated) {
  const auto full = small_writer().to_bytes();
  // Every truncation point gives an error, never a crash.
  for (size_t n = 0; n + 1 < full.size(); ++n) {
    std::vector<uint8_t> b(full.begin(), full.begin() + long(n));
    auto r = File::parse(b);
    EXPECT_FALSE(r.ok()) << "truncated at " << n << " accepted";
  }
}

TEST(GgufCorrupt, OverlappingTensors) {
  auto b = small_writer().to_bytes();
  const size_t name = find_bytes(b, "t1");
  put_u64(b, name + 2 + 4 + 8 + 4, 0);  // t1 now at offset 0, on top of t0
  EXPECT_NE(parse_error(b).find("overlap"), std::string::npos);
}

TEST(GgufCorrupt, BadAlignment) {
  Writer w = small_writer();
  w.set_alignment(64);
  auto b = w.to_bytes();
  const size_t key = find_bytes(b, "general.alignment");
  put_u32(b, key + 17 + 4, 48);
  EXPECT_NE(parse_error(b).find("power of two"), std::string::npos);
}

TEST(GgufCorrupt, DeepNesting) {
  // Arrays nested 12 deep: refused, not a stack overflow.
  std::vector<uint8_t> b = {'G', 'G', 'U', 'F'};
  auto u32 = [&](uint32_t v) { b.insert(b.end(), (uint8_t*)&v, (uint8_t*)&v + 4); };
  auto u64 = [&](uint64_t v) { b.insert(b.end(), (uint8_t*)&v, (uint8_t*)&v + 8); };
  u32(3); u64(0); u64(1);
  u64(1); b.push_back('k');
  u32(9);
  for (int i = 0; i < 12; ++i) { u32(9); u64(1); }
  u32(0); u64(0);
  EXPECT_NE(parse_error(b).find("nested deeper"), std::string::npos);
}

TEST(GgufCorrupt, RandomByteFlipsNeverCrash) {
  const auto full = small_writer().to_bytes();
  uint64_t s = 12345;
  for (int i = 0; i < 3000; ++i) {
    auto b = full;
    for (int k = 0; k < 3; ++k) {
      s = s * 6364136223846793005ull + 1442695040888963407ull;
      b[(s >> 33) % b.size()] ^= uint8_t(s >> 20);
    }
    auto r = File::parse(b);  // either outcome is fine; it must not crash
    if (r.ok()) {
      for (auto& t : (*r)->tensors())
        EXPECT_LE(t.data + t.n_bytes, b.data() + b.size());
    }
  }
}

// ---- a file still arriving (kiln serve --model URL) ----------------------------

namespace {

// A whole file on disk read through a RangeWait that records what the
// reader asked for: the stand-in for a download (test_fetch_overlap runs the
// real one).
struct ArrivingFile {
  std::filesystem::path path;
  int fd = -1;
  std::vector<std::pair<uint64_t, uint64_t>> asked;
  explicit ArrivingFile(const Writer& w) {
    path = std::filesystem::temp_directory_path() /
           ("kiln_test_gguf_arriving_" + std::to_string(::getpid()) + ".gguf");
    EXPECT_TRUE(w.write(path.string()).ok());
    fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  }
  ~ArrivingFile() {
    ::close(fd);
    std::filesystem::remove(path);
  }
  RangeWait recorder() {
    return [this](uint64_t off, uint64_t len) {
      asked.push_back({off, len});
      return Status::success();
    };
  }
};

}  // namespace

TEST(GgufArriving, HeaderWaitsForGrowingPrefixesOnly) {
  // ~400 KB of metadata (several waits) and 1 MiB of tensor data behind it.
  Writer w = small_writer();
  w.set("test.pieces", make_string_array(std::vector<std::string>(20000, "some-token-piece")));
  ASSERT_TRUE(w.add_tensor("big", DType::F32, {1024, 256},
                           std::vector<uint8_t>(1024 * 256 * 4, 7)).ok());
  ArrivingFile af(w);
  auto f = File::open_arriving(af.fd, "arriving.gguf", af.recorder());
  ASSERT_TRUE(f.ok()) << f.message();
  auto ref = File::open(af.path.string());
  ASSERT_TRUE(ref.ok()) << ref.message();
  // Contiguous prefixes from byte 0, each at least doubling, ending before
  // twice the header: never the tensor data it does not need.
  ASSERT_GE(af.asked.size(), 3u);
  uint64_t end = 0;
  for (const auto& [off, len] : af.asked) {
    EXPECT_EQ(off, end);
    EXPECT_GE(off + len, 2 * end);
    end = off + len;
  }
  EXPECT_GE(end, (*f)->data_offset() - 64);
  EXPECT_LT(end, 2 * (*f)->data_offset());
  EXPECT_LT(end, (*f)->file_size());
  // The same file as a plain open.
  EXPECT_EQ((*f)->metadata().size(), (*ref)->metadata().size());
  EXPECT_EQ((*f)->data_offset(), (*ref)->data_offset());
  ASSERT_EQ((*f)->tensors().size(), (*ref)->tensors().size());
  EXPECT_EQ((*f)->get_array("test.pieces")->items.size(), 20000u);
  // Readers of tensor data wait for exactly their bytes; other memory (a
  // converted copy) has nothing to wait for.
  af.asked.clear();
  const TensorInfo* big = (*f)->tensor("big");
  ASSERT_TRUE((*f)->await_at(big->data, big->n_bytes).ok());
  ASSERT_EQ(af.asked.size(), 1u);
  EXPECT_EQ(af.asked[0].first, (*f)->data_offset() + big->offset);
  EXPECT_EQ(af.asked[0].second, big->n_bytes);
  float elsewhere[4];
  ASSERT_TRUE((*f)->await_at(elsewhere, sizeof elsewhere).ok());
  EXPECT_EQ(af.asked.size(), 1u);
  EXPECT_TRUE((*f)->arriving());
  EXPECT_FALSE((*ref)->arriving());
  EXPECT_TRUE((*ref)->await(0, 1).ok());
  // The descriptor path reopens the very file, whatever its name becomes.
  EXPECT_EQ((*f)->read_path().rfind("/proc/self/fd/", 0), 0u);
  EXPECT_EQ(std::filesystem::file_size((*f)->read_path()), (*f)->file_size());
  EXPECT_EQ((*ref)->read_path(), af.path.string());
}

TEST(GgufArriving, AFailedDownloadStopsTheParseWithItsError) {
  ArrivingFile af(small_writer());
  auto f = File::open_arriving(af.fd, "arriving.gguf", [](uint64_t, uint64_t) -> Status {
    return make_error("https://host/m.gguf: sha256 mismatch");
  });
  ASSERT_FALSE(f.ok());
  EXPECT_NE(f.message().find("sha256 mismatch"), std::string::npos) << f.message();
}
