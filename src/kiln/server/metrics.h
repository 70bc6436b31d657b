// A small Prometheus metrics registry (text exposition format 0.0.4):
// counters, gauges, histograms and gauges read through a callback at scrape
// time (engine stats). The server owns one registry; nothing is global.
// Updating a metric is lock-free; registering takes a lock.
#pragma once

#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace kiln::server {

class Counter {
 public:
  void inc(double v = 1.0);
  double value() const { return v_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> v_{0.0};
};

class Gauge {
 public:
  void set(double v) { v_.store(v, std::memory_order_relaxed); }
  void add(double v);
  double value() const { return v_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> v_{0.0};
};

class Histogram {
 public:
  explicit Histogram(std::vector<double> upper_bounds);  // increasing, +Inf implied
  void observe(double v);
  const std::vector<double>& bounds() const { return bounds_; }
  // Cumulative counts per bound (+Inf last), sum and count, read together.
  struct Snapshot {
    std::vector<uint64_t> cumulative;
    double sum = 0;
    uint64_t count = 0;
  };
  Snapshot snapshot() const;

 private:
  std::vector<double> bounds_;
  std::unique_ptr<std::atomic<uint64_t>[]> counts_;  // [bounds + 1], not cumulative
  std::atomic<double> sum_{0.0};
  std::atomic<uint64_t> count_{0};
};

class MetricsRegistry {
 public:
  // `labels` is the label set without braces, e.g. `code="200"`; the same
  // name with other labels joins the same family (one HELP/TYPE). Asking
  // twice for the same name and labels returns the same metric.
  Counter& counter(const std::string& name, const std::string& help,
                   const std::string& labels = "");
  Gauge& gauge(const std::string& name, const std::string& help, const std::string& labels = "");
  Histogram& histogram(const std::string& name, const std::string& help,
                       std::vector<double> upper_bounds);
  // Read at render time; `type` is "gauge" or "counter".
  void callback(const std::string& name, const std::string& help, const std::string& type,
                std::function<double()> fn, const std::string& labels = "");

  std::string render() const;

 private:
  struct Series {
    std::string labels;
    Counter* counter = nullptr;
    Gauge* gauge = nullptr;
    Histogram* histogram = nullptr;
    std::function<double()> fn;
  };
  struct Family {
    std::string name, help, type;
    std::vector<Series> series;
  };
  Family& family(const std::string& name, const std::string& help, const std::string& type);
  Series* find(Family& f, const std::string& labels);

  mutable std::mutex mu_;
  std::deque<Family> families_;  // registration order = output order
  std::map<std::string, size_t> index_;
  std::deque<Counter> counters_;  // stable addresses
  std::deque<Gauge> gauges_;
  std::deque<Histogram> histograms_;
};

// Formats a sample value as Prometheus expects (+Inf, -Inf, NaN, shortest repr).
std::string format_metric_value(double v);

}  // namespace kiln::server
