// The false-hit guard: numbers, negation and named entities, compared as sets.
#include "kiln/cache/false_hit_guard.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <cctype>
#include <set>

namespace kiln::cache {
namespace {

bool is_alpha(char c) {
  return std::isalpha(static_cast<unsigned char>(c)) != 0;
}
bool is_digit(char c) {
  return std::isdigit(static_cast<unsigned char>(c)) != 0;
}
bool is_upper(char c) {
  return std::isupper(static_cast<unsigned char>(c)) != 0;
}
// Bytes of multi-byte UTF-8 characters count as letters: names such as
// "Zürich" stay one word.
bool is_word_byte(char c) {
  return is_alpha(c) || is_digit(c) || (static_cast<unsigned char>(c) >= 0x80);
}

std::string lower(std::string_view s) {
  std::string o(s);
  for (auto& c : o) c = char(std::tolower(static_cast<unsigned char>(c)));
  return o;
}

// Spelled-out numbers map to digits so "two" and "2" agree; ordinals get an
// "ord" prefix ("first" and "1st" agree, "first" and "1" do not). "second"
// is left out on purpose: it is also a unit of time.
const char* number_word(const std::string& w) {
  static const std::pair<const char*, const char*> kWords[] = {
      {"zero", "0"},      {"one", "1"},         {"two", "2"},           {"three", "3"},
      {"four", "4"},      {"five", "5"},        {"six", "6"},           {"seven", "7"},
      {"eight", "8"},     {"nine", "9"},        {"ten", "10"},          {"eleven", "11"},
      {"twelve", "12"},   {"thirteen", "13"},   {"fourteen", "14"},     {"fifteen", "15"},
      {"sixteen", "16"},  {"seventeen", "17"},  {"eighteen", "18"},     {"nineteen", "19"},
      {"twenty", "20"},   {"thirty", "30"},     {"forty", "40"},        {"fifty", "50"},
      {"sixty", "60"},    {"seventy", "70"},    {"eighty", "80"},       {"ninety", "90"},
      {"hundred", "100"}, {"thousand", "1000"}, {"million", "1000000"}, {"billion", "1000000000"},
      {"dozen", "12"},    {"half", "0.5"},      {"twice", "x2"},        {"double", "x2"},
      {"triple", "x3"},   {"first", "ord1"},    {"third", "ord3"},      {"fourth", "ord4"},
      {"fifth", "ord5"},  {"sixth", "ord6"},    {"seventh", "ord7"},    {"eighth", "ord8"},
      {"ninth", "ord9"},  {"tenth", "ord10"},   {"last", "ordlast"}};
  for (const auto& [k, v] : kWords)
    if (w == k) return v;
  return nullptr;
}

bool is_negation(const std::string& w) {
  static const std::set<std::string> kNeg = {
      "not",     "no",      "never",  "none",   "nobody",  "nothing",  "neither", "nor",
      "nowhere", "without", "cannot", "cant",   "dont",    "doesnt",   "didnt",   "isnt",
      "arent",   "wasnt",   "werent", "wont",   "wouldnt", "shouldnt", "couldnt", "hasnt",
      "havent",  "hadnt",   "mustnt", "neednt", "aint",    "shant",    "mightnt"};
  if (kNeg.count(w)) return true;
  return w.size() > 3 && w.compare(w.size() - 3, 3, "n't") == 0;
}

// Capitalized words that open sentences without naming anything: requests
// and questions start with these. A capitalized first word not listed here
// is a "soft" entity (see GuardFeatures).
bool common_opener(const std::string& w) {
  static const std::set<std::string> kOpeners = {"a",
                                                 "an",
                                                 "the",
                                                 "what",
                                                 "what's",
                                                 "whats",
                                                 "how",
                                                 "how's",
                                                 "why",
                                                 "when",
                                                 "where",
                                                 "which",
                                                 "who",
                                                 "whom",
                                                 "whose",
                                                 "is",
                                                 "are",
                                                 "was",
                                                 "were",
                                                 "am",
                                                 "be",
                                                 "do",
                                                 "does",
                                                 "did",
                                                 "done",
                                                 "has",
                                                 "have",
                                                 "had",
                                                 "can",
                                                 "could",
                                                 "would",
                                                 "should",
                                                 "will",
                                                 "shall",
                                                 "may",
                                                 "might",
                                                 "must",
                                                 "i",
                                                 "i'm",
                                                 "im",
                                                 "i'd",
                                                 "i've",
                                                 "i'll",
                                                 "my",
                                                 "me",
                                                 "we",
                                                 "our",
                                                 "us",
                                                 "you",
                                                 "your",
                                                 "he",
                                                 "she",
                                                 "they",
                                                 "their",
                                                 "them",
                                                 "it",
                                                 "its",
                                                 "it's",
                                                 "this",
                                                 "that",
                                                 "these",
                                                 "those",
                                                 "there",
                                                 "here",
                                                 "in",
                                                 "on",
                                                 "at",
                                                 "for",
                                                 "from",
                                                 "to",
                                                 "of",
                                                 "by",
                                                 "with",
                                                 "about",
                                                 "into",
                                                 "over",
                                                 "under",
                                                 "after",
                                                 "before",
                                                 "during",
                                                 "if",
                                                 "and",
                                                 "but",
                                                 "or",
                                                 "so",
                                                 "then",
                                                 "now",
                                                 "also",
                                                 "please",
                                                 "pls",
                                                 "kindly",
                                                 "hey",
                                                 "hi",
                                                 "hello",
                                                 "ok",
                                                 "okay",
                                                 "yes",
                                                 "no",
                                                 "not",
                                                 "any",
                                                 "some",
                                                 "all",
                                                 "each",
                                                 "every",
                                                 "many",
                                                 "much",
                                                 "few",
                                                 "more",
                                                 "most",
                                                 "less",
                                                 "best",
                                                 "good",
                                                 "quick",
                                                 "quickly",
                                                 "simple",
                                                 "simply",
                                                 "briefly",
                                                 "short",
                                                 "give",
                                                 "tell",
                                                 "explain",
                                                 "describe",
                                                 "list",
                                                 "write",
                                                 "show",
                                                 "help",
                                                 "summarize",
                                                 "summarise",
                                                 "define",
                                                 "compare",
                                                 "name",
                                                 "find",
                                                 "make",
                                                 "create",
                                                 "provide",
                                                 "suggest",
                                                 "recommend",
                                                 "calculate",
                                                 "compute",
                                                 "translate",
                                                 "convert",
                                                 "outline",
                                                 "state",
                                                 "identify",
                                                 "share",
                                                 "let",
                                                 "let's",
                                                 "lets",
                                                 "need",
                                                 "want",
                                                 "looking",
                                                 "know",
                                                 "do",
                                                 "does",
                                                 "generate",
                                                 "draft",
                                                 "compose",
                                                 "rewrite",
                                                 "fix",
                                                 "check",
                                                 "solve",
                                                 "determine",
                                                 "estimate",
                                                 "add",
                                                 "remove",
                                                 "sort",
                                                 "count",
                                                 "using",
                                                 "use",
                                                 "via",
                                                 "according",
                                                 "regarding",
                                                 "as",
                                                 "just",
                                                 "really",
                                                 "actually",
                                                 "basically",
                                                 "roughly",
                                                 "approximately",
                                                 "about",
                                                 "exactly",
                                                 "precisely",
                                                 "quick",
                                                 "question",
                                                 "q",
                                                 "one",
                                                 "two",
                                                 "three",
                                                 "first",
                                                 "today",
                                                 "tomorrow",
                                                 "yesterday",
                                                 "whats",
                                                 "wheres",
                                                 "hows",
                                                 "whys",
                                                 "who's",
                                                 "where's",
                                                 "why's",
                                                 "could",
                                                 "would",
                                                 "should",
                                                 "cant",
                                                 "can't",
                                                 "don't",
                                                 "doesn't",
                                                 "isn't",
                                                 "aren't",
                                                 "won't",
                                                 "didn't",
                                                 "never",
                                                 "nothing",
                                                 "nobody",
                                                 "none",
                                                 "without",
                                                 "anyone",
                                                 "someone",
                                                 "everyone",
                                                 "anything",
                                                 "something",
                                                 "everything",
                                                 "other",
                                                 "another",
                                                 "such",
                                                 "same",
                                                 "different",
                                                 "like",
                                                 "unlike",
                                                 "than",
                                                 "though",
                                                 "although",
                                                 "while",
                                                 "because",
                                                 "since",
                                                 "until",
                                                 "assuming",
                                                 "suppose",
                                                 "imagine",
                                                 "consider",
                                                 "given",
                                                 "assume",
                                                 "say",
                                                 "go",
                                                 "get",
                                                 "got",
                                                 "take",
                                                 "put",
                                                 "set",
                                                 "keep",
                                                 "run",
                                                 "try",
                                                 "see",
                                                 "look",
                                                 "think",
                                                 "mean",
                                                 "means",
                                                 "meaning",
                                                 "difference",
                                                 "differences",
                                                 "steps",
                                                 "ways",
                                                 "way",
                                                 "tips",
                                                 "reasons",
                                                 "examples",
                                                 "example",
                                                 "recipe",
                                                 "instructions",
                                                 "guide",
                                                 "definition",
                                                 "meaning",
                                                 "purpose",
                                                 "history",
                                                 "overview",
                                                 "summary",
                                                 "description",
                                                 "explanation",
                                                 "in",
                                                 "on",
                                                 "within",
                                                 "between",
                                                 "among",
                                                 "again",
                                                 "still",
                                                 "even",
                                                 "only",
                                                 "very",
                                                 "too",
                                                 "quite",
                                                 "rather",
                                                 "pretty",
                                                 "fairly",
                                                 "well",
                                                 "translate",
                                                 "spell",
                                                 "pronounce",
                                                 "rephrase",
                                                 "paraphrase",
                                                 "proofread",
                                                 "correct",
                                                 "improve",
                                                 "shorten",
                                                 "expand"};
  return kOpeners.count(w) != 0;
}

struct Word {
  std::string text;
  bool sentence_start = false;
};

std::vector<Word> split_words(std::string_view s) {
  std::vector<Word> out;
  bool start = true;
  size_t i = 0;
  while (i < s.size()) {
    const char c = s[i];
    if (c == '.' || c == '?' || c == '!' || c == ':' || c == ';' || c == '\n') {
      // "3.5" is a number, not a sentence end.
      if (!(c == '.' && i > 0 && i + 1 < s.size() && is_digit(s[i - 1]) && is_digit(s[i + 1])))
        start = true;
      ++i;
      continue;
    }
    if (!is_word_byte(c)) {
      ++i;
      continue;
    }
    size_t j = i;
    // A word runs over letters, digits, inner apostrophes (don't), inner
    // hyphens (GPT-4) and separators inside numbers (1,000 / 2.5).
    while (j < s.size()) {
      const char d = s[j];
      if (is_word_byte(d)) {
        ++j;
      } else if ((d == '\'' || d == '-') && j + 1 < s.size() && is_word_byte(s[j + 1]) && j > i) {
        ++j;
      } else if ((d == '.' || d == ',') && j > i && is_digit(s[j - 1]) && j + 1 < s.size() &&
                 is_digit(s[j + 1])) {
        ++j;
      } else if (d == '\xE2' && j + 2 < s.size() && s[j + 1] == '\x80' && s[j + 2] == '\x99' &&
                 j + 3 < s.size() && is_word_byte(s[j + 3])) {
        j += 3;  // typographic apostrophe (U+2019), as phones type it
      } else {
        break;
      }
    }
    std::string w(s.substr(i, j - i));
    // Fold U+2019 to ' so "don’t" and "don't" agree.
    for (size_t p; (p = w.find("\xE2\x80\x99")) != std::string::npos;) w.replace(p, 3, "'");
    out.push_back({std::move(w), start});
    start = false;
    i = j;
  }
  return out;
}

// The digit runs of a word, "1,000" -> "1000", "2.50" -> "2.5", "3rd" -> "ord3".
void numbers_of(const std::string& w, std::vector<std::string>& out) {
  size_t i = 0;
  while (i < w.size()) {
    if (!is_digit(w[i])) {
      ++i;
      continue;
    }
    std::string n;
    size_t j = i;
    bool dot = false;
    while (j < w.size()) {
      if (is_digit(w[j])) {
        n += w[j++];
      } else if (w[j] == ',' && j + 1 < w.size() && is_digit(w[j + 1])) {
        ++j;  // thousands separator
      } else if (w[j] == '.' && !dot && j + 1 < w.size() && is_digit(w[j + 1])) {
        dot = true;
        n += w[j++];
      } else {
        break;
      }
    }
    if (dot) {
      while (n.back() == '0') n.pop_back();
      if (n.back() == '.') n.pop_back();
    }
    while (n.size() > 1 && n[0] == '0' && is_digit(n[1])) n.erase(0, 1);  // "007" -> "7"
    const std::string rest = lower(w.substr(j, 2));
    if (rest == "st" || rest == "nd" || rest == "rd" || rest == "th") n = "ord" + n;
    out.push_back(std::move(n));
    i = j;
  }
}

// "II" -> 2, "XIV" -> 14 (0: not a Roman numeral). Only for all-capital
// words of two letters or more, so the pronoun "I" is never a number.
int roman_value(const std::string& w) {
  if (w.size() < 2) return 0;
  auto val = [](char c) {
    switch (c) {
      case 'I':
        return 1;
      case 'V':
        return 5;
      case 'X':
        return 10;
      case 'L':
        return 50;
      case 'C':
        return 100;
      default:
        return 0;
    }
  };
  int total = 0;
  for (size_t i = 0; i < w.size(); ++i) {
    const int v = val(w[i]);
    if (!v) return 0;
    const int next = i + 1 < w.size() ? val(w[i + 1]) : 0;
    total += next > v ? -v : v;
  }
  return total > 0 && total < 400 ? total : 0;
}

std::string strip_possessive(std::string w) {
  if (w.size() > 2 && (w.ends_with("'s") || w.ends_with("'S"))) w.resize(w.size() - 2);
  if (w.size() > 1 && w.back() == '\'') w.pop_back();
  return w;
}

std::string letters_only(const std::string& w) {
  std::string o;
  for (char c : w)
    if (c != '\'') o += c;
  return o;
}

}  // namespace

GuardFeatures guard_features(std::string_view text) {
  GuardFeatures f;
  for (const Word& wd : split_words(text)) {
    const std::string& w = wd.text;
    const std::string lw = lower(w);
    f.words.push_back(strip_possessive(lw));
    numbers_of(w, f.numbers);
    if (const char* n = number_word(lw)) f.numbers.push_back(n);
    if (is_negation(lw) || is_negation(letters_only(lw))) f.negated = true;

    if (!is_alpha(w[0]) && static_cast<unsigned char>(w[0]) < 0x80) continue;
    int n_upper = 0, n_alpha = 0;
    for (char c : w)
      if (is_alpha(c)) {
        ++n_alpha;
        n_upper += is_upper(c);
      }
    const std::string name = strip_possessive(lw);
    // Acronyms (NASA) and inner capitals (iPhone, OpenAI) name things wherever they stand.
    const bool acronym = n_upper >= 2 && w != "I";
    if (acronym && roman_value(w)) {
      f.numbers.push_back(std::to_string(roman_value(w)));  // World War II == World War 2
    } else if (acronym) {
      f.entities.push_back(name);
    } else if (is_upper(w[0]) && w != "I" && !w.starts_with("I'")) {
      if (!wd.sentence_start)
        f.entities.push_back(name);
      else if (!common_opener(lw) && !common_opener(name))
        f.soft_entities.push_back(name);
    }
  }
  for (auto* v : {&f.numbers, &f.entities, &f.soft_entities, &f.words})
    std::sort(v->begin(), v->end());
  return f;
}

GuardVerdict false_hit_guard(std::string_view query, std::string_view cached) {
  const GuardFeatures a = guard_features(query), b = guard_features(cached);
  GuardVerdict v;
  if (a.numbers != b.numbers) {
    v.pass = false;
    v.reason = fmt::format("numbers differ: [{}] vs [{}]", fmt::join(a.numbers, ","),
                           fmt::join(b.numbers, ","));
    return v;
  }
  if (a.negated != b.negated) {
    v.pass = false;
    v.reason = a.negated ? "negation in the query only" : "negation in the cached text only";
    return v;
  }
  auto has = [](const std::vector<std::string>& v, const std::string& w) {
    return std::binary_search(v.begin(), v.end(), w);
  };
  // A name on one side must be a name on the other; a soft name (a
  // capitalized opener) only needs the other text to use the word at all.
  // A text typed all in lower case ("whats the capital of france") names
  // nothing by capitals: there the word itself must appear.
  auto missing = [&](const GuardFeatures& x, const GuardFeatures& y) -> std::string {
    const bool y_lowercase = y.entities.empty() && y.soft_entities.empty();
    for (const auto& e : x.entities)
      if (!has(y.entities, e) && !has(y.soft_entities, e) && !(y_lowercase && has(y.words, e)))
        return e;
    for (const auto& e : x.soft_entities)
      if (!has(y.words, e)) return e;
    return {};
  };
  std::string m = missing(a, b);
  if (m.empty()) m = missing(b, a);
  if (!m.empty()) {
    v.pass = false;
    v.reason = "named entity differs: \"" + m + "\"";
  }
  return v;
}

}  // namespace kiln::cache
