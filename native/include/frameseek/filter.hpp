// Search filters shared by FlatIndex and HnswIndex, evaluated in C++ (no Python callback per
// candidate). Every indexed vector carries an id (unique label) and a group (the video it belongs
// to). A filter keeps a vector when every set that is present contains the corresponding field; an
// absent set allows everything.
#pragma once
#include <cstdint>
#include <limits>
#include <optional>
#include <unordered_set>

namespace frameseek {

// Padding for result slots that have no vector (fewer than k matches): id = kNoId and
// distance = +infinity.
inline constexpr std::uint64_t kNoId = std::numeric_limits<std::uint64_t>::max();

struct Filter {
  std::optional<std::unordered_set<std::uint64_t>> ids;
  std::optional<std::unordered_set<std::uint64_t>> groups;

  bool empty() const { return !ids && !groups; }
  bool allows(std::uint64_t id, std::uint64_t group) const {
    return (!ids || ids->count(id)) && (!groups || groups->count(group));
  }
};

}  // namespace frameseek
