// Fingerprint serialization and the serve-time comparison (see fingerprint.h).
#include "kiln/artifact/fingerprint.h"

#include <fmt/format.h>

namespace kiln::artifact {

nlohmann::json to_json(const Fingerprint& f) {
  return {{"model_hash", f.model_hash},
          {"weights_digest", f.weights_digest},
          {"target", f.target},
          {"weight_layout", f.weight_layout},
          {"weight_types", f.weight_types},
          {"kv_type", f.kv_type},
          {"kv_block_size", f.kv_block_size},
          {"ctx_size", f.ctx_size},
          {"source_name", f.source_name}};
}

Result<Fingerprint> fingerprint_from_json(const nlohmann::json& j) {
  Fingerprint f;
  try {
    f.model_hash = j.at("model_hash").get<std::string>();
    f.weights_digest = j.at("weights_digest").get<std::string>();
    f.target = j.at("target").get<std::string>();
    f.weight_layout = j.at("weight_layout").get<std::string>();
    f.weight_types = j.at("weight_types").get<std::string>();
    f.kv_type = j.at("kv_type").get<std::string>();
    f.kv_block_size = j.at("kv_block_size").get<int32_t>();
    f.ctx_size = j.at("ctx_size").get<int32_t>();
    f.source_name = j.value("source_name", std::string());
  } catch (const std::exception& e) {
    return make_error(
        fmt::format("the fingerprint in warm.bin is incomplete ({}); rebake the "
                    "artifact with this kiln",
                    e.what()));
  }
  return f;
}

namespace {

// The target to rebake for: the CPU's own, else the artifact's GPU target.
std::string target_for(const ServeSettings& s, const Fingerprint& f) {
  if (s.backend == "cpu") return "cpu";
  return f.target == "cpu" ? "sm_89" : f.target;
}

}  // namespace

std::string rebake_command(const Fingerprint& f, const ServeSettings& s, const std::string& dir) {
  std::string cmd = fmt::format(
      "kiln bake --model {} --out {} --kv-type {} --kv-block-size {} --ctx-size {} "
      "--target-arch {}",
      f.source_name.empty() ? "MODEL.gguf" : f.source_name, dir, s.kv_type, s.kv_block_size,
      s.ctx_size, target_for(s, f));
  if (f.weight_types != "source") cmd += " --quant " + f.weight_types;
  return cmd + " [--warm PROMPTS.jsonl]";
}

Status check_serve_settings(const Fingerprint& f, const ServeSettings& s, const std::string& dir) {
  const auto differ = [&](const char* field, const std::string& flag, const std::string& baked,
                          const std::string& serving) {
    return make_error(fmt::format(
        "artifact {}: {} differs: it was baked with {} {} but kiln runs with {} {}. Serve it "
        "with {} {} (or leave the flag out), or rebake it for these settings: {}",
        dir, field, flag, baked, flag, serving, flag, baked, rebake_command(f, s, dir)));
  };
  if (f.kv_type != s.kv_type) return differ("kv_type", "--kv-type", f.kv_type, s.kv_type);
  if (f.kv_block_size != s.kv_block_size)
    return differ("kv_block_size", "--kv-block-size", std::to_string(f.kv_block_size),
                  std::to_string(s.kv_block_size));
  if (f.ctx_size != s.ctx_size)
    return differ("ctx_size", "--ctx-size", std::to_string(f.ctx_size), std::to_string(s.ctx_size));
  return Status::success();
}

}  // namespace kiln::artifact
