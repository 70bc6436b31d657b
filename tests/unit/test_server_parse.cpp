// OpenAI request parsing and validation at the HTTP edge: every field, its
// type and range, and the error object naming the field.
#include <gtest/gtest.h>

#include "kiln/server/openai_chat.h"
#include "kiln/server/openai_completions.h"
#include "kiln/server/openai_embeddings.h"

namespace kiln::server {
namespace {

Json J(const char* s) {
  return Json::parse(s);
}

std::optional<ApiError> parse_completion(const char* body, CompletionRequest& out) {
  return parse_completion_request(J(body), ParseLimits{}, out);
}
std::optional<ApiError> parse_chat(const char* body, ChatRequest& out) {
  return parse_chat_request(J(body), ParseLimits{}, out);
}
// The `param` of the error a completions body gives ("" when it parses).
std::string completion_error_param(const char* body) {
  CompletionRequest r;
  auto e = parse_completion(body, r);
  return e ? (e->param.empty() ? "<none>" : e->param) : "";
}
std::string chat_error_param(const char* body) {
  ChatRequest r;
  auto e = parse_chat(body, r);
  return e ? (e->param.empty() ? "<none>" : e->param) : "";
}

TEST(ServerParse, CompletionDefaultsAndAllFields) {
  CompletionRequest r;
  ASSERT_FALSE(parse_completion(R"({"prompt":"hi"})", r));
  EXPECT_EQ(r.prompts.size(), 1u);
  EXPECT_EQ(r.prompts[0].text, "hi");
  EXPECT_FALSE(r.gen.max_tokens);
  EXPECT_FLOAT_EQ(r.gen.sampling.temperature, 1.0f);
  EXPECT_EQ(r.gen.n, 1);
  EXPECT_EQ(r.gen.n_top_logprobs, -1);
  EXPECT_FALSE(r.gen.stream);

  CompletionRequest f;
  ASSERT_FALSE(parse_completion(
      R"({"model":"m","prompt":"x","max_tokens":7,"temperature":0.5,"top_p":0.9,"seed":-3,
          "stop":["a","b"],"n":2,"presence_penalty":1.5,"frequency_penalty":-1,"logprobs":3,
          "user":"u","top_k":40,"min_p":0.05,"ignore_eos":true,"stream":true,
          "stream_options":{"include_usage":true},"logit_bias":{"5":-100},"unknown_field":{"x":1}})",
      f));
  EXPECT_EQ(f.model, "m");
  EXPECT_EQ(*f.gen.max_tokens, 7);
  EXPECT_FLOAT_EQ(f.gen.sampling.temperature, 0.5f);
  EXPECT_FLOAT_EQ(f.gen.sampling.top_p, 0.9f);
  EXPECT_TRUE(f.gen.seed_given);
  EXPECT_EQ(f.gen.sampling.seed, uint64_t(int64_t(-3)));
  EXPECT_EQ(f.gen.stop, (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(f.gen.n, 2);
  EXPECT_FLOAT_EQ(f.gen.sampling.presence_penalty, 1.5f);
  EXPECT_FLOAT_EQ(f.gen.sampling.frequency_penalty, -1.0f);
  EXPECT_EQ(f.gen.n_top_logprobs, 3);
  EXPECT_EQ(f.gen.user, "u");
  EXPECT_EQ(f.gen.sampling.top_k, 40);
  EXPECT_FLOAT_EQ(f.gen.sampling.min_p, 0.05f);
  EXPECT_TRUE(f.gen.sampling.ignore_eos);
  EXPECT_TRUE(f.gen.stream);
  EXPECT_TRUE(f.gen.include_usage);
  ASSERT_EQ(f.gen.sampling.logit_bias.size(), 1u);
  EXPECT_EQ(f.gen.sampling.logit_bias[0].first, 5);
}

TEST(ServerParse, PromptForms) {
  CompletionRequest a;
  ASSERT_FALSE(parse_completion(R"({"prompt":["a","b"]})", a));
  ASSERT_EQ(a.prompts.size(), 2u);
  EXPECT_EQ(a.prompts[1].text, "b");
  CompletionRequest b;
  ASSERT_FALSE(parse_completion(R"({"prompt":[1,2,3]})", b));
  ASSERT_EQ(b.prompts.size(), 1u);
  EXPECT_TRUE(b.prompts[0].is_tokens);
  EXPECT_EQ(b.prompts[0].tokens, (std::vector<int32_t>{1, 2, 3}));
  CompletionRequest c;
  ASSERT_FALSE(parse_completion(R"({"prompt":[[1],[2,3]]})", c));
  ASSERT_EQ(c.prompts.size(), 2u);
  EXPECT_EQ(c.prompts[1].tokens, (std::vector<int32_t>{2, 3}));

  EXPECT_EQ(completion_error_param(R"({})"), "prompt");
  EXPECT_EQ(completion_error_param(R"({"prompt":[]})"), "prompt");
  EXPECT_EQ(completion_error_param(R"({"prompt":[[]]})"), "prompt");
  EXPECT_EQ(completion_error_param(R"({"prompt":["a",1]})"), "prompt");
  EXPECT_EQ(completion_error_param(R"({"prompt":[1,"a"]})"), "prompt");
  EXPECT_EQ(completion_error_param(R"({"prompt":[-1]})"), "prompt");
  EXPECT_EQ(completion_error_param(R"({"prompt":[1.5]})"), "prompt");
  EXPECT_EQ(completion_error_param(R"({"prompt":[4294967296]})"), "prompt");
  EXPECT_EQ(completion_error_param(R"({"prompt":42})"), "prompt");
  EXPECT_EQ(completion_error_param(R"({"prompt":{"a":1}})"), "prompt");
  EXPECT_EQ(completion_error_param(R"({"prompt":[true]})"), "prompt");
}

TEST(ServerParse, WrongTypesNameTheField) {
  const char* cases[][2] = {
      {R"({"prompt":"x","model":5})", "model"},
      {R"({"prompt":"x","max_tokens":"10"})", "max_tokens"},
      {R"({"prompt":"x","max_tokens":1.5})", "max_tokens"},
      {R"({"prompt":"x","temperature":"hot"})", "temperature"},
      {R"({"prompt":"x","top_p":[1]})", "top_p"},
      {R"({"prompt":"x","seed":"1"})", "seed"},
      {R"({"prompt":"x","seed":1.5})", "seed"},
      {R"({"prompt":"x","stop":5})", "stop"},
      {R"({"prompt":"x","stop":["a",5]})", "stop"},
      {R"({"prompt":"x","n":"2"})", "n"},
      {R"({"prompt":"x","presence_penalty":true})", "presence_penalty"},
      {R"({"prompt":"x","frequency_penalty":{}})", "frequency_penalty"},
      {R"({"prompt":"x","logprobs":true})", "logprobs"},
      {R"({"prompt":"x","user":1})", "user"},
      {R"({"prompt":"x","top_k":0.5})", "top_k"},
      {R"({"prompt":"x","min_p":"0"})", "min_p"},
      {R"({"prompt":"x","ignore_eos":1})", "ignore_eos"},
      {R"({"prompt":"x","stream":"yes"})", "stream"},
      {R"({"prompt":"x","stream_options":true})", "stream_options"},
      {R"({"prompt":"x","stream_options":{"include_usage":"y"}})", "stream_options.include_usage"},
      {R"({"prompt":"x","logit_bias":[1]})", "logit_bias"},
      {R"({"prompt":"x","logit_bias":{"abc":1}})", "logit_bias"},
      {R"({"prompt":"x","echo":true})", "echo"},
      {R"({"prompt":"x","best_of":3})", "best_of"},
  };
  for (const auto& c : cases) EXPECT_EQ(completion_error_param(c[0]), c[1]) << c[0];
}

TEST(ServerParse, RangesNameTheField) {
  const char* cases[][2] = {
      {R"({"prompt":"x","max_tokens":0})", "max_tokens"},
      {R"({"prompt":"x","max_tokens":-5})", "max_tokens"},
      {R"({"prompt":"x","max_tokens":1e12})", "max_tokens"},
      {R"({"prompt":"x","max_tokens":99999999999999999999})", "max_tokens"},
      {R"({"prompt":"x","temperature":-0.1})", "temperature"},
      {R"({"prompt":"x","temperature":2.5})", "temperature"},
      {R"({"prompt":"x","top_p":0})", "top_p"},
      {R"({"prompt":"x","top_p":1.01})", "top_p"},
      {R"({"prompt":"x","n":0})", "n"},
      {R"({"prompt":"x","n":1000})", "n"},
      {R"({"prompt":"x","presence_penalty":2.1})", "presence_penalty"},
      {R"({"prompt":"x","frequency_penalty":-2.1})", "frequency_penalty"},
      {R"({"prompt":"x","logprobs":21})", "logprobs"},
      {R"({"prompt":"x","logprobs":-1})", "logprobs"},
      {R"({"prompt":"x","top_k":-2})", "top_k"},
      {R"({"prompt":"x","min_p":1.5})", "min_p"},
      {R"({"prompt":"x","logit_bias":{"1":101}})", "logit_bias"},
      {R"({"prompt":"x","stop":["1","2","3","4","5","6","7","8","9","10","11","12","13","14","15","16","17"]})",
       "stop"},
  };
  for (const auto& c : cases) EXPECT_EQ(completion_error_param(c[0]), c[1]) << c[0];
  // Boundaries are accepted.
  EXPECT_EQ(completion_error_param(R"({"prompt":"x","temperature":0,"top_p":1,"n":16,"logprobs":0,
                                      "presence_penalty":-2,"frequency_penalty":2,"top_k":-1,
                                      "min_p":1,"max_tokens":2.0})"),
            "");
  // null counts as absent, empty stop strings are ignored.
  CompletionRequest r;
  ASSERT_FALSE(parse_completion(R"({"prompt":"x","temperature":null,"stop":["", "z"]})", r));
  EXPECT_FLOAT_EQ(r.gen.sampling.temperature, 1.0f);
  EXPECT_EQ(r.gen.stop, std::vector<std::string>{"z"});
}

TEST(ServerParse, ErrorObjectShape) {
  CompletionRequest r;
  auto e = parse_completion(R"({"prompt":"x","temperature":3})", r);
  ASSERT_TRUE(e);
  EXPECT_EQ(e->status, 400);
  auto j = Json::parse(error_body(*e));
  EXPECT_EQ(j["error"]["type"], "invalid_request_error");
  EXPECT_EQ(j["error"]["param"], "temperature");
  EXPECT_TRUE(j["error"]["code"].is_null());
  EXPECT_NE(j["error"]["message"].get<std::string>().find("between 0 and 2"), std::string::npos);
  ApiError noparam{400, "x"};
  EXPECT_TRUE(Json::parse(error_body(noparam))["error"]["param"].is_null());
}

TEST(ServerParse, ChatFields) {
  ChatRequest r;
  ASSERT_FALSE(parse_chat(
      R"({"model":"m","messages":[{"role":"system","content":"s"},
          {"role":"user","content":[{"type":"text","text":"a"},{"type":"text","text":"b"}]},
          {"role":"assistant","content":null,"tool_calls":[{"id":"1","type":"function",
           "function":{"name":"f","arguments":"{}"}}]},
          {"role":"tool","tool_call_id":"1","content":"r"}],
          "tools":[{"type":"function","function":{"name":"f"}}],
          "logprobs":true,"top_logprobs":5,"max_completion_tokens":9,"max_tokens":3,
          "chat_template_kwargs":{"enable_thinking":false}})",
      r));
  ASSERT_EQ(r.messages.size(), 4u);
  EXPECT_EQ(r.messages[1]["content"], "a\nb");
  EXPECT_TRUE(r.messages[2]["content"].is_null());
  EXPECT_EQ(r.messages[3]["tool_call_id"], "1");
  EXPECT_EQ(r.tools.size(), 1u);
  EXPECT_EQ(r.gen.n_top_logprobs, 5);
  EXPECT_EQ(*r.gen.max_tokens, 9);  // max_completion_tokens wins
  EXPECT_EQ(r.template_vars["enable_thinking"], false);
  // Keys keep the client's order (templates tojson them).
  EXPECT_EQ(r.messages[2].begin().key(), "role");

  ChatRequest d;
  ASSERT_FALSE(parse_chat(R"({"messages":[{"role":"user","content":"x"}],"logprobs":true})", d));
  EXPECT_EQ(d.gen.n_top_logprobs, 0);
  ChatRequest n;
  ASSERT_FALSE(parse_chat(R"({"messages":[{"role":"user","content":"x"}],"logprobs":false})", n));
  EXPECT_EQ(n.gen.n_top_logprobs, -1);
}

TEST(ServerParse, ChatErrors) {
  const char* cases[][2] = {
      {R"({})", "messages"},
      {R"({"messages":"hi"})", "messages"},
      {R"({"messages":[]})", "messages"},
      {R"({"messages":[5]})", "messages[0]"},
      {R"({"messages":[{"content":"x"}]})", "messages[0].role"},
      {R"({"messages":[{"role":"wizard","content":"x"}]})", "messages[0].role"},
      {R"({"messages":[{"role":"user"}]})", "messages[0].content"},
      {R"({"messages":[{"role":"user","content":null}]})", "messages[0].content"},
      {R"({"messages":[{"role":"user","content":5}]})", "messages[0].content"},
      {R"({"messages":[{"role":"user","content":[{"type":"image_url","image_url":{}}]}]})",
       "messages[0].content[0]"},
      {R"({"messages":[{"role":"user","content":[{"type":"text"}]}]})",
       "messages[0].content[0].text"},
      {R"({"messages":[{"role":"user","content":"x"}],"tools":{}})", "tools"},
      {R"({"messages":[{"role":"user","content":"x"}],"tools":[1]})", "tools[0]"},
      {R"({"messages":[{"role":"user","content":"x"}],"logprobs":3})", "logprobs"},
      {R"({"messages":[{"role":"user","content":"x"}],"top_logprobs":2})", "top_logprobs"},
      {R"({"messages":[{"role":"user","content":"x"}],"logprobs":true,"top_logprobs":21})",
       "top_logprobs"},
      {R"({"messages":[{"role":"user","content":"x"}],"max_completion_tokens":-1})",
       "max_completion_tokens"},
      {R"({"messages":[{"role":"user","content":"x"}],"chat_template_kwargs":[]})",
       "chat_template_kwargs"},
      {R"({"messages":[{"role":"user","content":"x"}],"add_generation_prompt":"no"})",
       "add_generation_prompt"},
  };
  for (const auto& c : cases) EXPECT_EQ(chat_error_param(c[0]), c[1]) << c[0];
  // A body that is not an object.
  ChatRequest r;
  EXPECT_TRUE(parse_chat_request(Json::array(), ParseLimits{}, r));
}

TEST(ServerParse, Embeddings) {
  EmbeddingRequest r;
  ASSERT_FALSE(parse_embedding_request(J(R"({"input":["a","b"],"encoding_format":"base64",
                                             "dimensions":8,"model":"e"})"),
                                       r));
  EXPECT_EQ(r.inputs.size(), 2u);
  EXPECT_TRUE(r.base64);
  EXPECT_EQ(*r.dimensions, 8);
  EmbeddingRequest t;
  ASSERT_FALSE(parse_embedding_request(J(R"({"input":[[1,2],[3]]})"), t));
  EXPECT_FALSE(t.base64);
  EXPECT_EQ(t.inputs[1].tokens, std::vector<int32_t>{3});
  auto param = [](const char* b) {
    EmbeddingRequest x;
    auto e = parse_embedding_request(Json::parse(b), x);
    return e ? e->param : std::string();
  };
  EXPECT_EQ(param(R"({})"), "input");
  EXPECT_EQ(param(R"({"input":"a","encoding_format":"int8"})"), "encoding_format");
  EXPECT_EQ(param(R"({"input":"a","dimensions":0})"), "dimensions");
  EXPECT_EQ(param(R"({"input":"a","dimensions":"8"})"), "dimensions");
}

TEST(ServerParse, Base64) {
  auto enc = [](std::string s) {
    return base64_encode({reinterpret_cast<const uint8_t*>(s.data()), s.size()});
  };
  EXPECT_EQ(enc(""), "");
  EXPECT_EQ(enc("f"), "Zg==");
  EXPECT_EQ(enc("fo"), "Zm8=");
  EXPECT_EQ(enc("foo"), "Zm9v");
  EXPECT_EQ(enc("foobar"), "Zm9vYmFy");
  // 1.0f little-endian is 00 00 80 3f.
  auto body = Json::parse(embedding_response("m", {{1.0f}}, true, 3));
  EXPECT_EQ(body["data"][0]["embedding"], "AACAPw==");
  EXPECT_EQ(body["usage"]["prompt_tokens"], 3);
  EXPECT_EQ(body["object"], "list");
  auto f = Json::parse(embedding_response("m", {{0.5f, -1.0f}}, false, 1));
  EXPECT_EQ(f["data"][0]["embedding"][1], -1.0);
  EXPECT_EQ(f["data"][0]["object"], "embedding");
}

}  // namespace
}  // namespace kiln::server
