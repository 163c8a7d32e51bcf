// Exact index: dense storage, cache-blocked batched scan, bounded top-k per query.
#include "frameseek/flat_index.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <mutex>
#include <new>
#include <stdexcept>
#include <unordered_set>
#include <utility>

#include "frameseek/half.hpp"
#include "frameseek/parallel.hpp"

#if defined(__linux__)
#include <sys/mman.h>
#include <unistd.h>
#endif

namespace frameseek {

namespace detail {

constexpr std::size_t kHugeThreshold = std::size_t(4) << 20;
constexpr std::size_t kHugeAlign = std::size_t(2) << 20;

#if defined(__linux__)
namespace {

// A block's mapped length: whole pages, a big block in whole huge pages.
std::size_t mapped_bytes(std::size_t bytes) {
  static const std::size_t page = static_cast<std::size_t>(sysconf(_SC_PAGESIZE));
  const std::size_t unit = bytes >= kHugeThreshold ? std::max(kHugeAlign, page) : page;
  return (bytes + unit - 1) / unit * unit;
}

// A free address range of `bytes` starting on a huge-page boundary, reserved without access (the
// caller maps over it with MAP_FIXED / MREMAP_FIXED).
void* aligned_range(std::size_t bytes) {
  void* r = ::mmap(nullptr, bytes + kHugeAlign, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (r == MAP_FAILED) throw std::bad_alloc();
  const auto base = reinterpret_cast<std::uintptr_t>(r);
  const auto at = (base + kHugeAlign - 1) & ~(std::uintptr_t{kHugeAlign} - 1);
  if (at > base) ::munmap(r, at - base);
  const auto end = base + bytes + kHugeAlign;
  if (end > at + bytes) ::munmap(reinterpret_cast<void*>(at + bytes), end - (at + bytes));
  return reinterpret_cast<void*>(at);
}

}  // namespace

void* resize_rows(void* p, std::size_t old_bytes, std::size_t new_bytes) {
  const std::size_t old_len = p ? mapped_bytes(old_bytes) : 0;
  const std::size_t new_len = new_bytes ? mapped_bytes(new_bytes) : 0;
  if (new_len == 0) {
    if (p) ::munmap(p, old_len);
    return nullptr;
  }
  if (p && new_len == old_len) return p;
  const bool huge = new_bytes >= kHugeThreshold;
  void* q = MAP_FAILED;
  if (!p) {
    void* at = huge ? aligned_range(new_len) : nullptr;
    q = ::mmap(at, new_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | (at ? MAP_FIXED : 0), -1, 0);
    if (q == MAP_FAILED && at) ::munmap(at, new_len);
  } else {
    q = ::mremap(p, old_len, new_len, 0);  // in place: a shrink, or a growth into free address space
    if (q == MAP_FAILED && new_len > old_len) {
      if (huge) {  // moved to a huge-page boundary, so the moved pages can stay huge pages
        void* at = aligned_range(new_len);
        q = ::mremap(p, old_len, new_len, MREMAP_MAYMOVE | MREMAP_FIXED, at);
        if (q == MAP_FAILED) ::munmap(at, new_len);
      } else {
        q = ::mremap(p, old_len, new_len, MREMAP_MAYMOVE);
      }
    }
  }
  if (q == MAP_FAILED) throw std::bad_alloc();
#if defined(MADV_HUGEPAGE)
  if (huge) ::madvise(q, new_len, MADV_HUGEPAGE);  // advisory: failure just means 4 KiB pages
#endif
  return q;
}
#else
void* resize_rows(void* p, std::size_t old_bytes, std::size_t new_bytes) {
  void* q = new_bytes ? ::operator new(new_bytes, std::align_val_t(64)) : nullptr;
  if (p && q) std::memcpy(q, p, std::min(old_bytes, new_bytes));
  if (p) ::operator delete(p, std::align_val_t(64));
  return q;
}
#endif

}  // namespace detail

Metric parse_metric(const std::string& name) {
  if (name == "l2") return Metric::L2;
  if (name == "ip") return Metric::IP;
  throw std::invalid_argument("unknown metric '" + name + "' (expected 'l2' or 'ip')");
}

std::string metric_name(Metric metric) { return metric == Metric::L2 ? "l2" : "ip"; }

Storage parse_storage(const std::string& name) {
  if (name == "float32") return Storage::F32;
  if (name == "float16") return Storage::F16;
  throw std::invalid_argument("unknown storage '" + name + "' (expected 'float32' or 'float16')");
}

std::string storage_name(Storage storage) { return storage == Storage::F16 ? "float16" : "float32"; }

namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();

// Bounded top-k of (distance, id): a max-heap whose top is the current k-th best, so a candidate
// is rejected with one comparison against bound() once the heap is full. Ties rank by id so the
// result does not depend on storage order (which remove() changes).
class TopK {
 public:
  struct Entry {
    float dist;
    std::uint64_t id;
    bool operator<(const Entry& o) const { return dist < o.dist || (dist == o.dist && id < o.id); }
  };
  explicit TopK(std::size_t k) : k_(k) {}
  float bound() const { return heap_.size() < k_ ? kInf : heap_.front().dist; }
  void offer(float dist, std::uint64_t id, std::uint64_t /*group*/) {
    Entry e{dist, id};
    if (heap_.size() < k_) {
      heap_.push_back(e);
      std::push_heap(heap_.begin(), heap_.end());
    } else if (e < heap_.front()) {
      std::pop_heap(heap_.begin(), heap_.end());
      heap_.back() = e;
      std::push_heap(heap_.begin(), heap_.end());
    }
  }
  void merge(const TopK& other) {
    for (const Entry& e : other.heap_) offer(e.dist, e.id, 0);
  }
  // Sorted ascending, padded with (kNoId, +inf) to k.
  void write(std::uint64_t* ids, float* dist) {
    std::sort(heap_.begin(), heap_.end());
    for (std::size_t i = 0; i < k_; ++i) {
      ids[i] = i < heap_.size() ? heap_[i].id : kNoId;
      dist[i] = i < heap_.size() ? heap_[i].dist : kInf;
    }
  }

 private:
  std::size_t k_;
  std::vector<Entry> heap_;
};

// Bounded top-k of distinct groups, each with its best (dist, id). Kept as a small unsorted array
// with the worst entry tracked: an accepted candidate costs O(k) (find its group or the slot to
// evict), but after the first few tiles almost every candidate fails the single bound() test.
// Exact: a group evicted here has its best-so-far behind k other groups, and any later, closer
// member of it passes bound() and is considered afresh.
class GroupTopK {
 public:
  struct Entry {
    float dist;
    std::uint64_t group;
    std::uint64_t id;
  };
  explicit GroupTopK(std::size_t k) : k_(k) {}
  float bound() const { return items_.size() < k_ ? kInf : items_[worst_].dist; }
  void offer(float dist, std::uint64_t id, std::uint64_t group) {
    for (Entry& e : items_) {
      if (e.group == group) {
        if (dist < e.dist || (dist == e.dist && id < e.id)) {
          e.dist = dist;
          e.id = id;
          find_worst();
        }
        return;
      }
    }
    Entry cand{dist, group, id};
    if (items_.size() < k_) {
      items_.push_back(cand);
      find_worst();
    } else if (ranks_before(cand, items_[worst_])) {
      items_[worst_] = cand;
      find_worst();
    }
  }
  void merge(const GroupTopK& other) {
    for (const Entry& e : other.items_) offer(e.dist, e.id, e.group);
  }
  void write(std::uint64_t* groups, std::uint64_t* ids, float* dist) {
    std::sort(items_.begin(), items_.end(), ranks_before);
    for (std::size_t i = 0; i < k_; ++i) {
      const bool have = i < items_.size();
      groups[i] = have ? items_[i].group : kNoId;
      ids[i] = have ? items_[i].id : kNoId;
      dist[i] = have ? items_[i].dist : kInf;
    }
  }

 private:
  static bool ranks_before(const Entry& a, const Entry& b) {
    return a.dist < b.dist || (a.dist == b.dist && a.group < b.group);
  }
  void find_worst() {
    worst_ = 0;
    for (std::size_t i = 1; i < items_.size(); ++i)
      if (ranks_before(items_[worst_], items_[i])) worst_ = i;
  }
  std::size_t k_;
  std::size_t worst_ = 0;
  std::vector<Entry> items_;
};

// Cache blocking. A query block should stay in L2 while vector strips stream past it; a vector
// tile bounds the distance buffer (and, for filtered scans, the gather buffer).
constexpr std::size_t kQueryBlockBytes = 128 * 1024;
constexpr std::size_t kTileBytes = 128 * 1024;
// Below this many vectors per thread, splitting a scan costs more than it saves.
constexpr std::size_t kMinRangeRows = 4096;

}  // namespace

FlatIndex::FlatIndex(std::size_t dim, Metric metric, Storage storage) : dim_(dim), metric_(metric), storage_(storage) {
  if (dim == 0) throw std::invalid_argument("dim must be >= 1");
  if (dim > (1u << 20)) throw std::invalid_argument("dim must be <= 1048576");
}

std::size_t FlatIndex::size() const {
  std::shared_lock lock(mutex_);
  return ids_.size();
}

bool FlatIndex::contains(std::uint64_t id) const {
  std::shared_lock lock(mutex_);
  return slot_of_.count(id) != 0;
}

namespace {

// Releases a row matrix's spare capacity once it is big and at most a quarter used.
template <class Rows>
void shrink_if_sparse(Rows& rows) {
  constexpr std::size_t kMinBytes = std::size_t{64} << 20;
  if (rows.capacity() * sizeof(typename Rows::value_type) >= kMinBytes && rows.size() < rows.capacity() / 4)
    rows.shrink_to_fit();
}

}  // namespace

std::size_t FlatIndex::get_vectors(const std::uint64_t* ids, std::size_t n, float* out, bool* found) const {
  std::shared_lock lock(mutex_);
  std::size_t copied = 0;
  for (std::size_t i = 0; i < n; ++i) {
    auto it = slot_of_.find(ids[i]);
    if (found) found[i] = it != slot_of_.end();
    if (it == slot_of_.end()) {
      if (!found) throw std::invalid_argument("id " + std::to_string(ids[i]) + " is not in the index");
      continue;
    }
    const std::size_t at = std::size_t(it->second) * dim_;
    float* row = out + i * dim_;
    if (storage_ == Storage::F16)
      for (std::size_t d = 0; d < dim_; ++d) row[d] = half_to_float(half_.data()[at + d]);
    else
      std::copy_n(data_.data() + at, dim_, row);
    ++copied;
  }
  return copied;
}

void FlatIndex::add(std::size_t n, const std::uint64_t* ids, const float* vectors, const std::uint64_t* groups) {
  if (n == 0) return;
  // Validate everything before taking the lock or touching storage (all-or-nothing).
  for (std::size_t i = 0; i < n * dim_; ++i)
    if (!std::isfinite(vectors[i]))
      throw std::invalid_argument("vectors contain NaN or infinity (row " + std::to_string(i / dim_) + ")");
  if (storage_ == Storage::F16)
    for (std::size_t i = 0; i < n * dim_; ++i)
      if (std::fabs(vectors[i]) > 65504.0f)  // largest finite fp16; beyond it rounds to inf
        throw std::invalid_argument("vectors exceed the float16 range +-65504 (row " + std::to_string(i / dim_) +
                                    "); use storage='float32'");
  std::unordered_set<std::uint64_t> batch;
  batch.reserve(n);
  for (std::size_t i = 0; i < n; ++i) {
    if (ids[i] == kNoId) throw std::invalid_argument("id 2**64-1 is reserved (NO_ID)");
    if (!batch.insert(ids[i]).second)
      throw std::invalid_argument("duplicate id " + std::to_string(ids[i]) + " in the batch");
  }
  std::unique_lock lock(mutex_);
  if (ids_.size() + n > std::numeric_limits<std::uint32_t>::max())
    throw std::length_error("FlatIndex holds at most 2**32-1 vectors");
  for (std::size_t i = 0; i < n; ++i)
    if (slot_of_.count(ids[i]))
      throw std::invalid_argument("id " + std::to_string(ids[i]) + " is already in the index");
  const std::size_t base = ids_.size();
  if (storage_ == Storage::F16) {
    half_.resize((base + n) * dim_);
    std::uint16_t* dst = half_.data() + base * dim_;
    for (std::size_t i = 0; i < n * dim_; ++i) dst[i] = float_to_half(vectors[i]);
  } else {
    data_.append(vectors, n * dim_);
  }
  ids_.insert(ids_.end(), ids, ids + n);
  if (groups)
    groups_.insert(groups_.end(), groups, groups + n);
  else
    groups_.insert(groups_.end(), ids, ids + n);
  if (slot_of_.empty())
    slot_of_.reserve(n);  // not later: a reserve of the exact count rehashed the whole map every few batches
  for (std::size_t i = 0; i < n; ++i) slot_of_.emplace(ids[i], static_cast<std::uint32_t>(base + i));
}

std::size_t FlatIndex::remove(std::size_t n, const std::uint64_t* ids) {
  std::unique_lock lock(mutex_);
  std::size_t removed = 0;
  for (std::size_t i = 0; i < n; ++i) {
    auto it = slot_of_.find(ids[i]);
    if (it == slot_of_.end()) continue;
    const std::uint32_t slot = it->second;
    const std::uint32_t last = static_cast<std::uint32_t>(ids_.size() - 1);
    slot_of_.erase(it);
    if (slot != last) {  // move the last row into the hole so storage stays dense
      if (storage_ == Storage::F16)
        std::copy_n(half_.data() + std::size_t(last) * dim_, dim_, half_.data() + std::size_t(slot) * dim_);
      else
        std::copy_n(data_.data() + std::size_t(last) * dim_, dim_, data_.data() + std::size_t(slot) * dim_);
      ids_[slot] = ids_[last];
      groups_[slot] = groups_[last];
      slot_of_[ids_[slot]] = slot;
    }
    (storage_ == Storage::F16 ? half_.resize(std::size_t(last) * dim_) : data_.resize(std::size_t(last) * dim_));
    ids_.pop_back();
    groups_.pop_back();
    ++removed;
  }
  // A store that drains (a collection's fresh segment after a bulk insert) gives its memory back.
  shrink_if_sparse(data_);
  shrink_if_sparse(half_);
  return removed;
}

std::vector<std::uint32_t> FlatIndex::allowed_slots(const Filter& filter) const {
  std::vector<std::uint32_t> out;
  if (filter.ids && filter.ids->size() < ids_.size()) {
    // A small id set: look its members up instead of testing every stored vector.
    out.reserve(filter.ids->size());
    for (std::uint64_t id : *filter.ids) {
      auto it = slot_of_.find(id);
      if (it != slot_of_.end() && filter.allows(id, groups_[it->second])) out.push_back(it->second);
    }
    std::sort(out.begin(), out.end());  // scan in storage order: sequential reads
  } else {
    for (std::size_t s = 0; s < ids_.size(); ++s)
      if (filter.allows(ids_[s], groups_[s])) out.push_back(static_cast<std::uint32_t>(s));
  }
  return out;
}

template <class Collector>
void FlatIndex::run_search(const float* queries, std::size_t nq, std::size_t k, const Filter* filter,
                           std::size_t threads, std::vector<Collector>& results) const {
  // Caller holds the shared lock.
  std::vector<std::uint32_t> allowed;
  bool use_list = false;
  if (filter && !filter->empty()) {
    allowed = allowed_slots(*filter);
    use_list = allowed.size() != ids_.size();
  }
  const std::vector<std::uint32_t>* list = use_list ? &allowed : nullptr;
  // One query is a pure memory stream: it gets the streaming table (see stream_kernels()).
  const Kernels& kern = nq == 1 ? stream_kernels() : kernels();
  const bool l2 = metric_ == Metric::L2;
  if (storage_ == Storage::F16)
    scan(half_.data(), l2 ? kern.l2sq_block_f16 : kern.dot_block_f16, queries, nq, k, list, threads, results);
  else
    scan(data_.data(), l2 ? kern.l2sq_block : kern.dot_block, queries, nq, k, list, threads, results);
}

template <class Collector, class TX, class BlockFn>
void FlatIndex::scan(const TX* data, BlockFn block_fn, const float* queries, std::size_t nq, std::size_t k,
                     const std::vector<std::uint32_t>* allowed, std::size_t threads,
                     std::vector<Collector>& results) const {
  const std::size_t d = dim_;
  const std::size_t m = allowed ? allowed->size() : ids_.size();
  if (m == 0 || nq == 0) return;
  if (threads == 0) threads = default_threads();

  const std::size_t qb = std::max<std::size_t>(4, std::min<std::size_t>(64, kQueryBlockBytes / (4 * d)) / 4 * 4);
  const std::size_t tile = std::max<std::size_t>(16, std::min<std::size_t>(256, kTileBytes / (sizeof(TX) * d)));
  const std::size_t nqb = (nq + qb - 1) / qb;
  // Few query blocks (a single query, or batch-64): also split the stored vectors over threads,
  // each range with its own collectors. Many query blocks: threads take whole query blocks.
  std::size_t ranges = nqb >= 4 * threads ? 1 : threads;
  ranges = std::max<std::size_t>(1, std::min(ranges, m / kMinRangeRows));
  // Ranges start on tile boundaries: every row then sits at the same place in the same kernel
  // tile whatever the number of ranges, so results do not depend on the thread count (the
  // register-tiled kernels sum a tile's edge rows in another order, ~1 ulp apart).
  const std::size_t range_len = ((m + ranges - 1) / ranges + tile - 1) / tile * tile;

  std::vector<std::vector<Collector>> extra(ranges - 1, std::vector<Collector>(nq, Collector(k)));
  auto sink = [&](std::size_t r) -> std::vector<Collector>& { return r == 0 ? results : extra[r - 1]; };
  const bool ip = metric_ == Metric::IP;

  // Task t: vector range r = t / nqb, query block t % nqb. parallel_for hands out contiguous task
  // chunks, so with ranges == threads each thread owns one range and sweeps every query block.
  parallel_for(nqb * ranges, threads, [&](std::size_t begin, std::size_t end) {
    std::vector<float> dist(qb * tile);
    std::vector<TX> gathered(allowed ? tile * d : 0);
    for (std::size_t t = begin; t < end; ++t) {
      const std::size_t r = t / nqb, q0 = (t % nqb) * qb;
      const std::size_t qn = std::min(qb, nq - q0);
      const std::size_t lo = r * range_len, hi = std::min(m, lo + range_len);
      std::vector<Collector>& out = sink(r);
      for (std::size_t j0 = lo; j0 < hi; j0 += tile) {
        const std::size_t jn = std::min(tile, hi - j0);
        const TX* xt;
        if (allowed) {  // filtered: gather the allowed rows into a dense tile
          for (std::size_t j = 0; j < jn; ++j)
            std::copy_n(data + std::size_t((*allowed)[j0 + j]) * d, d, gathered.data() + j * d);
          xt = gathered.data();
        } else {
          xt = data + j0 * d;
        }
        block_fn(queries + q0 * d, qn, xt, jn, d, dist.data(), tile);
        for (std::size_t qi = 0; qi < qn; ++qi) {
          float* row = dist.data() + qi * tile;
          if (ip)
            for (std::size_t j = 0; j < jn; ++j) row[j] = 1.0f - row[j];
          Collector& c = out[q0 + qi];
          float bound = c.bound();
          for (std::size_t j = 0; j < jn; ++j) {
            if (row[j] <= bound) {
              const std::size_t s = allowed ? (*allowed)[j0 + j] : j0 + j;
              c.offer(row[j], ids_[s], groups_[s]);
              bound = c.bound();
            }
          }
        }
      }
    }
  });
  for (auto& part : extra)
    for (std::size_t q = 0; q < nq; ++q) results[q].merge(part[q]);
}

void FlatIndex::search(const float* queries, std::size_t nq, std::size_t k, const Filter* filter, std::size_t threads,
                       std::uint64_t* out_ids, float* out_dist) const {
  if (k == 0) throw std::invalid_argument("k must be >= 1");
  std::vector<TopK> results(nq, TopK(k));
  {
    std::shared_lock lock(mutex_);
    run_search(queries, nq, k, filter, threads, results);
  }
  for (std::size_t q = 0; q < nq; ++q) results[q].write(out_ids + q * k, out_dist + q * k);
}

void FlatIndex::search_groups(const float* queries, std::size_t nq, std::size_t k, const Filter* filter,
                              std::size_t threads, std::uint64_t* out_groups, std::uint64_t* out_ids,
                              float* out_dist) const {
  if (k == 0) throw std::invalid_argument("k must be >= 1");
  std::vector<GroupTopK> results(nq, GroupTopK(k));
  {
    std::shared_lock lock(mutex_);
    run_search(queries, nq, k, filter, threads, results);
  }
  for (std::size_t q = 0; q < nq; ++q) results[q].write(out_groups + q * k, out_ids + q * k, out_dist + q * k);
}

}  // namespace frameseek
