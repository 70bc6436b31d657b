// Writing weights.bin (format in weights_file.h): requantize, apply the
// target's layout transform, write the GGUF, append the integrity trailer.
#include "kiln/artifact/weights_file.h"

#include <fmt/format.h>

#include <cstdio>
#include <map>
#include <optional>

#include "kiln/artifact/requant.h"
#include "kiln/artifact/weight_layout.h"
#include "kiln/backend/weight_image.h"
#include "kiln/core/threadpool.h"
#include "kiln/gguf/gguf.h"
#include "kiln/model/model.h"
#include "kiln/quant/mix.h"

namespace kiln::artifact {
namespace {

void say(const WeightsBakeOptions& o, const std::string& line) {
  if (o.progress) o.progress(line);
}

// "f32:13,q4_0:14": tensor count per type, sorted by type name.
std::string tensor_type_summary(const gguf::File& f) {
  std::map<std::string, int> n;
  for (const auto& t : f.tensors()) ++n[std::string(dtype_name(t.type))];
  std::string s;
  for (const auto& [name, count] : n)
    s += fmt::format("{}{}:{}", s.empty() ? "" : ",", name, count);
  return s;
}

// Copies the source's metadata but kiln's own keys: a weights.bin's
// kiln.artifact.* and layout keys describe that file, not the one being made.
void copy_model_metadata(const gguf::File& src, gguf::Writer& w) {
  for (const auto& [k, v] : src.metadata())
    if (k != "general.alignment" && k.rfind("kiln.", 0) != 0) w.set(k, v);
}

// Writes the requantized model as a plain GGUF, the input of the layout
// writer (which binds a model). Streams nothing twice: each tensor is
// converted once and written from memory.
Status write_requantized(const gguf::File& in, const quant::QuantPreset& preset, bool pure,
                         const std::string& path, ThreadPool& pool, const WeightsBakeOptions& o) {
  auto plan = plan_quantization(in, preset, pure);
  if (!plan) return plan.error();
  gguf::Writer w;
  w.set_alignment(in.alignment());
  copy_model_metadata(in, w);
  w.set_u32("general.quantization_version", kQuantizationVersion);
  w.set_u32("general.file_type", preset.file_type);
  std::vector<std::vector<uint8_t>> converted(plan->size());  // alive until write()
  for (size_t i = 0; i < plan->size(); ++i) {
    const gguf::TensorInfo& t = *(*plan)[i].tensor;
    const DType to = (*plan)[i].to;
    std::span<const uint8_t> data(t.data, size_t(t.n_bytes));
    if (to != t.type) {
      KILN_TRY(convert_tensor(pool, t, to, converted[i]));
      data = converted[i];
      say(o, fmt::format("[{:>4}/{:>4}] {:<32} {} -> {}", i + 1, plan->size(), t.name,
                         dtype_name(t.type), dtype_name(to)));
    }
    KILN_TRY(w.add_tensor_ref(t.name, to, t.ne, data));
  }
  return w.write(path);
}

}  // namespace

Result<WeightsBakeResult> bake_weights(const WeightsBakeOptions& o, ThreadPool& pool) {
  const TargetInfo* target = find_target(o.target);
  if (!target)
    return make_error(fmt::format("--target-arch {}: use one of {}", o.target, target_names()));
  std::optional<quant::QuantPreset> preset;
  if (!o.quant.empty()) {
    preset = quant::quant_preset_from_name(o.quant);
    if (!preset)
      return make_error(
          fmt::format("--quant {}: valid types: {}", o.quant, quant::quant_preset_names()));
  }
  WeightsBakeResult r;
  r.header.format_version = kWeightsFormatVersion;
  r.header.target = std::string(target->name);
  r.header.layout = std::string(target->layout);
  r.header.weight_types = preset ? std::string(preset->name) : "source";

  // The model the layout writer reads: the source, or its requantization.
  std::string model_path = o.source;
  const std::string requant_path = o.out + ".requant.gguf";
  struct RemoveOnExit {
    std::string path;
    ~RemoveOnExit() {
      if (!path.empty()) std::remove(path.c_str());
    }
  } remove_requant;
  {
    auto opened = gguf::File::open(o.source);
    if (!opened) return opened.error();
    const gguf::File& in = **opened;
    if (const std::string l = image::image_layout(in); !l.empty())
      return make_error(
          fmt::format("{} is already in the GPU weight layout '{}'; bake from the "
                      "original GGUF model",
                      o.source, l));
    say(o, fmt::format("hashing {} ({:.1f} MiB)", o.source, double(in.file_size()) / (1 << 20)));
    r.header.model_hash = content_hash(in.bytes(), pool);
    if (preset) {
      say(o, fmt::format("requantizing to {}{}", preset->name, o.pure ? " (pure)" : ""));
      remove_requant.path = requant_path;
      KILN_TRY(write_requantized(in, *preset, o.pure, requant_path, pool, o));
      model_path = requant_path;
    }
  }
  auto model = model::Model::load(model_path);
  if (!model) return model.error();
  r.header.tensor_types = tensor_type_summary((*model)->file());

  gguf::Writer w;
  copy_model_metadata((*model)->file(), w);
  w.set_u32("kiln.artifact.format_version", r.header.format_version);
  w.set_string("kiln.artifact.target", r.header.target);
  w.set_string("kiln.artifact.layout", r.header.layout);
  w.set_string("kiln.artifact.model_hash", r.header.model_hash);
  w.set_string("kiln.artifact.weight_types", r.header.weight_types);
  w.set_string("kiln.artifact.tensor_types", r.header.tensor_types);
  KILN_TRY(target->write(**model, w));
  say(o, fmt::format("writing {} (layout {} for {})", o.out, r.header.layout, r.header.target));
  KILN_TRY(w.write(o.out));
  model->reset();

  // The header ends where the tensor data starts: parse what was written.
  uint64_t header_bytes = 0;
  {
    auto written = gguf::File::open(o.out);
    if (!written) return written.error();
    header_bytes = (*written)->data_offset();
  }
  auto integrity = append_integrity_trailer(o.out, header_bytes, pool);
  if (!integrity) return integrity.error();
  r.integrity = std::move(*integrity);
  if (target->layout == "gguf") {
    r.gguf_path = o.out;
  } else {
    r.gguf_path = model_path;
    if (model_path == requant_path) {
      r.gguf_path_temporary = true;
      remove_requant.path.clear();  // the caller's now
    }
  }
  return r;
}

Result<WeightsHeader> read_weights_header(const gguf::File& f) {
  WeightsHeader h;
  const auto v = f.get_int("kiln.artifact.format_version");
  if (!v)
    return make_error(
        fmt::format("{} has no kiln.artifact.* keys: not a baked weights.bin "
                    "(make one with `kiln bake`)",
                    f.path()));
  if (*v > kWeightsFormatVersion)
    return make_error(
        fmt::format("{} is artifact format {}, newer than this kiln reads ({}); "
                    "upgrade kiln or rebake",
                    f.path(), *v, kWeightsFormatVersion));
  h.format_version = uint32_t(*v);
  h.target = f.get_string("kiln.artifact.target").value_or("");
  h.layout = f.get_string("kiln.artifact.layout").value_or("");
  h.model_hash = f.get_string("kiln.artifact.model_hash").value_or("");
  h.weight_types = f.get_string("kiln.artifact.weight_types").value_or("");
  h.tensor_types = f.get_string("kiln.artifact.tensor_types").value_or("");
  if (h.target.empty() || h.layout.empty() || h.model_hash.empty())
    return make_error(fmt::format("{}: kiln.artifact.* keys are incomplete; rebake it", f.path()));
  return h;
}

}  // namespace kiln::artifact
