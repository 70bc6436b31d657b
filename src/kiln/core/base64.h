// Base64 (RFC 4648 standard alphabet, '=' padding): embedding vectors in the
// OpenAI API, GCS object hashes, cache entries shared through Redis.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>

#include "kiln/core/status.h"

namespace kiln {

std::string base64_encode(std::span<const uint8_t> bytes);
inline std::string base64_encode(std::string_view bytes) {
  return base64_encode({reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()});
}

// Accepts padded or unpadded input; an invalid character, or anything but
// '=' after the first '=', is an error naming the input.
Result<std::string> base64_decode(std::string_view s);

}  // namespace kiln
