// warm.bin writing and reading (format in warm_file.h).
#include "kiln/artifact/warm_file.h"

#include <fmt/format.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

#include "kiln/core/threadpool.h"
#include "kiln/gguf/mapped_file.h"

namespace kiln::artifact {
namespace {

constexpr char kMagic[8] = {'K', 'I', 'L', 'N', 'W', 'A', 'R', 'M'};
constexpr uint64_t kFixedHeader = 32;
constexpr uint64_t kDataAlign = 4096;

nlohmann::json output_to_json(const RecordedOutput& o) {
  return {{"request", o.request},
          {"prompt", o.prompt},
          {"prompt_tokens", o.prompt_tokens},
          {"sampling", o.sampling},
          {"text", o.text},
          {"finish_reason", o.finish_reason},
          {"completion_tokens", o.completion_tokens}};
}

RecordedOutput output_from_json(const nlohmann::json& j) {
  RecordedOutput o;
  o.request = j.at("request");
  o.prompt = j.at("prompt").get<std::string>();
  o.prompt_tokens = j.at("prompt_tokens").get<int32_t>();
  o.sampling = j.at("sampling");
  o.text = j.at("text").get<std::string>();
  o.finish_reason = j.at("finish_reason").get<std::string>();
  o.completion_tokens = j.at("completion_tokens").get<int32_t>();
  return o;
}

template <class T>
void put(std::vector<uint8_t>& out, const T& v) {
  const size_t at = out.size();
  out.resize(at + sizeof v);
  std::memcpy(out.data() + at, &v, sizeof v);
}

}  // namespace

Status write_warm_file(const std::string& path, const WarmData& d, ThreadPool& pool) {
  const engine::PrefixBlocks& p = d.prefixes;
  nlohmann::json blocks = nlohmann::json::array();
  for (const auto& b : p.blocks) {
    if (b.kv.size() != p.block_bytes)
      return make_error(fmt::format("warm.bin: a prefix block has {} bytes, expected {}",
                                    b.kv.size(), p.block_bytes));
    blocks.push_back(nlohmann::json{{"parent", b.parent}, {"tokens", b.tokens}});
  }
  nlohmann::json outputs = nlohmann::json::array();
  for (const auto& o : d.outputs) outputs.push_back(output_to_json(o));
  const nlohmann::json j = {
      {"fingerprint", to_json(d.fingerprint)},
      {"prefix",
       {{"block_size", p.block_size}, {"block_bytes", p.block_bytes}, {"blocks", blocks}}},
      {"outputs", outputs}};
  // Strict UTF-8: a prompt with invalid bytes fails here, not at serve time.
  std::string text;
  try {
    text = j.dump();
  } catch (const std::exception& e) {
    return make_error(fmt::format("warm.bin: cannot serialize the warm data: {}", e.what()));
  }
  const uint64_t data_offset =
      (kFixedHeader + text.size() + kDataAlign - 1) / kDataAlign * kDataAlign;
  std::vector<uint8_t> head;
  head.insert(head.end(), kMagic, kMagic + 8);
  put(head, kWarmFormatVersion);
  put(head, uint32_t(0));
  put(head, uint64_t(text.size()));
  put(head, data_offset);
  head.insert(head.end(), text.begin(), text.end());
  head.resize(size_t(data_offset), 0);

  std::FILE* f = std::fopen(path.c_str(), "wb");
  if (!f) return make_error(fmt::format("cannot create '{}': {}", path, std::strerror(errno)));
  bool ok = std::fwrite(head.data(), 1, head.size(), f) == head.size();
  for (const auto& b : p.blocks)
    ok = ok && std::fwrite(b.kv.data(), 1, b.kv.size(), f) == b.kv.size();
  ok = ok && std::fflush(f) == 0;
  std::fclose(f);
  if (!ok) return make_error(fmt::format("writing '{}' failed (disk full?)", path));
  auto in = append_integrity_trailer(path, data_offset, pool);
  if (!in) return in.error();
  return Status::success();
}

WarmFile::~WarmFile() = default;

Result<std::unique_ptr<WarmFile>> WarmFile::open(const std::string& path, ThreadPool& pool) {
  auto map = gguf::MappedFile::open(path);
  if (!map) return map.error();
  const auto bytes = (*map)->bytes();
  auto integrity = read_integrity_trailer(bytes, path);
  if (!integrity) return integrity.error();
  KILN_TRY(verify_integrity(bytes, *integrity, pool, path));
  // Checksums hold, so what follows was written by kiln; the checks below
  // guard against a newer format, not against damage.
  if (integrity->header_bytes < kFixedHeader || std::memcmp(bytes.data(), kMagic, 8) != 0)
    return make_error(fmt::format("{} is not a kiln warm.bin (bad magic)", path));
  uint32_t version;
  uint64_t json_bytes, data_offset;
  std::memcpy(&version, bytes.data() + 8, 4);
  std::memcpy(&json_bytes, bytes.data() + 16, 8);
  std::memcpy(&data_offset, bytes.data() + 24, 8);
  if (version > kWarmFormatVersion)
    return make_error(
        fmt::format("{} is warm format {}, newer than this kiln reads ({}); "
                    "upgrade kiln or rebake",
                    path, version, kWarmFormatVersion));
  if (data_offset != integrity->header_bytes || kFixedHeader + json_bytes > data_offset)
    return make_error(fmt::format("{}: inconsistent header sizes; rebake it", path));

  std::unique_ptr<WarmFile> w(new WarmFile());
  try {
    const auto j = nlohmann::json::parse(bytes.data() + kFixedHeader,
                                         bytes.data() + kFixedHeader + json_bytes);
    auto fp = fingerprint_from_json(j.at("fingerprint"));
    if (!fp) return fp.error();
    w->data_.fingerprint = std::move(*fp);
    const auto& p = j.at("prefix");
    engine::PrefixBlocks& pb = w->data_.prefixes;
    pb.block_size = p.at("block_size").get<int32_t>();
    pb.block_bytes = p.at("block_bytes").get<uint64_t>();
    const auto& blocks = p.at("blocks");
    if (pb.block_bytes == 0 && !blocks.empty())
      return make_error(fmt::format("{}: prefix blocks of 0 bytes; rebake it", path));
    if (blocks.size() * pb.block_bytes != integrity->body_bytes)
      return make_error(
          fmt::format("{}: {} prefix blocks of {} bytes but {} bytes of KV data; "
                      "rebake it",
                      path, blocks.size(), pb.block_bytes, integrity->body_bytes));
    for (size_t i = 0; i < blocks.size(); ++i) {
      engine::PrefixBlock b;
      b.parent = blocks[i].at("parent").get<int32_t>();
      b.tokens = blocks[i].at("tokens").get<std::vector<int32_t>>();
      b.kv = bytes.subspan(size_t(data_offset + i * pb.block_bytes), size_t(pb.block_bytes));
      pb.blocks.push_back(std::move(b));
    }
    for (const auto& o : j.at("outputs")) w->data_.outputs.push_back(output_from_json(o));
  } catch (const std::exception& e) {
    return make_error(fmt::format("{}: cannot read its contents ({}); rebake it", path, e.what()));
  }
  w->map_ = std::move(*map);
  return w;
}

}  // namespace kiln::artifact
