// kiln fetch: checksums and URL parsing, then whole downloads against a
// loopback server (tests/unit/common/fetch_test_server.h) with injected
// faults: parallel and byte-identical, resumed, retried, refused with a clear
// message, corrupted bytes always caught; gs:// with a metadata-server
// token; and the 1-vs-8-connection rate under per-connection throttling.
#include <gtest/gtest.h>
#include <openssl/evp.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <random>
#include <set>
#include <thread>

#include "common/temp_dir.h"
#include "common/fetch_test_server.h"
#include "common/paths.h"
#include "kiln/core/byte_size.h"
#include "kiln/fetch/arrival.h"
#include "kiln/fetch/crc32c.h"
#include "kiln/fetch/digest.h"
#include "kiln/fetch/fetch.h"
#include "kiln/fetch/fetch_state.h"
#include "kiln/fetch/remote_object.h"
#include "kiln/fetch/remote_url.h"

namespace fs = std::filesystem;
using namespace kiln::fetch;
using kiln::base64_decode;
using kiln::base64_encode;
using kiln::test::FetchTestServer;

namespace {

std::string random_blob(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::string s(n, '\0');
  for (auto& c : s) c = char(rng());
  return s;
}

std::string digest(const EVP_MD* md, const std::string& data) {
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  EVP_Digest(data.data(), data.size(), out, &n, md, nullptr);
  return std::string(reinterpret_cast<char*>(out), n);
}

std::string slurp(const std::string& p) {
  std::ifstream f(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), {});
}

// A fresh directory per test.
struct TempDir : kiln::test::TempDir {
  TempDir() : kiln::test::TempDir("kiln-fetch-test") {}
};

// Quiet, quick options: small chunks so an 8 MiB blob spans many, and short
// backoffs so retries do not dominate the test time.
FetchOptions quick(int connections = 8, uint64_t chunk = 512 << 10) {
  FetchOptions o;
  o.connections = connections;
  o.chunk_size = chunk;
  o.max_attempts = 5;
  o.backoff_initial_s = 0.01;
  o.backoff_max_s = 0.05;
  o.progress = ProgressMode::none;
  o.log = [](const std::string&) {};
  o.access_token = "";  // tests never look at the environment or a real metadata server
  return o;
}

constexpr size_t kBlob = 8u << 20;

}  // namespace

// ---- pieces ------------------------------------------------------------------

TEST(Crc32c, KnownVectors) {
  // RFC 3720 B.4 and the common check value of CRC-32C.
  EXPECT_EQ(crc32c_update(0, "123456789", 9), 0xE3069283u);
  const std::string zeros(32, '\0'), ones(32, '\xff');
  EXPECT_EQ(crc32c_update(0, zeros.data(), 32), 0x8A9136AAu);
  EXPECT_EQ(crc32c_update(0, ones.data(), 32), 0x62A8AB43u);
  EXPECT_EQ(crc32c_update_portable(0, "123456789", 9), 0xE3069283u);
}

TEST(Crc32c, HardwareMatchesTableAndStreams) {
  const std::string data = random_blob(100003, 7);
  for (size_t n : {0, 1, 7, 8, 9, 63, 4096, 100003}) {
    EXPECT_EQ(crc32c_update(0, data.data(), n), crc32c_update_portable(0, data.data(), n)) << n;
  }
  // Piecewise updates give the one-shot CRC (how chunks are hashed).
  uint32_t c = 0;
  for (size_t off = 0; off < data.size(); off += 1237)
    c = crc32c_update(c, data.data() + off, std::min<size_t>(1237, data.size() - off));
  EXPECT_EQ(c, crc32c_update(0, data.data(), data.size()));
}

// The one parser of byte counts (--chunk-size, --kv-memory, --cache-max-bytes, --gpu-memory).
TEST(ByteSize, BinaryUnitsAndRejections) {
  EXPECT_EQ(kiln::parse_byte_size("1048576"), 1048576u);
  EXPECT_EQ(kiln::parse_byte_size("64K"), 65536u);
  EXPECT_EQ(kiln::parse_byte_size("64M"), uint64_t(64) << 20);
  EXPECT_EQ(kiln::parse_byte_size("64MiB"), uint64_t(64) << 20);
  EXPECT_EQ(kiln::parse_byte_size("4gb"), uint64_t(4) << 30);
  EXPECT_EQ(kiln::parse_byte_size("1.5G"), uint64_t(3) << 29);
  EXPECT_EQ(kiln::parse_byte_size("2T"), uint64_t(2) << 40);
  EXPECT_EQ(kiln::parse_byte_size("12B"), 12u);
  for (const char* bad : {"", "M", "0", "-4G", "4X", "4MM", "abc", "nan"})
    EXPECT_FALSE(kiln::parse_byte_size(bad).has_value()) << bad;
}

TEST(Digest, Base64AndHex) {
  EXPECT_EQ(crc32c_to_base64(0xE3069283u), "4waSgw==");
  EXPECT_EQ(*crc32c_from_base64("4waSgw=="), 0xE3069283u);
  EXPECT_FALSE(crc32c_from_base64("4waS").ok());
  EXPECT_FALSE(base64_decode("a$b=").ok());
  for (std::string s : {"", "a", "ab", "abc", "abcd", "hello world"})
    EXPECT_EQ(*base64_decode(base64_encode(s)), s);
  EXPECT_EQ(to_hex("\x01\xab"), "01ab");
  EXPECT_EQ(*from_hex("01AB"), "\x01\xab");
  EXPECT_FALSE(from_hex("0g").has_value());
  ExpectedChecksums e;
  parse_goog_hash("crc32c=4waSgw==, md5=" + base64_encode(std::string(16, 'x')), e);
  EXPECT_EQ(*e.crc32c, 0xE3069283u);
  EXPECT_EQ(e.md5, std::string(16, 'x'));
}

TEST(RemoteUrl, ParsesAndMapsGcs) {
  EXPECT_TRUE(is_remote_url("gs://b/o"));
  EXPECT_TRUE(is_remote_url("https://h/x"));
  EXPECT_FALSE(is_remote_url("/models/x.gguf"));
  auto u = parse_remote_url("gs://my-bucket/models/llama 3.gguf");
  ASSERT_TRUE(u.ok());
  EXPECT_EQ(u->bucket, "my-bucket");
  EXPECT_EQ(u->object, "models/llama 3.gguf");
  EXPECT_EQ(gcs_metadata_url("http://h:1/", *u),
            "http://h:1/storage/v1/b/my-bucket/o/models%2Fllama%203.gguf");
  EXPECT_EQ(gcs_media_url("http://h:1", *u, "42"),
            "http://h:1/storage/v1/b/my-bucket/o/models%2Fllama%203.gguf?alt=media&generation=42");
  EXPECT_EQ(remote_file_name(*u), "llama 3.gguf");
  EXPECT_EQ(remote_file_name(*parse_remote_url("https://h/a/b.gguf?sig=1")), "b.gguf");
  EXPECT_FALSE(parse_remote_url("gs://bucket-only").ok());
  EXPECT_FALSE(parse_remote_url("ftp://h/x").ok());
  EXPECT_FALSE(parse_remote_url("https:///x").ok());
}

TEST(RemoteObject, ContentRange) {
  uint64_t f, l, t;
  bool known;
  ASSERT_TRUE(parse_content_range("bytes 0-0/123", f, l, t, known));
  EXPECT_TRUE(known);
  EXPECT_EQ(t, 123u);
  ASSERT_TRUE(parse_content_range("bytes 5-9/*", f, l, t, known));
  EXPECT_FALSE(known);
  EXPECT_EQ(l, 9u);
  EXPECT_FALSE(parse_content_range("bytes 9-5/10", f, l, t, known));
  EXPECT_FALSE(parse_content_range("items 0-1/2", f, l, t, known));
}

// ---- whole downloads -------------------------------------------------------------

TEST(Fetch, ParallelPullIsByteIdenticalAndVerified) {
  FetchTestServer srv(random_blob(kBlob, 1));
  TempDir dir;
  auto o = quick();
  o.sha256_hex = to_hex(digest(EVP_sha256(), srv.blob()));
  std::mutex mu;
  std::set<uint64_t> offsets;
  FetchStart start;
  o.on_start = [&](const FetchStart& s) { start = s; };
  auto r = fetch_to_file(srv.url(), dir.file(), o, [&](uint64_t off, uint64_t len) {
    std::lock_guard<std::mutex> lock(mu);
    EXPECT_EQ(len, 512u << 10);
    offsets.insert(off);
  });
  ASSERT_TRUE(r.ok()) << r.message();
  EXPECT_EQ(slurp(dir.file()), srv.blob());
  EXPECT_EQ(r->verified, "sha256");
  EXPECT_EQ(r->connections, 8);
  EXPECT_EQ(offsets.size(), kBlob / (512 << 10));
  EXPECT_EQ(start.size, kBlob);
  EXPECT_EQ(start.data_path, partial_path(dir.file()));
  // The real mechanism ran: one ranged GET per chunk (+ the probe), over
  // several connections open at once.
  EXPECT_EQ(srv.counters.range_requests.load(), 16 + 1);
  EXPECT_GE(srv.counters.max_open.load(), 2);
  EXPECT_FALSE(fs::exists(partial_path(dir.file())));
  EXPECT_FALSE(fs::exists(state_path(dir.file())));
}

TEST(Fetch, DestinationDirectoryTakesTheUrlName) {
  FetchTestServer srv(random_blob(100000, 2));
  TempDir dir;
  auto r = fetch_to_file(srv.url("/m/tiny.gguf?x=1"), dir.path.string(), quick());
  ASSERT_TRUE(r.ok()) << r.message();
  EXPECT_EQ(r->path, dir.file("tiny.gguf"));
  EXPECT_EQ(slurp(r->path), srv.blob());
}

TEST(Fetch, ResumesAnInterruptedPull) {
  FetchTestServer srv(random_blob(kBlob, 3));
  TempDir dir;
  auto o = quick(2);
  std::atomic<bool> cancel{false};
  std::atomic<int> n_done{0};
  o.cancel = &cancel;
  auto first = fetch_to_file(srv.url(), dir.file(), o, [&](uint64_t, uint64_t) {
    if (++n_done == 5) cancel = true;  // as if the process were stopped here
  });
  ASSERT_FALSE(first.ok());
  EXPECT_NE(first.message().find("resume"), std::string::npos) << first.message();
  ASSERT_TRUE(fs::exists(partial_path(dir.file())));
  auto st = load_fetch_state(state_path(dir.file()));
  ASSERT_TRUE(st.has_value());
  const auto n_saved = std::count(st->done.begin(), st->done.end(), true);
  EXPECT_GE(n_saved, 5);
  EXPECT_LT(n_saved, 16);

  // The cancelled pull's connections may still be sending their last 16 KiB
  // piece: count from when the server has closed them all.
  for (int i = 0; i < 400 && srv.counters.open_now.load() > 0; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  const int64_t sent_before = srv.counters.body_bytes.load();
  std::set<uint64_t> offsets;
  std::mutex mu;
  o.cancel = nullptr;
  auto second = fetch_to_file(srv.url(), dir.file(), o, [&](uint64_t off, uint64_t) {
    std::lock_guard<std::mutex> lock(mu);
    offsets.insert(off);
  });
  ASSERT_TRUE(second.ok()) << second.message();
  EXPECT_EQ(slurp(dir.file()), srv.blob());
  EXPECT_EQ(second->bytes_resumed, uint64_t(n_saved) * (512 << 10));
  EXPECT_EQ(second->bytes_downloaded, kBlob - second->bytes_resumed);
  // Only the missing chunks crossed the wire (plus the 1-byte probe), and
  // the consumer still heard of every chunk.
  EXPECT_EQ(srv.counters.body_bytes.load() - sent_before,
            int64_t(kBlob - second->bytes_resumed) + 1);
  EXPECT_EQ(offsets.size(), 16u);
}

TEST(Fetch, ResumeStartsAfreshWhenTheRemoteFileChanged) {
  FetchTestServer srv(random_blob(kBlob, 4));
  TempDir dir;
  auto o = quick(1);
  std::atomic<bool> cancel{false};
  o.cancel = &cancel;
  auto first = fetch_to_file(srv.url(), dir.file(), o, [&](uint64_t, uint64_t) { cancel = true; });
  ASSERT_FALSE(first.ok());
  srv.etag = "\"v2\"";
  o.cancel = nullptr;
  auto second = fetch_to_file(srv.url(), dir.file(), o);
  ASSERT_TRUE(second.ok()) << second.message();
  EXPECT_EQ(second->bytes_resumed, 0u);
  EXPECT_EQ(slurp(dir.file()), srv.blob());
}

TEST(FetchFaults, ServerErrorsThenSuccess) {
  FetchTestServer srv(random_blob(kBlob, 5));
  srv.faults.fail_5xx = 3;  // all on the size probe
  TempDir dir;
  auto r = fetch_to_file(srv.url(), dir.file(), quick());
  ASSERT_TRUE(r.ok()) << r.message();
  EXPECT_EQ(slurp(dir.file()), srv.blob());
  EXPECT_EQ(srv.counters.errors_sent.load(), 3);
  // gs:// needs no probe (metadata gives the size): the 503s hit chunks.
  srv.faults.fail_5xx = 4;
  auto o = quick();
  o.gcs_endpoint = srv.base();
  auto g = fetch_to_file("gs://b/o.gguf", dir.file("gcs.bin"), o);
  ASSERT_TRUE(g.ok()) << g.message();
  EXPECT_EQ(g->retries, 4);
  EXPECT_EQ(slurp(dir.file("gcs.bin")), srv.blob());
}

TEST(FetchFaults, PersistentServerErrorsGiveUpClearly) {
  FetchTestServer srv(random_blob(100000, 6));
  srv.faults.fail_5xx = 1000;
  TempDir dir;
  auto r = fetch_to_file(srv.url(), dir.file(), quick());
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.message().find("still failing after 5 attempts"), std::string::npos) << r.message();
  EXPECT_NE(r.message().find("HTTP 503"), std::string::npos) << r.message();
}

TEST(FetchFaults, DroppedConnectionsAreResumedMidChunk) {
  FetchTestServer srv(random_blob(kBlob, 7));
  srv.faults.drop_mid_body = 5;
  TempDir dir;
  auto r = fetch_to_file(srv.url(), dir.file(), quick());
  ASSERT_TRUE(r.ok()) << r.message();
  EXPECT_EQ(slurp(dir.file()), srv.blob());
  EXPECT_EQ(r->retries, 5);
  // A retry asks only for the rest of its chunk: some range starts inside one.
  bool mid = false;
  for (auto [f, l] : srv.ranges_seen()) mid |= f % (512 << 10) != 0;
  EXPECT_TRUE(mid);
}

TEST(FetchFaults, WrongContentLengthIsRetried) {
  FetchTestServer srv(random_blob(kBlob, 8));
  srv.faults.long_length = 2;
  srv.faults.short_length = 2;
  TempDir dir;
  auto r = fetch_to_file(srv.url(), dir.file(), quick());
  ASSERT_TRUE(r.ok()) << r.message();
  EXPECT_EQ(slurp(dir.file()), srv.blob());
  EXPECT_EQ(r->retries, 4);
}

TEST(FetchFaults, StalledConnectionIsCutAndRetried) {
  FetchTestServer srv(random_blob(2u << 20, 9));
  srv.faults.stall_ms_once = 3000;
  TempDir dir;
  auto o = quick(2);
  o.stall_seconds = 1;
  auto r = fetch_to_file(srv.url(), dir.file(), o);
  ASSERT_TRUE(r.ok()) << r.message();
  EXPECT_EQ(slurp(dir.file()), srv.blob());
  EXPECT_GE(r->retries, 1);
}

TEST(FetchFaults, ServerIgnoringRangeFallsBackToOneStream) {
  FetchTestServer srv(random_blob(3u << 20, 10));
  srv.faults.ignore_range = true;
  srv.faults.drop_mid_body = 1;  // the single stream restarts from byte 0
  TempDir dir;
  auto o = quick();
  o.sha256_hex = to_hex(digest(EVP_sha256(), srv.blob()));
  auto r = fetch_to_file(srv.url(), dir.file(), o);
  ASSERT_TRUE(r.ok()) << r.message();
  EXPECT_FALSE(r->ranges);
  EXPECT_EQ(r->connections, 1);
  EXPECT_EQ(slurp(dir.file()), srv.blob());
  EXPECT_EQ(srv.counters.range_requests.load(), 0);
}

TEST(FetchFaults, ServerIgnoringRangeMidDownloadIsAnError) {
  FetchTestServer srv(random_blob(kBlob, 11));
  srv.faults.ignore_range_after = 3;  // the probe and two chunks honour Range
  TempDir dir;
  auto r = fetch_to_file(srv.url(), dir.file(), quick(2));
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.message().find("ignored the Range header"), std::string::npos) << r.message();
  EXPECT_FALSE(fs::exists(dir.file()));
}

TEST(FetchFaults, NotFoundIsNotRetried) {
  FetchTestServer srv(random_blob(1000, 12));
  srv.faults.not_found = 1;
  TempDir dir;
  auto r = fetch_to_file(srv.url(), dir.file(), quick());
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.message().find("HTTP 404: not found"), std::string::npos) << r.message();
  EXPECT_EQ(srv.counters.errors_sent.load(), 1);
}

// Every byte position class (first, chunk boundary, middle, last) corrupted
// once: each must be caught by whichever checksum is known.
TEST(FetchFaults, CorruptedByteIsAlwaysDetected) {
  const std::string blob = random_blob(2u << 20, 13);
  const uint32_t crc = crc32c_update(0, blob.data(), blob.size());
  const std::string md5 = digest(EVP_md5(), blob), sha = digest(EVP_sha256(), blob);
  for (int64_t at : {int64_t(0), int64_t(512 << 10) - 1, int64_t(512 << 10), int64_t(777777),
                     int64_t(blob.size() - 1)}) {
    for (const char* how : {"sha256", "md5", "crc32c-header", "gcs-crc32c", "gcs-md5"}) {
      const std::string h = how;
      const bool gcs = h.rfind("gcs", 0) == 0;
      FetchTestServer srv(blob);
      srv.faults.corrupt_at = at;
      auto o = quick(4);
      if (h == "sha256") o.sha256_hex = to_hex(sha);
      if (h == "md5") o.md5_hex = to_hex(md5);
      if (h == "crc32c-header") srv.goog_hash_header = "crc32c=" + crc32c_to_base64(crc);
      if (h == "gcs-crc32c") {
        srv.gcs_crc32c_b64 = crc32c_to_base64(crc);
        srv.gcs_md5_b64 = base64_encode(md5);
      }
      if (h == "gcs-md5") srv.gcs_md5_b64 = base64_encode(md5);
      o.gcs_endpoint = srv.base();
      TempDir dir;
      auto r = fetch_to_file(gcs ? "gs://bucket/m.gguf" : srv.url(), dir.file(), o);
      ASSERT_FALSE(r.ok()) << how << " at " << at;
      const std::string name = h == "sha256"                          ? "sha256"
                               : (h.find("md5") != std::string::npos) ? "md5"
                                                                      : "crc32c";
      EXPECT_NE(r.message().find(name + " mismatch"), std::string::npos)
          << how << ": " << r.message();
      EXPECT_FALSE(fs::exists(dir.file())) << how;
      EXPECT_FALSE(fs::exists(partial_path(dir.file()))) << "a bad download must not be resumed";
    }
  }
}

TEST(Fetch, ChecksumsFromXGoogHashAreVerified) {
  FetchTestServer srv(random_blob(kBlob, 14));
  srv.goog_hash_header = "crc32c=" + crc32c_to_base64(crc32c_update(0, srv.blob().data(), kBlob)) +
                         ", md5=" + base64_encode(digest(EVP_md5(), srv.blob()));
  TempDir dir;
  auto o = quick();
  o.verify_md5_too = true;
  auto r = fetch_to_file(srv.url(), dir.file(), o);
  ASSERT_TRUE(r.ok()) << r.message();
  EXPECT_EQ(r->verified, "crc32c+md5");
}

// ---- gs:// ---------------------------------------------------------------------------

TEST(FetchGcs, MetadataServerTokenAndCrc32c) {
  FetchTestServer srv(random_blob(kBlob, 15), /*required_token=*/"ya29.test-token");
  srv.gcs_crc32c_b64 = crc32c_to_base64(crc32c_update(0, srv.blob().data(), kBlob));
  srv.gcs_md5_b64 = base64_encode(digest(EVP_md5(), srv.blob()));
  TempDir dir;
  auto o = quick();
  o.access_token.reset();
  ::unsetenv("GOOGLE_OAUTH_ACCESS_TOKEN");
  o.gcs_endpoint = srv.base();
  o.metadata_host = "127.0.0.1:" + std::to_string(srv.port());
  auto r = fetch_to_file("gs://bucket/models/blob.gguf", dir.path.string(), o);
  ASSERT_TRUE(r.ok()) << r.message();
  EXPECT_EQ(r->path, dir.file("blob.gguf"));
  EXPECT_EQ(slurp(r->path), srv.blob());
  EXPECT_EQ(r->verified, "crc32c");  // md5 skipped: crc32c is there and cheaper
  EXPECT_EQ(srv.counters.token_requests.load(), 1);
  EXPECT_EQ(srv.counters.metadata_requests.load(), 1);
  EXPECT_EQ(srv.counters.unauthorized.load(), 0);
  EXPECT_EQ(srv.counters.range_requests.load(), 16);  // no probe: the metadata gave the size
}

TEST(FetchGcs, AnonymousAccessToAPrivateObjectSaysWhatToDo) {
  FetchTestServer srv(random_blob(1000, 16), "secret");
  FetchTestServer closed("");  // a metadata server that hands out a wrong token
  closed.metadata_token = "wrong";
  TempDir dir;
  auto o = quick();
  o.access_token.reset();
  ::unsetenv("GOOGLE_OAUTH_ACCESS_TOKEN");
  o.gcs_endpoint = srv.base();
  o.metadata_host = "127.0.0.1:" + std::to_string(closed.port());
  auto r = fetch_to_file("gs://bucket/x.gguf", dir.file(), o);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.message().find("HTTP 401: access denied"), std::string::npos) << r.message();
  EXPECT_NE(r.message().find("GOOGLE_OAUTH_ACCESS_TOKEN"), std::string::npos) << r.message();
  // An explicit token works.
  o.access_token = "secret";
  auto ok = fetch_to_file("gs://bucket/x.gguf", dir.file(), o);
  ASSERT_TRUE(ok.ok()) << ok.message();
}

TEST(FetchGcs, SizeDifferentFromMetadataIsRefused) {
  FetchTestServer srv(random_blob(kBlob, 17));
  srv.faults.metadata_size_delta = 4096;
  TempDir dir;
  auto o = quick();
  o.gcs_endpoint = srv.base();
  auto r = fetch_to_file("gs://bucket/x.gguf", dir.file(), o);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.message().find("Content-Range"), std::string::npos) << r.message();
}

TEST(FetchGcs, ReusesAVerifiedDownload) {
  FetchTestServer srv(random_blob(kBlob, 18));
  srv.gcs_crc32c_b64 = crc32c_to_base64(crc32c_update(0, srv.blob().data(), kBlob));
  TempDir dir;
  auto o = quick();
  o.gcs_endpoint = srv.base();
  o.reuse_verified = true;
  ASSERT_TRUE(fetch_to_file("gs://bucket/x.gguf", dir.file(), o).ok());
  const int media = srv.counters.blob_requests.load();
  uint64_t reported = 0;
  auto again = fetch_to_file("gs://bucket/x.gguf", dir.file(), o,
                             [&](uint64_t, uint64_t len) { reported += len; });
  ASSERT_TRUE(again.ok()) << again.message();
  EXPECT_TRUE(again->reused);
  EXPECT_EQ(reported, kBlob);
  EXPECT_EQ(srv.counters.blob_requests.load(), media);
}

// ---- the figure: 8 connections vs 1 when each connection is throttled -----------------

TEST(FetchThroughput, EightConnectionsBeatOneUnderPerConnectionThrottling) {
  // 2 MiB/s per connection keeps the 8-connection total (16 MiB/s) far below
  // what a loaded 2-core CI machine moves over loopback, so the ratio
  // measures the client's parallelism, not the machine.
  const size_t size = 4u << 20;
  FetchTestServer srv(random_blob(size, 19));
  const int64_t per_conn = 2 << 20;
  srv.faults.bytes_per_s_per_conn = per_conn;
  TempDir dir;
  auto one = fetch_to_file(srv.url(), dir.file("one.bin"), quick(1, 256 << 10));
  ASSERT_TRUE(one.ok()) << one.message();
  auto eight = fetch_to_file(srv.url(), dir.file("eight.bin"), quick(8, 256 << 10));
  ASSERT_TRUE(eight.ok()) << eight.message();
  EXPECT_EQ(slurp(dir.file("eight.bin")), srv.blob());
  const double r1 = one->rate_bytes_per_s / (1 << 20), r8 = eight->rate_bytes_per_s / (1 << 20);
  std::printf(
      "[ figure ] 4 MiB in 256 KiB chunks, server throttled to %.0f MiB/s per connection: "
      "1 connection %.2f MiB/s (%.2f s), 8 connections %.2f MiB/s (%.2f s), %.1fx\n",
      double(per_conn) / (1 << 20), r1, one->seconds, r8, eight->seconds, r8 / r1);
  EXPECT_GE(eight->connections, 8);
  EXPECT_GE(srv.counters.max_open.load(), 8);
  EXPECT_GE(r8 / r1, 3.0);  // ideal 8x; 3x leaves room for a loaded machine
}

// ---- overlap: a consumer reads chunks while later ones download ------------------------

TEST(FetchOverlap, ConsumerReadsRangesAsTheyArrive) {
  FetchTestServer srv(random_blob(kBlob, 20));
  srv.faults.bytes_per_s_per_conn = 16 << 20;  // slow enough that reading overlaps
  TempDir dir;
  ArrivalTracker arrivals;
  auto o = quick(4);
  o.on_start = arrivals.start_callback();
  std::thread dl([&] {
    auto r = fetch_to_file(srv.url(), dir.file(), o, arrivals.chunk_callback());
    arrivals.finish(r);
  });
  ASSERT_EQ(*arrivals.wait_size(), kBlob);
  // Read the first 100 KiB as soon as it is there: before the download ends.
  auto st = arrivals.wait(0, 100 << 10);
  ASSERT_TRUE(st.ok()) << st.message();
  const int64_t sent_at_first_read = srv.counters.body_bytes.load();
  std::string head(100 << 10, '\0');
  ASSERT_EQ(::pread(arrivals.fd(), head.data(), head.size(), 0), ssize_t(head.size()));
  EXPECT_EQ(head, srv.blob().substr(0, head.size()));
  EXPECT_LT(sent_at_first_read, int64_t(kBlob));
  // A range spanning chunks, then the end.
  ASSERT_TRUE(arrivals.wait((512 << 10) - 10, 20).ok());
  ASSERT_TRUE(arrivals.wait(kBlob - 1, 1).ok());
  EXPECT_FALSE(arrivals.wait(kBlob, 1).ok());
  dl.join();
  EXPECT_EQ(slurp(dir.file()), srv.blob());
}

TEST(FetchOverlap, WaitersWakeWithTheDownloadError) {
  FetchTestServer srv(random_blob(kBlob, 21));
  srv.faults.corrupt_at = 5;
  TempDir dir;
  ArrivalTracker arrivals;
  auto o = quick(4);
  o.sha256_hex = to_hex(digest(EVP_sha256(), srv.blob()));
  o.on_start = arrivals.start_callback();
  auto r = fetch_to_file(srv.url(), dir.file(), o, arrivals.chunk_callback());
  arrivals.finish(r);
  auto w = arrivals.wait(0, 1);
  ASSERT_FALSE(w.ok());
  EXPECT_NE(w.message().find("sha256 mismatch"), std::string::npos) << w.message();
}

// ---- the command line --------------------------------------------------------------------

namespace {
bool have_kiln() {
  return fs::exists(kiln::test::kiln_binary());
}
int run_cli(const std::string& cmd, std::string& out) {
  FILE* p = ::popen((cmd + " 2>&1").c_str(), "r");
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  return WEXITSTATUS(::pclose(p));
}
}  // namespace

TEST(FetchCli, PullGsThroughTheEndpointOverride) {
  if (!have_kiln()) GTEST_SKIP() << "kiln binary not built: " << kiln::test::kiln_binary();
  FetchTestServer srv(random_blob(3u << 20, 22), "cli-token");
  srv.gcs_crc32c_b64 = crc32c_to_base64(crc32c_update(0, srv.blob().data(), srv.blob().size()));
  TempDir dir;
  const std::string env =
      "KILN_GCS_ENDPOINT=" + srv.base() +
      " GOOGLE_OAUTH_ACCESS_TOKEN=cli-token KILN_GCE_METADATA_HOST=127.0.0.1:9 ";
  std::string out;
  const int rc =
      run_cli(env + kiln::test::kiln_binary() + " pull gs://b/dir/m.gguf " + dir.path.string() +
                  " --connections 4 --chunk-size 256K --progress log",
              out);
  ASSERT_EQ(rc, 0) << out;
  EXPECT_EQ(slurp(dir.file("m.gguf")), srv.blob());
  EXPECT_NE(out.find("verified: crc32c"), std::string::npos) << out;

  // A wrong --sha256 fails with the reason and leaves nothing behind.
  std::string bad;
  const int rc2 =
      run_cli(kiln::test::kiln_binary() + " pull " + srv.url() + " " + dir.file("x.bin") +
                  " --progress none --sha256 " + std::string(64, '0'),
              bad);
  EXPECT_EQ(rc2, 1) << bad;
  EXPECT_NE(bad.find("sha256 mismatch"), std::string::npos) << bad;
  EXPECT_FALSE(fs::exists(dir.file("x.bin")));
}

TEST(FetchCli, KilledPullResumes) {
  if (!have_kiln()) GTEST_SKIP() << "kiln binary not built: " << kiln::test::kiln_binary();
  FetchTestServer srv(random_blob(4u << 20, 23));
  srv.faults.bytes_per_s_per_conn = 1 << 20;  // 2 s for the whole file over 2 connections
  TempDir dir;
  const std::string cmd = kiln::test::kiln_binary() + " pull " + srv.url() + " " + dir.file() +
                          " --connections 2 --chunk-size 256K --progress none";
  std::string out;
  run_cli("timeout -s KILL 0.9 " + cmd, out);  // killed mid-download, no chance to clean up
  ASSERT_FALSE(fs::exists(dir.file())) << out;
  auto st = load_fetch_state(state_path(dir.file()));
  ASSERT_TRUE(st.has_value()) << out;
  const auto n_saved = std::count(st->done.begin(), st->done.end(), true);
  EXPECT_GE(n_saved, 1);
  srv.faults.bytes_per_s_per_conn = 0;
  std::string out2;
  ASSERT_EQ(run_cli(cmd, out2), 0) << out2;
  EXPECT_NE(out2.find("resuming"), std::string::npos) << out2;
  EXPECT_EQ(slurp(dir.file()), srv.blob());
}
