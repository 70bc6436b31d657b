// warm.bin of a baked artifact: the full fingerprint, the KV blocks of the
// warmed prefixes with their token ids (chains of full blocks, as the prefix
// cache stores them), and the recorded outputs of the warm prompts.
//
// Layout (little-endian):
//   0    char magic[8]      "KILNWARM"
//   8    u32  format_version 1
//   12   u32  reserved       0
//   16   u64  json_bytes
//   24   u64  data_offset    32 + json_bytes rounded up to 4096
//   32   json_bytes of UTF-8 JSON:
//          {"fingerprint": {...fingerprint.h...},
//           "prefix": {"block_size": B, "block_bytes": N,
//                      "blocks": [{"parent": -1 | index, "tokens": [B ids]}, ...]},
//           "outputs": [{"request": {...}, "prompt": str, "prompt_tokens": n,
//                        "sampling": {...}, "text": str, "finish_reason": str,
//                        "completion_tokens": n}, ...]}
//        zero padding to data_offset
//   data_offset: block i's K/V at data_offset + i * N, canonical format (backend.h)
//   integrity trailer (checksum.h), header = [0, data_offset)
// Parents precede children in "blocks". JSON objects are written with sorted
// keys, so the same inputs give the same file.
#pragma once

#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "kiln/artifact/checksum.h"
#include "kiln/artifact/fingerprint.h"
#include "kiln/core/status.h"
#include "kiln/engine/prefix_blocks.h"

namespace kiln {
class ThreadPool;
}
namespace kiln::gguf {
class MappedFile;
}

namespace kiln::artifact {

// 2: prefix blocks may be tails (fewer than block_size tokens: a warm
// prompt's partial last block, engine/prefix_cache.h). Version 1 files read.
inline constexpr uint32_t kWarmFormatVersion = 2;

// One warm prompt's recorded answer: the seed of an exact-match response
// cache. Greedy unless the prompt line asked otherwise (then `sampling`
// says so and the entry is only as reproducible as its seed).
struct RecordedOutput {
  nlohmann::json
      request;  // the prompt line as given: {"messages": [...]} or {"prompt": "..."}, + fields
  std::string prompt;  // the text the model saw (chat template applied)
  int32_t prompt_tokens = 0;
  nlohmann::json sampling;    // {"temperature", "top_p", "top_k", "min_p", "seed", "max_tokens"}
  std::string text;           // generated text
  std::string finish_reason;  // "stop" or "length"
  int32_t completion_tokens = 0;
};

struct WarmData {
  Fingerprint fingerprint;
  engine::PrefixBlocks prefixes;
  std::vector<RecordedOutput> outputs;
};

// Writes `path` (not atomically: bake writes into a temporary directory that
// is renamed at the end), then its integrity trailer.
Status write_warm_file(const std::string& path, const WarmData& d, ThreadPool& pool);

// An opened, verified warm.bin. Block contents view the mapping, so the
// WarmFile must outlive any use of data().prefixes.
class WarmFile {
 public:
  // Maps, verifies every checksum (refusing corrupt or truncated files) and
  // parses. `name` is used in messages (e.g. "DIR/warm.bin").
  static Result<std::unique_ptr<WarmFile>> open(const std::string& path, ThreadPool& pool);
  ~WarmFile();

  const WarmData& data() const { return data_; }
  const Fingerprint& fingerprint() const { return data_.fingerprint; }
  // The recorded outputs of the warm prompts (empty unless baked with
  // --record-outputs): what an exact-match response cache is seeded from.
  const std::vector<RecordedOutput>& recorded_outputs() const { return data_.outputs; }

 private:
  WarmFile() = default;
  std::unique_ptr<gguf::MappedFile> map_;
  WarmData data_;
};

}  // namespace kiln::artifact
