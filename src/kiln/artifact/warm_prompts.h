// The warm prompts of `kiln bake --warm FILE`: JSON lines, one prompt each,
//   {"messages": [{"role": "system", "content": "..."}, ...]}   chat form
//   {"prompt": "..."}                                            completion form
// with optional "max_tokens" (tokens to generate when recording outputs),
// "temperature", "top_p", "top_k", "min_p", "seed" (default: greedy). Blank
// lines and lines starting with '#' are skipped. They are run through the
// engine on the CPU; their KV blocks become the baked prefix cache.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "kiln/core/status.h"
#include "kiln/engine/request.h"
#include "kiln/engine/sampler.h"

namespace kiln::engine {
class Engine;
}

namespace kiln::artifact {

struct WarmPrompt {
  int line = 0;             // 1-based line in the file, for messages
  nlohmann::json request;   // the line as given
  bool chat = false;        // "messages" (true) or "prompt"
  std::string prompt_text;  // the "prompt" (completion form); bake renders chat ones
  std::optional<int32_t> max_tokens;
  engine::SamplingParams sampling;  // temperature 0 unless the line says otherwise
};

// Parses the file; errors name the line and field.
Result<std::vector<WarmPrompt>> read_warm_prompts(const std::string& path);

// The sampling fields as stored with a recorded output.
nlohmann::json sampling_json(const engine::SamplingParams& s, int32_t max_tokens);

struct WarmResult {
  std::vector<int32_t> output;  // generated token ids
  engine::FinishReason finish = engine::FinishReason::none;
};

// Runs the requests through a started engine (all submitted at once, so the
// engine batches them) and waits for every one to finish.
Result<std::vector<WarmResult>> run_warm_requests(engine::Engine& eng,
                                                  std::vector<engine::GenerationRequest> reqs);

}  // namespace kiln::artifact
