// --model as a GGUF file or a baked artifact (see model_source.h).
#include "kiln/cli/model_source.h"

#include <fmt/format.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "kiln/core/startup_timeline.h"
#include "kiln/artifact/checksum.h"
#include "kiln/gguf/gguf.h"
#include "kiln/core/threadpool.h"
#include "kiln/backend/weight_image.h"
#include "kiln/engine/engine.h"
#include "kiln/model/model.h"

namespace kiln::cli {

Result<ModelSource> load_model_source(const std::string& path, StartupTimeline* timeline,
                                      const char* command, bool defer_image_body) {
  ModelSource src;
  if (!artifact::is_artifact_dir(path)) {
    auto m = model::Model::load(path);
    if (!m) return m.error();
    src.model = std::move(*m);
    if (timeline) timeline->mark("weights_read");
    return src;
  }
  // Deferred: the trailer, sizes and header are checked here; the body's
  // chunks are hashed by the GPU loader as it reads them (one read of the
  // file), or by verify_image_body() when the layout is not the GPU image.
  auto a = artifact::open_artifact(path, 0, !defer_image_body);
  if (!a) return a.error();
  src.artifact = std::make_unique<artifact::Artifact>(std::move(*a));
  src.model = std::move(src.artifact->model);
  if (defer_image_body) {
    src.image_body_unverified = true;
    if (src.artifact->weights.layout != image::kCudaLayout) KILN_TRY(verify_image_body(src));
  }
  if (timeline) {
    timeline->mark("weights_read");
    timeline->add("weights_verified", src.artifact->verify_seconds);
  }
  const auto& fp = src.artifact->warm->fingerprint();
  fmt::print(stderr,
             "kiln {}: artifact {}: verified in {:.2f} s; target {} (layout {}), weights {}, KV "
             "{} blocks of {}, ctx {}, {} baked prefix blocks, {} recorded outputs\n",
             command, path, src.artifact->verify_seconds, fp.target, fp.weight_layout,
             fp.weight_types, fp.kv_type, fp.kv_block_size, fp.ctx_size,
             src.artifact->warm->data().prefixes.blocks.size(),
             src.artifact->warm->recorded_outputs().size());
  return src;
}

Status verify_image_body(ModelSource& src) {
  if (!src.image_body_unverified) return Status::success();
  const gguf::File& f = src.model->file();
  ThreadPool pool(0);
  KILN_TRY(artifact::verify_integrity(f.bytes(), src.artifact->weights_integrity, pool, f.path(), true));
  src.image_body_unverified = false;
  return Status::success();
}

void adopt_artifact_kv_settings(const std::string& path, KvFlags& f, const char* command) {
  if (!artifact::is_artifact_dir(path)) return;
  // The fixed header of warm.bin (warm_file.h) then its JSON; any damage is
  // left for the verified open to report.
  std::ifstream in(std::filesystem::path(path) / artifact::kWarmFileName, std::ios::binary);
  char head[32];
  if (!in.read(head, sizeof head) || std::memcmp(head, "KILNWARM", 8) != 0) return;
  uint64_t json_bytes = 0;
  std::memcpy(&json_bytes, head + 16, 8);
  if (json_bytes == 0 || json_bytes > (256u << 20)) return;
  std::string text(size_t(json_bytes), '\0');
  if (!in.read(text.data(), std::streamsize(json_bytes))) return;
  const auto j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object() || !j.contains("fingerprint")) return;
  auto fp = artifact::fingerprint_from_json(j["fingerprint"]);
  if (!fp) return;
  std::string adopted;
  if (!f.kv_type_given && f.kv_type != fp->kv_type) {
    f.kv_type = fp->kv_type;
    adopted += " --kv-type " + f.kv_type;
  }
  if (!f.kv_block_size_given && f.kv_block_size != fp->kv_block_size) {
    f.kv_block_size = fp->kv_block_size;
    adopted += " --kv-block-size " + std::to_string(f.kv_block_size);
  }
  if (!f.ctx_size_given && f.ctx_size != fp->ctx_size) {
    f.ctx_size = fp->ctx_size;
    adopted += " --ctx-size " + std::to_string(f.ctx_size);
  }
  if (!adopted.empty())
    fmt::print(stderr, "kiln {}: using the artifact's settings:{}\n", command, adopted);
}

Status check_artifact_settings(const ModelSource& src, const std::string& kv_type,
                               int kv_block_size, int ctx_size, const std::string& backend_name) {
  if (!src.artifact) return Status::success();
  const artifact::Fingerprint& fp = src.artifact->warm->fingerprint();
  artifact::ServeSettings s;
  s.kv_type = kv_type;
  s.kv_block_size = kv_block_size;
  s.ctx_size = ctx_size;
  s.backend = backend_name;
  KILN_TRY(artifact::check_serve_settings(fp, s, src.artifact->dir));
  if (backend_name != "cpu" && fp.target == "cpu")
    fmt::print(stderr,
               "kiln serve: note: {} was baked for --target-arch cpu; the {} backend loads it "
               "tensor by tensor. Rebake with --target-arch sm_89/sm_90/sm_120 for the one-pass "
               "GPU image\n",
               src.artifact->dir, backend_name);
  return Status::success();
}

Status restore_artifact_prefixes(const ModelSource& src, engine::Engine& eng, bool prefix_cache_on,
                                 StartupTimeline* timeline, std::vector<int32_t>* longest) {
  if (!src.artifact) return Status::success();
  const auto& blocks = src.artifact->warm->data().prefixes;
  if (blocks.blocks.empty()) {
    if (timeline) timeline->mark("prefixes_restored");
    return Status::success();
  }
  if (!prefix_cache_on) {
    fmt::print(stderr, "kiln serve: --no-prefix-cache: the {} baked prefix blocks are not used\n",
               blocks.blocks.size());
    return Status::success();
  }
  auto rep = eng.import_prefix_blocks(blocks);
  if (!rep) return make_error("restoring the baked prefix cache: " + rep.message());
  if (timeline) timeline->mark("prefixes_restored");
  fmt::print(stderr, "kiln serve: restored {} baked prefix blocks ({} tokens){}\n", rep->restored,
             int64_t(rep->restored) * blocks.block_size,
             rep->skipped ? fmt::format("; {} left out: the KV pool is too small (--kv-memory)",
                                        rep->skipped)
                          : std::string());
  if (longest && rep->skipped == 0) *longest = engine::longest_prefix_chain(blocks);
  return Status::success();
}

std::unique_ptr<KnownPrefixes> learn_baked_prompts(const Tokenizer& tok, const engine::PrefixBlocks& blocks) {
  auto kp = std::make_unique<KnownPrefixes>(tok);
  for (const auto& chain : engine::prefix_chains(blocks)) {
    if (chain.empty()) continue;
    const std::span<const int32_t> ids(chain);
    if (tok.add_bos() && chain[0] == tok.bos_id())  // a completions prompt: the tokenizer adds BOS
      kp->add(tok.decode(ids.subspan(1)), /*add_special=*/true, /*parse_special=*/true);
    kp->add(tok.decode(ids), /*add_special=*/false, /*parse_special=*/true);  // a rendered chat
  }
  if (kp->size() == 0) return nullptr;
  return kp;
}

}  // namespace kiln::cli
