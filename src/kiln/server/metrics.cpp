// Prometheus text rendering of the metrics registry.
#include "kiln/server/metrics.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>

#include "kiln/core/assert.h"

namespace kiln::server {
namespace {

void atomic_add(std::atomic<double>& a, double v) {
  double cur = a.load(std::memory_order_relaxed);
  while (!a.compare_exchange_weak(cur, cur + v, std::memory_order_relaxed)) {
  }
}

std::string escape_help(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == '\\')
      out += "\\\\";
    else if (c == '\n')
      out += "\\n";
    else
      out += c;
  }
  return out;
}

std::string braces(const std::string& labels) {
  return labels.empty() ? "" : "{" + labels + "}";
}

}  // namespace

void Counter::inc(double v) {
  atomic_add(v_, v);
}
void Gauge::add(double v) {
  atomic_add(v_, v);
}

Histogram::Histogram(std::vector<double> upper_bounds)
    : bounds_(std::move(upper_bounds)), counts_(new std::atomic<uint64_t>[bounds_.size() + 1]) {
  KILN_ASSERT(std::is_sorted(bounds_.begin(), bounds_.end()));
  for (size_t i = 0; i <= bounds_.size(); ++i) counts_[i].store(0);
}

void Histogram::observe(double v) {
  const size_t i = size_t(std::lower_bound(bounds_.begin(), bounds_.end(), v) - bounds_.begin());
  counts_[i].fetch_add(1, std::memory_order_relaxed);
  atomic_add(sum_, v);
  count_.fetch_add(1, std::memory_order_relaxed);
}

Histogram::Snapshot Histogram::snapshot() const {
  Snapshot s;
  uint64_t acc = 0;
  for (size_t i = 0; i <= bounds_.size(); ++i) {
    acc += counts_[i].load(std::memory_order_relaxed);
    s.cumulative.push_back(acc);
  }
  s.sum = sum_.load(std::memory_order_relaxed);
  // The +Inf bucket and _count must agree even when observe() races a scrape.
  s.count = acc;
  return s;
}

std::string format_metric_value(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  if (v == std::floor(v) && std::fabs(v) < 1e15) return fmt::format("{}", int64_t(v));
  return fmt::format("{}", v);
}

MetricsRegistry::Family& MetricsRegistry::family(const std::string& name, const std::string& help,
                                                 const std::string& type) {
  auto it = index_.find(name);
  if (it != index_.end()) {
    KILN_ASSERT_MSG(families_[it->second].type == type, name.c_str());
    return families_[it->second];
  }
  index_[name] = families_.size();
  families_.push_back(Family{name, help, type, {}});
  return families_.back();
}

MetricsRegistry::Series* MetricsRegistry::find(Family& f, const std::string& labels) {
  for (auto& s : f.series)
    if (s.labels == labels) return &s;
  return nullptr;
}

Counter& MetricsRegistry::counter(const std::string& name, const std::string& help,
                                  const std::string& labels) {
  std::lock_guard<std::mutex> lock(mu_);
  Family& f = family(name, help, "counter");
  if (Series* s = find(f, labels)) {
    KILN_ASSERT(s->counter);
    return *s->counter;
  }
  counters_.emplace_back();
  f.series.push_back(Series{labels, &counters_.back(), nullptr, nullptr, {}});
  return counters_.back();
}

Gauge& MetricsRegistry::gauge(const std::string& name, const std::string& help,
                              const std::string& labels) {
  std::lock_guard<std::mutex> lock(mu_);
  Family& f = family(name, help, "gauge");
  if (Series* s = find(f, labels)) {
    KILN_ASSERT(s->gauge);
    return *s->gauge;
  }
  gauges_.emplace_back();
  f.series.push_back(Series{labels, nullptr, &gauges_.back(), nullptr, {}});
  return gauges_.back();
}

Histogram& MetricsRegistry::histogram(const std::string& name, const std::string& help,
                                      std::vector<double> upper_bounds) {
  std::lock_guard<std::mutex> lock(mu_);
  Family& f = family(name, help, "histogram");
  if (Series* s = find(f, "")) return *s->histogram;
  histograms_.emplace_back(std::move(upper_bounds));
  f.series.push_back(Series{"", nullptr, nullptr, &histograms_.back(), {}});
  return histograms_.back();
}

void MetricsRegistry::callback(const std::string& name, const std::string& help,
                               const std::string& type, std::function<double()> fn,
                               const std::string& labels) {
  std::lock_guard<std::mutex> lock(mu_);
  Family& f = family(name, help, type);
  if (Series* s = find(f, labels)) {
    s->fn = std::move(fn);
    return;
  }
  f.series.push_back(Series{labels, nullptr, nullptr, nullptr, std::move(fn)});
}

std::string MetricsRegistry::render() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::string out;
  for (const auto& f : families_) {
    out += fmt::format("# HELP {} {}\n# TYPE {} {}\n", f.name, escape_help(f.help), f.name, f.type);
    for (const auto& s : f.series) {
      if (s.histogram) {
        const auto snap = s.histogram->snapshot();
        const auto& b = s.histogram->bounds();
        const std::string sep = s.labels.empty() ? "" : s.labels + ",";
        for (size_t i = 0; i < b.size(); ++i)
          out += fmt::format("{}_bucket{{{}le=\"{}\"}} {}\n", f.name, sep,
                             format_metric_value(b[i]), snap.cumulative[i]);
        out += fmt::format("{}_bucket{{{}le=\"+Inf\"}} {}\n", f.name, sep, snap.cumulative.back());
        out +=
            fmt::format("{}_sum{} {}\n", f.name, braces(s.labels), format_metric_value(snap.sum));
        out += fmt::format("{}_count{} {}\n", f.name, braces(s.labels), snap.count);
        continue;
      }
      const double v = s.counter ? s.counter->value() : s.gauge ? s.gauge->value() : s.fn();
      out += fmt::format("{}{} {}\n", f.name, braces(s.labels), format_metric_value(v));
    }
  }
  return out;
}

}  // namespace kiln::server
