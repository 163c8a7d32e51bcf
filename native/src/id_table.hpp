// HnswIndex's id -> slot table, in place of hnswlib's label_lookup_ (a std::unordered_map: one
// heap node per id, ~40 B a vector with its buckets, and two dependent cache misses a lookup).
// This one is a flat open-addressing table of 12-byte (id, slot) entries kept at most 3/4 full
// (~20 B a vector on average), probed linearly, so a lookup is one cache miss, and a batch of
// lookups (a filter's id set compiled into slots) prefetches its entries ahead.
// Not thread-safe: HnswIndex guards it with its own mutex.
#pragma once
#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <vector>

namespace frameseek::detail {

class IdTable {
 public:
  using Slot = std::uint32_t;
  static constexpr Slot kAbsent = std::numeric_limits<Slot>::max();
  // The id that marks an empty entry; never stored (HnswIndex rejects it as NO_ID).
  static constexpr std::uint64_t kEmpty = std::numeric_limits<std::uint64_t>::max();

  // The slot of id, or kAbsent.
  Slot find(std::uint64_t id) const {
    if (e_.empty()) return kAbsent;
    for (std::size_t i = home(id);; i = (i + 1) & mask_) {
      const Entry& x = e_[i];
      if (x.id == id) return x.slot;
      if (x.id == kEmpty) return kAbsent;
    }
  }

  // fn(id, slot) for each id in [first, last) that the table holds, in order. The entries of the
  // ids kLookahead ahead are prefetched: at scale each lookup is a cache miss, and these overlap.
  template <class It, class Fn>
  void find_each(It first, It last, Fn&& fn) const {
    if (e_.empty()) return;
    std::uint64_t ring[kLookahead];  // ids prefetched, looked up kLookahead later
    std::size_t queued = 0;
    const auto lookup = [&](std::uint64_t id) {
      const Slot s = find(id);
      if (s != kAbsent) fn(id, s);
    };
    for (; first != last; ++first, ++queued) {
      const std::uint64_t id = *first;
      __builtin_prefetch(&e_[home(id)], 0, 1);
      if (queued >= kLookahead) lookup(ring[queued % kLookahead]);
      ring[queued % kLookahead] = id;
    }
    for (std::size_t i = queued > kLookahead ? queued - kLookahead : 0; i < queued; ++i) lookup(ring[i % kLookahead]);
  }

  // What the table holds, as a number unique in the process: a new one after any assign or erase
  // (drawn when next asked). A filter's ids mapped to slots against one version stay right for as
  // long as the table is at it (HnswIndex's SlotFilter keeps them with the filter).
  std::uint64_t version() const {
    if (changed_) {
      version_ = next_version();
      changed_ = false;
    }
    return version_;
  }

  // Maps id to slot (inserting it, or replacing the slot it had).
  void assign(std::uint64_t id, Slot slot) {
    changed_ = true;
    if ((n_ + 1) * 4 > e_.size() * 3) rehash(std::max<std::size_t>(kMinEntries, e_.size() * 2));
    for (std::size_t i = home(id);; i = (i + 1) & mask_) {
      Entry& x = e_[i];
      if (x.id == id) {
        x.slot = slot;
        return;
      }
      if (x.id == kEmpty) {
        x = Entry{id, slot};
        ++n_;
        return;
      }
    }
  }

  // Drops id (absent: nothing). Backward-shift deletion: the entries after it in its probe run
  // move up where they may, so no tombstones build up and lookups stay one run long.
  void erase(std::uint64_t id) {
    if (e_.empty()) return;
    changed_ = true;
    std::size_t i = home(id);
    for (;; i = (i + 1) & mask_) {
      if (e_[i].id == id) break;
      if (e_[i].id == kEmpty) return;
    }
    for (std::size_t j = (i + 1) & mask_;; j = (j + 1) & mask_) {
      if (e_[j].id == kEmpty) break;
      const std::size_t h = home(e_[j].id);
      // e_[j] may move to i when its home is not in the cyclic range (i, j]
      if (((j - h) & mask_) >= ((j - i) & mask_)) {
        e_[i] = e_[j];
        i = j;
      }
    }
    e_[i].id = kEmpty;
    --n_;
  }

  // Room for n ids without rehashing.
  void reserve(std::size_t n) {
    std::size_t cap = kMinEntries;
    while (n * 4 > cap * 3) cap *= 2;
    if (cap > e_.size()) rehash(cap);
  }

 private:
  struct __attribute__((packed)) Entry {
    std::uint64_t id = kEmpty;
    Slot slot = kAbsent;
  };
  static constexpr std::size_t kMinEntries = 64;
  static constexpr std::size_t kLookahead = 16;

  // murmur3's 64-bit finaliser: ids are often consecutive (a video's frames), which a linear probe
  // must not see as runs.
  std::size_t home(std::uint64_t id) const {
    id ^= id >> 33;
    id *= 0xff51afd7ed558ccdull;
    id ^= id >> 33;
    id *= 0xc4ceb9fe1a85ec53ull;
    id ^= id >> 33;
    return static_cast<std::size_t>(id) & mask_;
  }

  void rehash(std::size_t cap) {
    std::vector<Entry> old(cap);
    old.swap(e_);
    mask_ = cap - 1;
    n_ = 0;
    for (const Entry& x : old)
      if (x.id != kEmpty) assign(x.id, x.slot);
  }

  static std::uint64_t next_version() {
    static std::atomic<std::uint64_t> last{0};
    return last.fetch_add(1, std::memory_order_relaxed) + 1;
  }

  std::vector<Entry> e_;  // a power of two entries (or none)
  std::size_t mask_ = 0;
  std::size_t n_ = 0;
  mutable std::uint64_t version_ = next_version();
  mutable bool changed_ = false;
};

}  // namespace frameseek::detail
