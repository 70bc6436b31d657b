// kiln's Jinja chat-template renderer against jinja2: every real chat template
// (shared/testdata/chat-templates, plus the one inside ggml-vocab-qwen2.gguf)
// x every committed conversation x generation prompt on/off, and every
// one-construct template, must render to the same bytes as jinja2 run the way
// transformers runs it (tools/jinja_reference.py, /usr/bin/python3), or both
// must refuse. kiln renders in-process; Python only produces the expectations.
// Also: errors, limits, the clock, thread safety, and the `kiln template` CLI.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <thread>

#include "common/paths.h"
#include "kiln/gguf/gguf.h"
#include "kiln/template/template.h"

namespace {

namespace fs = std::filesystem;
using json = nlohmann::ordered_json;
using kiln::jinja::DateTime;
using kiln::jinja::RenderOptions;
using kiln::jinja::RenderStats;
using kiln::jinja::Template;

constexpr const char* kPython = "/usr/bin/python3";
constexpr const char* kNow = "2024-07-26T10:30:05.123456";  // strftime_now on both sides

std::string data_dir() { return kiln::test::source_dir() + "/tests/data/templates"; }

RenderOptions fixed_clock() {
  RenderOptions o;
  const DateTime t = *kiln::jinja::parse_iso_datetime(kNow);
  o.clock = [t] { return t; };
  return o;
}

json read_json(const std::string& path) {
  return json::parse(kiln::test::read_file(path), nullptr, true, /*ignore_comments=*/true);
}

std::vector<fs::path> sorted_files(const fs::path& dir, const std::string& ext) {
  std::vector<fs::path> out;
  if (fs::is_directory(dir))
    for (const auto& e : fs::directory_iterator(dir))
      if (e.path().extension() == ext) out.push_back(e.path());
  std::sort(out.begin(), out.end());
  return out;
}

// ---------------------------------------------------------------- the cases
struct NamedTemplate {
  std::string name, text;
};

// The real chat templates: the shared folder's, plus the GGUF's own.
const std::vector<NamedTemplate>& chat_templates() {
  static const std::vector<NamedTemplate> list = [] {
    std::vector<NamedTemplate> out;
    for (const auto& p : sorted_files(kiln::test::testdata("chat-templates"), ".jinja"))
      out.push_back({p.filename().string(), kiln::test::read_file(p.string())});
    const std::string gguf_path = kiln::test::testdata("vocab/ggml-vocab-qwen2.gguf");
    if (auto f = kiln::gguf::File::open(gguf_path); f.ok())
      if (auto t = (*f)->get_string("tokenizer.chat_template"))
        out.push_back({"ggml-vocab-qwen2.gguf", *t});
    return out;
  }();
  return list;
}

const std::vector<NamedTemplate>& construct_templates() {
  static const std::vector<NamedTemplate> list = [] {
    std::vector<NamedTemplate> out;
    for (const auto& p : sorted_files(data_dir() + "/constructs", ".jinja"))
      out.push_back({p.stem().string(), kiln::test::read_file(p.string())});
    return out;
  }();
  return list;
}

struct Case {
  std::string label;  // "template / conversation / agp=1"
  const NamedTemplate* tmpl;
  json context;
};

// Conversation files hold messages, optional tools and extra vars; the context
// is what transformers' apply_chat_template passes for them.
std::vector<Case> chat_cases(const NamedTemplate& t) {
  std::vector<Case> out;
  for (const auto& p : sorted_files(data_dir() + "/conversations", ".json")) {
    const json conv = read_json(p.string());
    for (const bool agp : {false, true}) {
      json ctx = kiln::jinja::chat_context(conv.at("messages"), conv.value("tools", json(nullptr)), agp,
                                           std::string("<s>"), std::string("</s>"),
                                           conv.value("vars", json::object()));
      out.push_back({t.name + " / " + p.stem().string() + " / agp=" + (agp ? "1" : "0"), &t, ctx});
    }
  }
  return out;
}

std::vector<Case> construct_cases(const NamedTemplate& t) {
  const std::string side = data_dir() + "/constructs/" + t.name + ".json";
  json ctx = read_json(fs::exists(side) ? side : data_dir() + "/constructs/context.json");
  return {{t.name, &t, std::move(ctx)}};
}

std::vector<Case> all_cases() {
  std::vector<Case> out;
  for (const auto& t : chat_templates())
    for (auto& c : chat_cases(t)) out.push_back(std::move(c));
  for (const auto& t : construct_templates())
    for (auto& c : construct_cases(t)) out.push_back(std::move(c));
  return out;
}

// ---------------------------------------------------------------- reference
struct Reference {
  std::string unavailable;            // why jinja2 cannot run (tests skip)
  std::map<std::string, json> by_label;  // label -> {"ok", "output" | "error_type", "error"}
};

// Runs jinja2 once for every case (one Python process for the whole suite).
const Reference& reference() {
  static const Reference ref = [] {
    Reference r;
    if (!fs::exists(kPython)) {
      r.unavailable = std::string(kPython) + " not found; install python3 and python3-jinja2";
      return r;
    }
    const std::vector<Case> cases = all_cases();
    json jobs = json::array();
    for (const auto& c : cases) jobs.push_back({{"template", c.tmpl->text}, {"context", c.context}, {"now", kNow}});
    const std::string base = ::testing::TempDir() + "kiln_template_" + std::to_string(::getpid());
    {
      std::ofstream f(base + "_jobs.json", std::ios::binary);
      f << jobs.dump();
    }
    const std::string cmd = std::string(kPython) + " '" + kiln::test::source_dir() +
                            "/tools/jinja_reference.py' --batch '" + base + "_jobs.json' --out '" + base +
                            "_results.json' 2> '" + base + "_stderr.txt'";
    const int rc = std::system(cmd.c_str());
    const int code = WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
    if (code == 4) {
      r.unavailable = "python3-jinja2 is not installed (apt-get install -y python3-jinja2)";
    } else if (code != 0) {
      r.unavailable = "tools/jinja_reference.py failed (exit " + std::to_string(code) +
                      "): " + kiln::test::read_file(base + "_stderr.txt");
    } else {
      const json results = json::parse(kiln::test::read_file(base + "_results.json"));
      for (size_t k = 0; k < cases.size() && k < results.size(); ++k) r.by_label[cases[k].label] = results[k];
    }
    std::remove((base + "_jobs.json").c_str());
    std::remove((base + "_results.json").c_str());
    std::remove((base + "_stderr.txt").c_str());
    return r;
  }();
  return ref;
}

#define REQUIRE_REFERENCE()                                                      \
  do {                                                                           \
    if (!reference().unavailable.empty())                                        \
      GTEST_SKIP() << "jinja2 reference unavailable: " << reference().unavailable; \
  } while (0)

// kiln's rendering of one case (parse errors count as refusals).
kiln::Result<std::string> render_kiln(const Case& c, RenderStats* stats = nullptr) {
  auto t = Template::parse(c.tmpl->text);
  if (!t) return t.error();
  return t->render(c.context, fixed_clock(), stats);
}

std::string snippet(const std::string& s, size_t at) {
  const size_t b = at > 60 ? at - 60 : 0;
  return json(s.substr(b, 160)).dump();
}

// Same bytes, or both refuse; a raise_exception message must come through.
::testing::AssertionResult agrees(const Case& c, const json& ref, const kiln::Result<std::string>& mine) {
  const bool ref_ok = ref.at("ok").get<bool>();
  if (ref_ok && mine.ok()) {
    const std::string& want = ref.at("output").get_ref<const std::string&>();
    if (want == *mine) return ::testing::AssertionSuccess();
    size_t at = 0;
    while (at < want.size() && at < mine->size() && want[at] == (*mine)[at]) ++at;
    return ::testing::AssertionFailure() << c.label << ": output differs at byte " << at << "\n  jinja2: "
                                         << snippet(want, at) << "\n  kiln:   " << snippet(*mine, at);
  }
  if (!ref_ok && !mine.ok()) {
    if (ref.at("error_type") == "TemplateError" &&
        mine.message().find(ref.at("error").get<std::string>()) == std::string::npos)
      return ::testing::AssertionFailure() << c.label << ": raise_exception message lost: jinja2 '"
                                           << ref.at("error").get<std::string>() << "', kiln '" << mine.message() << "'";
    return ::testing::AssertionSuccess();
  }
  if (ref_ok)
    return ::testing::AssertionFailure() << c.label << ": jinja2 renders, kiln refuses: " << mine.message();
  return ::testing::AssertionFailure() << c.label << ": jinja2 refuses (" << ref.at("error_type").get<std::string>()
                                       << ": " << ref.at("error").get<std::string>() << "), kiln renders "
                                       << snippet(*mine, 0);
}

void check_cases(const std::vector<Case>& cases) {
  for (const auto& c : cases) {
    const auto it = reference().by_label.find(c.label);
    ASSERT_NE(it, reference().by_label.end()) << "no jinja2 result for " << c.label;
    RenderStats stats;
    const auto mine = render_kiln(c, &stats);
    EXPECT_TRUE(agrees(c, it->second, mine));
    if (mine.ok()) EXPECT_GT(stats.steps, 0u) << c.label << ": the interpreter did not run";
  }
}

// ---------------------------------------------------------------- vs jinja2
class RealChatTemplate : public ::testing::TestWithParam<std::string> {};

TEST_P(RealChatTemplate, MatchesJinja2) {
  REQUIRE_REFERENCE();
  for (const auto& t : chat_templates())
    if (t.name == GetParam()) check_cases(chat_cases(t));
}

std::vector<std::string> chat_template_names() {
  std::vector<std::string> names;
  for (const auto& t : chat_templates()) names.push_back(t.name);
  return names;
}

std::string param_name(const ::testing::TestParamInfo<std::string>& info) {
  std::string n;
  for (char c : info.param) n += std::isalnum(uint8_t(c)) ? c : '_';
  return n;
}

INSTANTIATE_TEST_SUITE_P(Shared, RealChatTemplate, ::testing::ValuesIn(chat_template_names()), param_name);

class ConstructTemplate : public ::testing::TestWithParam<std::string> {};

TEST_P(ConstructTemplate, MatchesJinja2) {
  REQUIRE_REFERENCE();
  for (const auto& t : construct_templates())
    if (t.name == GetParam()) check_cases(construct_cases(t));
}

std::vector<std::string> construct_names() {
  std::vector<std::string> names;
  for (const auto& t : construct_templates()) names.push_back(t.name);
  return names;
}

INSTANTIATE_TEST_SUITE_P(Constructs, ConstructTemplate, ::testing::ValuesIn(construct_names()), param_name);

// The whole matrix in one place: it must be complete, and the tally is printed.
TEST(TemplateMatrix, CompleteAndIdentical) {
  ASSERT_GE(chat_templates().size(), 12u) << "shared chat templates missing under " << kiln::test::testdata("chat-templates");
  ASSERT_GE(construct_templates().size(), 20u);
  ASSERT_GE(sorted_files(data_dir() + "/conversations", ".json").size(), 20u);
  REQUIRE_REFERENCE();
  size_t chat = 0, chat_same = 0, chat_refused = 0, cons = 0, cons_same = 0;
  for (const auto& c : all_cases()) {
    const json& ref = reference().by_label.at(c.label);
    const bool same = agrees(c, ref, render_kiln(c));
    const bool is_chat = c.label.find(" / ") != std::string::npos;
    (is_chat ? chat : cons) += 1;
    (is_chat ? chat_same : cons_same) += same;
    chat_refused += is_chat && same && !ref.at("ok").get<bool>();
  }
  std::printf("[ template ] chat templates x conversations: %zu/%zu identical to jinja2 (%zu of them refused by both)\n"
              "[ template ] construct templates: %zu/%zu identical\n",
              chat_same, chat, chat_refused, cons_same, cons);
  EXPECT_EQ(chat_same, chat);
  EXPECT_EQ(cons_same, cons);
}

// Outputs recorded from jinja2, checked even where Python is absent.
TEST(TemplateKnownOutputs, MatchRecordedJinja2) {
  const json known = read_json(data_dir() + "/known_outputs.json");
  ASSERT_GE(known.size(), 10u);
  for (const auto& k : known) {
    auto t = Template::parse(k.at("template").get<std::string>());
    ASSERT_TRUE(t.ok()) << t.message();
    auto out = t->render(k.at("context"));
    ASSERT_TRUE(out.ok()) << k.at("template") << ": " << out.message();
    EXPECT_EQ(*out, k.at("expected").get<std::string>()) << k.at("template");
  }
}

// ---------------------------------------------------------------- errors
std::string render_error(const std::string& src, const json& ctx = json::object(), const RenderOptions& o = {}) {
  auto t = Template::parse(src);
  if (!t) return t.message();
  auto r = t->render(ctx, o);
  return r.ok() ? "(rendered: " + *r + ")" : r.message();
}

TEST(TemplateErrors, SyntaxErrorsNameLineAndColumn) {
  auto t = Template::parse("line one\n{% if x %}\n  {{ x + }}\n{% endif %}");
  ASSERT_FALSE(t.ok());
  EXPECT_NE(t.message().find("line 3, column 10"), std::string::npos) << t.message();
  EXPECT_NE(render_error("{% for m in messages %}x").find("endfor"), std::string::npos);
  EXPECT_NE(render_error("{{ 'unterminated }}").find("line 1"), std::string::npos);
  EXPECT_NE(render_error("{% frobnicate %}").find("unknown tag 'frobnicate'"), std::string::npos);
  EXPECT_NE(render_error("{{ x|no_such_filter }}").find("No filter named 'no_such_filter'"), std::string::npos);
  EXPECT_NE(render_error("{{ x is no_such_test }}").find("No test named"), std::string::npos);
  EXPECT_NE(render_error("{% break %}").find("outside of a loop"), std::string::npos);
  EXPECT_NE(render_error("{# never closed").find("comment"), std::string::npos);
  EXPECT_NE(render_error(std::string("{{ '\xff' }}")).find("UTF-8"), std::string::npos);
}

TEST(TemplateErrors, RuntimeErrorsAreResults) {
  EXPECT_EQ(render_error("{{ raise_exception('Roles must alternate') }}"),
            "chat template raised an exception: Roles must alternate");
  EXPECT_NE(render_error("{{ missing.attr }}").find("'missing' is undefined"), std::string::npos);
  EXPECT_NE(render_error("{{ 1 + 'a' }}").find("unsupported operand"), std::string::npos);
  EXPECT_NE(render_error("{{ [1].append(2) }}").find("unsafe"), std::string::npos);
  EXPECT_NE(render_error("{{ 1 / 0 }}").find("division by zero"), std::string::npos);
  EXPECT_NE(render_error("{{ x|groupby('a') }}").find("not supported by kiln"), std::string::npos);
  EXPECT_NE(render_error("{% for a, b in [[1, 2, 3]] %}{% endfor %}").find("too many values"), std::string::npos);
  auto t = Template::parse("{{ x }}");
  ASSERT_TRUE(t.ok());
  EXPECT_FALSE(t->render(json::array()).ok());  // the context must be an object
}

TEST(TemplateLimits, RunawayTemplatesFailCleanly) {
  RenderOptions small;
  small.max_steps = 200000;
  small.max_output_bytes = 1 << 16;
  EXPECT_NE(render_error("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}").find("recursion"), std::string::npos);
  EXPECT_NE(render_error("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}", json::object(), small)
                .find("steps"),
            std::string::npos);
  EXPECT_NE(render_error("{% for i in range(1000) %}{{ 'x' * 1000 }}{% endfor %}", json::object(), small).find("limit"),
            std::string::npos);
  EXPECT_NE(render_error("{{ 'x' * 100000000000 }}").find("limit"), std::string::npos);
  EXPECT_NE(render_error("{{ range(1000000)|length }}").find("MAX_RANGE"), std::string::npos);
  EXPECT_NE(render_error("{{ " + std::string(20000, '(') + "1" + std::string(20000, ')') + " }}").find("nests too deeply"),
            std::string::npos);
  std::string chain = "{{ 1";
  for (int k = 0; k < 20000; ++k) chain += " + 1";
  EXPECT_NE(render_error(chain + " }}").find("nests too deeply"), std::string::npos);
  EXPECT_NE(render_error("{% set ns = namespace(x=[]) %}{% for i in range(5000) %}{% set ns.x = [ns.x] %}{% endfor %}")
                .find("nests too deeply"),
            std::string::npos);
  json deep = json::array();
  for (int k = 0; k < 2000; ++k) deep = json::array({deep});
  EXPECT_NE(render_error("{{ x|length }}", {{"x", deep}}).find("nest too deeply"), std::string::npos);
  // A namespace that holds itself prints once and is freed after the render.
  EXPECT_EQ(render_error("{% set ns = namespace() %}{% set ns.me = ns %}{{ ns }}"),
            "(rendered: <Namespace {'me': <Namespace {...}>}>)");
}

// Random damage to real templates: every outcome is a Result, never a crash.
TEST(TemplateLimits, DamagedTemplatesNeverCrash) {
  std::mt19937 rng(12345);
  const std::string alphabet = "{}%#-+()[]'\"|.,:=~*/ \n\tabcxyz0123456789endifforsetmacro";
  const json ctx = kiln::jinja::chat_context(
      read_json(data_dir() + "/conversations/06_tools.json").at("messages"), nullptr, true, "<s>", "</s>");
  size_t rendered = 0;
  for (const auto& t : chat_templates()) {
    for (int k = 0; k < 40; ++k) {
      std::string s = t.text;
      for (int e = 0; e < 1 + int(rng() % 4); ++e) {
        const size_t at = s.empty() ? 0 : rng() % s.size();
        switch (rng() % 3) {
          case 0: s.insert(at, 1, alphabet[rng() % alphabet.size()]); break;
          case 1: if (!s.empty()) s.erase(at, 1 + rng() % 8); break;
          default: s.resize(at); break;
        }
      }
      auto p = Template::parse(s);
      if (p.ok()) rendered += p->render(ctx, fixed_clock()).ok();
    }
  }
  SUCCEED() << rendered << " damaged templates still rendered";
}

// ---------------------------------------------------------------- API
TEST(TemplateApi, ClockIsInjected) {
  auto t = Template::parse("{{ strftime_now('%Y-%m-%d %H:%M:%S.%f %a %b') }}|{{ strftime_now('%d %B %Y') }}");
  ASSERT_TRUE(t.ok());
  auto out = t->render(json::object(), fixed_clock());
  ASSERT_TRUE(out.ok()) << out.message();
  EXPECT_EQ(*out, "2024-07-26 10:30:05.123456 Fri Jul|26 July 2024");
  EXPECT_FALSE(kiln::jinja::parse_iso_datetime("2024-02-30").ok());
  EXPECT_FALSE(kiln::jinja::parse_iso_datetime("2024-07-26T10:30:00Z").ok());
  EXPECT_TRUE(kiln::jinja::parse_iso_datetime("2024-02-29 23:59").ok());
  EXPECT_EQ(kiln::jinja::format_datetime({2000, 1, 1, 0, 0, 0, 0}, "%A %j %U"), "Saturday 001 00");
}

TEST(TemplateApi, ChatContextFollowsTransformers) {
  const json msgs = json::array({{{"role", "user"}, {"content", "hi"}}});
  const json ctx = kiln::jinja::chat_context(msgs, nullptr, true, std::nullopt, "</s>", {{"enable_thinking", false}});
  EXPECT_TRUE(ctx.at("tools").is_null());
  EXPECT_TRUE(ctx.at("documents").is_null());
  EXPECT_FALSE(ctx.contains("bos_token"));  // a tokenizer without one leaves it undefined
  EXPECT_EQ(ctx.at("eos_token"), "</s>");
  EXPECT_EQ(ctx.at("enable_thinking"), false);
  auto t = Template::parse("{{ bos_token is defined }}{{ tools is none }}{{ messages[0].content }}");
  ASSERT_TRUE(t.ok());
  EXPECT_EQ(*t->render(ctx), "FalseTruehi");
}

TEST(TemplateApi, ConcurrentRendersOfOneTemplate) {
  const auto& templates = chat_templates();
  ASSERT_FALSE(templates.empty());
  const NamedTemplate* qwen3 = &templates.front();
  for (const auto& t : templates)
    if (t.name.find("Qwen3") != std::string::npos) qwen3 = &t;
  auto t = Template::parse(qwen3->text);
  ASSERT_TRUE(t.ok()) << t.message();
  const json conv = read_json(data_dir() + "/conversations/06_tools.json");
  const json ctx = kiln::jinja::chat_context(conv.at("messages"), conv.at("tools"), true, std::nullopt, std::nullopt);
  const auto want = t->render(ctx);
  ASSERT_TRUE(want.ok()) << want.message();
  std::vector<std::thread> threads;
  std::atomic<int> bad{0};
  for (int k = 0; k < 4; ++k)
    threads.emplace_back([&] {
      for (int n = 0; n < 50; ++n) {
        RenderStats st;
        auto r = t->render(ctx, {}, &st);
        if (!r.ok() || *r != *want || st.steps == 0) ++bad;
      }
    });
  for (auto& th : threads) th.join();
  EXPECT_EQ(bad.load(), 0);
}

// ---------------------------------------------------------------- CLI
TEST(TemplateCli, PrintsExactlyTheRendering) {
  const std::string kiln = kiln::test::kiln_binary();
  if (!fs::exists(kiln)) GTEST_SKIP() << "kiln binary not built at " << kiln;
  const NamedTemplate* tmpl = nullptr;
  for (const auto& t : chat_templates())
    if (t.name.find("Llama-3.2") != std::string::npos) tmpl = &t;
  if (!tmpl) GTEST_SKIP() << "Llama 3.2 template not in shared test data";
  const std::string conv_path = data_dir() + "/conversations/06_tools.json";
  const json conv = read_json(conv_path);
  const std::string tools = ::testing::TempDir() + "kiln_cli_tools_" + std::to_string(::getpid()) + ".json";
  std::ofstream(tools) << conv.at("tools").dump();
  const std::string cmd = "'" + kiln + "' template --template '" + kiln::test::testdata("chat-templates/" + tmpl->name) +
                          "' --messages '" + conv_path + "' --tools '" + tools +
                          "' --add-generation-prompt --bos-token '<s>' --now " + kNow +
                          " --vars '{\"date_string\": \"02 Feb 2025\"}'";
  FILE* p = popen(cmd.c_str(), "r");
  ASSERT_NE(p, nullptr);
  std::string out;
  char buf[4096];
  for (size_t n; (n = fread(buf, 1, sizeof buf, p)) > 0;) out.append(buf, n);
  const int rc = pclose(p);
  std::remove(tools.c_str());
  ASSERT_EQ(rc, 0) << cmd;
  auto t = Template::parse(tmpl->text);
  ASSERT_TRUE(t.ok());
  const json ctx = kiln::jinja::chat_context(conv.at("messages"), conv.at("tools"), true, std::string("<s>"),
                                             std::nullopt, {{"date_string", "02 Feb 2025"}});
  const auto want = t->render(ctx, fixed_clock());
  ASSERT_TRUE(want.ok()) << want.message();
  EXPECT_EQ(out, *want);
}

}  // namespace
