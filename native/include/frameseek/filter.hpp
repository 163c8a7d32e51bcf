// Search filters shared by FlatIndex and HnswIndex, evaluated in C++ (no Python callback per
// candidate). Every indexed vector carries an id (unique label) and a group (the video it belongs
// to). A filter keeps a vector when every set that is present contains the corresponding field; an
// absent set allows everything.
#pragma once
#include <algorithm>
#include <cstdint>
#include <initializer_list>
#include <limits>
#include <memory>
#include <mutex>
#include <optional>
#include <utility>
#include <vector>

namespace frameseek {

// Padding for result slots that have no vector (fewer than k matches): id = kNoId and
// distance = +infinity.
inline constexpr std::uint64_t kNoId = std::numeric_limits<std::uint64_t>::max();

// A filter's set of ids or groups: hashed for membership tests, and listed flat in insertion
// order for what walks the whole set (compiling an id filter into an index's slots). The hash is
// open addressing in one flat array (linear probing, at most half full): a filtered walk tests a
// group filter on every neighbour it meets, and std::unordered_set's test followed a bucket to a
// heap node, two dependent cache misses, 7.6 % of an every-other-video walk's time (200k vectors);
// its iteration followed the nodes around the heap, a miss per value, most of a 100k-id compile.
class ValueSet {
 public:
  ValueSet() = default;
  ValueSet(std::initializer_list<std::uint64_t> values) : ValueSet(values.begin(), values.end()) {}
  template <class It>
  ValueSet(It first, It last) {
    for (; first != last; ++first) insert(*first);
  }
  template <class Set, class = decltype(std::declval<const Set&>().begin())>
  ValueSet(const Set& values) : ValueSet(values.begin(), values.end()) {}  // NOLINT: implicit from any set

  bool insert(std::uint64_t v) {
    if (v == kFree) {  // the one value a table entry cannot hold: kept beside it
      if (has_free_value_) return false;
      has_free_value_ = true;
    } else {
      const std::size_t in_table = list_.size() - has_free_value_;
      if ((in_table + 1) * 2 > table_.size()) rehash(std::max<std::size_t>(16, table_.size() * 2));
      std::uint64_t& e = table_[find(v)];
      if (e == v) return false;
      e = v;
    }
    list_.push_back(v);
    return true;
  }
  std::size_t count(std::uint64_t v) const {
    if (v == kFree) return has_free_value_;
    return !table_.empty() && table_[find(v)] == v;
  }
  std::size_t size() const { return list_.size(); }
  bool empty() const { return list_.empty(); }
  std::vector<std::uint64_t>::const_iterator begin() const { return list_.begin(); }
  std::vector<std::uint64_t>::const_iterator end() const { return list_.end(); }

 private:
  static constexpr std::uint64_t kFree = std::numeric_limits<std::uint64_t>::max();
  // Fibonacci hashing: the top bits of v times 2^64 / phi, so consecutive values (a video's frame
  // ids, sequential video ids) land far apart.
  std::size_t home(std::uint64_t v) const { return static_cast<std::size_t>((v * 0x9E3779B97F4A7C15ull) >> shift_); }
  // The entry holding v, or the free entry where it goes (table_ not empty, never full).
  std::size_t find(std::uint64_t v) const {
    std::size_t i = home(v);
    while (table_[i] != v && table_[i] != kFree) i = (i + 1) & mask_;
    return i;
  }
  void rehash(std::size_t entries) {  // entries: a power of two
    table_.assign(entries, kFree);
    mask_ = entries - 1;
    shift_ = 64 - static_cast<unsigned>(__builtin_ctzll(entries));
    for (const std::uint64_t v : list_)
      if (v != kFree) table_[find(v)] = v;
  }
  std::vector<std::uint64_t> table_;  // kFree: an empty entry
  std::size_t mask_ = 0;
  unsigned shift_ = 64;
  bool has_free_value_ = false;  // kFree is in the set (in list_, never in table_)
  std::vector<std::uint64_t> list_;
};

// A filter's id set mapped onto one index's slots (HnswIndex: a bitmap of the admitted slots),
// and what it was mapped against: the index's id-table version (unique in the process), the
// slots it covers and the number of ids then in the set.
struct CompiledIds {
  std::uint64_t version = 0;
  std::size_t slots = 0;
  std::size_t values = 0;
  std::vector<std::uint64_t> bits;
};

// The filter's last CompiledIds, kept for its next search: mapping a random half of 200k ids
// costs ~2.5 ms a call, and one filter often serves many searches (a batch after a batch).
class CompiledIdsCache {
 public:
  std::shared_ptr<const CompiledIds> get(std::uint64_t version, std::size_t slots, std::size_t values) const {
    std::lock_guard<std::mutex> l(mu_);
    if (last_ && last_->version == version && last_->slots >= slots && last_->values == values) return last_;
    return nullptr;
  }
  void put(std::shared_ptr<const CompiledIds> c) {
    std::lock_guard<std::mutex> l(mu_);
    last_ = std::move(c);
  }

 private:
  mutable std::mutex mu_;
  std::shared_ptr<const CompiledIds> last_;
};

struct Filter {
  std::optional<ValueSet> ids;
  std::optional<ValueSet> groups;
  // Where a filter that is searched with again keeps its mapped ids (the Python Filter's, made when
  // it has ids); null for a filter made for one search (the directory's, a query's videos), which
  // maps them per call. Shared by copies (same ids); ValueSet only grows, so `values` tells a
  // changed set.
  std::shared_ptr<CompiledIdsCache> compiled;

  bool empty() const { return !ids && !groups; }
  bool allows(std::uint64_t id, std::uint64_t group) const {
    return (!ids || ids->count(id)) && (!groups || groups->count(group));
  }
};

}  // namespace frameseek
