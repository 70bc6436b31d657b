// Checksums a download is verified against (CRC32C, MD5, SHA-256) and the
// running digests that compute them as the file's bytes go by in order.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "kiln/core/base64.h"  // base64_encode / base64_decode
#include "kiln/core/status.h"

namespace kiln::fetch {

// What the file is expected to hash to; a field left empty is not checked.
// Digests are raw bytes (16 for MD5, 32 for SHA-256).
struct ExpectedChecksums {
  std::optional<uint32_t> crc32c;
  std::string md5;
  std::string sha256;
  bool any() const { return crc32c || !md5.empty() || !sha256.empty(); }
};

// Feeds bytes to the digests that `want` names, then compares.
class Digester {
 public:
  explicit Digester(const ExpectedChecksums& want);
  ~Digester();
  Digester(const Digester&) = delete;
  Digester& operator=(const Digester&) = delete;

  void update(const void* data, size_t n);
  // Ok when every expected digest matches; otherwise names the one that
  // differs, with both values, so the log shows what the server promised.
  Status verify();
  // "crc32c", "md5", "sha256" joined by '+': what verify() checked.
  std::string names() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Base64 (RFC 4648, with padding) as GCS sends `crc32c` and `md5Hash`.
std::string to_hex(const std::string& bytes);
// Hex digits (either case) to bytes; empty optional when malformed.
std::optional<std::string> from_hex(const std::string& hex);

// GCS's crc32c field is the big-endian CRC in base64.
Result<uint32_t> crc32c_from_base64(const std::string& b64);
std::string crc32c_to_base64(uint32_t crc);

}  // namespace kiln::fetch
