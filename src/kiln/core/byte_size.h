// Byte counts as users write them on the command line.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

namespace kiln {

// "1073741824", "512M", "64MiB", "4G", "4GB", "1.5T" -> bytes, binary units
// (K, M, G, T; an optional trailing "i" and/or "B" changes nothing). nullopt
// when malformed or not positive.
std::optional<uint64_t> parse_byte_size(const std::string& s);

}  // namespace kiln
