// Warm prompt parsing and the run through the engine (see warm_prompts.h).
#include "kiln/artifact/warm_prompts.h"

#include <fmt/format.h>

#include <condition_variable>
#include <fstream>
#include <memory>
#include <mutex>

#include "kiln/engine/engine.h"

namespace kiln::artifact {

Result<std::vector<WarmPrompt>> read_warm_prompts(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) return make_error(fmt::format("--warm {}: cannot read the file", path));
  std::vector<WarmPrompt> out;
  std::string line;
  int n = 0;
  while (std::getline(f, line)) {
    ++n;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.find_first_not_of(" \t") == std::string::npos || line[0] == '#') continue;
    const auto bad = [&](const std::string& why) {
      return make_error(fmt::format("--warm {} line {}: {}", path, n, why));
    };
    WarmPrompt p;
    p.line = n;
    try {
      p.request = nlohmann::json::parse(line);
    } catch (const std::exception& e) {
      return bad(fmt::format("not valid JSON ({})", e.what()));
    }
    const auto& j = p.request;
    if (!j.is_object()) return bad("each line must be a JSON object");
    if (j.contains("messages")) {
      if (!j["messages"].is_array() || j["messages"].empty())
        return bad("'messages' must be a non-empty array of {\"role\", \"content\"} objects");
      p.chat = true;
    } else if (j.contains("prompt")) {
      if (!j["prompt"].is_string() || j["prompt"].get<std::string>().empty())
        return bad("'prompt' must be a non-empty string");
      p.prompt_text = j["prompt"].get<std::string>();
    } else {
      return bad("give either \"messages\" (chat) or \"prompt\" (completion)");
    }
    p.sampling.temperature = 0.0f;
    try {
      if (j.contains("max_tokens")) {
        p.max_tokens = j["max_tokens"].get<int32_t>();
        if (*p.max_tokens < 0) return bad("'max_tokens' must be 0 or more");
      }
      if (j.contains("temperature")) p.sampling.temperature = j["temperature"].get<float>();
      if (j.contains("top_p")) p.sampling.top_p = j["top_p"].get<float>();
      if (j.contains("top_k")) p.sampling.top_k = j["top_k"].get<int32_t>();
      if (j.contains("min_p")) p.sampling.min_p = j["min_p"].get<float>();
      if (j.contains("seed")) p.sampling.seed = j["seed"].get<uint64_t>();
    } catch (const std::exception& e) {
      return bad(fmt::format("a sampling field has the wrong type ({})", e.what()));
    }
    out.push_back(std::move(p));
  }
  if (out.empty()) return make_error(fmt::format("--warm {}: no prompts in the file", path));
  return out;
}

nlohmann::json sampling_json(const engine::SamplingParams& s, int32_t max_tokens) {
  return {{"temperature", s.temperature},
          {"top_p", s.top_p},
          {"top_k", s.top_k},
          {"min_p", s.min_p},
          {"seed", s.seed},
          {"max_tokens", max_tokens}};
}

Result<std::vector<WarmResult>> run_warm_requests(engine::Engine& eng,
                                                  std::vector<engine::GenerationRequest> reqs) {
  struct Waiter {
    std::mutex mu;
    std::condition_variable cv;
    bool woke = false;
  };
  auto w = std::make_shared<Waiter>();
  std::vector<std::shared_ptr<engine::ResultChannel>> chans;
  for (auto& r : reqs) {
    auto ch = std::make_shared<engine::ResultChannel>();
    ch->set_notifier([w] {
      std::lock_guard<std::mutex> lock(w->mu);
      w->woke = true;
      w->cv.notify_all();
    });
    KILN_TRY(eng.submit(std::move(r), ch));
    chans.push_back(std::move(ch));
  }
  std::vector<WarmResult> res(chans.size());
  size_t n_done = 0;
  std::vector<engine::TokenEvent> evs;
  while (n_done < chans.size()) {
    {
      std::unique_lock<std::mutex> lock(w->mu);
      w->cv.wait(lock, [&] { return w->woke; });
      w->woke = false;
    }
    for (size_t i = 0; i < chans.size(); ++i) {
      evs.clear();
      chans[i]->drain(evs);
      for (const auto& e : evs) {
        if (e.token >= 0) res[i].output.push_back(e.token);
        if (e.finish == engine::FinishReason::error)
          return make_error(fmt::format("warm prompt {} failed in the engine: {}", i + 1, e.error));
        if (e.finish != engine::FinishReason::none) {
          res[i].finish = e.finish;
          ++n_done;
        }
      }
    }
  }
  for (auto& ch : chans) ch->set_notifier(nullptr);
  return res;
}

}  // namespace kiln::artifact
