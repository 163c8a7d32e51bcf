// Validation of the hnswlib graph section of an HNSW snapshot (see HnswIndex::load). hnswlib's
// loadIndex trusts its file: element sizes, offsets and M drive its allocations and pointer
// arithmetic, and the link lists are followed without bounds checks by every later search and
// insert. The snapshot's CRC catches accidental damage, but not a file that was damaged before it
// was checksummed or written by something else; a fuzzer that re-seals its mutations reached heap
// overflows and unbounded allocations through exactly these fields. So load checks the graph's
// header against what the snapshot header implies before hnswlib reads it (graph_header_problem),
// and every link after (graph_links_problem). Both return "" when the graph is sound, else why not.
#pragma once
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <mutex>
#include <string>

#include <hnswlib/hnswlib.h>

#include "frameseek/hnsw_index.hpp"  // HnswParams::kMaxLayer0Links

namespace frameseek::detail {

// hnswlib 0.8's saveIndex header: every field in write order (size_t = 8 bytes on LP64).
struct HnswlibHeader {
  std::uint64_t offset_level0, max_elements, cur_element_count, size_data_per_element, label_offset, offset_data;
  std::int32_t maxlevel;
  std::uint32_t enterpoint;
  std::uint64_t max_m, max_m0, m;
  double mult;
  std::uint64_t ef_construction;

  static constexpr std::size_t kBytes = 6 * 8 + 4 + 4 + 3 * 8 + 8 + 8;  // 96

  static HnswlibHeader parse(const unsigned char* p) {
    HnswlibHeader h;
    std::size_t at = 0;
    auto take = [&](auto* field) {
      std::memcpy(field, p + at, sizeof *field);
      at += sizeof *field;
    };
    take(&h.offset_level0), take(&h.max_elements), take(&h.cur_element_count);
    take(&h.size_data_per_element), take(&h.label_offset), take(&h.offset_data);
    take(&h.maxlevel), take(&h.enterpoint), take(&h.max_m), take(&h.max_m0), take(&h.m);
    take(&h.mult), take(&h.ef_construction);
    return h;
  }
};

// Bytes one slot of capacity costs once loaded: hnswlib's level-0 record, its per-slot lock, level
// and link-list pointer, the visited-list mark, and HnswIndex's SlotMeta (the float32 store aside).
inline std::uint64_t slot_bytes(std::uint64_t size_data_per_element) {
  return size_data_per_element + sizeof(std::mutex) + sizeof(int) + sizeof(void*) + 2 + 16;
}

inline std::uint64_t physical_memory_bytes() {
  const long pages = ::sysconf(_SC_PHYS_PAGES), page = ::sysconf(_SC_PAGESIZE);
  return pages > 0 && page > 0 ? std::uint64_t(pages) * std::uint64_t(page) : ~std::uint64_t{0};
}

// `head`: the first HnswlibHeader::kBytes of the graph section (graph_bytes long); data_bytes:
// each element's data (the walk code, HnswIndex::code_bytes); M, ef_construction, capacity and
// n_live: the snapshot header's values.
inline std::string graph_header_problem(const unsigned char* head, std::uint64_t graph_bytes, std::uint64_t data_bytes,
                                        std::uint64_t M, std::uint64_t ef_construction, std::uint64_t capacity,
                                        std::uint64_t n_live) {
  if (graph_bytes < HnswlibHeader::kBytes) return "graph section is shorter than its header";
  const HnswlibHeader g = HnswlibHeader::parse(head);
  const std::uint64_t links0 = g.max_m0 * sizeof(hnswlib::tableint) + sizeof(hnswlib::linklistsizeint);
  if (g.m != M || g.max_m != M || g.max_m0 < M || g.max_m0 > HnswParams::kMaxLayer0Links || g.offset_level0 != 0 ||
      g.offset_data != links0 || g.label_offset != links0 + data_bytes ||
      g.size_data_per_element != g.label_offset + sizeof(hnswlib::labeltype))
    return "graph section's layout does not match the header (M, dimension or record size)";
  if (g.ef_construction != std::max(ef_construction, M))
    return "graph section's ef_construction does not match the header";
  const double mult = 1 / std::log(1.0 * double(M));
  if (!(std::fabs(g.mult - mult) <= 1e-9 * mult)) return "graph section's level multiplier is not 1/ln(M)";
  // every element: its level-0 record and at least its upper-link size word
  const std::uint64_t per_element = g.size_data_per_element + sizeof(std::uint32_t);
  if (g.cur_element_count > (graph_bytes - HnswlibHeader::kBytes) / per_element)
    return "graph section claims more elements than its size holds";
  if (g.cur_element_count > capacity || g.cur_element_count < n_live)
    return "graph section's element count does not fit the header's capacity and live count";
  // an empty graph has no entry point: hnswlib's -1 in both (any other value is followed by an insert)
  if (g.cur_element_count == 0 ? g.maxlevel != -1 || g.enterpoint != ~std::uint32_t{0}
                               : g.maxlevel < 0 || g.maxlevel > 255 || g.enterpoint >= g.cur_element_count)
    return "graph section's entry point or top level is out of range";
  const std::uint64_t memory = physical_memory_bytes();
  if (capacity > memory / slot_bytes(g.size_data_per_element))
    return "capacity " + std::to_string(capacity) + " needs more memory than this machine has (" +
           std::to_string(memory >> 20) + " MiB)";
  return "";
}

// After hnswlib loaded the graph: every neighbour exists and has the level it is linked on, no
// list is longer than its slots, and the entry point sits on the top level.
template <typename Graph>
std::string graph_links_problem(const Graph& g) {
  const std::size_t n = g.cur_element_count;
  if (n == 0) return "";
  if (g.element_levels_[g.enterpoint_node_] != g.maxlevel_) return "graph's entry point is not on its top level";
  auto bad_list = [&](hnswlib::linklistsizeint* list, std::size_t max, int level) {
    const std::size_t count = g.getListCount(list);
    if (count > max) return true;
    auto* links = reinterpret_cast<const hnswlib::tableint*>(list + 1);
    for (std::size_t j = 0; j < count; ++j)
      if (links[j] >= n || g.element_levels_[links[j]] < level) return true;
    return false;
  };
  for (std::size_t i = 0; i < n; ++i) {
    const int level = g.element_levels_[i];
    if (level > g.maxlevel_) return "graph element " + std::to_string(i) + " is above the top level";
    if (bad_list(g.get_linklist0(static_cast<hnswlib::tableint>(i)), g.maxM0_, 0))
      return "graph element " + std::to_string(i) + " has a bad level-0 link list";
    for (int l = 1; l <= level; ++l)
      if (bad_list(g.get_linklist(static_cast<hnswlib::tableint>(i), l), g.maxM_, l))
        return "graph element " + std::to_string(i) + " has a bad link list on level " + std::to_string(l);
  }
  return "";
}

}  // namespace frameseek::detail
