// Metadata value accessors and display, tensor element counts.
#include <limits>
#include <sstream>

#include "kiln/gguf/gguf.h"

namespace kiln::gguf {

std::string_view value_type_name(ValueType t) {
  static constexpr std::string_view names[] = {"u8",  "i8",   "u16",    "i16",   "u32",
                                               "i32", "f32",  "bool",   "string", "array",
                                               "u64", "i64",  "f64"};
  const auto i = uint32_t(t);
  return i < 13 ? names[i] : std::string_view("unknown");
}

std::optional<int64_t> Value::as_int() const {
  return std::visit(
      [](const auto& x) -> std::optional<int64_t> {
        using T = std::decay_t<decltype(x)>;
        if constexpr (std::is_same_v<T, bool> || std::is_same_v<T, std::string> ||
                      std::is_same_v<T, Array> || std::is_floating_point_v<T>) {
          return std::nullopt;
        } else if constexpr (std::is_same_v<T, uint64_t>) {
          if (x > uint64_t(std::numeric_limits<int64_t>::max())) return std::nullopt;
          return int64_t(x);
        } else {
          return int64_t(x);
        }
      },
      v);
}

std::optional<double> Value::as_float() const {
  if (auto f = std::get_if<float>(&v)) return double(*f);
  if (auto d = std::get_if<double>(&v)) return *d;
  if (auto i = as_int()) return double(*i);
  return std::nullopt;
}

std::optional<bool> Value::as_bool() const {
  if (auto b = std::get_if<bool>(&v)) return *b;
  return std::nullopt;
}

std::string Value::to_display(size_t max_items) const {
  std::ostringstream os;
  std::visit(
      [&](const auto& x) {
        using T = std::decay_t<decltype(x)>;
        if constexpr (std::is_same_v<T, std::string>) {
          std::string s = x.size() > 80 ? x.substr(0, 77) + "..." : x;
          for (auto& ch : s)
            if (ch == '\n') ch = ' ';
          os << '"' << s << '"';
        } else if constexpr (std::is_same_v<T, Array>) {
          os << "[" << value_type_name(x.elem_type) << " x " << x.items.size() << "]";
          if (!x.items.empty()) {
            os << " {";
            for (size_t i = 0; i < x.items.size() && i < max_items; ++i)
              os << (i ? ", " : "") << x.items[i].to_display(max_items);
            if (x.items.size() > max_items) os << ", ...";
            os << "}";
          }
        } else if constexpr (std::is_same_v<T, bool>) {
          os << (x ? "true" : "false");
        } else if constexpr (std::is_same_v<T, uint8_t> || std::is_same_v<T, int8_t>) {
          os << int(x);
        } else {
          os << x;
        }
      },
      v);
  return os.str();
}

int64_t TensorInfo::n_elements() const {
  int64_t n = 1;
  for (auto d : ne) n *= d;
  return n;
}

Value make_string_array(const std::vector<std::string>& items) {
  Array a;
  a.elem_type = ValueType::STRING;
  a.items.reserve(items.size());
  for (const auto& s : items) a.items.push_back(Value{s});
  return Value{std::move(a)};
}

Value make_f32_array(const std::vector<float>& items) {
  Array a;
  a.elem_type = ValueType::F32;
  for (float f : items) a.items.push_back(Value{f});
  return Value{std::move(a)};
}

Value make_i32_array(const std::vector<int32_t>& items) {
  Array a;
  a.elem_type = ValueType::I32;
  for (int32_t i : items) a.items.push_back(Value{i});
  return Value{std::move(a)};
}

}  // namespace kiln::gguf
