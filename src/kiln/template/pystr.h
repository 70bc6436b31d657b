// Python `str` semantics on UTF-8 bytes: code points, whitespace, case mapping
// and the str methods chat templates call (strip, split, replace, title, ...).
// Jinja templates run on Python strings, so lengths, indexes and slices count
// code points, not bytes; everything here keeps that promise.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace kiln::jinja::pystr {

// --- UTF-8 --------------------------------------------------------------
// Invalid bytes decode to U+FFFD (templates and JSON are validated earlier).
std::u32string decode(std::string_view s);
std::string encode(std::u32string_view s);
void append_utf8(std::string& out, char32_t c);
bool valid_utf8(std::string_view s);
bool is_ascii(std::string_view s);
size_t length(std::string_view s);  // code points

// --- character classes (Python's str.isX on one code point) --------------
bool is_space(char32_t c);
bool is_cased(char32_t c);
bool is_upper_char(char32_t c);
bool is_lower_char(char32_t c);
bool is_alpha(char32_t c);
bool is_digit(char32_t c);
bool is_decimal(char32_t c);
bool is_printable(char32_t c);

// --- case mapping (full mappings where they expand, e.g. 'ß' -> "SS") ----
std::string upper(std::string_view s);
std::string lower(std::string_view s);
std::string title(std::string_view s);       // str.title()
std::string capitalize(std::string_view s);  // str.capitalize()
std::string swapcase(std::string_view s);
std::string jinja_title(std::string_view s);  // the `title` filter (splits on -, space, brackets)

// --- str methods ----------------------------------------------------------
// `chars` empty optional = whitespace (Python's default).
std::string strip(std::string_view s, const std::optional<std::string>& chars, bool left,
                  bool right);
// maxsplit < 0: no limit. sep empty optional: split on whitespace runs.
std::vector<std::string> split(std::string_view s, const std::optional<std::string>& sep,
                               int64_t maxsplit);
std::vector<std::string> rsplit(std::string_view s, const std::optional<std::string>& sep,
                                int64_t maxsplit);
std::vector<std::string> splitlines(std::string_view s, bool keepends);
std::string replace(std::string_view s, std::string_view old, std::string_view repl,
                    int64_t count);
// Python str.find on code points: returns the code point index or -1.
int64_t find(std::string_view s, std::string_view sub, bool reverse);
int64_t count(std::string_view s, std::string_view sub);
std::string center(std::string_view s, int64_t width, char32_t fill);
std::string ljust(std::string_view s, int64_t width, char32_t fill);
std::string rjust(std::string_view s, int64_t width, char32_t fill);
std::string zfill(std::string_view s, int64_t width);

// Python slice s[start:stop:step] on code points (already-normalized indices are
// computed inside; nullopt = omitted).
std::string slice(std::string_view s, std::optional<int64_t> start, std::optional<int64_t> stop,
                  std::optional<int64_t> step);

// Normalizes a Python slice against a length (slice.indices); returns the
// element indices it selects. step must not be 0.
std::vector<int64_t> slice_indices(int64_t len, std::optional<int64_t> start,
                                   std::optional<int64_t> stop, std::optional<int64_t> step);

// repr() of a Python str: quotes and escapes as CPython does.
std::string repr(std::string_view s);

}  // namespace kiln::jinja::pystr
