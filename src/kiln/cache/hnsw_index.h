// The nearest-neighbour index of one semantic-cache partition: inner product
// over unit vectors. Small partitions (most: one per system prompt and
// sampling setting) are scanned exactly, because an hnswlib graph costs
// megabytes up front (0.6.2 allocates 65536 update locks per graph); from
// kGraphMin live entries on, an hnswlib HNSW graph takes over.
// hnswlib 0.6.2 can only markDelete (no replace_deleted, no filters), so
// deleted points keep their slots in the graph: the index counts them and
// rebuilds the graph from the live vectors once they outnumber the live
// ones, which bounds memory at about twice the live set.
// Not thread-safe: the semantic cache serializes calls.
#pragma once

#include <cstdint>
#include <memory>
#include <unordered_map>
#include <utility>
#include <vector>

namespace kiln::cache {

class HnswIndex {
 public:
  static constexpr size_t kGraphMin = 256;  // live entries from which a graph is used

  explicit HnswIndex(int32_t dim);
  ~HnswIndex();
  HnswIndex(const HnswIndex&) = delete;
  HnswIndex& operator=(const HnswIndex&) = delete;

  // `vec` [dim], unit length. Labels are unique for the index's lifetime.
  void add(uint64_t label, const std::vector<float>& vec);
  void remove(uint64_t label);
  // Up to k live labels with their cosine similarity, best first.
  std::vector<std::pair<uint64_t, float>> search(const std::vector<float>& vec, size_t k) const;

  size_t live() const { return live_.size(); }
  size_t dead() const { return n_dead_; }  // deleted slots still in the graph
  bool has_graph() const;
  uint64_t rebuilds() const { return rebuilds_; }

 private:
  struct Graph;
  void build_graph(size_t capacity);

  int32_t dim_;
  std::unordered_map<uint64_t, std::vector<float>> live_;  // label -> [dim]
  std::unique_ptr<Graph> graph_;
  size_t capacity_ = 0, n_dead_ = 0;
  uint64_t rebuilds_ = 0;
};

}  // namespace kiln::cache
