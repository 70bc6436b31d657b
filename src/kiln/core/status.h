// Result<T> / Status: how expected failures (bad files, bad requests, bad
// flags) travel. Broken invariants use KILN_ASSERT instead (core/assert.h).
// g++ 12 has no std::expected, so this is a small variant-based stand-in.
#pragma once

#include <string>
#include <utility>
#include <variant>

namespace kiln {

// An expected failure: the message says what is wrong and what to do.
struct Error {
  std::string message;
};

inline Error make_error(std::string msg) { return Error{std::move(msg)}; }

template <class T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::in_place_index<0>, std::move(value)) {}
  Result(Error err) : v_(std::in_place_index<1>, std::move(err)) {}

  bool ok() const { return v_.index() == 0; }
  explicit operator bool() const { return ok(); }

  T& value() & { return std::get<0>(v_); }
  const T& value() const& { return std::get<0>(v_); }
  T&& value() && { return std::get<0>(std::move(v_)); }
  T* operator->() { return &std::get<0>(v_); }
  const T* operator->() const { return &std::get<0>(v_); }
  T& operator*() & { return std::get<0>(v_); }
  const T& operator*() const& { return std::get<0>(v_); }

  const Error& error() const { return std::get<1>(v_); }
  const std::string& message() const { return std::get<1>(v_).message; }

 private:
  std::variant<T, Error> v_;
};

// Success or an Error, no value.
class [[nodiscard]] Status {
 public:
  Status() = default;
  Status(Error err) : failed_(true), err_(std::move(err)) {}
  static Status success() { return Status(); }

  bool ok() const { return !failed_; }
  explicit operator bool() const { return ok(); }
  const Error& error() const { return err_; }
  const std::string& message() const { return err_.message; }

 private:
  bool failed_ = false;
  Error err_;
};

}  // namespace kiln

// Propagate a failed Status/Result from the enclosing function.
#define KILN_TRY(expr)                                  \
  do {                                                  \
    auto&& kiln_try_tmp_ = (expr);                      \
    if (!kiln_try_tmp_.ok()) return kiln_try_tmp_.error(); \
  } while (0)
