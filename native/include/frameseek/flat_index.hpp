// Exact (brute-force) vector index: the reference every approximate index is measured against,
// and the right choice for small libraries or heavily filtered searches.
//
// Storage is one dense row-major float32 matrix (64-byte aligned) plus parallel id/group/tag
// arrays; remove() moves the last row into the hole (swap-with-last) and an id -> slot map keeps
// lookups O(1), so a scan never skips tombstones.
//
// Search is blocked for the cache: a block of queries (sized to stay in L2) is run against tiles
// of stored vectors with the register-tiled kernels().*_block routines, so every stored vector is
// streamed from memory once per query block rather than once per query. Work is split over
// threads by query block and, when there are fewer query blocks than threads, also by ranges of
// stored vectors (each range keeps its own bounded top-k, merged at the end).
//
// Thread safety: any number of concurrent searches; add/remove take the writer side of a
// std::shared_mutex and wait for running searches.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <shared_mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "frameseek/distance.hpp"
#include "frameseek/filter.hpp"

namespace frameseek {

// Metric name <-> enum ("l2" or "ip"); parse throws std::invalid_argument.
Metric parse_metric(const std::string& name);
std::string metric_name(Metric metric);

// Minimal 64-byte aligned allocator so every stored row starts on a cache line when d*4 is a
// multiple of 64 (512-d frames: yes), which keeps the SIMD loads from splitting lines.
template <class T>
struct AlignedAllocator {
  using value_type = T;
  AlignedAllocator() = default;
  template <class U>
  AlignedAllocator(const AlignedAllocator<U>&) noexcept {}
  T* allocate(std::size_t n) {
    return static_cast<T*>(::operator new(n * sizeof(T), std::align_val_t(64)));
  }
  void deallocate(T* p, std::size_t) noexcept { ::operator delete(p, std::align_val_t(64)); }
  template <class U>
  bool operator==(const AlignedAllocator<U>&) const noexcept { return true; }
  template <class U>
  bool operator!=(const AlignedAllocator<U>&) const noexcept { return false; }
};

class FlatIndex {
 public:
  FlatIndex(std::size_t dim, Metric metric);

  std::size_t dim() const { return dim_; }
  Metric metric() const { return metric_; }
  std::size_t size() const;
  bool contains(std::uint64_t id) const;

  // Adds n rows. groups == nullptr -> group = id; tags == nullptr -> tag = 0. All-or-nothing:
  // a duplicate id (already stored, or twice in the batch), kNoId as an id, or a non-finite
  // component throws std::invalid_argument before anything is stored.
  void add(std::size_t n, const std::uint64_t* ids, const float* vectors,
           const std::uint64_t* groups = nullptr, const std::uint32_t* tags = nullptr);

  // Removes the ids that are present; returns how many were.
  std::size_t remove(std::size_t n, const std::uint64_t* ids);

  // Top-k nearest for each of nq queries (row-major, dim floats each). Writes out_ids[nq*k] and
  // out_dist[nq*k] sorted by ascending distance (ties by ascending id); missing slots get kNoId /
  // +inf. Distance: l2 -> squared Euclidean; ip -> 1 - dot. threads = 0 -> default_threads().
  void search(const float* queries, std::size_t nq, std::size_t k, const Filter* filter,
              std::size_t threads, std::uint64_t* out_ids, float* out_dist) const;

  // Top-k distinct groups: for each group its best (closest) vector; groups ranked by that
  // distance (ties by ascending group). Missing slots: group and id kNoId, distance +inf.
  void search_groups(const float* queries, std::size_t nq, std::size_t k, const Filter* filter,
                     std::size_t threads, std::uint64_t* out_groups, std::uint64_t* out_ids,
                     float* out_dist) const;

 private:
  template <class Collector>
  void run_search(const float* queries, std::size_t nq, std::size_t k, const Filter* filter,
                  std::size_t threads, std::vector<Collector>& results) const;
  std::vector<std::uint32_t> allowed_slots(const Filter& filter) const;

  std::size_t dim_;
  Metric metric_;
  std::vector<float, AlignedAllocator<float>> data_;  // size() * dim_
  std::vector<std::uint64_t> ids_;
  std::vector<std::uint64_t> groups_;
  std::vector<std::uint32_t> tags_;
  std::unordered_map<std::uint64_t, std::uint32_t> slot_of_;
  mutable std::shared_mutex mutex_;
};

}  // namespace frameseek
