// Embedding requests and responses.
#include "kiln/server/openai_embeddings.h"

#include <bit>
#include <cstring>
#include <mutex>

namespace kiln::server {

std::optional<ApiError> parse_embedding_request(const Json& body, EmbeddingRequest& out) {
  if (!body.is_object())
    return bad_field("", "the request body must be a JSON object, got " + json_type_name(body));
  if (auto e = field::string(body, "model", out.model)) return e;
  auto in = body.find("input");
  if (in == body.end() || in->is_null()) return bad_field("input", "'input' is required");
  if (auto e = parse_prompt_list(*in, "input", out.inputs)) return e;
  std::string fmt = "float";
  if (auto e = field::string(body, "encoding_format", fmt)) return e;
  if (fmt != "float" && fmt != "base64")
    return bad_field("encoding_format",
                     "'encoding_format' must be \"float\" or \"base64\", got \"" + fmt + "\"");
  out.base64 = fmt == "base64";
  if (auto e = field::integer(body, "dimensions", 1, 1 << 20, out.dimensions)) return e;
  std::string user;
  if (auto e = field::string(body, "user", user)) return e;
  return std::nullopt;
}


std::string embedding_response(const std::string& model,
                               const std::vector<std::vector<float>>& vectors, bool base64,
                               int64_t prompt_tokens) {
  static_assert(std::endian::native == std::endian::little,
                "base64 embeddings are little-endian float32 (what numpy's frombuffer reads)");
  Json j;
  j["object"] = "list";
  j["data"] = Json::array();
  for (size_t i = 0; i < vectors.size(); ++i) {
    Json d;
    d["object"] = "embedding";
    d["index"] = i;
    if (base64) {
      const auto* p = reinterpret_cast<const uint8_t*>(vectors[i].data());
      d["embedding"] = base64_encode({p, vectors[i].size() * sizeof(float)});
    } else {
      d["embedding"] = vectors[i];
    }
    j["data"].push_back(std::move(d));
  }
  j["model"] = model;
  j["usage"] = {{"prompt_tokens", prompt_tokens}, {"total_tokens", prompt_tokens}};
  return j.dump();
}

namespace {

// Waits for the engine's embedding callback; the body is built at the end.
class EmbeddingJob final : public BodyProducer {
 public:
  struct Shared {
    std::mutex mu;
    bool done = false;
    std::optional<Result<std::vector<std::vector<float>>>> result;
    std::function<void()> wake;
  };

  EmbeddingJob(bool base64, std::string model, int64_t n_tokens, Admission::Permit permit)
      : base64_(base64),
        model_(std::move(model)),
        n_tokens_(n_tokens),
        permit_(std::move(permit)),
        shared_(std::make_shared<Shared>()) {}
  ~EmbeddingJob() override {
    std::lock_guard<std::mutex> lock(shared_->mu);
    shared_->wake = nullptr;
  }

  std::shared_ptr<Shared> shared() { return shared_; }
  bool streaming() const override { return false; }
  int status() const override { return status_; }
  void set_waker(std::function<void()> wake) override {
    std::lock_guard<std::mutex> lock(shared_->mu);
    shared_->wake = std::move(wake);
  }
  // Embedding work is short and not cancellable in the engine; the result is dropped.
  void cancel() override { permit_.release(); }

  Poll poll(std::string& out) override {
    std::optional<Result<std::vector<std::vector<float>>>> r;
    {
      std::lock_guard<std::mutex> lock(shared_->mu);
      if (!shared_->done) return Poll::pending;
      r = std::move(shared_->result);
    }
    if (!r->ok()) {
      status_ = 500;
      out += error_body(
          {500, "embedding failed in the engine: " + r->message(), "server_error", "", ""});
    } else {
      out += embedding_response(model_, r->value(), base64_, n_tokens_);
    }
    permit_.release();
    return Poll::done;
  }

 private:
  bool base64_;
  std::string model_;
  int64_t n_tokens_;
  Admission::Permit permit_;
  std::shared_ptr<Shared> shared_;
  int status_ = 200;
};

}  // namespace

std::variant<std::shared_ptr<BodyProducer>, ApiError> start_embeddings(
    EmbeddingEngine& engine, std::vector<std::vector<int32_t>> inputs, bool base64,
    std::string model, Admission::Permit permit) {
  int64_t n_tokens = 0;
  for (const auto& in : inputs) n_tokens += int64_t(in.size());
  auto job = std::make_shared<EmbeddingJob>(base64, std::move(model), n_tokens, std::move(permit));
  std::weak_ptr<EmbeddingJob::Shared> weak = job->shared();
  Status st = engine.submit_embeddings(std::move(inputs),
                                       [weak](Result<std::vector<std::vector<float>>> r) {
                                         auto s = weak.lock();
                                         if (!s) return;
                                         std::function<void()> wake;
                                         {
                                           std::lock_guard<std::mutex> lock(s->mu);
                                           s->result = std::move(r);
                                           s->done = true;
                                           wake = s->wake;
                                         }
                                         if (wake) wake();
                                       });
  if (!st.ok()) return ApiError{400, st.message(), "invalid_request_error", "input", ""};
  return std::shared_ptr<BodyProducer>(std::move(job));
}

}  // namespace kiln::server
