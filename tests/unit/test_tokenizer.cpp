// Tokenizer tests: the conformance vectors of shared/testdata/vocab (ids from
// the Hugging Face tokenizers), round trips, BOS defaults, special-token
// parsing, and errors for unsupported vocabularies.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <thread>
#include <map>
#include <memory>
#include <sstream>

#include "common/paths.h"
#include "kiln/gguf/gguf.h"
#include "kiln/tokenizer/known_prefixes.h"
#include "kiln/tokenizer/tokenizer.h"
#include "kiln/tokenizer/vocab.h"

namespace {

using kiln::Tokenizer;
using kiln::TokenType;
namespace gguf = kiln::gguf;

struct Loaded {
  std::unique_ptr<gguf::File> file;
  std::unique_ptr<Tokenizer> tok;
};

// Loads each vocabulary once per test binary (the BPE ones take a moment).
const Tokenizer& vocab(const std::string& name) {
  static std::map<std::string, Loaded> cache;
  auto it = cache.find(name);
  if (it == cache.end()) {
    Loaded l;
    auto f = gguf::File::open(kiln::test::testdata("vocab/ggml-vocab-" + name + ".gguf"));
    if (!f.ok()) {
      ADD_FAILURE() << f.message();
      std::abort();
    }
    l.file = std::move(f.value());
    auto t = Tokenizer::from_gguf(*l.file);
    if (!t.ok()) {
      ADD_FAILURE() << t.message();
      std::abort();
    }
    l.tok = std::make_unique<Tokenizer>(std::move(t.value()));
    it = cache.emplace(name, std::move(l)).first;
  }
  return *it->second.tok;
}

struct Case {
  std::string text;
  std::vector<int32_t> ids;
};

std::vector<Case> read_cases(const std::string& name) {
  const std::string base = kiln::test::testdata("vocab/ggml-vocab-" + name + ".gguf");
  const std::string inp = kiln::test::read_file(base + ".inp");
  const std::string outp = kiln::test::read_file(base + ".out");
  const std::string sep = "\n__ggml_vocab_test__\n";
  std::vector<Case> cases;
  for (size_t pos = 0; pos < inp.size();) {
    const size_t hit = inp.find(sep, pos);
    if (hit == std::string::npos) break;
    cases.push_back({inp.substr(pos, hit - pos), {}});
    pos = hit + sep.size();
  }
  std::istringstream lines(outp);
  std::string line;
  size_t i = 0;
  while (std::getline(lines, line)) {
    if (i >= cases.size()) break;
    std::istringstream ids(line);
    int32_t id;
    while (ids >> id) cases[i].ids.push_back(id);
    ++i;
  }
  EXPECT_EQ(i, cases.size()) << name << ": .inp and .out disagree on the number of cases";
  return cases;
}

std::string show_ids(const std::vector<int32_t>& ids) {
  std::string s = "[";
  for (size_t i = 0; i < ids.size(); ++i) s += (i ? " " : "") + std::to_string(ids[i]);
  return s + "]";
}

std::string show_text(const std::string& t) {
  std::string s = "\"";
  for (unsigned char c : t) {
    if (c == '\n') s += "\\n";
    else if (c == '\t') s += "\\t";
    else if (c == '"') s += "\\\"";
    else if (c < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02x", c);
      s += buf;
    } else s += static_cast<char>(c);
  }
  return s + "\"";
}

void expect_every_case_matches(const std::string& name) {
  const Tokenizer& tok = vocab(name);
  const auto cases = read_cases(name);
  ASSERT_GT(cases.size(), 10u);
  size_t n_pass = 0;
  for (const Case& c : cases) {
    const auto got = tok.encode(c.text, /*add_special=*/false, /*parse_special=*/false);
    if (got == c.ids) {
      ++n_pass;
    } else {
      ADD_FAILURE() << name << ": text " << show_text(c.text) << "\n  expected "
                    << show_ids(c.ids) << "\n  got      " << show_ids(got);
    }
  }
  std::printf("[ %s ] %zu / %zu cases match\n", name.c_str(), n_pass, cases.size());
}

class Conformance : public ::testing::TestWithParam<std::string> {};

TEST_P(Conformance, EveryCaseMatches) { expect_every_case_matches(GetParam()); }

TEST_P(Conformance, DecodeRoundTrips) {
  const Tokenizer& tok = vocab(GetParam());
  auto cases = read_cases(GetParam());
  // Bytes that are not UTF-8 must survive too (byte fallback / byte-level).
  cases.push_back({"caf\xE9 \xFF\xFE tail", {}});
  cases.push_back({"\x80", {}});
  cases.push_back({"a\xE2\x82 b\xF0\x9F\x98", {}});
  cases.push_back({"  leading spaces and trailing  ", {}});
  for (const Case& c : cases) {
    const auto ids = tok.encode(c.text, false, false);
    EXPECT_EQ(tok.decode(ids), c.text) << GetParam() << ": " << show_text(c.text) << " -> "
                                       << show_ids(ids);
    // With BOS in front the text is the same once specials are skipped.
    const auto with_bos = tok.encode(c.text, true, false);
    EXPECT_EQ(tok.decode(with_bos, /*skip_special=*/true), c.text) << show_text(c.text);
  }
}

INSTANTIATE_TEST_SUITE_P(Vocab, Conformance,
                         ::testing::Values("llama-spm", "llama-bpe", "qwen2"),
                         [](const auto& info) {
                           std::string n = info.param;
                           for (char& c : n) c = (c == '-') ? '_' : c;
                           return n;
                         });

TEST(Tokenizer, MetadataOfEachFamily) {
  const Tokenizer& spm = vocab("llama-spm");
  EXPECT_EQ(spm.kind(), kiln::TokenizerKind::spm);
  EXPECT_EQ(spm.n_vocab(), 32000);
  EXPECT_EQ(spm.bos_id(), 1);
  EXPECT_EQ(spm.eos_id(), 2);
  EXPECT_EQ(spm.unk_id(), 0);
  EXPECT_TRUE(spm.is_eog(2));
  EXPECT_FALSE(spm.is_eog(1));
  EXPECT_EQ(spm.token_to_piece(spm.token_id("▁Hello")), " Hello");
  EXPECT_EQ(spm.token_to_piece(spm.token_id("<0x0A>")), "\n");

  const Tokenizer& l3 = vocab("llama-bpe");
  EXPECT_EQ(l3.kind(), kiln::TokenizerKind::bpe);
  EXPECT_EQ(l3.n_vocab(), 128256);
  EXPECT_EQ(l3.bos_id(), 128000);
  EXPECT_EQ(l3.eot_id(), 128009);  // found by its text: the file has no eot id
  EXPECT_TRUE(l3.is_eog(128001));  // <|end_of_text|>
  EXPECT_TRUE(l3.is_eog(128009));  // <|eot_id|>
  EXPECT_TRUE(l3.is_eog(l3.token_id("<|eom_id|>")) || l3.token_id("<|eom_id|>") < 0);
  EXPECT_FALSE(l3.is_eog(128000));
  EXPECT_EQ(l3.token_to_piece(l3.token_id("ĠHello")), " Hello");

  const Tokenizer& qw = vocab("qwen2");
  EXPECT_EQ(qw.pre_name(), "qwen2");
  EXPECT_TRUE(qw.is_eog(qw.token_id("<|im_end|>")));
  EXPECT_TRUE(qw.is_eog(qw.token_id("<|endoftext|>")));
  EXPECT_EQ(qw.eot_id(), qw.token_id("<|im_end|>"));
  EXPECT_FALSE(qw.chat_template().empty());
}

TEST(Tokenizer, BosDefaultsPerFamily) {
  // SentencePiece: BOS (the file also says so) and a dummy prefix.
  const Tokenizer& spm = vocab("llama-spm");
  auto ids = spm.encode("Hello", true, false);
  ASSERT_EQ(ids.size(), 2u);
  EXPECT_EQ(ids[0], 1);
  EXPECT_EQ(spm.token_text(ids[1]), "▁Hello");
  EXPECT_EQ(spm.encode("Hello", false, false).size(), 1u);
  // Llama 3 pre-tokenizer: BOS though the file has no add_bos_token key.
  const Tokenizer& l3 = vocab("llama-bpe");
  EXPECT_TRUE(l3.add_bos());
  EXPECT_EQ(l3.encode("Hello", true, false).front(), 128000);
  EXPECT_NE(l3.encode("Hello", false, false).front(), 128000);
  // Qwen2: no BOS (bos_token_id is set, but Qwen adds none).
  const Tokenizer& qw = vocab("qwen2");
  EXPECT_FALSE(qw.add_bos());
  EXPECT_EQ(qw.encode("Hello", true, false), qw.encode("Hello", false, false));
  EXPECT_TRUE(qw.encode("", true, false).empty());
  EXPECT_EQ(l3.encode("", true, false), std::vector<int32_t>{128000});
}

TEST(Tokenizer, ParseSpecial) {
  const Tokenizer& qw = vocab("qwen2");
  const int32_t im_start = qw.token_id("<|im_start|>");
  const int32_t im_end = qw.token_id("<|im_end|>");
  ASSERT_GE(im_start, 0);
  const std::string text = "<|im_start|>user\nHi<|im_end|>";
  const auto on = qw.encode(text, false, true);
  ASSERT_GE(on.size(), 4u);
  EXPECT_EQ(on.front(), im_start);
  EXPECT_EQ(on.back(), im_end);
  // The text between specials is tokenized on its own.
  auto mid = qw.encode("user\nHi", false, false);
  EXPECT_EQ(std::vector<int32_t>(on.begin() + 1, on.end() - 1), mid);
  EXPECT_EQ(qw.decode(on), text);
  EXPECT_EQ(qw.decode(on, /*skip_special=*/true), "user\nHi");
  // Off: the marker is plain text.
  const auto off = qw.encode(text, false, false);
  for (int32_t id : off) EXPECT_NE(qw.token_type(id), TokenType::control);
  EXPECT_EQ(qw.decode(off), text);

  const Tokenizer& l3 = vocab("llama-bpe");
  const auto ids = l3.encode("<|begin_of_text|><|start_header_id|>user<|end_header_id|>", false, true);
  ASSERT_EQ(ids.size(), 4u);
  EXPECT_EQ(ids[0], 128000);
  EXPECT_EQ(ids[1], 128006);
  EXPECT_EQ(ids[3], 128007);
  // Longest match wins: "<|reserved_special_token_10|>" is not "..._1" + "0|>".
  const auto r = l3.encode("<|reserved_special_token_10|>", false, true);
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(l3.token_text(r[0]), "<|reserved_special_token_10|>");

  // SentencePiece: </s> parsed; the dummy prefix comes back after a special.
  const Tokenizer& spm = vocab("llama-spm");
  const auto s = spm.encode("Hi</s>there", false, true);
  ASSERT_EQ(s.size(), 3u);
  EXPECT_EQ(spm.token_text(s[0]), "▁Hi");
  EXPECT_EQ(s[1], 2);
  EXPECT_EQ(spm.token_text(s[2]), "▁there");
  EXPECT_GT(spm.encode("Hi</s>there", false, false).size(), 3u);
}

TEST(Tokenizer, SpmByteFallback) {
  const Tokenizer& spm = vocab("llama-spm");
  // A character the vocabulary lacks becomes its UTF-8 bytes.
  const auto ids = spm.encode("\xF0\x9F\xA6\x99", false, false);  // 🦙
  std::vector<std::string> texts;
  for (int32_t id : ids) texts.push_back(spm.token_text(id));
  ASSERT_EQ(texts.size(), 5u);
  EXPECT_EQ(texts[0], "▁");
  EXPECT_EQ(texts[1], "<0xF0>");
  EXPECT_EQ(texts[4], "<0x99>");
  EXPECT_EQ(spm.decode(ids), "\xF0\x9F\xA6\x99");
}

std::vector<std::string> pre_split(std::string_view pre, std::string_view text) {
  for (const auto& spec : kiln::tok::pre_tokenizer_specs()) {
    if (spec.name != pre) continue;
    auto p = kiln::tok::PreTokenizer::compile(spec.regex);
    EXPECT_TRUE(p.ok()) << p.message();
    if (!p.ok()) return {};
    std::vector<std::string> out;
    (*p)->split(text, [&](size_t b, size_t e) { out.emplace_back(text.substr(b, e - b)); });
    return out;
  }
  ADD_FAILURE() << "no pre-tokenizer " << pre;
  return {};
}

TEST(PreTokenizer, RegexesSplitLikeTheReference) {
  using V = std::vector<std::string>;
  // GPT-2: optional leading space on words/numbers/punctuation; of a run of
  // spaces the last one goes with the next word (\s+(?!\S)).
  EXPECT_EQ(pre_split("gpt-2", "Hello world  it's 12345!!"),
            (V{"Hello", " world", " ", " it", "'s", " 12345", "!!"}));
  EXPECT_EQ(pre_split("default", "a   \n\n b"), (V{"a", "   \n\n", " b"}));
  EXPECT_EQ(pre_split("gpt-2", "x  "), (V{"x", "  "}));
  // Llama 3: numbers in groups of up to three, case-insensitive contractions,
  // one non-letter glued in front of a word, newlines kept together.
  EXPECT_EQ(pre_split("llama-bpe", "1234567 IT'S (hello)\n\n  x"),
            (V{"123", "456", "7", " IT", "'S", " (", "hello", ")\n\n", " ", " x"}));
  EXPECT_EQ(pre_split("llama3", "a\r\n\r\nb"), (V{"a", "\r\n\r\n", "b"}));
  // Qwen2: single digits.
  EXPECT_EQ(pre_split("qwen2", "x 2024"), (V{"x", " ", "2", "0", "2", "4"}));
  // Invalid UTF-8 is its own piece, never an error.
  EXPECT_EQ(pre_split("llama-v3", "ab\xFF\xFE" "cd"), (V{"ab", "\xFF\xFE", "cd"}));
}

// A minimal byte-level vocabulary in memory, for the error paths.
std::vector<uint8_t> tiny_bpe_gguf(const std::string& model, const std::string& pre) {
  gguf::Writer w;
  w.set_string("general.architecture", "llama");
  w.set_string("tokenizer.ggml.model", model);
  if (!pre.empty()) w.set_string("tokenizer.ggml.pre", pre);
  std::vector<std::string> toks = {"a", "b", "ab"};
  w.set("tokenizer.ggml.tokens", gguf::make_string_array(toks));
  w.set("tokenizer.ggml.merges", gguf::make_string_array({"a b"}));
  return w.to_bytes();
}

TEST(Tokenizer, UnknownPreTokenizerIsAClearError) {
  const auto bytes = tiny_bpe_gguf("gpt2", "no-such-pre");
  auto f = gguf::File::parse(bytes);
  ASSERT_TRUE(f.ok()) << f.message();
  auto t = Tokenizer::from_gguf(**f);
  ASSERT_FALSE(t.ok());
  EXPECT_NE(t.message().find("no-such-pre"), std::string::npos) << t.message();
  EXPECT_NE(t.message().find("llama-bpe"), std::string::npos) << t.message();
  EXPECT_NE(t.message().find("qwen2"), std::string::npos) << t.message();
}

TEST(Tokenizer, TinyVocabularyMerges) {
  const auto bytes = tiny_bpe_gguf("gpt2", "gpt-2");
  auto f = gguf::File::parse(bytes);
  ASSERT_TRUE(f.ok()) << f.message();
  auto t = Tokenizer::from_gguf(**f);
  ASSERT_TRUE(t.ok()) << t.message();
  EXPECT_EQ(t->encode("abab", true, false), (std::vector<int32_t>{2, 2}));
  EXPECT_EQ(t->encode("aba", false, false), (std::vector<int32_t>{2, 0}));
  EXPECT_FALSE(t->add_bos());
}

TEST(Tokenizer, UnsupportedModelsAreRefused) {
  const auto bytes = tiny_bpe_gguf("rwkv", "");
  auto f = gguf::File::parse(bytes);
  ASSERT_TRUE(f.ok()) << f.message();
  auto t = Tokenizer::from_gguf(**f);
  ASSERT_FALSE(t.ok());
  EXPECT_NE(t.message().find("rwkv"), std::string::npos) << t.message();
  EXPECT_NE(t.message().find("bert"), std::string::npos) << t.message();  // lists what works
}

// WordPiece (bge, uncased; word-initial pieces stored as "▁x").
// Builds without ICU refuse BERT vocabularies (tokenizer.cpp says why).
#if KILN_HAVE_ICU
#define KILN_NEEDS_ICU() (void)0
#else
#define KILN_NEEDS_ICU() GTEST_SKIP() << "kiln built without ICU: WordPiece refused"
#endif

TEST(WordPiece, EveryCaseMatches) {
  KILN_NEEDS_ICU();
  expect_every_case_matches("bert-bge");
}

TEST(WordPiece, ClsAndSepByDefault) {
  KILN_NEEDS_ICU();
  const Tokenizer& bert = vocab("bert-bge");
  EXPECT_EQ(bert.kind(), kiln::TokenizerKind::wpm);
  EXPECT_EQ(bert.bos_id(), 101);  // [CLS] from cls_token_id
  EXPECT_EQ(bert.sep_id(), 102);  // [SEP] from seperator_token_id
  EXPECT_EQ(bert.unk_id(), 100);
  EXPECT_TRUE(bert.add_bos());
  EXPECT_TRUE(bert.add_sep());
  EXPECT_FALSE(bert.add_eos());
  EXPECT_EQ(bert.encode("Hello world", true, false), (std::vector<int32_t>{101, 7592, 2088, 102}));
  EXPECT_EQ(bert.encode("Hello world", false, false), (std::vector<int32_t>{7592, 2088}));
  EXPECT_EQ(bert.encode("", true, false), (std::vector<int32_t>{101, 102}));
  // Specials are text unless parse_special.
  EXPECT_EQ(bert.encode("[SEP]", false, true), std::vector<int32_t>{102});
  EXPECT_NE(bert.encode("[SEP]", false, false), std::vector<int32_t>{102});
}

TEST(WordPiece, MetadataOverridesClsSep) {
  KILN_NEEDS_ICU();
  gguf::Writer w;
  w.set_string("general.architecture", "bert");
  w.set_string("tokenizer.ggml.model", "bert");
  // vocab.txt convention: plain word-initial pieces, "##" continuations.
  w.set("tokenizer.ggml.tokens",
        gguf::make_string_array({"[UNK]", "[CLS]", "[SEP]", "un", "##aff", "##able", "!"}));
  w.set_bool("tokenizer.ggml.add_sep_token", false);
  const auto bytes = w.to_bytes();
  auto f = gguf::File::parse(bytes);
  ASSERT_TRUE(f.ok()) << f.message();
  auto t = Tokenizer::from_gguf(**f);
  ASSERT_TRUE(t.ok()) << t.message();
  EXPECT_EQ(t->bos_id(), 1);  // found by text
  EXPECT_EQ(t->sep_id(), 2);
  EXPECT_FALSE(t->add_sep());
  EXPECT_EQ(t->encode("unaffable!", true, false), (std::vector<int32_t>{1, 3, 4, 5, 6}));
  EXPECT_EQ(t->encode("UNAFFABLE unx", false, false), (std::vector<int32_t>{3, 4, 5, 0}));
  EXPECT_EQ(t->decode(std::vector<int32_t>{3, 4, 5, 6}), "unaffable !");
}

TEST(WordPiece, DecodeJoinsWords) {
  KILN_NEEDS_ICU();
  const Tokenizer& bert = vocab("bert-bge");
  const auto ids = bert.encode("Héllo, the UNAFFABLE world!", true, false);
  EXPECT_EQ(bert.decode(ids, /*skip_special=*/true), "hello , the unaffable world !");
  EXPECT_EQ(bert.decode(ids), "[CLS] hello , the unaffable world ! [SEP]");
  // Continuation pieces glue on; an unknown word decodes as [UNK].
  EXPECT_EQ(bert.decode(bert.encode("tokenization", false, false)), "tokenization");
  EXPECT_EQ(bert.token_to_piece(7592), " hello");
}

TEST(Tokenizer, EncodesFromSeveralThreadsAtOnce) {
  const Tokenizer& qw = vocab("qwen2");
  const auto cases = read_cases("qwen2");
  std::vector<std::vector<int32_t>> expected;
  for (const Case& c : cases) expected.push_back(qw.encode(c.text, false, false));
  std::vector<int> n_bad(4, 0);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int rep = 0; rep < 50; ++rep) {
        for (size_t i = 0; i < cases.size(); ++i) {
          if (qw.encode(cases[i].text, false, false) != expected[i]) ++n_bad[t];
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  for (int t = 0; t < 4; ++t) EXPECT_EQ(n_bad[t], 0) << "thread " << t;
}

// `kiln tokenize` end to end, when the kiln binary has been built.
TEST(Cli, TokenizePrintsIds) {
  const std::string bin = kiln::test::kiln_binary();
  if (!std::filesystem::exists(bin)) GTEST_SKIP() << "kiln not built: " << bin;
  const std::string model = kiln::test::testdata("vocab/ggml-vocab-llama-bpe.gguf");
  const auto run = [&](const std::string& args) {
    std::string out;
    FILE* p = popen((bin + " tokenize -m " + model + " " + args + " 2>&1").c_str(), "r");
    char buf[4096];
    size_t n;
    while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
    pclose(p);
    return out;
  };
  EXPECT_EQ(run("--ids --text 'Hello world'"), "9906 1917\n");
  EXPECT_EQ(run("--ids --bos --text 'Hello world'"), "128000 9906 1917\n");
  EXPECT_EQ(run("--ids --special --text '<|eot_id|>'"), "128009\n");
  EXPECT_NE(run("--ids --text '<|eot_id|>'"), "128009\n");
  EXPECT_EQ(run("--text 'Hello world'"), "9906\tHello\n1917\t world\n");
  EXPECT_EQ(run("--ids < /dev/null"), "\n");
}

// Loads the largest vocabulary and reports the time (a figure, not an
// assertion: timings on a shared 2-core machine are no test).
TEST(Tokenizer, LargeVocabularyLoads) {
  const auto t0 = std::chrono::steady_clock::now();
  auto f = gguf::File::open(kiln::test::testdata("vocab/ggml-vocab-llama-bpe.gguf"));
  ASSERT_TRUE(f.ok()) << f.message();
  auto t = Tokenizer::from_gguf(**f);
  ASSERT_TRUE(t.ok()) << t.message();
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("llama-bpe (128k tokens, 280k merges): open + from_gguf %.3f s\n", s);
  EXPECT_EQ(t->n_vocab(), 128256);
}

}  // namespace

// Known-prefix tokenization gives exactly Tokenizer::encode for every prompt
// that starts with a known text, whatever follows: conformance-file texts
// and hand-made edge cases glued after two preambles (a plain one, and a
// chat-rendered one with control tokens), on both byte-level vocabularies.
TEST(KnownPrefixes, ReuseGivesExactlyTheFullTokenization) {
  const std::string plain = [] {
    std::string s;
    for (int i = 0; i < 40; ++i) s += "Rule " + std::to_string(i) + ": keep the answers short, the logs clean.  ";
    return s + "\n";
  }();
  for (const std::string name : {"llama-bpe", "qwen2"}) {
    const Tokenizer& tok = vocab(name);
    const std::string chat = (name == "qwen2" ? "<|im_start|>system\n" : "<|start_header_id|>system<|end_header_id|>\n\n") +
                             plain + (name == "qwen2" ? "<|im_end|>\n" : "<|eot_id|>");
    kiln::KnownPrefixes kp(tok);
    ASSERT_TRUE(kp.add(plain, /*add_special=*/true, /*parse_special=*/true)) << name;
    ASSERT_TRUE(kp.add(chat, /*add_special=*/false, /*parse_special=*/true)) << name;
    EXPECT_EQ(kp.size(), 2u);
    std::vector<std::string> tails = {"", " ", "\n", "   \n\t x", "Question: what is the first word?", "123456789",
                                      "'re", "\xF0\x9F\x98\x80 emoji", "<|im_start|>user\nhi<|im_end|>",
                                      "<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nhi"};
    for (const auto& c : read_cases(name)) tails.push_back(c.text);
    int reused = 0;
    for (const auto& t : tails) {
      for (const auto& [pre, bos] : {std::pair<const std::string&, bool>{plain, true}, {chat, false}}) {
        const std::string text = pre + t;
        EXPECT_EQ(kp.encode(text, bos, true), tok.encode(text, bos, true)) << name << ": " << t;
        ++reused;
      }
    }
    EXPECT_GT(reused, 20);
    // Texts that do not start with a known one, and other flag combinations,
    // take the plain path (and still agree).
    for (const std::string text : {std::string("Rule 0: keep"), plain.substr(1) + "x", plain + "x"}) {
      EXPECT_EQ(kp.encode(text, true, true), tok.encode(text, true, true));
      EXPECT_EQ(kp.encode(text, false, false), tok.encode(text, false, false));
    }
  }
}

TEST(KnownPrefixes, OnlyByteLevelBpeAndLongTexts) {
  const std::string long_text(400, 'a');
  kiln::KnownPrefixes spm(vocab("llama-spm"));
  EXPECT_FALSE(spm.add(long_text, true, true));  // SentencePiece merges across words
  kiln::KnownPrefixes bpe(vocab("llama-bpe"));
  EXPECT_FALSE(bpe.add("short", true, true));
  EXPECT_EQ(bpe.size(), 0u);
  EXPECT_GE(bpe.margin(), 32u);
}
