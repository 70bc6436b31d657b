// Entry serialization (snapshot lines, Redis values), hashing, helpers.
#include "kiln/cache/cache_entry.h"

#include <fmt/format.h>

#include <chrono>
#include <cmath>
#include <cstring>
#include <nlohmann/json.hpp>

#include "kiln/core/base64.h"

// Inline: no link dependency on libxxhash for one function.
#define XXH_INLINE_ALL
#include <xxhash.h>

namespace kiln::cache {

const char* kind_name(CacheKind k) {
  return k == CacheKind::exact ? "exact" : "semantic";
}

int64_t unix_ms_now() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string hash_hex(std::string_view data) {
  const XXH128_hash_t h = XXH3_128bits(data.data(), data.size());
  return fmt::format("{:016x}{:016x}", h.high64, h.low64);
}

void l2_normalize(std::vector<float>& v) {
  double n = 0;
  for (float x : v) n += double(x) * x;
  if (n <= 0) return;
  const double inv = 1.0 / std::sqrt(n);
  for (auto& x : v) x = float(x * inv);
}

std::string entry_to_json(const CacheEntry& e) {
  nlohmann::json j;
  j["kind"] = kind_name(e.kind);
  j["key"] = e.key;
  j["expires_ms"] = e.expires_ms;
  j["payload"] = e.payload;
  if (e.kind == CacheKind::semantic) {
    j["partition"] = e.partition;
    j["text"] = e.text;
    static_assert(sizeof(float) == 4);
    j["vec"] = base64_encode({reinterpret_cast<const uint8_t*>(e.vec.data()), e.vec.size() * 4});
  }
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

Result<CacheEntry> entry_from_json(std::string_view text) {
  auto j = nlohmann::json::parse(text, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return make_error("cache entry: not a JSON object");
  CacheEntry e;
  try {
    const std::string kind = j.at("kind").get<std::string>();
    if (kind == "exact")
      e.kind = CacheKind::exact;
    else if (kind == "semantic")
      e.kind = CacheKind::semantic;
    else
      return make_error("cache entry: unknown kind \"" + kind + "\"");
    e.key = j.at("key").get<std::string>();
    e.expires_ms = j.at("expires_ms").get<int64_t>();
    e.payload = j.at("payload").get<std::string>();
    if (e.kind == CacheKind::semantic) {
      e.partition = j.at("partition").get<std::string>();
      e.text = j.at("text").get<std::string>();
      const auto raw = base64_decode(j.at("vec").get<std::string>());
      if (!raw || raw->size() % 4 || raw->empty())
        return make_error("cache entry: 'vec' is not base64 of float32 values");
      e.vec.resize(raw->size() / 4);
      std::memcpy(e.vec.data(), raw->data(), raw->size());
    }
  } catch (const nlohmann::json::exception& ex) {
    return make_error(std::string("cache entry: ") + ex.what());
  }
  if (e.key.empty()) return make_error("cache entry: empty key");
  return e;
}

}  // namespace kiln::cache
