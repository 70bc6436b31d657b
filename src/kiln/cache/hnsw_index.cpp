// HnswIndex: exact scan for small partitions, hnswlib 0.6.2 (header-only,
// /usr/include/hnswlib) above kGraphMin.
#include "kiln/cache/hnsw_index.h"

#include <algorithm>

#include "kiln/core/assert.h"

// hnswlib is third-party code written against older warning sets.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wall"
#pragma GCC diagnostic ignored "-Wextra"
#pragma GCC diagnostic ignored "-Wunused-parameter"
#pragma GCC diagnostic ignored "-Wsign-compare"
#include <hnswlib/hnswlib.h>
#pragma GCC diagnostic pop

namespace kiln::cache {

namespace {
// M=16 / ef_construction=100: the usual recall-speed middle for a few
// thousand points per partition.
constexpr size_t kM = 16, kEfConstruction = 100, kMinDeadForRebuild = 64;

float dot(const std::vector<float>& a, const std::vector<float>& b) {
  float s = 0;
  for (size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
  return s;
}
}  // namespace

struct HnswIndex::Graph {
  explicit Graph(int32_t dim) : space(size_t(dim)) {}
  hnswlib::InnerProductSpace space;  // before hnsw: the graph keeps a pointer to it
  std::unique_ptr<hnswlib::HierarchicalNSW<float>> hnsw;
};

HnswIndex::HnswIndex(int32_t dim) : dim_(dim) {}
HnswIndex::~HnswIndex() = default;

bool HnswIndex::has_graph() const {
  return graph_ != nullptr;
}

void HnswIndex::build_graph(size_t capacity) {
  graph_ = std::make_unique<Graph>(dim_);
  graph_->hnsw = std::make_unique<hnswlib::HierarchicalNSW<float>>(&graph_->space, capacity, kM,
                                                                   kEfConstruction);
  capacity_ = capacity;
  n_dead_ = 0;
  for (const auto& [label, v] : live_) graph_->hnsw->addPoint(v.data(), hnswlib::labeltype(label));
}

void HnswIndex::add(uint64_t label, const std::vector<float>& vec) {
  KILN_ASSERT(int32_t(vec.size()) == dim_);
  live_[label] = vec;
  if (!graph_) {
    if (live_.size() >= kGraphMin) build_graph(live_.size() * 2);
    return;
  }
  // Dead slots still count against hnswlib's capacity: grow by doubling.
  if (live_.size() + n_dead_ > capacity_) {
    capacity_ *= 2;
    graph_->hnsw->resizeIndex(capacity_);
  }
  graph_->hnsw->addPoint(vec.data(), hnswlib::labeltype(label));
}

void HnswIndex::remove(uint64_t label) {
  if (live_.erase(label) == 0) return;
  if (!graph_) return;
  graph_->hnsw->markDelete(hnswlib::labeltype(label));
  ++n_dead_;
  if (live_.size() < kGraphMin / 2) {
    graph_.reset();  // small again: back to the exact scan, memory released
    n_dead_ = 0;
  } else if (n_dead_ >= kMinDeadForRebuild && n_dead_ > live_.size()) {
    build_graph(live_.size() * 2);
    ++rebuilds_;
  }
}

std::vector<std::pair<uint64_t, float>> HnswIndex::search(const std::vector<float>& vec,
                                                          size_t k) const {
  std::vector<std::pair<uint64_t, float>> out;
  if (live_.empty() || k == 0) return out;
  KILN_ASSERT(int32_t(vec.size()) == dim_);
  if (!graph_) {
    for (const auto& [label, v] : live_) out.emplace_back(label, dot(vec, v));
    const size_t n = std::min(k, out.size());
    std::partial_sort(out.begin(), out.begin() + long(n), out.end(),
                      [](const auto& a, const auto& b) { return a.second > b.second; });
    out.resize(n);
    return out;
  }
  k = std::min(k, live_.size());
  // ef bounds the candidate list; with deleted points in the graph a larger
  // one keeps recall up.
  graph_->hnsw->setEf(std::max<size_t>(64, 4 * k));
  auto pq = graph_->hnsw->searchKnn(vec.data(), k);
  while (!pq.empty()) {
    // InnerProductSpace's distance is 1 - dot; for unit vectors dot = cosine.
    out.emplace_back(uint64_t(pq.top().second), 1.0f - pq.top().first);
    pq.pop();
  }
  std::reverse(out.begin(), out.end());  // the queue pops the farthest first
  return out;
}

}  // namespace kiln::cache
