// `kiln inspect MODEL`: summarizes a GGUF's metadata and tensors, or says
// exactly why the file is invalid (non-zero exit).
#include <fmt/format.h>

#include <map>

#include "kiln/cli/commands.h"
#include "kiln/gguf/gguf.h"

namespace kiln::cli {
namespace {

struct InspectOptions {
  std::string model;
  bool all_tensors = false;
  bool all_metadata = false;
};

int run_inspect(const InspectOptions& o) {
  auto f = gguf::File::open(o.model);
  if (!f) {
    fmt::print(stderr, "kiln inspect: {}\n", f.message());
    return 1;
  }
  const gguf::File& g = **f;
  fmt::print("file:        {}\n", g.path());
  fmt::print("gguf:        version {}, alignment {}, {} bytes, data at byte {}\n", g.version(),
             g.alignment(), g.file_size(), g.data_offset());
  fmt::print("arch:        {}\n", g.get_string("general.architecture").value_or("(none)"));
  if (auto name = g.get_string("general.name")) fmt::print("name:        {}\n", *name);

  fmt::print("\nmetadata ({} keys):\n", g.metadata().size());
  for (const auto& [k, v] : g.metadata()) {
    if (!o.all_metadata && k == "tokenizer.chat_template") {
      fmt::print("  {:<44} <{} chars>\n", k, v.as_string() ? v.as_string()->size() : 0);
      continue;
    }
    fmt::print("  {:<44} {}\n", k, v.to_display(o.all_metadata ? 64 : 6));
  }

  std::map<std::string, std::pair<int, uint64_t>> by_type;
  uint64_t total_bytes = 0, total_elems = 0;
  for (const auto& t : g.tensors()) {
    auto& e = by_type[std::string(dtype_name(t.type))];
    e.first++;
    e.second += t.n_bytes;
    total_bytes += t.n_bytes;
    total_elems += uint64_t(t.n_elements());
  }
  fmt::print("\ntensors:     {} ({:.2f} MiB, {:.3f} B parameters)\n", g.tensors().size(),
             double(total_bytes) / (1 << 20), double(total_elems) / 1e9);
  for (const auto& [name, e] : by_type)
    fmt::print("  {:<6} {:>5} tensors {:>10.2f} MiB\n", name, e.first, double(e.second) / (1 << 20));

  const size_t limit = o.all_tensors ? g.tensors().size() : 24;
  fmt::print("\n  {:<36} {:<6} {:<24} {:>12}\n", "name", "type", "shape (ne0, ne1, ...)", "bytes");
  for (size_t i = 0; i < g.tensors().size() && i < limit; ++i) {
    const auto& t = g.tensors()[i];
    std::string shape;
    for (size_t d = 0; d < t.ne.size(); ++d) shape += (d ? ", " : "") + std::to_string(t.ne[d]);
    fmt::print("  {:<36} {:<6} {:<24} {:>12}\n", t.name, dtype_name(t.type), shape, t.n_bytes);
  }
  if (g.tensors().size() > limit)
    fmt::print("  ... {} more (--all-tensors lists them)\n", g.tensors().size() - limit);
  return 0;
}

}  // namespace

void register_inspect(CLI::App& root, Runner& run) {
  auto o = std::make_shared<InspectOptions>();
  auto* sub = root.add_subcommand("inspect", "Summarize a GGUF model's metadata and tensors, "
                                             "or explain why the file is invalid");
  sub->add_option("model", o->model, "GGUF file")->required();
  sub->add_flag("--all-tensors", o->all_tensors, "List every tensor");
  sub->add_flag("--all-metadata", o->all_metadata, "Show long metadata values in full");
  sub->callback([o, &run] { run = [o] { return run_inspect(*o); }; });
}

}  // namespace kiln::cli
