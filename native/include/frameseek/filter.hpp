// Search filters shared by FlatIndex and HnswIndex, evaluated in C++ (no Python callback per
// candidate). Every indexed vector carries an id (unique label) and a group (the video it belongs
// to). A filter keeps a vector when every set that is present contains the corresponding field; an
// absent set allows everything.
#pragma once
#include <cstdint>
#include <initializer_list>
#include <limits>
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

struct Filter {
  std::optional<ValueSet> ids;
  std::optional<ValueSet> groups;

  bool empty() const { return !ids && !groups; }
  bool allows(std::uint64_t id, std::uint64_t group) const {
    return (!ids || ids->count(id)) && (!groups || groups->count(group));
  }
};

}  // namespace frameseek
