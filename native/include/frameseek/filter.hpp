// Search filters shared by FlatIndex and HnswIndex, evaluated in C++ (no Python callback per
// candidate). Every indexed vector carries an id (unique label) and a group (the video it belongs
// to). A filter keeps a vector when every set that is present contains the corresponding field; an
// absent set allows everything.
#pragma once
#include <cstdint>
#include <initializer_list>
#include <limits>
#include <memory>
#include <mutex>
#include <optional>
#include <unordered_set>
#include <utility>
#include <vector>

namespace frameseek {

// Padding for result slots that have no vector (fewer than k matches): id = kNoId and
// distance = +infinity.
inline constexpr std::uint64_t kNoId = std::numeric_limits<std::uint64_t>::max();

// A filter's set of ids or groups: hashed for membership tests, and listed flat in insertion
// order for what walks the whole set (compiling an id filter into an index's slots): iterating a
// std::unordered_set follows its nodes around the heap, a cache miss per value, which was most of
// a 100k-id filter's compile.
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
    if (!hashed_.insert(v).second) return false;
    list_.push_back(v);
    return true;
  }
  std::size_t count(std::uint64_t v) const { return hashed_.count(v); }
  std::size_t size() const { return list_.size(); }
  bool empty() const { return list_.empty(); }
  std::vector<std::uint64_t>::const_iterator begin() const { return list_.begin(); }
  std::vector<std::uint64_t>::const_iterator end() const { return list_.end(); }

 private:
  std::unordered_set<std::uint64_t> hashed_;
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
