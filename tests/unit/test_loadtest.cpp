// kiln loadtest's pure parts: HTTP response and SSE parsing fed in every
// possible split, event classification, length distributions, workloads,
// request-log replay, percentiles, the SLO recommendation and its JSON
// contract (read by `kiln plan`), the CSV and the SVG chart.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "kiln/loadtest/http_parse.h"
#include "kiln/loadtest/recommend.h"
#include "kiln/loadtest/replay.h"
#include "kiln/loadtest/report.h"
#include "kiln/loadtest/sse.h"
#include "kiln/loadtest/stats.h"
#include "kiln/loadtest/svg_chart.h"
#include "kiln/loadtest/workload.h"

namespace kiln::loadtest {
namespace {

// Chunks cut where a server might cut them: the first ends mid-event.
std::string chunked(const std::vector<std::string>& pieces) {
  std::string s;
  for (const auto& p : pieces) {
    char hex[16];
    std::snprintf(hex, sizeof hex, "%zx", p.size());
    s += std::string(hex) + "\r\n" + p + "\r\n";
  }
  return s + "0\r\n\r\n";
}
const std::string kChunkedSse =
    "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n" +
    chunked({"data: {\"choices\":[{\"text\"", ":\"A\"}]}\n\n",
             "data: {\"choices\":[{\"text\":\"B\"}]}\r\n\r\ndata: [DONE]\n\n"});

struct Collected {
  std::vector<std::string> events;
  int status = 0;
  bool done = false, keep_alive = false;
};

Collected parse_split(const std::string& wire, const std::vector<size_t>& cuts) {
  HttpResponseParser hp;
  SseParser sse;
  Collected c;
  const SseParser::EventSink on_event = [&](std::string_view d) { c.events.emplace_back(d); };
  const HttpResponseParser::BodySink on_body = [&](std::string_view b) { sse.feed(b, on_event); };
  size_t prev = 0;
  for (size_t cut : cuts) {
    EXPECT_TRUE(hp.feed(std::string_view(wire).substr(prev, cut - prev), on_body)) << hp.error();
    prev = cut;
  }
  EXPECT_TRUE(hp.feed(std::string_view(wire).substr(prev), on_body)) << hp.error();
  c.status = hp.status();
  c.done = hp.done();
  c.keep_alive = hp.keep_alive();
  return c;
}

TEST(LoadtestHttp, ChunkedSseSurvivesEverySplit) {
  const std::vector<std::string> want = {"{\"choices\":[{\"text\":\"A\"}]}",
                                         "{\"choices\":[{\"text\":\"B\"}]}", "[DONE]"};
  for (size_t i = 0; i <= kChunkedSse.size(); ++i) {
    for (size_t j = i; j <= kChunkedSse.size(); j += 7) {
      const Collected c = parse_split(kChunkedSse, {i, j});
      ASSERT_EQ(c.events, want) << "split at " << i << "," << j;
      ASSERT_TRUE(c.done);
      ASSERT_EQ(c.status, 200);
      ASSERT_TRUE(c.keep_alive);
    }
  }
  // One byte at a time.
  std::vector<size_t> every;
  for (size_t i = 1; i < kChunkedSse.size(); ++i) every.push_back(i);
  EXPECT_EQ(parse_split(kChunkedSse, every).events, want);
}

TEST(LoadtestHttp, LengthCloseAndErrors) {
  HttpResponseParser hp;
  std::string body;
  const HttpResponseParser::BodySink sink = [&](std::string_view b) { body.append(b); };
  ASSERT_TRUE(
      hp.feed("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 429 Too Many Requests\r\n"
              "Content-Length: 5\r\nConnection: close\r\nRetry-After: 1\r\n\r\nhello",
              sink));
  EXPECT_TRUE(hp.done());
  EXPECT_EQ(hp.status(), 429);
  EXPECT_FALSE(hp.keep_alive());
  EXPECT_EQ(hp.retry_after_s(), 1);
  EXPECT_EQ(body, "hello");

  HttpResponseParser until_close;
  body.clear();
  ASSERT_TRUE(until_close.feed(
      "HTTP/1.0 200 OK\r\nContent-Type: text/event-stream\r\n\r\ndata: x\n\n", sink));
  EXPECT_FALSE(until_close.done());
  EXPECT_TRUE(until_close.event_stream());
  EXPECT_TRUE(until_close.finish_eof());
  EXPECT_EQ(body, "data: x\n\n");

  HttpResponseParser cut;
  ASSERT_TRUE(cut.feed("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", sink));
  EXPECT_FALSE(cut.finish_eof());
  EXPECT_NE(cut.error().find("middle of the response"), std::string::npos);

  HttpResponseParser junk;
  EXPECT_FALSE(junk.feed("SSH-2.0-OpenSSH\r\n", sink));
  EXPECT_NE(junk.error().find("status line"), std::string::npos);

  HttpResponseParser bad_chunk;
  EXPECT_FALSE(bad_chunk.feed("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", sink));
  EXPECT_NE(bad_chunk.error().find("chunk size"), std::string::npos);
}

TEST(LoadtestHttp, Urls) {
  auto u = parse_url("http://127.0.0.1:8080");
  ASSERT_TRUE(u.ok());
  EXPECT_EQ(u->host, "127.0.0.1");
  EXPECT_EQ(u->port, 8080);
  EXPECT_EQ(u->prefix, "");
  u = parse_url("http://example.com/proxy/v1/");
  ASSERT_TRUE(u.ok());
  EXPECT_EQ(u->port, 80);
  EXPECT_EQ(u->prefix, "/proxy");
  EXPECT_EQ(u->host_header(), "example.com");
  auto https = parse_url("https://x.run.app");
  ASSERT_FALSE(https.ok());
  EXPECT_NE(https.message().find("gcloud run services proxy"), std::string::npos);
  EXPECT_FALSE(parse_url("http://h:99999").ok());
  EXPECT_FALSE(parse_url("localhost:8080").ok());
}

TEST(LoadtestSse, FieldsCommentsAndCrlf) {
  SseParser p;
  std::vector<std::string> ev;
  const SseParser::EventSink sink = [&](std::string_view d) { ev.emplace_back(d); };
  p.feed(": keep-alive\r\n\r\nevent: x\r\nid: 3\r\ndata: a\r\ndata:b\r\n\r\nretry: 5\n\n", sink);
  EXPECT_EQ(ev, std::vector<std::string>({"a\nb"}));
}

TEST(LoadtestSse, Classify) {
  using K = StreamEvent::Kind;
  EXPECT_EQ(classify_event("[DONE]").kind, K::done);
  EXPECT_EQ(classify_event(R"({"choices":[{"index":0,"text":"hi","finish_reason":null}]})").kind,
            K::token);
  EXPECT_EQ(classify_event(R"({"choices":[{"text":""}]})").kind, K::other);
  EXPECT_EQ(classify_event(R"({"choices":[{"delta":{"role":"assistant","content":""}}]})").kind,
            K::other);
  EXPECT_EQ(classify_event(R"({"choices":[{"delta": {"content": "x"}}]})").kind, K::token);
  EXPECT_EQ(classify_event(R"({"choices":[{"delta":{"reasoning_content":"x"}}]})").kind, K::other);
  // Key names inside string content are escaped, so they never match.
  EXPECT_EQ(classify_event(R"({"choices":[{"text":"\"usage\":{\"error\":1}"}],"usage":null})").kind,
            K::token);
  const auto u = classify_event(
      R"({"choices":[],"usage":{"prompt_tokens":12,"completion_tokens":7,"total_tokens":19,)"
      R"("prompt_tokens_details":{"cached_tokens":8}}})");
  EXPECT_EQ(u.kind, K::usage);
  EXPECT_EQ(u.prompt_tokens, 12);
  EXPECT_EQ(u.completion_tokens, 7);
  EXPECT_EQ(u.cached_tokens, 8);
  bool also = false;
  const auto both =
      classify_event(R"({"choices":[{"text":"z"}],"usage":{"completion_tokens":3}})", &also);
  EXPECT_EQ(both.kind, K::usage);
  EXPECT_TRUE(also);
  EXPECT_EQ(both.cached_tokens, -1);
  const auto e = classify_event(R"({"error":{"message":"boom","type":"server_error"}})");
  EXPECT_EQ(e.kind, K::error);
  EXPECT_EQ(e.error, "boom");
}

TEST(LoadtestWorkload, Distributions) {
  EXPECT_FALSE(parse_length_dist("0", "--x").ok());
  EXPECT_FALSE(parse_length_dist("uniform:5", "--x").ok());
  EXPECT_FALSE(parse_length_dist("gauss:1:2", "--x").ok());
  auto u = parse_length_dist("uniform:10:20", "--x");
  ASSERT_TRUE(u.ok());
  std::mt19937_64 rng(1);
  for (int i = 0; i < 1000; ++i) {
    const int v = u->sample(rng);
    ASSERT_GE(v, 10);
    ASSERT_LE(v, 20);
  }
  auto n = parse_length_dist("normal:100:10", "--x");
  ASSERT_TRUE(n.ok());
  double sum = 0;
  for (int i = 0; i < 2000; ++i) sum += n->sample(rng);
  EXPECT_NEAR(sum / 2000, 100, 2);
  auto e = parse_length_dist("exp:50", "--x");
  ASSERT_TRUE(e.ok());
  EXPECT_EQ(parse_length_dist("64", "--x")->sample(rng), 64);
}

TEST(LoadtestWorkload, ServingPresetAndSharedPreamble) {
  WorkloadOptions o;
  ASSERT_TRUE(apply_preset("serving", o).ok());
  EXPECT_FALSE(apply_preset("nope", o).ok());
  o.pool_size = 8;
  auto w = Workload::build(o);
  ASSERT_TRUE(w.ok()) << w.message();
  ASSERT_EQ(w->size(), 8u);
  const auto j = nlohmann::json::parse(w->get(3).body);
  EXPECT_EQ(w->get(3).path, "/v1/completions");
  EXPECT_EQ(j["max_tokens"], 128);
  EXPECT_EQ(j["ignore_eos"], true);
  EXPECT_EQ(j["temperature"], 0.0);
  EXPECT_EQ(j["stream"], true);
  EXPECT_EQ(j["stream_options"]["include_usage"], true);
  const std::string prompt = j["prompt"];
  EXPECT_EQ(std::count(prompt.begin(), prompt.end(), ' '), 299);
  EXPECT_NE(w->get(0).body, w->get(1).body);

  WorkloadOptions s;
  s.api = "chat";
  s.n_preambles = 3;
  s.n_questions = 4;
  s.preamble_words = 50;
  s.prompt_words = {LengthDist::Kind::fixed, 5, 0};
  auto sw = Workload::build(s);
  ASSERT_TRUE(sw.ok()) << sw.message();
  ASSERT_EQ(sw->size(), 12u);
  std::set<std::string> systems, users;
  for (size_t i = 0; i < sw->size(); ++i) {
    const auto m = nlohmann::json::parse(sw->get(i).body)["messages"];
    EXPECT_EQ(sw->get(i).path, "/v1/chat/completions");
    systems.insert(m[0]["content"].get<std::string>());
    users.insert(m[1]["content"].get<std::string>());
  }
  EXPECT_EQ(systems.size(), 3u);
  EXPECT_EQ(users.size(), 4u);
}

TEST(LoadtestWorkload, JsonlPrompts) {
  const auto path = std::filesystem::temp_directory_path() / "kiln_lt_prompts.jsonl";
  {
    std::ofstream f(path);
    f << R"({"prompt":"hello","max_tokens":7})"
      << "\n\n"
      << R"({"messages":[{"role":"user","content":"hi"}]})"
      << "\n"
      << R"("just text")"
      << "\n";
  }
  WorkloadOptions o;
  o.prompts_file = path.string();
  o.output_tokens = {LengthDist::Kind::fixed, 16, 0};
  o.ignore_eos = false;
  auto w = Workload::build(o);
  ASSERT_TRUE(w.ok()) << w.message();
  ASSERT_EQ(w->size(), 3u);
  EXPECT_EQ(w->get(0).max_tokens, 7);
  EXPECT_EQ(w->get(1).path, "/v1/chat/completions");
  EXPECT_EQ(w->get(1).max_tokens, 16);
  EXPECT_EQ(nlohmann::json::parse(w->get(2).body)["prompt"], "just text");
  EXPECT_FALSE(nlohmann::json::parse(w->get(0).body).contains("ignore_eos"));
  {
    std::ofstream f(path);
    f << "{\"prompt\": 1\n";
  }
  auto bad = Workload::build(o);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.message().find(":1: not valid JSON"), std::string::npos) << bad.message();
  std::filesystem::remove(path);
}

TEST(LoadtestReplay, RequestLogLines) {
  const auto path = std::filesystem::temp_directory_path() / "kiln_lt_requests.log";
  {
    std::ofstream f(path);
    f << R"({"time":"2025-01-31T12:00:01.500Z","id":"cmpl-2","endpoint":"/v1/chat/completions","model":"m","messages":[{"role":"user","content":"x"}],"params":{"max_tokens":null,"temperature":0.5,"seed":null,"stop":[],"n":1,"stream":false,"logprobs":2,"ignore_eos":false},"completion_tokens":9,"status":200})"
      << "\n"
      << R"({"time":"2025-01-31T12:00:00.123Z","id":"cmpl-1","endpoint":"/v1/completions","model":"m","prompt":"alpha beta","params":{"max_tokens":4,"temperature":0.0,"top_k":0,"seed":5,"stream":true,"logprobs":-1,"ignore_eos":true},"status":200})"
      << "\n"
      << R"({"time":"2025-01-31T12:00:02.000Z","endpoint":"/v1/completions","status":429,"error":"busy"})"
      << "\n";
  }
  auto w = load_request_log(path.string(), {});
  ASSERT_TRUE(w.ok()) << w.message();
  ASSERT_EQ(w->size(), 2u);
  // Sorted by arrival, times relative to the first line read.
  EXPECT_EQ(w->get(0).path, "/v1/completions");
  EXPECT_NEAR(w->get(0).at_s, -1.377, 1e-6);
  EXPECT_NEAR(w->get(1).at_s, 0, 1e-6);
  const auto c = nlohmann::json::parse(w->get(0).body);
  EXPECT_EQ(c["prompt"], "alpha beta");
  EXPECT_EQ(c["max_tokens"], 4);
  EXPECT_EQ(c["seed"], 5);
  EXPECT_EQ(c["stream"], true);
  EXPECT_FALSE(c.contains("logprobs"));
  const auto chat = nlohmann::json::parse(w->get(1).body);
  EXPECT_FALSE(chat.contains("max_tokens"));
  EXPECT_EQ(w->get(1).max_tokens, 9);
  EXPECT_EQ(chat["logprobs"], true);
  EXPECT_EQ(chat["top_logprobs"], 2);
  EXPECT_EQ(chat["stream"], true);
  EXPECT_NE(w->description().find("1 refused"), std::string::npos);
  EXPECT_FALSE(parse_iso8601_utc("yesterday").ok());
  std::filesystem::remove(path);
}

TEST(LoadtestStats, Percentiles) {
  const auto p = percentiles({5, 1, 4, 2, 3});
  EXPECT_EQ(p.n, 5);
  EXPECT_DOUBLE_EQ(p.p50, 3);
  EXPECT_DOUBLE_EQ(p.mean, 3);
  EXPECT_DOUBLE_EQ(p.p90, 4.6);
  EXPECT_DOUBLE_EQ(p.max, 5);
  EXPECT_EQ(percentiles({}).n, 0);
}

RequestRecord ok_record(double start_s, double ttft, double gap, int n, int64_t usage_tokens = -1) {
  RequestRecord r;
  r.status = 200;
  r.start_s = start_s;
  r.ttft_ms = ttft;
  for (int i = 0; i < n; ++i) r.token_ms.push_back(float(ttft + gap * i));
  r.e2e_ms = ttft + gap * (n - 1) + 1;
  r.completion_tokens = usage_tokens;
  r.prompt_tokens = 100;
  r.cached_tokens = 25;
  r.expected_tokens = n;
  return r;
}

TEST(LoadtestStats, SummaryCountsWindowAndErrors) {
  RunResult rr;
  rr.window_s = 1.0;
  rr.wall_s = 1.5;
  rr.client_cpu_s = 0.001;
  rr.records.push_back(ok_record(0.0, 100, 10, 11));  // ends at 0.201 s
  rr.records.push_back(ok_record(0.9, 100, 50, 9));   // tokens at 1.0..1.3 s: 1 inside the window
  // A server that puts two tokens in each event.
  rr.records.push_back(ok_record(0.0, 50, 20, 5, 10));
  RequestRecord busy;
  busy.status = 429;
  busy.error = "HTTP 429: busy";
  rr.records.push_back(busy);
  RequestRecord cut;
  cut.error = "receive: reset";
  rr.records.push_back(cut);
  const LevelSummary s = summarize(rr, "c=3", 3, 0);
  EXPECT_EQ(s.n_requests, 5);
  EXPECT_EQ(s.n_ok, 3);
  EXPECT_EQ(s.n_errors, 2);
  EXPECT_EQ(s.n_429, 1);
  EXPECT_EQ(s.errors_by_status.at(0), 1);
  EXPECT_EQ(s.errors_by_status.at(429), 1);
  EXPECT_DOUBLE_EQ(s.output_tok_s, 11 + 1 + 10);
  EXPECT_DOUBLE_EQ(s.req_s, 2);
  EXPECT_EQ(s.output_tokens, 11 + 9 + 10);
  EXPECT_DOUBLE_EQ(s.cached_share, 0.25);
  EXPECT_DOUBLE_EQ(s.ttft_ms.p50, 100);
  // TPOT: (last - first) / (tokens - 1): 10, 50, and 80/9 for the batched one.
  EXPECT_DOUBLE_EQ(s.tpot_ms.max, 50);
  EXPECT_NEAR(s.tpot_ms.p50, 10, 1e-9);
  EXPECT_EQ(s.itl_ms.n, 10 + 8 + 4);
  EXPECT_NEAR(s.client_cpu_us_per_token, 1000.0 / 30, 1e-9);
  const auto j = to_json(s);
  EXPECT_EQ(j["errors_by_status"]["429"], 1);
  EXPECT_EQ(j["errors_by_status"]["none"], 1);
}

LevelSummary level(int c, double tok_s, double ttft99, double tpot99, int errors = 0) {
  LevelSummary l;
  l.label = "c=" + std::to_string(c);
  l.concurrency = c;
  l.output_tok_s = tok_s;
  l.req_s = tok_s / 100;
  l.ttft_ms.p99 = ttft99;
  l.ttft_ms.p50 = ttft99 / 2;
  l.tpot_ms.p99 = tpot99;
  l.tpot_ms.p50 = tpot99 / 2;
  l.n_requests = 100;
  l.n_ok = 100 - errors;
  l.n_errors = errors;
  l.n_429 = errors;
  return l;
}

TEST(LoadtestRecommend, SloAndKnee) {
  const std::vector<LevelSummary> lv = {level(1, 50, 100, 20), level(2, 95, 120, 21),
                                        level(4, 180, 200, 24), level(8, 300, 900, 30),
                                        level(16, 310, 400, 31)};
  Slo slo;
  slo.ttft_p99_ms = 500;
  auto r = recommend(lv, slo, 1.0);
  EXPECT_EQ(r.concurrency, 4);  // 8 misses; 16 passing again is noise, not headroom
  EXPECT_TRUE(r.meets_slo);
  EXPECT_DOUBLE_EQ(r.throughput_tok_s, 180);
  EXPECT_DOUBLE_EQ(r.tokens_per_gpu_hour, 180 * 3600);
  ASSERT_TRUE(r.cost_per_million_tokens.has_value());
  EXPECT_NEAR(*r.cost_per_million_tokens, 1.0 / (0.648), 1e-9);
  EXPECT_NE(r.reason.find("concurrency 8 misses"), std::string::npos) << r.reason;

  Slo tpot;
  tpot.tpot_p99_ms = 22;
  EXPECT_EQ(recommend(lv, tpot, std::nullopt).concurrency, 2);

  Slo impossible;
  impossible.ttft_p99_ms = 10;
  r = recommend(lv, impossible, std::nullopt);
  EXPECT_FALSE(r.meets_slo);
  EXPECT_EQ(r.concurrency, 1);

  // No SLO: the knee, 90% of the best throughput among error-free levels.
  r = recommend(lv, Slo{}, std::nullopt);
  EXPECT_EQ(r.concurrency, 8);
  auto with_429 = lv;
  with_429[4] = level(16, 1000, 400, 31, /*errors=*/50);  // fast because it refuses half
  EXPECT_EQ(recommend(with_429, Slo{}, std::nullopt).concurrency, 8);
  Slo s2;
  s2.ttft_p99_ms = 1000;
  EXPECT_EQ(recommend(with_429, s2, std::nullopt).concurrency, 8);
}

TEST(LoadtestRecommend, KilnMetricsAndGcloud) {
  const std::string metrics =
      "# HELP kiln_capacity_recommended_concurrency x\n"
      "# TYPE kiln_capacity_recommended_concurrency gauge\n"
      "kiln_capacity_recommended_concurrency 24\n"
      "kiln_capacity_max_concurrency 32\nkiln_capacity_parallel 8\n"
      "kiln_capacity_ideal_batch_estimated 1\n"
      "kiln_http_responses_total{code=\"200\"} 5\n";
  auto k = parse_kiln_capacity(metrics);
  ASSERT_TRUE(k.has_value());
  EXPECT_EQ(k->recommended, 24);
  EXPECT_EQ(k->max_concurrency, 32);
  EXPECT_EQ(k->parallel, 8);
  EXPECT_TRUE(k->ideal_batch_estimated);
  EXPECT_FALSE(parse_kiln_capacity("vllm_num_requests_running 3\n").has_value());
  const std::string g = gcloud_command({"svc", "img:1", "us-central1"}, 12);
  EXPECT_EQ(g.rfind("gcloud run deploy svc --image img:1 --concurrency 12 ", 0), 0u) << g;
  EXPECT_NE(g.find("--gpu-type nvidia-l4"), std::string::npos);
  EXPECT_NE(g.find("--region us-central1"), std::string::npos);
}

TEST(LoadtestReport, JsonContractCsvAndChart) {
  const std::vector<LevelSummary> lv = {level(1, 50, 100, 20), level(2, 95, 120, 21),
                                        level(4, 180, 700, 24)};
  Slo slo;
  slo.ttft_p99_ms = 500;
  const auto rec = recommend(lv, slo, 0.7);
  SweepReport rep{{{"url", "http://x"}}, lv, slo, 0.7, rec, std::nullopt, gcloud_command({}, 2)};
  const auto j = nlohmann::json::parse(sweep_json(rep).dump());
  // The contract `kiln plan` reads (docs/loadtest.md).
  ASSERT_TRUE(j["recommendation"]["concurrency"].is_number_integer());
  EXPECT_EQ(j["recommendation"]["concurrency"], 2);
  EXPECT_TRUE(j["recommendation"]["throughput_tok_s"].is_number());
  EXPECT_EQ(j["recommendation"]["slo_ttft_p99_ms"], 500.0);
  EXPECT_TRUE(j["recommendation"]["slo_tpot_p99_ms"].is_null());
  EXPECT_NE(j["recommendation"]["gcloud"].get<std::string>().find("--concurrency 2"),
            std::string::npos);
  ASSERT_EQ(j["levels"].size(), 3u);
  for (const char* k : {"concurrency", "ttft_p99_ms", "tpot_p99_ms", "output_tok_s"})
    EXPECT_TRUE(j["levels"][2][k].is_number()) << k;
  EXPECT_EQ(j["levels"][2]["meets_slo"], false);
  EXPECT_TRUE(j["kiln_rule_of_thumb"].is_null());

  const std::string csv = levels_csv(lv);
  EXPECT_EQ(std::count(csv.begin(), csv.end(), '\n'), 4);
  EXPECT_EQ(csv.rfind("label,concurrency,", 0), 0u);

  const std::string svg = sweep_chart_svg(lv, slo, rec.concurrency, "t <&>");
  EXPECT_EQ(svg.rfind("<?xml", 0), 0u);
  EXPECT_NE(svg.find("</svg>"), std::string::npos);
  EXPECT_NE(svg.find("t &lt;&amp;&gt;"), std::string::npos);
  EXPECT_NE(svg.find("SLO p99 500 ms"), std::string::npos);
  EXPECT_EQ(std::count(svg.begin(), svg.end(), '<'), std::count(svg.begin(), svg.end(), '>'));
  const std::string row = table_row(lv[2], slo);
  EXPECT_NE(row.find("miss: TTFT p99 700 ms > 500 ms"), std::string::npos) << row;
}

}  // namespace
}  // namespace kiln::loadtest
