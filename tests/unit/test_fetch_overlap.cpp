// `kiln serve --model URL` loads the model while it downloads: a tiny model
// served by the loopback test server (throttled, with faults; see
// common/fetch_test_server.h) is opened over the arriving file and loaded by
// the CPU backend, in the order cli/model_fetch.cpp does it. Its logits must
// equal those of the local file; the load must have started before the
// download ended; a corrupt or truncated download must end in an error, never
// a loaded model. Then the same through `kiln serve` itself.
#include <gtest/gtest.h>
#include <openssl/evp.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <thread>

#include "common/temp_dir.h"
#include "common/fetch_test_server.h"
#include "common/paths.h"
#include "common/tiny_lm.h"
#include "kiln/backend/cpu/cpu_backend.h"
#include "kiln/core/base64.h"
#include "kiln/fetch/background.h"
#include "kiln/fetch/digest.h"
#include "kiln/gguf/gguf.h"
#include "kiln/model/model.h"

namespace fs = std::filesystem;
using namespace kiln;
using kiln::test::FetchTestServer;

namespace {

// The tiny llama with a 1024-piece vocabulary: ~0.9 MB, a ~30 KB header.
std::string model_blob() {
  const auto b = test::tiny_lm_writer(DType::F32, 11, 1024).to_bytes();
  return std::string(b.begin(), b.end());
}

std::string sha256_hex(const std::string& data) {
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  EVP_Digest(data.data(), data.size(), out, &n, EVP_sha256(), nullptr);
  return fetch::to_hex(std::string(reinterpret_cast<char*>(out), n));
}

// A fresh directory per test.
struct TempDir : test::TempDir {
  TempDir() : test::TempDir("kiln-overlap-test") {}
};

fetch::FetchOptions quiet(const std::string& sha256) {
  fetch::FetchOptions o;
  o.connections = 2;
  o.chunk_size = 32 << 10;  // many chunks: the header's arrive first
  o.max_attempts = 2;
  o.backoff_initial_s = 0.01;
  o.backoff_max_s = 0.02;
  o.progress = fetch::ProgressMode::none;
  o.log = [](const std::string&) {};
  o.access_token = "";
  o.sha256_hex = sha256;
  o.reuse_verified = true;
  return o;
}

std::unique_ptr<cpu::CpuBackend> cpu_backend() {
  cpu::CpuOptions c;
  c.n_threads = 1;
  c.read_env = false;
  return std::make_unique<cpu::CpuBackend>(c);
}

// Logits of the last of a few tokens, after load_weights.
std::vector<float> logits_of(cpu::CpuBackend& be) {
  KvCacheConfig kv;
  kv.type = KvType::f32;
  kv.block_size = 16;
  kv.n_blocks = 1;
  EXPECT_TRUE(be.init_kv_cache(kv).ok());
  const std::vector<int32_t> table = {0};
  Batch b;
  const int32_t s = b.add_seq(table);
  const std::vector<int32_t> toks = {1, 17, 400, 1023, 5};
  for (size_t i = 0; i < toks.size(); ++i) b.add(toks[i], int32_t(i), s, i + 1 == toks.size());
  EXPECT_TRUE(be.forward(b).ok());
  EXPECT_TRUE(be.synchronize().ok());
  const auto l = be.logits(0);
  return {l.begin(), l.end()};
}

struct Loaded {
  std::unique_ptr<model::Model> model;
  std::unique_ptr<cpu::CpuBackend> backend;
  bool header_before_end = false;   // the model was opened while bytes were still missing
  fetch::ArrivalTracker::WaitStats waits;
  bool last_byte_before_end = false;  // every chunk landed, then the checksum ended it
  fetch::FetchResult fetched;
};

// What kiln serve does with a URL (cli/model_fetch.cpp): download in the
// background, open the model over the arriving file (header only), load the
// weights as they arrive, and count it only once the download is verified.
Result<Loaded> load_while_downloading(const std::string& url, const fs::path& dir,
                                      const fetch::FetchOptions& o) {
  fetch::BackgroundFetch dl(url, dir.string(), o);
  auto size = dl.arrivals().wait_size();
  if (!size) return size.error();
  auto file = gguf::File::open_arriving(dl.arrivals().fd(), dl.final_path(), dl.range_wait());
  if (!file) return dl.consumer_failed(file.error());
  Loaded out;
  out.header_before_end = !dl.done();
  auto m = model::Model::from_file(std::move(*file));
  if (!m) return dl.consumer_failed(m.error());
  out.model = std::move(*m);
  out.backend = cpu_backend();
  if (auto st = out.backend->load_weights(*out.model); !st) return dl.consumer_failed(st.error());
  auto r = dl.finish();
  if (!r) return r.error();
  out.waits = dl.arrivals().wait_stats();
  const auto last = dl.arrivals().all_arrived_at();
  out.last_byte_before_end = last && *last <= dl.ended_at();
  out.fetched = *r;
  return out;
}

}  // namespace

TEST(ServeOverlap, LoadsWhileDownloadingAndMatchesTheLocalFile) {
  FetchTestServer srv(model_blob());
  // ~1 s at 2 x 448 KiB/s: the header (first 64 KiB) is there long before the end.
  srv.faults.bytes_per_s_per_conn = 448 << 10;
  TempDir dir;
  auto got = load_while_downloading(srv.url("/m/tiny.gguf"), dir.path, quiet(sha256_hex(srv.blob())));
  ASSERT_TRUE(got.ok()) << got.message();
  EXPECT_TRUE(got->header_before_end);
  // The loader asked for bytes that were not there yet: the header's first
  // prefix and the CPU backend's whole data section at least.
  EXPECT_GE(got->waits.blocked, 2u);
  EXPECT_GT(got->waits.blocked_seconds, 0.1);
  EXPECT_EQ(got->fetched.verified, "sha256");
  EXPECT_TRUE(got->last_byte_before_end);
  EXPECT_EQ(got->model->file().path(), (dir.path / "tiny.gguf").string());

  // The same logits as the local file, bit for bit.
  auto local = model::Model::load((dir.path / "tiny.gguf").string());
  ASSERT_TRUE(local.ok()) << local.message();
  auto local_be = cpu_backend();
  ASSERT_TRUE(local_be->load_weights(**local).ok());
  const auto want = logits_of(*local_be);
  EXPECT_EQ(logits_of(*got->backend), want);

  // A restart reuses the verified download (only the 1-byte size probe goes
  // out) and loads the same logits.
  const int64_t sent = srv.counters.body_bytes.load();
  auto again = load_while_downloading(srv.url("/m/tiny.gguf"), dir.path, quiet(sha256_hex(srv.blob())));
  ASSERT_TRUE(again.ok()) << again.message();
  EXPECT_TRUE(again->fetched.reused);
  EXPECT_LE(srv.counters.body_bytes.load() - sent, 1);
  EXPECT_EQ(logits_of(*again->backend), want);
}

TEST(ServeOverlap, CorruptByteFailsEvenAfterTheWeightsLoaded) {
  FetchTestServer srv(model_blob());
  srv.faults.corrupt_at = int64_t(srv.blob().size()) - 1000;  // in the last tensor's data
  TempDir dir;
  auto got = load_while_downloading(srv.url("/m/tiny.gguf"), dir.path, quiet(sha256_hex(srv.blob())));
  ASSERT_FALSE(got.ok());
  EXPECT_NE(got.message().find("sha256 mismatch"), std::string::npos) << got.message();
  EXPECT_FALSE(fs::exists(dir.path / "tiny.gguf"));
}

TEST(ServeOverlap, CorruptHeaderByteFailsTheLoad) {
  FetchTestServer srv(model_blob());
  srv.faults.corrupt_at = 3;  // "GGUF" -> "GGU\x1c"
  TempDir dir;
  auto got = load_while_downloading(srv.url("/m/tiny.gguf"), dir.path, quiet(sha256_hex(srv.blob())));
  ASSERT_FALSE(got.ok());
  // Either the parse or the checksum speaks, whichever came first.
  const bool named = got.message().find("not a GGUF file") != std::string::npos ||
                     got.message().find("sha256 mismatch") != std::string::npos;
  EXPECT_TRUE(named) << got.message();
}

TEST(ServeOverlap, TruncatedDownloadFailsTheLoad) {
  FetchTestServer srv(model_blob());
  srv.faults.drop_mid_body = 1000;  // every answer stops halfway: no chunk completes
  TempDir dir;
  auto got = load_while_downloading(srv.url("/m/tiny.gguf"), dir.path, quiet(sha256_hex(srv.blob())));
  ASSERT_FALSE(got.ok());
  EXPECT_NE(got.message().find("still failing after 2 attempts"), std::string::npos)
      << got.message();
}

// ---- through `kiln serve` -------------------------------------------------------------

namespace {

// Runs `kiln serve` until it says it is ready (then SIGTERM) or exits; its
// stderr and exit status.
struct ServeRun {
  std::string log;
  int status = -1;
  bool ready = false;
};
ServeRun run_serve(const std::vector<std::string>& args) {
  int fds[2];
  EXPECT_EQ(::pipe(fds), 0);
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::dup2(fds[1], 2);
    ::dup2(fds[1], 1);
    ::close(fds[0]);
    std::vector<char*> argv;
    for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    ::execv(argv[0], argv.data());
    ::_exit(127);
  }
  ::close(fds[1]);
  ServeRun r;
  char buf[4096];
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  for (;;) {
    pollfd p{fds[0], POLLIN, 0};
    if (::poll(&p, 1, 200) > 0) {
      const ssize_t n = ::read(fds[0], buf, sizeof buf);
      if (n <= 0) break;
      r.log.append(buf, size_t(n));
    }
    if (!r.ready && r.log.find("kiln serve: ready in") != std::string::npos) {
      r.ready = true;
      ::kill(pid, SIGTERM);
    }
    if (std::chrono::steady_clock::now() > deadline) ::kill(pid, SIGKILL);
  }
  ::close(fds[0]);
  int st = 0;
  ::waitpid(pid, &st, 0);
  r.status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  return r;
}

// x-goog-hash as GCS sends it: the object's MD5, base64.
std::string md5_goog_hash(const std::string& data) {
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  EVP_Digest(data.data(), data.size(), out, &n, EVP_md5(), nullptr);
  return "md5=" + base64_encode(std::string(reinterpret_cast<char*>(out), n));
}

std::vector<std::string> serve_args(const std::string& url, const fs::path& dir) {
  return {test::kiln_binary(), "serve", "--model", url, "--download-dir", dir.string(),
          "--device", "cpu", "--threads", "1", "--host", "127.0.0.1", "--port", "0",
          "--ctx-size", "64", "--parallel", "1", "--download-connections", "2",
          "--download-chunk-size", "64K"};
}

}  // namespace

TEST(ServeOverlapCli, ReadyOnlyAfterTheVerifiedDownload) {
  if (!fs::exists(test::kiln_binary())) GTEST_SKIP() << "kiln binary not built";
  FetchTestServer srv(model_blob());
  srv.faults.bytes_per_s_per_conn = 1 << 20;
  srv.goog_hash_header = md5_goog_hash(srv.blob());  // as GCS publishes it
  TempDir dir;
  auto ok = run_serve(serve_args(srv.url("/m/tiny.gguf"), dir.path));
  EXPECT_TRUE(ok.ready) << ok.log;
  EXPECT_EQ(ok.status, 0) << ok.log;
  // Verified, then the overlap report, then ready; the timeline has both the
  // header read and the download.
  const size_t verified = ok.log.find("md5 ok");
  const size_t overlap = ok.log.find("weights loaded while downloading:");
  const size_t ready = ok.log.find("kiln serve: ready in");
  ASSERT_NE(verified, std::string::npos) << ok.log;
  ASSERT_NE(overlap, std::string::npos) << ok.log;
  EXPECT_LT(verified, overlap);
  EXPECT_LT(overlap, ready);
  EXPECT_NE(ok.log.find("-> weights_read"), std::string::npos) << ok.log;
  EXPECT_NE(ok.log.find("download_verified"), std::string::npos) << ok.log;
  EXPECT_NE(ok.log.find("download_overlap"), std::string::npos) << ok.log;
  for (const char* key : {"weights loaded while downloading:", "start-up:"}) {
    const size_t at = ok.log.find(key);
    if (at != std::string::npos)
      std::printf("[ figure ] %s\n", ok.log.substr(at, ok.log.find('\n', at) - at).c_str());
  }
}

TEST(ServeOverlapCli, CorruptDownloadNeverServes) {
  if (!fs::exists(test::kiln_binary())) GTEST_SKIP() << "kiln binary not built";
  FetchTestServer srv(model_blob());
  srv.faults.corrupt_at = int64_t(srv.blob().size()) - 1000;
  srv.goog_hash_header = md5_goog_hash(srv.blob());
  TempDir dir;
  auto bad = run_serve(serve_args(srv.url("/m/tiny.gguf"), dir.path));
  EXPECT_FALSE(bad.ready) << bad.log;
  EXPECT_EQ(bad.status, 1) << bad.log;
  EXPECT_NE(bad.log.find("md5 mismatch"), std::string::npos) << bad.log;
  EXPECT_NE(bad.log.find("the server does not start"), std::string::npos) << bad.log;
}
