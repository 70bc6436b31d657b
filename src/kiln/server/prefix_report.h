// `kiln prefix-report`: how much of a request log's prompt tokens a prefix
// cache can reuse, which preambles are common, and which requests miss a
// common preamble because of a small variable part (a date, a name, an id)
// early in it — with the token position and the text that broke the prefix.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "kiln/core/status.h"
#include "kiln/server/engine_hooks.h"

namespace kiln {
class Tokenizer;
}

namespace kiln::server {

struct PrefixReportOptions {
  int32_t block_size = 16;    // KV block size: reuse is counted in whole blocks
  int32_t min_preamble = 16;  // shortest shared prefix worth listing (tokens)
  int32_t max_variable = 16;  // longest variable part a near-miss may have (tokens)
  int32_t min_realign = 16;   // tokens that must match again after the variable part
  int32_t top = 10;           // preambles listed
  int32_t neighbours = 3;     // sorted neighbours each request is compared with
};

// One prompt as the engine would see it.
struct PromptTokens {
  int64_t line = 0;             // 1-based line in the input file
  std::vector<int32_t> tokens;  // [n_tokens] after templating and tokenizing
};

struct Preamble {
  int64_t n_tokens = 0;      // shared prefix length
  int64_t n_requests = 0;    // requests starting with it
  int64_t saved_tokens = 0;  // (n_requests - 1) x block-aligned length
  int64_t example_line = 0;
  std::string text;         // the prefix, detokenized
  std::string metrics_key;  // preamble="..." label of kiln serve's /metrics ("" if < 32 tokens)
};

struct NearMiss {
  int64_t line = 0;               // the request that missed
  int64_t common_line = 0;        // a request with the common variant
  int64_t position = 0;           // first token that differs
  std::string before;             // text of the tokens just before `position`
  std::string variable;           // this request's tokens that broke the prefix
  std::string common;             // what the common variant has there
  int64_t realigned = 0;          // tokens matching again after the variable part
  int64_t reusable_if_moved = 0;  // block-aligned tokens reusable with the part moved out
  int64_t common_support = 0;     // requests sharing the common variant's prefix
};

struct PrefixReport {
  int64_t n_requests = 0;
  int64_t n_skipped = 0;  // lines that are no request (refusals, blank)
  int64_t prompt_tokens = 0;
  int64_t reusable_tokens = 0;    // block-aligned, unbounded cache, in file order
  int64_t reusable_if_fixed = 0;  // ... if every near-miss's variable part moved out
  std::vector<Preamble> preambles;
  std::vector<NearMiss> near_misses;
  std::vector<std::string> warnings;  // per line: why it was skipped
};

// Decodes tokens to text for the report (the tokenizer's decode).
using Detokenize = std::function<std::string(const std::vector<int32_t>&)>;

PrefixReport analyze_prefixes(const std::vector<PromptTokens>& prompts,
                              const PrefixReportOptions& opt, const Detokenize& detok);

// Reads JSONL: OpenAI request bodies ({"prompt": ...} or {"messages": ...})
// or `kiln serve --request-log` lines; templates chat requests with `chat`
// and tokenizes as kiln serve does. Lines without a prompt count as skipped.
Result<std::vector<PromptTokens>> load_prompts(const std::string& path, const Tokenizer& tok,
                                               const ChatRenderer& chat, int64_t& n_skipped,
                                               std::vector<std::string>& warnings);

std::string format_prefix_report(const PrefixReport& r, const PrefixReportOptions& opt);
std::string prefix_report_json(const PrefixReport& r, const PrefixReportOptions& opt);

}  // namespace kiln::server
