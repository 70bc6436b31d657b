// Digests through OpenSSL's EVP interface (MD5, SHA-256) and kiln's own
// CRC32C; base64/hex helpers for the forms servers and users give them in.
#include "kiln/fetch/digest.h"

#include <openssl/evp.h>

#include "kiln/core/assert.h"
#include "kiln/fetch/crc32c.h"

namespace kiln::fetch {

struct Digester::Impl {
  ExpectedChecksums want;
  uint32_t crc = 0;
  EVP_MD_CTX* md5 = nullptr;
  EVP_MD_CTX* sha = nullptr;
};

namespace {
EVP_MD_CTX* new_ctx(const EVP_MD* md) {
  EVP_MD_CTX* c = EVP_MD_CTX_new();
  KILN_ASSERT(c && EVP_DigestInit_ex(c, md, nullptr) == 1);
  return c;
}
std::string finish(EVP_MD_CTX* c) {
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  KILN_ASSERT(EVP_DigestFinal_ex(c, out, &n) == 1);
  return std::string(reinterpret_cast<char*>(out), n);
}
}  // namespace

Digester::Digester(const ExpectedChecksums& want) : impl_(std::make_unique<Impl>()) {
  impl_->want = want;
  if (!want.md5.empty()) impl_->md5 = new_ctx(EVP_md5());
  if (!want.sha256.empty()) impl_->sha = new_ctx(EVP_sha256());
}

Digester::~Digester() {
  if (impl_->md5) EVP_MD_CTX_free(impl_->md5);
  if (impl_->sha) EVP_MD_CTX_free(impl_->sha);
}

void Digester::update(const void* data, size_t n) {
  if (impl_->want.crc32c) impl_->crc = crc32c_update(impl_->crc, data, n);
  if (impl_->md5) KILN_ASSERT(EVP_DigestUpdate(impl_->md5, data, n) == 1);
  if (impl_->sha) KILN_ASSERT(EVP_DigestUpdate(impl_->sha, data, n) == 1);
}

Status Digester::verify() {
  const auto& w = impl_->want;
  if (w.crc32c && impl_->crc != *w.crc32c)
    return make_error("crc32c mismatch: the server's metadata says " + crc32c_to_base64(*w.crc32c) +
                      ", the downloaded bytes give " + crc32c_to_base64(impl_->crc));
  if (impl_->md5) {
    const std::string got = finish(impl_->md5);
    if (got != w.md5)
      return make_error("md5 mismatch: expected " + to_hex(w.md5) + ", the downloaded bytes give " +
                        to_hex(got));
  }
  if (impl_->sha) {
    const std::string got = finish(impl_->sha);
    if (got != w.sha256)
      return make_error("sha256 mismatch: expected " + to_hex(w.sha256) +
                        ", the downloaded bytes give " + to_hex(got));
  }
  return Status::success();
}

std::string Digester::names() const {
  std::string s;
  auto add = [&](const char* n) {
    if (!s.empty()) s += '+';
    s += n;
  };
  if (impl_->want.crc32c) add("crc32c");
  if (impl_->md5) add("md5");
  if (impl_->sha) add("sha256");
  return s;
}

std::string to_hex(const std::string& bytes) {
  static const char* d = "0123456789abcdef";
  std::string s;
  for (unsigned char c : bytes) {
    s.push_back(d[c >> 4]);
    s.push_back(d[c & 15]);
  }
  return s;
}

std::optional<std::string> from_hex(const std::string& hex) {
  if (hex.size() % 2) return std::nullopt;
  auto nib = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  std::string out;
  for (size_t i = 0; i < hex.size(); i += 2) {
    const int hi = nib(hex[i]), lo = nib(hex[i + 1]);
    if (hi < 0 || lo < 0) return std::nullopt;
    out.push_back(char(hi << 4 | lo));
  }
  return out;
}

Result<uint32_t> crc32c_from_base64(const std::string& b64) {
  auto raw = base64_decode(b64);
  if (!raw || raw->size() != 4)
    return make_error("crc32c '" + b64 + "' is not 4 bytes of base64 as GCS sends it");
  const auto& r = *raw;
  return uint32_t(uint8_t(r[0])) << 24 | uint32_t(uint8_t(r[1])) << 16 |
         uint32_t(uint8_t(r[2])) << 8 | uint32_t(uint8_t(r[3]));
}

std::string crc32c_to_base64(uint32_t crc) {
  std::string b{char(crc >> 24), char(crc >> 16), char(crc >> 8), char(crc)};
  return base64_encode(b);
}

}  // namespace kiln::fetch
