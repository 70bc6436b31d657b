// Block geometry of every GGUF tensor type (sizes as in GGUF files in the wild).
#include "kiln/core/dtype.h"

#include <array>
#include <cctype>
#include <string>

#include "kiln/core/assert.h"

namespace kiln {
namespace {

constexpr uint32_t QK_K = 256;

struct Entry {
  uint32_t id;
  DTypeInfo info;
};

// Sizes: q4_0 = f16 d + 16 B nibbles; q4_1 adds f16 m; q5_0 = d + 4 B high bits
// + 16 B; q5_1 adds m; q8_0 = d + 32 B; q8_1 = d + s + 32 B; k-quants per 256.
constexpr std::array kTable = {
    Entry{0, {"f32", 1, 4, true}},
    Entry{1, {"f16", 1, 2, true}},
    Entry{2, {"q4_0", 32, 18, true}},
    Entry{3, {"q4_1", 32, 20, true}},
    Entry{6, {"q5_0", 32, 22, true}},
    Entry{7, {"q5_1", 32, 24, true}},
    Entry{8, {"q8_0", 32, 34, true}},
    Entry{9, {"q8_1", 32, 36, false}},
    Entry{10, {"q2_k", QK_K, 84, false}},
    Entry{11, {"q3_k", QK_K, 110, false}},
    Entry{12, {"q4_k", QK_K, 144, true}},
    Entry{13, {"q5_k", QK_K, 176, true}},
    Entry{14, {"q6_k", QK_K, 210, true}},
    Entry{15, {"q8_k", QK_K, 292, false}},
    Entry{16, {"iq2_xxs", QK_K, 66, false}},
    Entry{17, {"iq2_xs", QK_K, 74, false}},
    Entry{18, {"iq3_xxs", QK_K, 98, false}},
    Entry{19, {"iq1_s", QK_K, 50, false}},
    Entry{20, {"iq4_nl", 32, 18, false}},
    Entry{21, {"iq3_s", QK_K, 110, false}},
    Entry{22, {"iq2_s", QK_K, 82, false}},
    Entry{23, {"iq4_xs", QK_K, 136, false}},
    Entry{24, {"i8", 1, 1, false}},
    Entry{25, {"i16", 1, 2, false}},
    Entry{26, {"i32", 1, 4, false}},
    Entry{27, {"i64", 1, 8, false}},
    Entry{28, {"f64", 1, 8, false}},
    Entry{29, {"iq1_m", QK_K, 56, false}},
    Entry{30, {"bf16", 1, 2, true}},
    Entry{34, {"tq1_0", QK_K, 54, false}},
    Entry{35, {"tq2_0", QK_K, 66, false}},
};

}  // namespace

std::optional<DTypeInfo> dtype_info(uint32_t id) {
  for (const auto& e : kTable)
    if (e.id == id) return e.info;
  return std::nullopt;
}

const DTypeInfo& dtype_info(DType t) {
  for (const auto& e : kTable)
    if (e.id == uint32_t(t)) return e.info;
  KILN_ASSERT_MSG(false, "unknown DType");
  return kTable[0].info;
}

std::optional<DType> dtype_from_name(std::string_view name) {
  std::string lower(name);
  for (auto& c : lower) c = char(std::tolower(static_cast<unsigned char>(c)));
  for (const auto& e : kTable)
    if (e.info.name == lower) return DType(e.id);
  return std::nullopt;
}

}  // namespace kiln
