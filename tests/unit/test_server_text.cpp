// Pieces of the HTTP edge that need no network: SSE framing, stop-string
// holdback, UTF-8-safe incremental detokenization, the Prometheus text
// format, admission and the start-up capacity plan.
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include "common/paths.h"
#include "kiln/gguf/gguf.h"
#include "kiln/server/admission.h"
#include "kiln/server/capacity_plan.h"
#include "kiln/server/metrics.h"
#include "kiln/server/routes.h"
#include "kiln/server/shutdown_signal.h"
#include "kiln/server/sse.h"
#include "kiln/server/text_stream.h"
#include "kiln/tokenizer/tokenizer.h"

namespace kiln::server {
namespace {

TEST(ServerSse, Framing) {
  EXPECT_EQ(sse_data("{\"a\":1}"), "data: {\"a\":1}\n\n");
  EXPECT_EQ(sse_data("x\ny"), "data: x\ndata: y\n\n");
  EXPECT_EQ(sse_done(), "data: [DONE]\n\n");
  nlohmann::ordered_json j = {{"text", "line1\nline2"}};
  // JSON escapes the newline, so an event is always one data line.
  EXPECT_EQ(sse_event(j), "data: {\"text\":\"line1\\nline2\"}\n\n");
  // Invalid UTF-8 never breaks the stream: replaced, not thrown.
  nlohmann::ordered_json bad = {{"t", std::string("a\xff")}};
  EXPECT_EQ(sse_event(bad), "data: {\"t\":\"a\xEF\xBF\xBD\"}\n\n");
}

// Feeds `pieces` one at a time; returns what was emitted, piece by piece.
std::vector<std::string> run_stop(std::vector<std::string> stops, std::vector<std::string> pieces,
                                  bool* stopped = nullptr) {
  StopMatcher m(std::move(stops));
  std::vector<std::string> out;
  bool st = false;
  for (const auto& p : pieces) {
    auto o = m.push(p);
    out.push_back(o.text);
    if (o.stopped) {
      st = true;
      break;
    }
  }
  if (!st) out.push_back(m.flush());
  if (stopped) *stopped = st;
  return out;
}

std::string join(const std::vector<std::string>& v) {
  std::string s;
  for (const auto& x : v) s += x;
  return s;
}

TEST(ServerStop, NeverEmitsAPartialStop) {
  bool stopped = false;
  auto out = run_stop({"</end>"}, {"Hello ", "wor", "ld<", "/e", "nd>", "tail"}, &stopped);
  EXPECT_TRUE(stopped);
  EXPECT_EQ(join(out), "Hello world");
  // "<" was held back the moment it arrived.
  EXPECT_EQ(out[2], "ld");
  for (const auto& piece : out) EXPECT_EQ(piece.find('<'), std::string::npos);
}

TEST(ServerStop, FalseStartIsReleased) {
  bool stopped = true;
  auto out = run_stop({"STOP"}, {"ST", "OR", "E"}, &stopped);
  EXPECT_FALSE(stopped);
  EXPECT_EQ(out[0], "");      // could be the start of STOP
  EXPECT_EQ(out[1], "STOR");  // no longer can
  EXPECT_EQ(join(out), "STORE");
  // Held text at the end of generation is released by flush().
  auto tail = run_stop({"STOP"}, {"abc", "ST"});
  EXPECT_EQ(tail.back(), "ST");
  EXPECT_EQ(join(tail), "abcST");
}

TEST(ServerStop, EarliestOfSeveralAndInsideOnePiece) {
  bool stopped = false;
  auto out = run_stop({"xyz", "b"}, {"aaxybzz"}, &stopped);
  EXPECT_TRUE(stopped);
  EXPECT_EQ(join(out), "aaxy");
  auto out2 = run_stop({"world", "wor"}, {"hello wor", "ld"}, &stopped);
  EXPECT_TRUE(stopped);
  EXPECT_EQ(join(out2), "hello ");
  // Overlapping prefix: "aab" in "aaab".
  auto out3 = run_stop({"aab"}, {"a", "a", "a", "b"}, &stopped);
  EXPECT_TRUE(stopped);
  EXPECT_EQ(join(out3), "a");
  // No stops: everything passes at once.
  auto out4 = run_stop({}, {"a", "b"});
  EXPECT_EQ(out4[0], "a");
}

TEST(ServerStop, MultibyteStop) {
  bool stopped = false;
  auto out = run_stop({"é!"}, {"caf", "é", "!", "x"}, &stopped);
  EXPECT_TRUE(stopped);
  EXPECT_EQ(join(out), "caf");
}

TEST(ServerUtf8, StreamNeverSplitsACharacter) {
  Utf8Stream s;
  const std::string euro = "\xE2\x82\xAC";  // €
  EXPECT_EQ(s.push("a\xE2"), "a");
  EXPECT_TRUE(s.has_pending());
  EXPECT_EQ(s.push("\x82"), "");
  EXPECT_EQ(s.push("\xAC"
                   "b"),
            euro + "b");
  EXPECT_FALSE(s.has_pending());
  // 4-byte emoji split one byte at a time.
  const std::string emoji = "\xF0\x9F\x98\x80";
  std::string got;
  for (char c : emoji) got += s.push(std::string(1, c));
  EXPECT_EQ(got, emoji);
  // Bytes that can never be valid become U+FFFD right away.
  EXPECT_EQ(s.push("\xFF"
                   "x"),
            "\xEF\xBF\xBD"
            "x");
  EXPECT_EQ(s.push("\xC0\x80"), "\xEF\xBF\xBD\xEF\xBF\xBD");                  // overlong
  EXPECT_EQ(s.push("\xED\xA0\x80"), "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD");  // surrogate
  // A lead byte followed by a non-continuation byte.
  EXPECT_EQ(s.push("\xE2"
                   "A"),
            "\xEF\xBF\xBD"
            "A");
  // An unfinished tail at the end is replaced.
  EXPECT_EQ(s.push("\xE2\x82"), "");
  EXPECT_EQ(s.flush(), "\xEF\xBF\xBD\xEF\xBF\xBD");
  EXPECT_EQ(utf8_sanitize("ok\xE2\x82"), "ok\xEF\xBF\xBD\xEF\xBF\xBD");
  EXPECT_EQ(utf8_length("a" + euro + emoji), 3u);
}

TEST(ServerUtf8, TokenDecoderWithByteTokens) {
  auto f = gguf::File::open(test::testdata("vocab/ggml-vocab-llama-spm.gguf"));
  ASSERT_TRUE(f) << f.message();
  auto tok = Tokenizer::from_gguf(**f);
  ASSERT_TRUE(tok) << tok.message();
  // SentencePiece byte fallback splits rare characters into <0xNN> tokens:
  // the decoder must hold them until the character is complete.
  const std::string text = "caf\xC3\xA9 \xF0\x9F\xA6\x99 done";
  auto ids = tok->encode(text, false, false);
  TokenTextDecoder dec(*tok);
  std::string all;
  for (int32_t id : ids) {
    const std::string piece = dec.push(id);
    EXPECT_EQ(utf8_sanitize(piece), piece) << "partial UTF-8 emitted for token " << id;
    all += piece;
  }
  all += dec.flush();
  // Pieces keep SentencePiece's leading space (decode() drops it only at the
  // start of a sequence; generated text continues a prompt).
  EXPECT_EQ(all, " " + text);
  // Control tokens (BOS/EOS) produce no text.
  TokenTextDecoder d2(*tok);
  EXPECT_EQ(d2.push(tok->eos_id()), "");
  EXPECT_EQ(d2.push(tok->bos_id()), "");
}

TEST(ServerMetrics, PrometheusTextFormat) {
  MetricsRegistry r;
  r.counter("kiln_x_total", "X things\nseen").inc(3);
  r.gauge("kiln_g", "A gauge", "phase=\"load\"").set(1.5);
  r.gauge("kiln_g", "A gauge", "phase=\"warm\"").set(2);
  auto& h = r.histogram("kiln_h_seconds", "Latency", {0.1, 1});
  h.observe(0.0625);
  h.observe(0.5);
  h.observe(5);
  r.callback("kiln_cb", "Callback", "gauge", [] { return 42.0; });
  const std::string t = r.render();
  EXPECT_EQ(t,
            "# HELP kiln_x_total X things\\nseen\n"
            "# TYPE kiln_x_total counter\n"
            "kiln_x_total 3\n"
            "# HELP kiln_g A gauge\n"
            "# TYPE kiln_g gauge\n"
            "kiln_g{phase=\"load\"} 1.5\n"
            "kiln_g{phase=\"warm\"} 2\n"
            "# HELP kiln_h_seconds Latency\n"
            "# TYPE kiln_h_seconds histogram\n"
            "kiln_h_seconds_bucket{le=\"0.1\"} 1\n"
            "kiln_h_seconds_bucket{le=\"1\"} 2\n"
            "kiln_h_seconds_bucket{le=\"+Inf\"} 3\n"
            "kiln_h_seconds_sum 5.5625\n"
            "kiln_h_seconds_count 3\n"
            "# HELP kiln_cb Callback\n"
            "# TYPE kiln_cb gauge\n"
            "kiln_cb 42\n");
  // The same name and labels give the same series.
  r.counter("kiln_x_total", "X things\nseen").inc();
  EXPECT_NE(r.render().find("kiln_x_total 4\n"), std::string::npos);
  EXPECT_EQ(format_metric_value(1.0 / 0.0), "+Inf");
}

TEST(ServerAdmission, CapsAtMaxConcurrency) {
  Admission a(2);
  auto p1 = a.try_acquire();
  auto p2 = a.try_acquire();
  EXPECT_TRUE(p1);
  EXPECT_TRUE(p2);
  EXPECT_FALSE(a.try_acquire());
  EXPECT_EQ(a.in_use(), 2);
  p1.release();
  auto p3 = a.try_acquire();
  EXPECT_TRUE(p3);
  {
    Admission::Permit moved = std::move(p3);
    EXPECT_EQ(a.in_use(), 2);
  }
  EXPECT_EQ(a.in_use(), 1);
}

TEST(ServerCapacity, BenchResultsAndIdealBatch) {
  auto pts = parse_bench_results(
      "{\"test\":\"pp512\",\"tokens_per_s\":10000}\n"
      "{\"test\":\"streams64\",\"tokens_per_s\":4417}\n"
      "{\"test\":\"streams8\",\"tokens_per_s\":1290}\n"
      "not json\n"
      "{\"test\":\"streams32\",\"tokens_per_s\":3214}\n"
      "{\"test\":\"streams128\",\"tokens_per_s\":5353}\n");
  ASSERT_TRUE(pts) << pts.message();
  ASSERT_EQ(pts->size(), 4u);
  EXPECT_EQ((*pts)[0].streams, 8);
  auto ib = ideal_batch_size(*pts, 64);
  EXPECT_FALSE(ib.estimated);
  EXPECT_EQ(ib.size, 128);  // 4417 < 0.9 x 5353
  std::vector<BenchPoint> flat = {{8, 100}, {16, 195}, {32, 200}};
  EXPECT_EQ(ideal_batch_size(flat, 8).size, 16);
  auto est = ideal_batch_size({}, 8);
  EXPECT_TRUE(est.estimated);
  EXPECT_EQ(est.size, 8);
  EXPECT_NE(est.how.find("estimate"), std::string::npos);
  EXPECT_FALSE(parse_bench_results("{\"test\":\"pp512\",\"tokens_per_s\":1}\n"));
}

TEST(ServerCapacity, MemoryPlan) {
  MemoryPlanInput in;
  in.device_total = 24ull << 30;
  in.weight_bytes = 5ull << 30;
  in.scratch_bytes = 1ull << 30;
  in.gpu_memory_fraction = 0.9;
  in.kv_bytes_per_block = 16 * 131072;  // llama3-8b f16: 128 KiB per token
  in.block_size = 16;
  in.ctx_size = 4096;
  in.n_parallel = 8;
  in.cap_to_need = false;  // a GPU: the whole budget, the rest serves the prefix cache
  auto p = plan_memory(in);
  ASSERT_TRUE(p) << p.message();
  EXPECT_EQ(p->blocks_per_seq, 256);
  // 0.9 x 24 GiB - 6 GiB = 15.6 GiB -> 7987 blocks of 2 MiB.
  EXPECT_EQ(p->n_blocks,
            int32_t(((uint64_t(0.9 * double(24ull << 30))) - (6ull << 30)) / (16 * 131072)));
  EXPECT_EQ(p->full_ctx_seqs, p->n_blocks / 256);
  EXPECT_EQ(p->kv_limited_by, "memory budget");
  auto a = advise_concurrency(*p, 8, ideal_batch_size({}, 8));
  EXPECT_EQ(a.recommended, 16);
  EXPECT_FALSE(format_plan(in, *p, a, 16).empty());

  in.kv_memory = 1ull << 30;
  auto k = plan_memory(in);
  ASSERT_TRUE(k);
  EXPECT_EQ(k->n_blocks, 512);
  EXPECT_EQ(k->kv_limited_by, "--kv-memory");
  auto a2 = advise_concurrency(*k, 8, ideal_batch_size({}, 8));
  EXPECT_NE(a2.limited_by.find("KV memory"), std::string::npos);

  in.kv_memory.reset();
  in.device_total = 512ull << 30;  // a big CPU host: capped
  in.cap_to_need = true;
  auto c = plan_memory(in);
  ASSERT_TRUE(c);
  EXPECT_EQ(c->n_blocks, 2 * 8 * 256);
  in.device_total = 4ull << 30;  // weights don't fit
  EXPECT_FALSE(plan_memory(in));
  in.device_total = 24ull << 30;
  in.kv_memory = 1ull << 20;  // not one sequence
  EXPECT_FALSE(plan_memory(in));
}

TEST(ServerJson, DepthScan) {
  EXPECT_EQ(json_depth("{}", 64), 1);
  EXPECT_EQ(json_depth("{\"a\":[[1]]}", 64), 3);
  EXPECT_EQ(json_depth("{\"a\":\"[[[[[\"}", 64), 1);  // brackets inside strings
  EXPECT_EQ(json_depth("{\"a\":\"\\\"[[[\"}", 64), 1);
  EXPECT_GT(json_depth(std::string(100000, '['), 64), 64);
}

// SIGTERM becomes an event a thread can wait for; nothing runs in a handler.
TEST(ServerSignal, SigtermBecomesAnEvent) {
  ShutdownSignal s;
  s.install();
  EXPECT_FALSE(s.triggered());
  EXPECT_FALSE(s.wait(std::chrono::milliseconds(10)));
  ::kill(::getpid(), SIGTERM);
  EXPECT_TRUE(s.wait(std::chrono::milliseconds(5000)));
  EXPECT_EQ(s.signal_number(), SIGTERM);
}

TEST(ServerSignal, TriggerFromCodeAndNoHangOnDestruction) {
  ShutdownSignal s;
  s.install();
  s.trigger();
  EXPECT_TRUE(s.wait(std::chrono::milliseconds(10)));
  EXPECT_EQ(s.signal_number(), 0);
}

}  // namespace
}  // namespace kiln::server
