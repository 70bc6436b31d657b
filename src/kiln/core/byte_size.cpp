#include "kiln/core/byte_size.h"

#include <cctype>
#include <stdexcept>
#include <string_view>

namespace kiln {

std::optional<uint64_t> parse_byte_size(const std::string& s) {
  size_t used = 0;
  double v = 0;
  try {
    v = std::stod(s, &used);
  } catch (const std::exception&) {
    return std::nullopt;
  }
  std::string unit;
  for (char c : s.substr(used)) unit.push_back(char(std::toupper(static_cast<unsigned char>(c))));
  if (unit.size() > 1 && unit.back() == 'B') unit.pop_back();
  if (unit.size() > 1 && unit.back() == 'I') unit.pop_back();
  constexpr std::string_view kUnits = "BKMGT";  // powers of 1024
  const size_t k = unit.empty() ? 0 : kUnits.find(unit);
  if (!(v > 0) || unit.size() > 1 || k == std::string_view::npos) return std::nullopt;
  return uint64_t(v * double(uint64_t(1) << (10 * k)));
}

}  // namespace kiln
