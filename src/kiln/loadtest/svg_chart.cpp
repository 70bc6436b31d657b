// SVG rendering of the sweep chart (see svg_chart.h): plain SVG 1.1 text,
// no scripts or external resources, so it opens anywhere.
#include "kiln/loadtest/svg_chart.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <optional>

namespace kiln::loadtest {
namespace {

std::string xml_escape(const std::string& s) {
  std::string o;
  for (char c : s) {
    switch (c) {
      case '<':
        o += "&lt;";
        break;
      case '>':
        o += "&gt;";
        break;
      case '&':
        o += "&amp;";
        break;
      case '"':
        o += "&quot;";
        break;
      default:
        o += c;
    }
  }
  return o;
}

// A round tick step giving about `n` ticks over [0, hi].
double tick_step(double hi, int n) {
  const double raw = hi / n;
  const double mag = std::pow(10.0, std::floor(std::log10(raw)));
  for (double m : {1.0, 2.0, 2.5, 5.0, 10.0})
    if (raw <= m * mag) return m * mag;
  return 10 * mag;
}

std::string fmt_num(double v) {
  if (v >= 1000) return fmt::format("{:.0f}", v);
  if (v >= 10) return fmt::format("{:.0f}", v);
  if (v >= 1) return fmt::format("{:.1f}", v);
  return fmt::format("{:.2g}", v);
}

struct Panel {
  double x0, y0, w, h;  // plot area in pixels
  double xmax, ymax;    // data ranges (from 0)
  double px(double x) const { return x0 + w * x / xmax; }
  double py(double y) const { return y0 + h - h * std::min(y, ymax) / ymax; }
};

void axes(std::string& s, const Panel& p, const std::string& xlabel, const std::string& ylabel) {
  s += fmt::format(R"(<rect x="{}" y="{}" width="{}" height="{}" fill="none" stroke="#444"/>)"
                   "\n",
                   p.x0, p.y0, p.w, p.h);
  const double xs = tick_step(p.xmax, 5), ys = tick_step(p.ymax, 5);
  for (double x = 0; x <= p.xmax * 1.0001; x += xs)
    s += fmt::format(
        R"(<line x1="{0:.1f}" y1="{1}" x2="{0:.1f}" y2="{2}" stroke="#ddd"/><text x="{0:.1f}" y="{3}" text-anchor="middle" font-size="11">{4}</text>)"
        "\n",
        p.px(x), p.y0, p.y0 + p.h, p.y0 + p.h + 14, fmt_num(x));
  for (double y = 0; y <= p.ymax * 1.0001; y += ys)
    s += fmt::format(
        R"(<line x1="{0}" y1="{1:.1f}" x2="{2}" y2="{1:.1f}" stroke="#ddd"/><text x="{3}" y="{4:.1f}" text-anchor="end" font-size="11">{5}</text>)"
        "\n",
        p.x0, p.py(y), p.x0 + p.w, p.x0 - 4, p.py(y) + 4, fmt_num(y));
  s += fmt::format(R"(<text x="{}" y="{}" text-anchor="middle" font-size="12">{}</text>)"
                   "\n",
                   p.x0 + p.w / 2, p.y0 + p.h + 32, xml_escape(xlabel));
  s += fmt::format(
      R"svg(<text x="{0}" y="{1}" text-anchor="middle" font-size="12" transform="rotate(-90 {0} {1})">{2}</text>)svg"
      "\n",
      p.x0 - 44, p.y0 + p.h / 2, xml_escape(ylabel));
}

void series(std::string& s, const Panel& p, std::span<const LevelSummary> levels,
            const std::function<double(const LevelSummary&)>& y, const char* color, bool labels) {
  std::string pts;
  for (const auto& l : levels)
    pts += fmt::format("{:.1f},{:.1f} ", p.px(l.output_tok_s), p.py(y(l)));
  s += fmt::format(R"(<polyline points="{}" fill="none" stroke="{}" stroke-width="2"/>)"
                   "\n",
                   pts, color);
  for (const auto& l : levels) {
    s += fmt::format(R"(<circle cx="{:.1f}" cy="{:.1f}" r="3.5" fill="{}"/>)"
                     "\n",
                     p.px(l.output_tok_s), p.py(y(l)), color);
    if (labels)
      s += fmt::format(R"(<text x="{:.1f}" y="{:.1f}" font-size="10" fill="#333">c={}</text>)"
                       "\n",
                       p.px(l.output_tok_s) + 5, p.py(y(l)) - 5, l.concurrency);
  }
}

void panel(std::string& s, const Panel& p, std::span<const LevelSummary> levels,
           const std::function<double(const LevelSummary&)>& p50,
           const std::function<double(const LevelSummary&)>& p99, std::optional<double> slo,
           int32_t recommended, const std::string& ylabel) {
  axes(s, p, "output throughput (tokens/s)", ylabel);
  if (slo) {
    s += fmt::format(
        R"(<line x1="{0}" y1="{1:.1f}" x2="{2}" y2="{1:.1f}" stroke="#c00" stroke-dasharray="6,4"/><text x="{3}" y="{4:.1f}" text-anchor="end" font-size="10" fill="#c00">SLO p99 {5} ms</text>)"
        "\n",
        p.x0, p.py(*slo), p.x0 + p.w, p.x0 + p.w - 4, p.py(*slo) - 4, fmt_num(*slo));
  }
  series(s, p, levels, p50, "#1f77b4", false);
  series(s, p, levels, p99, "#ff7f0e", true);
  for (const auto& l : levels)
    if (l.concurrency == recommended)
      s += fmt::format(
          R"(<circle cx="{:.1f}" cy="{:.1f}" r="9" fill="none" stroke="#2ca02c" stroke-width="2.5"/>)"
          "\n",
          p.px(l.output_tok_s), p.py(p99(l)));
}

}  // namespace

std::string sweep_chart_svg(std::span<const LevelSummary> levels, const Slo& slo,
                            int32_t recommended, const std::string& title,
                            const std::string& subtitle) {
  const double W = 1000, H = 470;
  double xmax = 1, ttft_max = 1, tpot_max = 0.1;
  for (const auto& l : levels) {
    xmax = std::max(xmax, l.output_tok_s);
    ttft_max = std::max(ttft_max, l.ttft_ms.p99);
    tpot_max = std::max(tpot_max, l.tpot_ms.p99);
  }
  if (slo.ttft_p99_ms) ttft_max = std::max(ttft_max, *slo.ttft_p99_ms);
  if (slo.tpot_p99_ms) tpot_max = std::max(tpot_max, *slo.tpot_p99_ms);
  const Panel left{70, 50, 380, 340, xmax * 1.1, ttft_max * 1.15};
  const Panel right{570, 50, 380, 340, xmax * 1.1, tpot_max * 1.15};
  std::string s = fmt::format(
      R"(<?xml version="1.0" encoding="UTF-8"?>
<svg xmlns="http://www.w3.org/2000/svg" width="{0}" height="{1}" viewBox="0 0 {0} {1}" font-family="sans-serif">
<rect width="100%" height="100%" fill="white"/>
<text x="{2}" y="20" text-anchor="middle" font-size="15">{3}</text>
<text x="{2}" y="38" text-anchor="middle" font-size="11" fill="#555">{4}</text>
)",
      W, H, W / 2, xml_escape(title), xml_escape(subtitle));
  panel(
      s, left, levels, [](const LevelSummary& l) { return l.ttft_ms.p50; },
      [](const LevelSummary& l) { return l.ttft_ms.p99; }, slo.ttft_p99_ms, recommended,
      "time to first token (ms)");
  panel(
      s, right, levels, [](const LevelSummary& l) { return l.tpot_ms.p50; },
      [](const LevelSummary& l) { return l.tpot_ms.p99; }, slo.tpot_p99_ms, recommended,
      "time per output token (ms)");
  // Legend.
  const double ly = H - 22;
  s += fmt::format(
      R"(<line x1="70" y1="{0}" x2="95" y2="{0}" stroke="#1f77b4" stroke-width="2"/><text x="100" y="{1}" font-size="11">p50</text>
<line x1="140" y1="{0}" x2="165" y2="{0}" stroke="#ff7f0e" stroke-width="2"/><text x="170" y="{1}" font-size="11">p99 (labels: concurrency)</text>
<line x1="340" y1="{0}" x2="365" y2="{0}" stroke="#c00" stroke-dasharray="6,4"/><text x="370" y="{1}" font-size="11">SLO</text>
<circle cx="425" cy="{0}" r="7" fill="none" stroke="#2ca02c" stroke-width="2.5"/><text x="438" y="{1}" font-size="11">recommended concurrency {2}</text>
)",
      ly, ly + 4, recommended);
  s += "</svg>\n";
  return s;
}

}  // namespace kiln::loadtest
