// The template API (template.h): parse/render with every internal failure
// turned into a kiln::Result error, plus the transformers-style chat context
// and the clock behind strftime_now.
#include "kiln/template/template.h"

#include <clocale>
#include <ctime>
#include <locale.h>

#include "kiln/template/interp.h"
#include "kiln/template/parser.h"
#include "kiln/template/pystr.h"

namespace kiln::jinja {

Result<Template> Template::parse(std::string_view source) {
  if (!pystr::valid_utf8(source))
    return make_error("chat template is not valid UTF-8; re-save it as UTF-8");
  try {
    Template t;
    t.program_ = std::make_shared<const Program>(parse_program(source));
    return t;
  } catch (const SyntaxError& e) {
    return make_error("chat template syntax error at line " + std::to_string(e.line) + ", column " +
                      std::to_string(e.col) + ": " + e.message);
  } catch (const std::bad_alloc&) {
    return make_error("chat template too large to parse (out of memory)");
  } catch (const std::exception& e) {
    return make_error(std::string("chat template could not be parsed: ") + e.what());
  }
}

Result<std::string> Template::render(const nlohmann::ordered_json& context,
                                     const RenderOptions& options, RenderStats* stats) const {
  if (!program_) return make_error("render called on a template that was not parsed");
  if (!context.is_object())
    return make_error("chat template context must be a JSON object of variables");
  RenderStats local;
  RenderStats& st = stats ? *stats : local;
  st = {};
  Interp in(options, st);
  try {
    return in.run(*program_, from_json(context));
  } catch (const RenderError& e) {
    if (e.raised) return make_error("chat template raised an exception: " + e.message);
    return make_error("chat template error at line " + std::to_string(in.line()) + ": " + e.message);
  } catch (const std::bad_alloc&) {
    return make_error("chat template rendering ran out of memory");
  } catch (const std::exception& e) {
    return make_error(std::string("chat template error: ") + e.what());
  }
}

nlohmann::ordered_json chat_context(const nlohmann::ordered_json& messages,
                                    const nlohmann::ordered_json& tools,
                                    bool add_generation_prompt,
                                    const std::optional<std::string>& bos_token,
                                    const std::optional<std::string>& eos_token,
                                    const nlohmann::ordered_json& extra) {
  nlohmann::ordered_json ctx = nlohmann::ordered_json::object();
  ctx["messages"] = messages;
  ctx["tools"] = tools;
  ctx["documents"] = nullptr;
  ctx["add_generation_prompt"] = add_generation_prompt;
  if (bos_token) ctx["bos_token"] = *bos_token;
  if (eos_token) ctx["eos_token"] = *eos_token;
  if (extra.is_object())
    for (auto it = extra.begin(); it != extra.end(); ++it) ctx[it.key()] = it.value();
  return ctx;
}

// ---------------------------------------------------------------- time
static int days_in_month(int y, int m) {
  static const int kDays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  const bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
  return m == 2 && leap ? 29 : kDays[m - 1];
}

Result<DateTime> parse_iso_datetime(std::string_view s) {
  DateTime t;
  auto num = [&](size_t pos, size_t n, int& out) {
    if (pos + n > s.size()) return false;
    int v = 0;
    for (size_t k = pos; k < pos + n; ++k) {
      if (s[k] < '0' || s[k] > '9') return false;
      v = v * 10 + (s[k] - '0');
    }
    out = v;
    return true;
  };
  auto bad = [&] {
    return make_error("invalid date/time '" + std::string(s) +
                      "': expected YYYY-MM-DD or YYYY-MM-DDTHH:MM[:SS[.ffffff]] (local time, no zone)");
  };
  if (!num(0, 4, t.year) || s.size() < 10 || s[4] != '-' || !num(5, 2, t.month) || s[7] != '-' ||
      !num(8, 2, t.day))
    return bad();
  size_t p = 10;
  if (p < s.size()) {
    if ((s[p] != 'T' && s[p] != ' ') || !num(p + 1, 2, t.hour) || p + 3 >= s.size() ||
        s[p + 3] != ':' || !num(p + 4, 2, t.minute))
      return bad();
    p += 6;
    if (p < s.size()) {
      if (s[p] != ':' || !num(p + 1, 2, t.second)) return bad();
      p += 3;
      if (p < s.size()) {
        if (s[p] != '.' || p + 1 >= s.size() || s.size() - p - 1 > 6) return bad();
        int frac = 0;
        if (!num(p + 1, s.size() - p - 1, frac)) return bad();
        for (size_t k = s.size() - p - 1; k < 6; ++k) frac *= 10;
        t.microsecond = frac;
      }
    }
  }
  if (t.year < 1 || t.month < 1 || t.month > 12 || t.day < 1 ||
      t.day > days_in_month(t.year, t.month) || t.hour > 23 || t.minute > 59 || t.second > 59)
    return bad();
  return t;
}

DateTime local_now() {
  timespec ts{};
  clock_gettime(CLOCK_REALTIME, &ts);
  std::tm tm{};
  localtime_r(&ts.tv_sec, &tm);
  return DateTime{tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
                  tm.tm_min,         tm.tm_sec,      int(ts.tv_nsec / 1000)};
}

std::string format_datetime(const DateTime& t, std::string_view fmt) {
  // Python's datetime.strftime handles %f, %z and %Z itself (empty zone for a
  // naive time) and hands the rest to the C library.
  std::string f;
  for (size_t k = 0; k < fmt.size(); ++k) {
    if (fmt[k] == '%' && k + 1 < fmt.size()) {
      const char c = fmt[k + 1];
      if (c == 'f') {
        char buf[8];
        std::snprintf(buf, sizeof buf, "%06d", t.microsecond);
        f += buf;
        ++k;
        continue;
      }
      if (c == 'z' || c == 'Z') {
        ++k;
        continue;
      }
      f += fmt[k];
      f += fmt[++k];
      continue;
    }
    f += fmt[k];
  }
  std::tm tm{};
  tm.tm_year = t.year - 1900;
  tm.tm_mon = t.month - 1;
  tm.tm_mday = t.day;
  tm.tm_hour = t.hour;
  tm.tm_min = t.minute;
  tm.tm_sec = t.second;
  tm.tm_isdst = -1;
  // weekday and day of year for a proleptic Gregorian date.
  int yday = t.day - 1;
  for (int m = 1; m < t.month; ++m) yday += days_in_month(t.year, m);
  tm.tm_yday = yday;
  const int y = t.year - 1;
  const long days = 365L * y + y / 4 - y / 100 + y / 400 + yday;  // days since 0001-01-01 (a Monday)
  tm.tm_wday = int((days + 1) % 7);
  if (f.empty()) return "";
  const locale_t c_locale = newlocale(LC_ALL_MASK, "C", locale_t(0));
  std::string out(256 + f.size() * 8, '\0');
  const size_t n = strftime_l(out.data(), out.size(), f.c_str(), &tm, c_locale);
  freelocale(c_locale);
  out.resize(n);
  return out;
}

}  // namespace kiln::jinja
