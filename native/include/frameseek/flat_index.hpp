// Exact (brute-force) vector index: the reference every approximate index is measured against,
// and the right choice for small libraries or heavily filtered searches.
//
// Storage is one dense row-major float32 matrix (64-byte aligned) plus parallel id/group
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
// FairSharedMutex and wait only for the searches already running (a steady stream of overlapping
// searches cannot starve them).
#pragma once
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "frameseek/distance.hpp"
#include "frameseek/fair_shared_mutex.hpp"
#include "frameseek/filter.hpp"

namespace frameseek {

// Metric name <-> enum ("l2" or "ip"); parse throws std::invalid_argument.
Metric parse_metric(const std::string& name);
std::string metric_name(Metric metric);

// How FlatIndex keeps its vectors: float32, or IEEE fp16 (half the memory and half the bytes a
// scan streams; queries and arithmetic stay float32, stored values carry fp16 rounding, so
// vectors must lie within +-65504 and distances differ from float32 storage by ~1e-3 relative).
enum class Storage { F32 = 0, F16 = 1 };
Storage parse_storage(const std::string& name);  // "float32" | "float16"
std::string storage_name(Storage storage);

namespace detail {
// Storage for big row matrices, 64-byte aligned; blocks of 4 MiB and more are 2 MiB aligned and
// marked MADV_HUGEPAGE on Linux. Why: the hardware prefetchers stop at 4 KiB page boundaries
// and every 4 KiB page costs a TLB walk, which measured ~2x slower for a single-query scan of
// 400 MB than the same scan over numpy's (huge-page backed) arrays.
// resize_rows: a block of `old_bytes` (nullptr: none) as one of `new_bytes` (0: freed, nullptr
// back) holding its first min(old, new) bytes. On Linux the pages move (mremap), they are not
// copied: std::vector's doubling copied the whole matrix, and a collection's fresh segment
// stalled a commit for ~0.4 s at 64k vectors (seconds at a million).
void* resize_rows(void* p, std::size_t old_bytes, std::size_t new_bytes);
}  // namespace detail

// A growing row matrix (the subset of std::vector that FlatIndex uses) whose growth remaps its
// pages instead of copying them (detail::resize_rows). resize() leaves new elements unspecified:
// callers write every row they add.
template <class T>
class RowBuffer {
 public:
  using value_type = T;
  RowBuffer() = default;
  RowBuffer(const RowBuffer&) = delete;
  RowBuffer& operator=(const RowBuffer&) = delete;
  ~RowBuffer() { detail::resize_rows(p_, capacity_ * sizeof(T), 0); }

  T* data() noexcept { return p_; }
  const T* data() const noexcept { return p_; }
  std::size_t size() const noexcept { return size_; }
  std::size_t capacity() const noexcept { return capacity_; }

  void resize(std::size_t n) {
    if (n > capacity_) set_capacity(std::max(n, capacity_ + capacity_ / 2));
    size_ = n;
  }
  void append(const T* rows, std::size_t n) {
    const std::size_t at = size_;
    resize(size_ + n);
    std::copy_n(rows, n, p_ + at);
  }
  void shrink_to_fit() { set_capacity(size_); }

 private:
  void set_capacity(std::size_t n) {
    p_ = static_cast<T*>(detail::resize_rows(p_, capacity_ * sizeof(T), n * sizeof(T)));
    capacity_ = n;
  }
  T* p_ = nullptr;
  std::size_t size_ = 0;
  std::size_t capacity_ = 0;
};

class FlatIndex {
 public:
  FlatIndex(std::size_t dim, Metric metric, Storage storage = Storage::F32);

  std::size_t dim() const { return dim_; }
  Metric metric() const { return metric_; }
  Storage storage() const { return storage_; }
  std::size_t size() const;
  bool contains(std::uint64_t id) const;

  // Adds n rows. groups == nullptr -> group = id. All-or-nothing:
  // a duplicate id (already stored, or twice in the batch), kNoId as an id, a non-finite
  // component (or, with fp16 storage, one beyond +-65504) throws std::invalid_argument before
  // anything is stored.
  void add(std::size_t n, const std::uint64_t* ids, const float* vectors, const std::uint64_t* groups = nullptr);

  // Removes the ids that are present; returns how many were.
  std::size_t remove(std::size_t n, const std::uint64_t* ids);

  // Copies the stored vectors of n ids into out (n x dim, row-major; fp16 storage is widened).
  // found == nullptr: an absent id throws std::invalid_argument (out is then partly written);
  // else found[i] tells whether row i was copied (the rows of absent ids are left as they were).
  // Returns how many were copied.
  std::size_t get_vectors(const std::uint64_t* ids, std::size_t n, float* out, bool* found = nullptr) const;

  // Top-k nearest for each of nq queries (row-major, dim floats each). Writes out_ids[nq*k] and
  // out_dist[nq*k] sorted by ascending distance (ties by ascending id); missing slots get kNoId /
  // +inf. Distance: l2 -> squared Euclidean; ip -> 1 - dot. threads = 0 -> default_threads().
  void search(const float* queries, std::size_t nq, std::size_t k, const Filter* filter, std::size_t threads,
              std::uint64_t* out_ids, float* out_dist) const;

  // Top-k distinct groups: for each group its best (closest) vector; groups ranked by that
  // distance (ties by ascending group). Missing slots: group and id kNoId, distance +inf.
  void search_groups(const float* queries, std::size_t nq, std::size_t k, const Filter* filter, std::size_t threads,
                     std::uint64_t* out_groups, std::uint64_t* out_ids, float* out_dist) const;

 private:
  template <class Collector>
  void run_search(const float* queries, std::size_t nq, std::size_t k, const Filter* filter, std::size_t threads,
                  std::vector<Collector>& results) const;
  template <class Collector, class TX, class BlockFn>
  void scan(const TX* data, BlockFn block_fn, const float* queries, std::size_t nq, std::size_t k,
            const std::vector<std::uint32_t>* allowed, std::size_t threads, std::vector<Collector>& results) const;
  std::vector<std::uint32_t> allowed_slots(const Filter& filter) const;

  std::size_t dim_;
  Metric metric_;
  Storage storage_;
  RowBuffer<float> data_;          // size() * dim_ (F32 storage)
  RowBuffer<std::uint16_t> half_;  // size() * dim_ (F16 storage)
  std::vector<std::uint64_t> ids_;
  std::vector<std::uint64_t> groups_;
  std::unordered_map<std::uint64_t, std::uint32_t> slot_of_;
  mutable FairSharedMutex mutex_;
};

}  // namespace frameseek
