#include "frameseek/hnsw_index.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <limits>
#include <optional>
#include <set>
#include <stdexcept>
#include <type_traits>
#include <unordered_set>

#include <hnswlib/hnswlib.h>
#include <zlib.h>

#include "frameseek/distance.hpp"
#include "frameseek/half.hpp"
#include "frameseek/parallel.hpp"
#include "hnsw_graph_check.hpp"

namespace frameseek {

// ---------------------------------------------------------------------------------------------
// Space: hnswlib calls dist(a, b, param) through a plain function pointer; param carries the
// dimension and the kernel picked by the runtime dispatch, so the graph uses the same SIMD path as
// FlatIndex. IP is reported as 1 - dot (a distance, smaller = closer), like hnswlib's own space.
class KernelSpace : public hnswlib::SpaceInterface<float> {
 public:
  struct Param {
    std::size_t dim;
    float (*fn)(const float*, const float*, std::size_t);
  };

  KernelSpace(std::size_t dim, Metric metric) {
    const Kernels& k = kernels();
    param_.dim = dim;
    param_.fn = metric == Metric::L2 ? k.l2sq : k.dot;
    dist_ = metric == Metric::L2 ? &l2 : &ip;
  }
  std::size_t get_data_size() override { return param_.dim * sizeof(float); }
  hnswlib::DISTFUNC<float> get_dist_func() override { return dist_; }
  void* get_dist_func_param() override { return &param_; }

 private:
  static float l2(const void* a, const void* b, const void* p) {
    auto* q = static_cast<const Param*>(p);
    return q->fn(static_cast<const float*>(a), static_cast<const float*>(b), q->dim);
  }
  static float ip(const void* a, const void* b, const void* p) {
    auto* q = static_cast<const Param*>(p);
    return 1.0f - q->fn(static_cast<const float*>(a), static_cast<const float*>(b), q->dim);
  }
  Param param_{};
  hnswlib::DISTFUNC<float> dist_ = nullptr;
};

namespace {

using Graph = hnswlib::HierarchicalNSW<float>;

// Plain top-ef search with an ef chosen per call. hnswlib's searchKnn reads the shared member
// ef_, which concurrent callers cannot each set; a stop condition carries the ef instead. The
// rules are the ones searchKnn uses.
class EfCondition : public hnswlib::BaseSearchStopCondition<float> {
 public:
  explicit EfCondition(std::size_t ef) : ef_(ef) {}
  void add_point_to_result(hnswlib::labeltype, const void*, float) override { ++n_; }
  void remove_point_from_result(hnswlib::labeltype, const void*, float) override { --n_; }
  bool should_stop_search(float cand, float lower) override { return cand > lower && n_ == ef_; }
  bool should_consider_candidate(float cand, float lower) override { return n_ < ef_ || lower > cand; }
  bool should_remove_extra() override { return n_ > ef_; }
  void filter_results(std::vector<std::pair<float, hnswlib::labeltype>>&) override {}

 private:
  std::size_t ef_, n_ = 0;
};

// ---------------------------------------------------------------------------------------------
// frameseek's own k-NN walk over hnswlib's graph (same algorithm as hnswlib's searchKnn: greedy
// descent through the upper layers, then a best-first search of layer 0 with ef results), written
// here so the hot loop can do what hnswlib's cannot:
//   * evaluate filters by internal slot (dense SlotMeta arrays, an id bitmap built once per call)
//     instead of a virtual call that hashes the candidate's label into two hash tables;
//   * call our distance kernel directly (hnswlib goes through the space's function pointer, which
//     calls ours: two indirect calls per distance);
//   * take ef per call without a virtual stop condition;
//   * prefetch a neighbour's whole vector one step ahead (hnswlib prefetches only its first
//     cache line), and visit a node's unvisited neighbours in one pass after marking them.
// Reads the graph without node locks, as hnswlib's own search does (safe against concurrent
// add(): links are written whole, and a node is reachable only after its data is in place).
//
// The walk may read a compact copy of the vectors (HnswIndex::walk_precision: int8 codes by
// default, or fp16): a walk is bound by fetching each visited vector from memory (1M x 512-d does
// not fit any cache), and a quarter (int8) or half (fp16) of the bytes per vector cut that; the
// int8 dot product is also 2.5x fewer instructions than fp16's convert + FMA. The result set is
// then re-ranked with the float32 vectors (rerank_exact), so reported distances are exact and
// only the routing carries the copy's rounding (int8: ~1e-3 absolute on a unit-vector inner
// product, well below the gaps between a walk's candidates).
using WalkPrecision = HnswIndex::WalkPrecision;

// Symmetric per-vector int8 code: x ~ scale * code, code in [-127, 127] (never -128: see
// Kernels::dot_i8), scale = max|x| / 127. Returns the scale.
float quantize_i8(const float* x, std::size_t d, std::int8_t* code) {
  float m = 0.0f;
  for (std::size_t i = 0; i < d; ++i) m = std::max(m, std::fabs(x[i]));
  const float scale = m > 0.0f ? m / 127.0f : 1.0f;
  for (std::size_t i = 0; i < d; ++i)
    code[i] = static_cast<std::int8_t>(std::lrint(std::clamp(x[i] / scale, -127.0f, 127.0f)));
  return scale;
}

// One query as the walk reads it: the float32 vector and, for an int8 walk, its code.
struct WalkQuery {
  const float* f;
  const std::int8_t* code = nullptr;
  float scale = 0.0f;
  float norm = 0.0f;  // squared
};

struct DistFn {
  float (*fn)(const float*, const float*, std::size_t);
  float (*fn16)(const float*, const std::uint16_t*, std::size_t);
  std::int32_t (*fn8)(const std::int8_t*, const std::int8_t*, std::size_t);
  const Graph* g;
  const std::uint8_t* copy;  // null: walk on the float32 vectors
  std::size_t stride;        // bytes per slot of copy
  WalkPrecision prec;
  std::size_t dim;
  bool ip;
  const char* addr(hnswlib::tableint x) const {
    return copy ? reinterpret_cast<const char*>(copy + std::size_t(x) * stride) : g->getDataByInternalId(x);
  }
  std::size_t bytes() const { return copy ? stride : dim * sizeof(float); }
  // Fills q's int8 code (into `code`, dim entries) when the walk reads int8.
  WalkQuery prepare(const float* q, std::int8_t* code) const {
    WalkQuery w{q};
    if (prec == WalkPrecision::Int8) {
      w.code = code;
      w.scale = quantize_i8(q, dim, code);
      w.norm = kernels().dot(q, q, dim);
    }
    return w;
  }
  float operator()(const WalkQuery& q, hnswlib::tableint x) const {
    if (prec == WalkPrecision::Int8) {
      // row: dim codes, then the scale and the exact squared norm (see HnswIndex::write_copy)
      const std::uint8_t* row = copy + std::size_t(x) * stride;
      float scale, norm;
      std::memcpy(&scale, row + dim, sizeof scale);
      std::memcpy(&norm, row + dim + sizeof scale, sizeof norm);
      const float dot =
          q.scale * scale * static_cast<float>(fn8(q.code, reinterpret_cast<const std::int8_t*>(row), dim));
      return ip ? 1.0f - dot : q.norm + norm - 2.0f * dot;
    }
    const float d = prec == WalkPrecision::Float16
                        ? fn16(q.f, reinterpret_cast<const std::uint16_t*>(copy + std::size_t(x) * stride), dim)
                        : fn(q.f, reinterpret_cast<const float*>(g->getDataByInternalId(x)), dim);
    return ip ? 1.0f - d : d;
  }
  float exact(const float* q, hnswlib::tableint x) const {
    const float d = fn(q, reinterpret_cast<const float*>(g->getDataByInternalId(x)), dim);
    return ip ? 1.0f - d : d;
  }
};

DistFn make_dist(const Graph& g, Metric metric, const std::uint8_t* copy, std::size_t stride, WalkPrecision prec) {
  const auto* param = static_cast<const KernelSpace::Param*>(g.dist_func_param_);
  const Kernels& k = kernels();
  return DistFn{
      param->fn,           metric == Metric::L2 ? k.l2sq_f16 : k.dot_f16, k.dot_i8, &g, copy, stride, prec, param->dim,
      metric == Metric::IP};
}

// Walks touch one random row per visited node across gigabytes (1M x 512: 2.2 GB of graph +
// vectors, 0.6 GB of int8 copy). With 4 KiB pages nearly every visit also misses the TLB and
// walks the page tables; 2 MiB transparent huge pages take that away. Where THP is "madvise" (the
// Debian default) a region gets them only when asked; elsewhere this is a no-op.
constexpr std::size_t kHugePage = std::size_t{2} << 20;

std::size_t level0_bytes(const Graph& g) { return g.max_elements_ * g.size_data_per_element_; }

void advise_huge_pages(void* p, std::size_t bytes) {
#ifdef MADV_HUGEPAGE
  const auto lo = (reinterpret_cast<std::uintptr_t>(p) + kHugePage - 1) / kHugePage * kHugePage;
  const auto hi = (reinterpret_cast<std::uintptr_t>(p) + bytes) / kHugePage * kHugePage;
  if (hi > lo) ::madvise(reinterpret_cast<void*>(lo), hi - lo, MADV_HUGEPAGE);  // advice: failure is harmless
#else
  (void)p, (void)bytes;
#endif
}

inline void prefetch_lines(const char* p, std::size_t bytes) {
  for (std::size_t off = 0; off < bytes; off += 64) __builtin_prefetch(p + off, 0, 3);
}

// While item j of n is computed, keeps the rows of the next kRowsAhead items in flight (at j = 0
// it also starts the first ones). row(i): the address of item i's row. Used by the walk (the
// copy's rows of a node's neighbours) and by the re-rank (the cold float32 rows of the results).
constexpr std::size_t kRowsAhead = 2;

template <class RowOf>
inline void prefetch_ahead(std::size_t j, std::size_t n, const RowOf& row, std::size_t bytes) {
  if (j == 0)
    for (std::size_t i = 0; i < std::min(kRowsAhead, n); ++i) prefetch_lines(row(i), bytes);
  if (j + kRowsAhead < n) prefetch_lines(row(j + kRowsAhead), bytes);
}

// Per-thread scratch reused across the queries of one call.
struct Scratch {
  std::vector<std::pair<float, hnswlib::tableint>> top;    // max-heap: worst result on top
  std::vector<std::pair<float, hnswlib::tableint>> cand;   // min-heap (std::greater)
  std::vector<hnswlib::tableint> fresh;                    // unvisited neighbours of one node
  std::vector<float> beam;                                 // TopCollector's beam when ef < k
  std::vector<float> routes;                               // TopCollector's rejected routing beam
  std::vector<std::pair<float, hnswlib::tableint>> held;   // rejected nodes the routing beam turned away
  std::vector<std::pair<float, hnswlib::tableint>> seeds;  // admitted nodes the upper layers evaluated
  std::size_t distances = 0;                               // distance evaluations of the last walk
  std::vector<std::int8_t> code;                           // the query's int8 code (int8 walk)
};

// Admit policies: which visited nodes may enter the result set (all are still traversed).
struct AdmitAll {
  bool operator()(hnswlib::tableint) const { return true; }
};
struct AdmitLive {
  const Graph& g;
  bool operator()(hnswlib::tableint s) const { return !g.isMarkedDeleted(s); }
};

// Below this admitted share a filtered walk's rejected routing beam is so wide (ef * 126) that it
// is as good as unbounded: small allowed sets need the whole walk to find their k.
constexpr double kMinRoutedShare = 1.0 / 64;

// A Filter compiled for one search call. ids: a bitmap over slots when the id set is small
// enough to map up front, else the label is hashed; groups: the hash set on the slot's group (no
// label lookup).
class SlotFilter {
 public:
  SlotFilter(const Graph& g, const HnswIndex::SlotMeta* slots, std::size_t n_slots, const Filter& f, std::size_t nq)
      : g_(g), slots_(slots), f_(f), any_deleted_(g.num_deleted_ != 0) {
    if (f.ids && f.ids->size() <= std::max<std::size_t>(4096, 1024 * nq)) {
      bits_.assign((n_slots + 63) / 64, 0);
      std::lock_guard<std::mutex> l(g.label_lookup_lock);
      for (std::uint64_t id : *f.ids) {
        auto it = g.label_lookup_.find(id);
        if (it == g.label_lookup_.end()) continue;
        const hnswlib::tableint s = it->second;
        // Only live slots: a deleted slot may be recycled for another label during this call.
        if (s < n_slots && !g.isMarkedDeleted(s) && slots[s].live.load(std::memory_order_acquire))
          bits_[s >> 6] |= std::uint64_t{1} << (s & 63);
      }
      use_bits_ = true;
    }
    // The share of the graph's slots the filter admits, from an even sample of them.
    const std::size_t used = std::min<std::size_t>(g.cur_element_count, n_slots);
    const std::size_t n_sample = std::min<std::size_t>(used, kShareSample);
    std::size_t admitted = 0;
    for (std::size_t i = 0; i < n_sample; ++i) admitted += (*this)(static_cast<hnswlib::tableint>(i * used / n_sample));
    share_ = n_sample ? static_cast<double>(admitted) / static_cast<double>(n_sample) : 1.0;
  }
  double admitted_share() const { return share_; }
  bool operator()(hnswlib::tableint s) const {
    if (any_deleted_ && g_.isMarkedDeleted(s)) return false;
    if (use_bits_) {
      if (!((bits_[s >> 6] >> (s & 63)) & 1u)) return false;
    } else if (f_.ids && !f_.ids->count(g_.getExternalLabel(s))) {
      return false;
    }
    if (!f_.groups) return true;
    const HnswIndex::SlotMeta& m = slots_[s];
    if (!m.live.load(std::memory_order_acquire)) return false;
    return f_.groups->count(m.group.load(std::memory_order_relaxed)) != 0;
  }

 private:
  const Graph& g_;
  const HnswIndex::SlotMeta* slots_;
  const Filter& f_;
  bool any_deleted_;
  std::vector<std::uint64_t> bits_;
  bool use_bits_ = false;
  double share_ = 1.0;
  static constexpr std::size_t kShareSample = 1024;
};

// The graph's entry point and the level to descend from, or nullopt while it has none. Walks run
// concurrently with hnswlib's addPoint, which publishes the first element (cur_element_count 1)
// before it sets the entry point, and a new top level (maxlevel_) apart from its node: a walk
// that read the count alone dereferenced node 2^32-1, and one that paired a new maxlevel_ with
// the old entry point would read a level that node does not have. So the entry point is read
// once, atomically, and the descent starts at the lower of maxlevel_ and its own level.
std::optional<std::pair<hnswlib::tableint, int>> entry_point(const Graph& g) {
  const hnswlib::tableint ep = __atomic_load_n(&g.enterpoint_node_, __ATOMIC_ACQUIRE);
  if (ep == static_cast<hnswlib::tableint>(-1) || ep >= g.max_elements_) return std::nullopt;
  const int top = __atomic_load_n(&g.maxlevel_, __ATOMIC_ACQUIRE);
  return std::make_pair(ep, std::min(top, g.element_levels_[ep]));
}

// Greedy descent through the upper layers from entry point ep at level top; returns the layer-0
// entry point and its distance.
template <class OnUpper>
std::pair<hnswlib::tableint, float> descend(const Graph& g, const DistFn& dist, const WalkQuery& q,
                                            hnswlib::tableint ep, int top, const OnUpper& on_upper) {
  hnswlib::tableint cur = ep;
  float cur_d = dist(q, cur);
  for (int level = top; level > 0; --level) {
    bool changed = true;
    while (changed) {
      changed = false;
      const unsigned int* ll = g.get_linklist(cur, level);
      const int n = g.getListCount(const_cast<unsigned int*>(ll));
      const hnswlib::tableint* nb = reinterpret_cast<const hnswlib::tableint*>(ll + 1);
      for (int i = 0; i < n; ++i) {
        if (i + 1 < n) __builtin_prefetch(dist.addr(nb[i + 1]), 0, 3);
        const float d = dist(q, nb[i]);
        on_upper(d, nb[i]);
        if (d < cur_d) {
          cur_d = d;
          cur = nb[i];
          changed = true;
        }
      }
    }
  }
  return {cur, cur_d};
}

// Result policies for search_layer0. bound(): distance a node must beat to be expanded, and the
// walk stops at the first candidate beyond it (+inf while the beam is not full); offer_bound():
// distance a visited node must beat to be offered at all (>= bound()); offer(d, x): a visited
// node with d < offer_bound(), returns whether the walk should expand x.
template <class Admit>
struct TopCollector {
  // The walk's beam is the ef closest admitted nodes (hnswlib's top_candidates); the results are
  // the `keep` = max(ef, k) closest admitted nodes of every node the walk evaluated. With ef >= k
  // the two are the same set (hnswlib's algorithm). With ef < k the beam is narrower than the
  // answer: the walk stops earlier, and the k results still come from everything it evaluated
  // (tens of neighbours per expanded node), which is what makes low-recall/high-QPS settings
  // reachable on a dense graph whose ef = k already gives recall ~0.98.
  //
  // Nodes the filter rejects route the walk but never fill results, and routing through them is
  // bounded: one is expanded only while it is among the `route` closest rejected nodes the walk
  // has seen (a beam of its own, like faiss's ef-bounded candidate queue). Without it, a query
  // whose neighbourhood the filter excludes (its own video under a group filter: hundreds of
  // near-identical frames) expanded every rejected node closer than the keep-th admitted one,
  // i.e. the whole excluded video, before the admitted bound existed. The rejected nodes turned
  // away are held, and handed back to the walk if it runs dry before `keep` results exist, so k
  // results still come back whenever k are reachable.
  static constexpr bool kSeedsFromUpperLayers = std::is_same_v<Admit, SlotFilter>;
  std::size_t ef;
  std::size_t keep;
  std::size_t route;
  const Admit& admit;
  std::vector<std::pair<float, hnswlib::tableint>>& top;       // max-heap, up to `keep`
  std::vector<float>& beam;                                    // max-heap of distances, up to ef (ef < keep only)
  std::vector<float>& routes;                                  // max-heap of rejected distances, up to `route`
  std::vector<std::pair<float, hnswlib::tableint>>& held;      // turned away while top is not full
  float lower = std::numeric_limits<float>::infinity();        // keep-th best admitted
  float beam_lower = std::numeric_limits<float>::infinity();   // ef-th best admitted
  float route_lower = std::numeric_limits<float>::infinity();  // route-th best rejected
  // Until `keep` results exist the walk goes on (so k results come back whenever k are reachable).
  float bound() const { return ef < keep && top.size() >= keep ? beam_lower : lower; }
  float offer_bound() const { return lower; }
  bool offer(float d, hnswlib::tableint x) {
    if (!admit(x)) return offer_rejected(d, x);
    const bool expand = d < bound();
    top.emplace_back(d, x);
    std::push_heap(top.begin(), top.end());
    if (top.size() > keep) {
      std::pop_heap(top.begin(), top.end());
      top.pop_back();
    }
    if (top.size() >= keep) lower = top.front().first;
    if (ef < keep && expand) {
      beam.push_back(d);
      std::push_heap(beam.begin(), beam.end());
      if (beam.size() > ef) {
        std::pop_heap(beam.begin(), beam.end());
        beam.pop_back();
      }
      if (beam.size() >= ef) beam_lower = beam.front();
    }
    return expand;
  }
  bool offer_rejected(float d, hnswlib::tableint x) {
    if (d >= bound()) return false;
    if (route == std::numeric_limits<std::size_t>::max()) return true;  // unbounded (no filter)
    if (d >= route_lower) {
      if (top.size() < keep) held.emplace_back(d, x);
      return false;
    }
    routes.push_back(d);
    std::push_heap(routes.begin(), routes.end());
    if (routes.size() > route) {
      std::pop_heap(routes.begin(), routes.end());
      routes.pop_back();
    }
    if (routes.size() >= route) route_lower = routes.front();
    return true;
  }
  // The walk ran dry: while results are missing, the held rejected nodes become candidates
  // (unbounded from here on). Returns whether any did.
  bool resume(std::vector<std::pair<float, hnswlib::tableint>>& cand) {
    if (top.size() >= keep || held.empty()) return false;
    route = std::numeric_limits<std::size_t>::max();
    route_lower = std::numeric_limits<float>::infinity();
    cand.insert(cand.end(), held.begin(), held.end());
    held.clear();
    std::make_heap(cand.begin(), cand.end(), std::greater<std::pair<float, hnswlib::tableint>>());
    return true;
  }
};

// Group-by: the best admitted node of each of up to ef distinct groups. Groups compete on their
// best distance; bound() is the ef-th group's best, much tighter on video data than the ef-th
// frame (near-identical frames of one video would otherwise fill the result set). Kept in a
// small flat array: ef is tens of groups, and a linear scan of it is cheaper than any map.
// Frames per kept group that a walk on a copy re-ranks exactly at the end: consecutive frames of
// one video can differ by less than the copy's rounding (int8: ~1e-3), so the walk's best frame
// of a group is not always its exact best; the runners-up it saw are.
constexpr std::size_t kGroupCandidates = 4;

struct GroupEntry {
  float dist;
  std::uint64_t group;
  hnswlib::tableint slot;
  std::uint32_t n_more = 0;  // runners-up kept in `more` (tracked only for a walk on a copy)
  std::array<std::pair<float, hnswlib::tableint>, kGroupCandidates - 1> more;

  void add_runner_up(float d, hnswlib::tableint x) {
    if (n_more < more.size()) {
      more[n_more++] = {d, x};
      return;
    }
    auto worst = std::max_element(more.begin(), more.end());
    if (d < worst->first) *worst = {d, x};
  }
};
inline bool group_before(const GroupEntry& a, const GroupEntry& b) {
  return a.dist < b.dist || (a.dist == b.dist && a.group < b.group);
}

template <class Admit>
struct GroupBestCollector {
  using Entry = GroupEntry;
  static constexpr bool kSeedsFromUpperLayers = false;
  std::size_t ef;
  const Admit& admit;
  const HnswIndex::SlotMeta* slots;
  std::vector<Entry>& kept;
  bool track_runners_up;  // the walk reads a copy: keep each group's runners-up for the exact re-rank
  std::size_t worst = 0;
  float lower = std::numeric_limits<float>::infinity();

  static bool before(const Entry& a, const Entry& b) { return group_before(a, b); }
  bool resume(std::vector<std::pair<float, hnswlib::tableint>>&) { return false; }  // rejected nodes all route
  float bound() const { return lower; }
  float offer_bound() const { return lower; }
  void find_worst() {
    worst = 0;
    for (std::size_t i = 1; i < kept.size(); ++i)
      if (before(kept[worst], kept[i])) worst = i;
    lower = kept.size() >= ef ? kept[worst].dist : std::numeric_limits<float>::infinity();
  }
  // Every frame closer than bound() is expanded, also one that does not improve its group's
  // best: cutting those (an expansion budget per group) measured up to 1.9x faster at equal
  // group recall on static-shot data, but then the reported frame of a group is sometimes not
  // its best one (4% of results), which the semantics of search_groups rule out.
  bool offer(float d, hnswlib::tableint x) {
    if (!admit(x)) return true;
    const HnswIndex::SlotMeta& m = slots[x];
    if (!m.live.load(std::memory_order_acquire)) return true;  // not yet published by add()
    const std::uint64_t group = m.group.load(std::memory_order_relaxed);
    for (Entry& e : kept) {
      if (e.group != group) continue;
      if (d < e.dist) {
        if (track_runners_up) e.add_runner_up(e.dist, e.slot);
        e.dist = d;
        e.slot = x;
        find_worst();
      } else if (track_runners_up) {
        e.add_runner_up(d, x);
      }
      return true;
    }
    const Entry cand{d, group, x};
    if (kept.size() < ef) {
      kept.push_back(cand);
      find_worst();
    } else if (before(cand, kept[worst])) {
      kept[worst] = cand;
      find_worst();
    }
    return true;
  }
};

// After a walk on a copy: a group's exact best frame among the frames the walk ranked highest
// (its pick and runners-up), so the copy's rounding does not pick a near-identical frame over a
// better one the walk saw.
void settle_group_exact(const DistFn& dist, const float* q, GroupEntry& ge) {
  ge.dist = dist.exact(q, ge.slot);
  for (std::uint32_t j = 0; j < ge.n_more; ++j) {
    const hnswlib::tableint s = ge.more[j].second;
    const float d = dist.exact(q, s);
    if (d < ge.dist || (d == ge.dist && s < ge.slot)) ge.dist = d, ge.slot = s;
  }
}

// Best-first search of layer 0 from the upper layers' entry point. Every visited node is offered
// to the collector; non-admitted nodes route the walk (TopCollector bounds how many). A filtered
// k-NN walk also starts from the admitted nodes the greedy descent evaluated on the upper layers:
// when the filter excludes the query's neighbourhood (its own video), they are admitted nodes
// near the query that the layer-0 walk would otherwise reach only through the excluded region.
template <class Collector>
void search_layer0(const Graph& g, const DistFn& dist, const WalkQuery& q, Collector& coll, Scratch& sc) {
  using hnswlib::tableint;
  sc.cand.clear();
  const auto entry = entry_point(g);
  if (!entry) return;
  sc.seeds.clear();
  auto [ep, ep_d] = descend(g, dist, q, entry->first, entry->second, [&](float d, tableint x) {
    if (Collector::kSeedsFromUpperLayers && coll.admit(x)) sc.seeds.emplace_back(d, x);
  });
  hnswlib::VisitedList* vl = g.visited_list_pool_->getFreeVisitedList();
  hnswlib::vl_type* visited = vl->mass;
  const hnswlib::vl_type mark = vl->curV;
  const std::size_t vec_bytes = dist.bytes();
  auto by_dist_gt = std::greater<std::pair<float, tableint>>();
  coll.offer(ep_d, ep);  // the entry point is expanded whatever the collector says
  sc.cand.emplace_back(ep_d, ep);
  visited[ep] = mark;
  sc.distances = 1;
  for (const auto& [d, x] : sc.seeds) {
    if (visited[x] == mark) continue;
    visited[x] = mark;
    if (d < coll.offer_bound() && coll.offer(d, x)) {
      sc.cand.emplace_back(d, x);
      std::push_heap(sc.cand.begin(), sc.cand.end(), by_dist_gt);
    }
  }
  do {
    while (!sc.cand.empty()) {
      const auto [cd, c] = sc.cand.front();
      if (cd > coll.bound()) break;
      std::pop_heap(sc.cand.begin(), sc.cand.end(), by_dist_gt);
      sc.cand.pop_back();
      const unsigned int* ll = g.get_linklist0(c);
      const std::size_t n = g.getListCount(const_cast<unsigned int*>(ll));
      const tableint* nb = reinterpret_cast<const tableint*>(ll + 1);
      // Pass 1: mark and collect the unvisited neighbours, touching the first line of each vector.
      sc.fresh.clear();
      for (std::size_t j = 0; j < n; ++j) {
        const tableint x = nb[j];
        if (visited[x] == mark) continue;
        visited[x] = mark;
        sc.fresh.push_back(x);
        __builtin_prefetch(dist.addr(x), 0, 3);
      }
      // Pass 2: distances, with the rows of the next neighbours prefetched (prefetch_ahead).
      const std::size_t m = sc.fresh.size();
      const auto fresh_row = [&](std::size_t i) { return dist.addr(sc.fresh[i]); };
      for (std::size_t j = 0; j < m; ++j) {
        const tableint x = sc.fresh[j];
        prefetch_ahead(j, m, fresh_row, vec_bytes);
        const float d = dist(q, x);
        if (d < coll.offer_bound() && coll.offer(d, x)) {
          sc.cand.emplace_back(d, x);
          std::push_heap(sc.cand.begin(), sc.cand.end(), by_dist_gt);
          __builtin_prefetch(g.get_linklist0(sc.cand.front().second), 0, 3);
        }
      }
      sc.distances += m;
    }
  } while (coll.resume(sc.cand));
  g.visited_list_pool_->releaseVisitedList(vl);
}

// How many rejected nodes a filtered k-NN walk of beam width ef routes through (TopCollector):
// twice as many as an unbounded walk meets on its way to ef admitted ones when the rejected nodes
// are spread evenly (ef * (1 - share) / share). So a random filter walks as before (measured: the
// same recall and distance evaluations per ef at 50 %; once as many, recall 0.980 instead of 0.992
// at ef 12), while a filter that excludes the query's whole neighbourhood (its own video) no
// longer expands all of it. Only for filters (deleted nodes route unbounded, as before).
constexpr double kRouteSlack = 2.0;
template <class Admit>
std::size_t route_width(std::size_t, const Admit&) {
  return std::numeric_limits<std::size_t>::max();
}
std::size_t route_width(std::size_t ef, const SlotFilter& f) {
  const double share = std::max(f.admitted_share(), kMinRoutedShare);
  return std::max<std::size_t>(
      1, static_cast<std::size_t>(kRouteSlack * static_cast<double>(ef) * (1.0 - share) / share + 0.5));
}

template <class Admit>
void search_knn(const Graph& g, const DistFn& dist, const WalkQuery& q, std::size_t ef, std::size_t k,
                const Admit& admit, Scratch& sc) {
  sc.top.clear();
  sc.beam.clear();
  sc.routes.clear();
  sc.held.clear();
  TopCollector<Admit> coll{ef, std::max(ef, k), route_width(ef, admit), admit, sc.top, sc.beam, sc.routes, sc.held};
  search_layer0(g, dist, q, coll, sc);
}

// After a walk on the copy: the float32 distance of every kept result (the order may change in
// near-ties).
void rerank_exact(const DistFn& dist, const float* q, Scratch& sc) {
  if (!dist.copy) return;
  // The float32 rows are cold (the walk read the copy): fetch the next ones while computing.
  const std::size_t n = sc.top.size();
  const auto result_row = [&](std::size_t i) { return dist.g->getDataByInternalId(sc.top[i].second); };
  for (std::size_t j = 0; j < n; ++j) {
    prefetch_ahead(j, n, result_row, dist.dim * sizeof(float));
    sc.top[j].first = dist.exact(q, sc.top[j].second);
  }
}

// Writes the k best of sc.top (ascending distance, ties by slot) as labels; returns how many.
std::size_t emit_topk(const Graph& g, Scratch& sc, std::size_t k, std::uint64_t* ids, float* dist) {
  std::sort(sc.top.begin(), sc.top.end());
  const std::size_t got = std::min(k, sc.top.size());
  for (std::size_t j = 0; j < got; ++j) {
    ids[j] = g.getExternalLabel(sc.top[j].second);
    dist[j] = sc.top[j].first;
  }
  return got;
}

void pad(std::uint64_t* ids, float* dist, std::size_t from, std::size_t k) {
  for (std::size_t j = from; j < k; ++j) {
    ids[j] = kNoId;
    dist[j] = std::numeric_limits<float>::infinity();
  }
}

// ------------------------------------------------------------------------------------------
// File format (little-endian, as written by this machine; foreign-endian files fail the magic):
//   Header  magic "FSEEKHNS" | u32 version | u32 dim | u32 metric | u32 reserved |
//           u64 M | u64 ef_construction | u64 ef | u64 seed | u64 capacity |
//           u64 n_live | u64 graph_bytes
//   Payload the graph (graph_bytes: hnswlib 0.8's saveIndex layout, see hnsw_graph_check.hpp) |
//           n_live x (u64 id, u64 group)
//           (version 1 rows also held a u32 tag per vector, never used: read, then dropped)
//           version 3: | u32 walk precision | u32 reserved | u64 stride | the walk copy of every
//           slot the graph holds (stride bytes each; none for float32), so that a load does not
//           re-quantise every vector (1M x 512: ~1.2 s of a restart on 2 cores)
//   Trailer u32 CRC-32 (IEEE, as zlib's) of everything from `version` up to the trailer.
constexpr char kMagic[8] = {'F', 'S', 'E', 'E', 'K', 'H', 'N', 'S'};
constexpr std::uint32_t kFormatVersion = 3;
constexpr std::uint32_t kOldestFormatVersion = 1;
constexpr std::uint32_t kFirstVersionWithWalkCopy = 3;

#pragma pack(push, 1)
struct FileHeader {
  char magic[8];
  std::uint32_t version, dim, metric, reserved;
  std::uint64_t M, ef_construction, ef, seed, capacity, n_live, graph_bytes;
};
struct FileRow {
  std::uint64_t id, group;
};
struct FileRowV1 {
  std::uint64_t id, group;
  std::uint32_t tag;
};
struct WalkSectionHeader {
  std::uint32_t precision, reserved;
  std::uint64_t stride;
};
#pragma pack(pop)

// CRC-32 (IEEE) by zlib (its braided implementation: ~3 GB/s per core here, against ~1 GB/s for a
// table-driven loop); long inputs are split across cores and joined with crc32_combine.
class Crc32 {
 public:
  void update(const void* data, std::size_t n) {
    auto* p = static_cast<const Bytef*>(data);
    while (n > 0) {
      const auto chunk = static_cast<uInt>(std::min<std::size_t>(n, std::size_t{1} << 30));
      crc_ = ::crc32(crc_, p, chunk);
      p += chunk;
      n -= chunk;
    }
  }
  // The CRC of `len` more bytes whose own CRC (from 0) is `crc`.
  void append(std::uint32_t crc, std::uint64_t len) { crc_ = ::crc32_combine(crc_, crc, static_cast<z_off_t>(len)); }
  std::uint32_t value() const { return static_cast<std::uint32_t>(crc_); }

 private:
  uLong crc_ = ::crc32(0, nullptr, 0);
};

// Unique temp path next to `base` (same filesystem, so rename() is atomic).
std::string temp_name(const std::string& base, const char* what) {
  static std::atomic<unsigned> counter{0};
  return base + "." + what + "." + std::to_string(::getpid()) + "." + std::to_string(counter++) + ".tmp";
}

struct FdCloser {
  int fd;
  ~FdCloser() {
    if (fd >= 0) ::close(fd);
  }
};

void write_all(int fd, const void* data, std::size_t n, Crc32* crc, const std::string& path) {
  auto* p = static_cast<const char*>(data);
  if (crc) crc->update(p, n);
  while (n > 0) {
    ssize_t w = ::write(fd, p, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      throw std::runtime_error("HnswIndex.save: cannot write " + path + ": " + std::strerror(errno));
    }
    p += w;
    n -= static_cast<std::size_t>(w);
  }
}

[[noreturn]] void bad_file(const std::string& path, const std::string& why) {
  throw std::invalid_argument("HnswIndex.load: " + path + ": " + why);
}

}  // namespace

// ---------------------------------------------------------------------------------------------
HnswIndex::HnswIndex(std::size_t dim, Metric metric, HnswParams params)
    : dim_(dim), metric_(metric), params_(params), space_(std::make_unique<KernelSpace>(dim, metric)) {
  if (dim == 0 || dim > 65536) throw std::invalid_argument("dim must be in [1, 65536]");
  if (params.M < 2 || params.M > 2048) throw std::invalid_argument("M must be in [2, 2048]");
  if (params.ef_construction < 1) throw std::invalid_argument("ef_construction must be >= 1");
}

HnswIndex::HnswIndex(std::size_t dim, Metric metric, std::size_t max_elements, HnswParams params)
    : HnswIndex(dim, metric, params) {
  hnsw_ = std::make_unique<Graph>(space_.get(), std::max<std::size_t>(max_elements, 1), params.M,
                                  params.ef_construction, params.seed, /*allow_replace_deleted=*/true);
  advise_huge_pages(hnsw_->data_level0_memory_, level0_bytes(*hnsw_));
  hnsw_->setEf(ef_);
  resize_slots(hnsw_->max_elements_);
}

HnswIndex::~HnswIndex() = default;

std::size_t HnswIndex::ef() const {
  std::shared_lock<std::shared_mutex> lock(mutex_);
  return ef_;
}

void HnswIndex::set_ef(std::size_t ef) {
  if (ef < 1) throw std::invalid_argument("ef must be >= 1");
  std::unique_lock<std::shared_mutex> lock(mutex_);  // searchKnn reads hnsw_->ef_ unlocked
  ef_ = ef;
  hnsw_->setEf(ef);
}

std::size_t HnswIndex::capacity() const {
  std::shared_lock<std::shared_mutex> lock(mutex_);
  return hnsw_->max_elements_;
}

std::size_t HnswIndex::size() const {
  std::shared_lock<std::shared_mutex> lock(mutex_);
  return meta_.size();
}

std::size_t HnswIndex::deleted_slots() const {
  std::shared_lock<std::shared_mutex> lock(mutex_);
  return hnsw_->num_deleted_;
}

bool HnswIndex::contains(std::uint64_t id) const {
  std::shared_lock<std::shared_mutex> lock(mutex_);
  return meta_.count(id) != 0;
}

void HnswIndex::get_vectors(const std::uint64_t* ids, std::size_t n, float* out) const {
  // The shared lock keeps remove() (exclusive) from freeing a slot while it is copied, and add()
  // only fills free or deleted slots, so a live id's data cannot change under us.
  std::shared_lock<std::shared_mutex> lock(mutex_);
  std::vector<hnswlib::tableint> slots(n);
  {
    std::lock_guard<std::mutex> l(hnsw_->label_lookup_lock);
    for (std::size_t i = 0; i < n; ++i) {
      auto it = hnsw_->label_lookup_.find(ids[i]);
      if (it == hnsw_->label_lookup_.end() || hnsw_->isMarkedDeleted(it->second) || !meta_.count(ids[i]))
        throw std::invalid_argument("id " + std::to_string(ids[i]) + " is not in the index");
      slots[i] = it->second;
    }
  }
  for (std::size_t i = 0; i < n; ++i) {
    const auto* src = reinterpret_cast<const float*>(hnsw_->getDataByInternalId(slots[i]));
    std::copy(src, src + dim_, out + i * dim_);
  }
}

void HnswIndex::grow_for(std::size_t n_new) {
  // Slots a batch can use: never-used ones plus deleted ones (replace_deleted reuses them).
  const std::size_t cap = hnsw_->max_elements_;
  const std::size_t used = hnsw_->cur_element_count;
  const std::size_t reusable = hnsw_->num_deleted_;
  const std::size_t free_slots = cap - used + reusable;
  if (n_new <= free_slots) return;
  // Grow geometrically so a stream of small adds costs amortised O(1) copies per vector.
  std::size_t want = std::max(cap + (n_new - free_slots), cap + cap / 2);
  hnsw_->resizeIndex(want);
  advise_huge_pages(hnsw_->data_level0_memory_, level0_bytes(*hnsw_));
  resize_slots(want);
}

void HnswIndex::resize_slots(std::size_t cap, bool huge_now) {
  if (cap == slots_cap_) return;
  std::unique_ptr<SlotMeta[]> fresh(new SlotMeta[cap]);
  const std::size_t keep = std::min(cap, slots_cap_);
  for (std::size_t i = 0; i < keep; ++i) {
    fresh[i].group.store(slots_[i].group.load(std::memory_order_relaxed), std::memory_order_relaxed);
    fresh[i].live.store(slots_[i].live.load(std::memory_order_relaxed), std::memory_order_relaxed);
  }
  slots_ = std::move(fresh);
  resize_copy(cap, huge_now);
  slots_cap_ = cap;
}

void HnswIndex::AlignedDelete::operator()(std::uint8_t* p) const {
  ::operator delete[](p, std::align_val_t{kCopyAlign});
}

std::size_t HnswIndex::copy_stride() const {
  switch (walk_) {
    case WalkPrecision::Float16:
      return dim_ * sizeof(std::uint16_t);
    case WalkPrecision::Int8:
      return (dim_ + 2 * sizeof(float) + 63) / 64 * 64;  // codes, scale, squared norm; whole lines
    default:
      return 0;
  }
}

void HnswIndex::resize_copy(std::size_t cap, bool huge_now) {
  const std::size_t stride = copy_stride();
  if (stride == 0) {
    copy_.reset();
    copy_cap_ = 0;
    return;
  }
  const std::size_t bytes = std::max<std::size_t>(cap, 1) * stride;
  std::unique_ptr<std::uint8_t[], AlignedDelete> fresh(
      static_cast<std::uint8_t*>(::operator new[](bytes, std::align_val_t{kCopyAlign})));
  if (huge_now) advise_huge_pages(fresh.get(), bytes);  // before the first touch: faults in as huge pages
  if (copy_) std::memcpy(fresh.get(), copy_.get(), std::min(cap, copy_cap_) * stride);
  copy_ = std::move(fresh);
  copy_cap_ = cap;
}

void HnswIndex::set_walk_precision(WalkPrecision p) {
  std::lock_guard<std::mutex> add_lock(add_mutex_);
  std::unique_lock<std::shared_mutex> lock(mutex_);
  if (p == walk_) return;
  walk_ = p;
  copy_.reset();
  copy_cap_ = 0;
  resize_copy(slots_cap_);
  fill_copy();
}

// Writes every occupied slot (removed ones too: they still route walks); falls back to Float32
// when a vector does not fit the copy. Caller holds mutex_ exclusively (or owns the index alone).
void HnswIndex::fill_copy() {
  if (!copy_) return;
  const std::size_t used = hnsw_ ? hnsw_->cur_element_count.load() : 0;
  std::atomic<bool> all_in_range{true};  // on every core: a restart waits for this (1M x 512: ~3 s on one)
  parallel_for(used, default_threads(), [&](std::size_t b, std::size_t e) {
    bool ok = true;
    for (std::size_t s = b; s < e && ok; ++s)
      ok = write_copy(s, reinterpret_cast<const float*>(hnsw_->getDataByInternalId(s)));
    if (!ok) all_in_range.store(false);
  });
  if (!all_in_range.load()) {
    walk_ = WalkPrecision::Float32;
    resize_copy(0);
  }
}

namespace {
constexpr float kHalfMax = 65504.0f;  // largest finite fp16
constexpr float kInt8MaxAbs = 1e17f;  // keeps the float32 squared norm finite for any dim < 3e4
}  // namespace

bool HnswIndex::copy_holds(const float* vectors, std::size_t n) const {
  if (walk_ == WalkPrecision::Float32) return true;
  const float limit = walk_ == WalkPrecision::Float16 ? kHalfMax : kInt8MaxAbs;
  for (std::size_t i = 0; i < n * dim_; ++i)
    if (std::fabs(vectors[i]) > limit) return false;
  return true;
}

bool HnswIndex::write_copy(std::size_t slot, const float* vec) {
  std::uint8_t* row = copy_.get() + slot * copy_stride();
  if (walk_ == WalkPrecision::Float16) {
    auto* h = reinterpret_cast<std::uint16_t*>(row);
    for (std::size_t i = 0; i < dim_; ++i) h[i] = float_to_half(vec[i]);
  } else {
    const float scale = quantize_i8(vec, dim_, reinterpret_cast<std::int8_t*>(row));
    const float norm = kernels().dot(vec, vec, dim_);
    std::memcpy(row + dim_, &scale, sizeof scale);
    std::memcpy(row + dim_ + sizeof scale, &norm, sizeof norm);
  }
  return copy_holds(vec, 1);  // the same rule as add()'s check
}

void HnswIndex::publish_slot(std::uint64_t id, const Meta& m, const float* vec) {
  hnswlib::tableint slot;
  {
    std::lock_guard<std::mutex> l(hnsw_->label_lookup_lock);
    auto it = hnsw_->label_lookup_.find(id);
    if (it == hnsw_->label_lookup_.end()) return;
    slot = it->second;
  }
  if (copy_ && vec) write_copy(slot, vec);
  SlotMeta& sm = slots_[slot];
  sm.group.store(m.group, std::memory_order_relaxed);
  sm.live.store(1, std::memory_order_release);  // pairs with the acquire in SlotFilter
}

void HnswIndex::add(const std::uint64_t* ids, const float* vectors, std::size_t n, const std::uint64_t* groups,
                    std::size_t threads) {
  if (n == 0) return;
  for (std::size_t i = 0; i < n * dim_; ++i)
    if (!std::isfinite(vectors[i]))
      throw std::invalid_argument("vectors contain NaN or infinity (row " + std::to_string(i / dim_) + ")");

  std::lock_guard<std::mutex> add_lock(add_mutex_);
  std::vector<std::size_t> fresh;    // rows that go through replace_deleted / new slots
  std::vector<std::size_t> revived;  // rows whose id is still a deleted node of the graph
  {
    std::unique_lock<std::shared_mutex> lock(mutex_);
    std::unordered_set<std::uint64_t> batch;
    batch.reserve(n);
    for (std::size_t i = 0; i < n; ++i) {
      if (ids[i] == kNoId) throw std::invalid_argument("id 2**64-1 is reserved (NO_ID)");
      if (meta_.count(ids[i]) || !batch.insert(ids[i]).second)
        throw std::invalid_argument("duplicate id " + std::to_string(ids[i]));
    }
    // An id that was removed but whose node has not been recycled yet must go back into its own
    // node: hnswlib's replace_deleted would otherwise give it a second node and later, when the
    // old one is recycled, drop the label mapping of the live one.
    {
      std::lock_guard<std::mutex> l(hnsw_->label_lookup_lock);
      for (std::size_t i = 0; i < n; ++i) (hnsw_->label_lookup_.count(ids[i]) ? revived : fresh).push_back(i);
    }
    // The walk copy bounds magnitudes (fp16: 65504): beyond that it would route on infinities,
    // so such an index walks on its float32 vectors from now on.
    if (!copy_holds(vectors, n)) {
      walk_ = WalkPrecision::Float32;
      resize_copy(0);
    }
    grow_for(fresh.size());
    for (std::size_t i = 0; i < n; ++i) meta_[ids[i]] = Meta{groups ? groups[i] : ids[i]};
    for (std::size_t i : revived) {
      hnsw_->unmarkDelete(ids[i]);
      hnsw_->addPoint(vectors + i * dim_, ids[i], /*replace_deleted=*/false);  // = updatePoint
      publish_slot(ids[i], meta_[ids[i]], vectors + i * dim_);
    }
  }
  if (fresh.empty()) return;
  // Searches keep running while the graph grows: they share mutex_ with us and hnswlib locks
  // per node. Rows are interleaved across threads (row r -> thread r % T) rather than split in
  // contiguous blocks, so the threads work on different videos' worth of frames at once.
  try {
    std::shared_lock<std::shared_mutex> lock(mutex_);
    std::size_t t = threads == 0 ? default_threads() : threads;
    t = std::min(t, fresh.size());
    parallel_for(t, t, [&](std::size_t b, std::size_t e) {
      for (std::size_t w = b; w < e; ++w)
        for (std::size_t j = w; j < fresh.size(); j += t) {
          std::size_t i = fresh[j];
          hnsw_->addPoint(vectors + i * dim_, ids[i], /*replace_deleted=*/true);
          publish_slot(ids[i], Meta{groups ? groups[i] : ids[i]}, vectors + i * dim_);
        }
    });
    // Second pass once the whole batch is in (later frames are what prune earlier ones' links).
    parallel_for(t, t, [&](std::size_t b, std::size_t e) {
      for (std::size_t w = b; w < e; ++w)
        for (std::size_t j = w; j < fresh.size(); j += t) {
          std::size_t i = fresh[j];
          relink_if_unreachable(ids[i], vectors + i * dim_);
        }
    });
  } catch (...) {
    // Keep meta_ equal to the graph's live labels: forget the rows that did not make it.
    std::unique_lock<std::shared_mutex> lock(mutex_);
    std::lock_guard<std::mutex> l(hnsw_->label_lookup_lock);
    for (std::size_t i : fresh)
      if (!hnsw_->label_lookup_.count(ids[i])) meta_.erase(ids[i]);
    throw;
  }
}

// hnswlib's neighbour heuristic drops a candidate that is closer to an already kept neighbour
// than to the new node. On runs of near-identical video frames this prunes the in-links of
// earlier frames as later ones arrive, until short runs of frames only link to each other and no
// search reaches them: recall then plateaus (~0.96-0.97 recall@10 here) however large ef is.
// Repair, once the whole batch is in: look each new vector up again with a modest ef and give it
// in-links from the closest vectors that search reached. A full list gives up its link to its
// farthest neighbour (the link a search is least likely to need). Doing this for every new vector
// (kRelinkOnlyUnreachable = false) measured better than only for those the probe misses:
// 30k video-like vectors, M=32/efc=300, recall@10 at ef=64 0.974 -> 1.000 (only-missed: 0.993).
// Costs about one extra search per inserted vector. Caller holds mutex_ shared.
void HnswIndex::relink_if_unreachable(std::uint64_t id, const float* vec) {
  using hnswlib::tableint;
  tableint x;
  {
    std::lock_guard<std::mutex> l(hnsw_->label_lookup_lock);
    auto it = hnsw_->label_lookup_.find(id);
    if (it == hnsw_->label_lookup_.end()) return;
    x = it->second;
  }
  EfCondition cond(kRelinkEf);
  auto res = hnsw_->searchStopConditionClosest(vec, cond, nullptr);  // (dist, internal id)
  if (kRelinkOnlyUnreachable)
    for (const auto& r : res)
      if (r.second == x) return;
  std::size_t linked = 0;
  for (const auto& r : res) {
    if (linked == kRelinkFanIn) break;
    const auto y = static_cast<tableint>(r.second);
    if (y == x) continue;
    std::lock_guard<std::mutex> l(hnsw_->link_list_locks_[y]);
    hnswlib::linklistsizeint* ll = hnsw_->get_linklist0(y);
    const std::size_t n = hnsw_->getListCount(ll);
    auto* links = reinterpret_cast<tableint*>(ll + 1);
    if (std::find(links, links + n, x) != links + n) {
      ++linked;
      continue;
    }
    if (n < hnsw_->maxM0_) {
      links[n] = x;
      hnsw_->setListCount(ll, static_cast<unsigned short>(n + 1));
    } else {
      const char* yd = hnsw_->getDataByInternalId(y);
      std::size_t worst = 0;
      float worst_d = -std::numeric_limits<float>::infinity();
      for (std::size_t j = 0; j < n; ++j) {
        float d = hnsw_->fstdistfunc_(yd, hnsw_->getDataByInternalId(links[j]), hnsw_->dist_func_param_);
        if (d > worst_d) worst_d = d, worst = j;
      }
      links[worst] = x;
    }
    ++linked;
  }
}

std::size_t HnswIndex::remove(const std::uint64_t* ids, std::size_t n) {
  std::lock_guard<std::mutex> add_lock(add_mutex_);
  std::unique_lock<std::shared_mutex> lock(mutex_);
  std::size_t removed = 0;
  for (std::size_t i = 0; i < n; ++i) {
    auto it = meta_.find(ids[i]);
    if (it == meta_.end()) continue;
    hnsw_->markDelete(ids[i]);
    {
      std::lock_guard<std::mutex> l(hnsw_->label_lookup_lock);
      auto slot = hnsw_->label_lookup_.find(ids[i]);
      if (slot != hnsw_->label_lookup_.end()) slots_[slot->second].live.store(0, std::memory_order_release);
    }
    meta_.erase(it);
    ++removed;
  }
  return removed;
}

void HnswIndex::resize(std::size_t max_elements) {
  std::lock_guard<std::mutex> add_lock(add_mutex_);
  std::unique_lock<std::shared_mutex> lock(mutex_);
  if (max_elements < hnsw_->cur_element_count)
    throw std::invalid_argument("max_elements " + std::to_string(max_elements) + " is below the " +
                                std::to_string(hnsw_->cur_element_count.load()) +
                                " occupied slots (live + removed awaiting reuse)");
  hnsw_->resizeIndex(std::max<std::size_t>(max_elements, 1));
  resize_slots(hnsw_->max_elements_);
}

void HnswIndex::search(const float* queries, std::size_t nq, std::size_t k, std::size_t ef, const Filter* filter,
                       std::uint64_t* out_ids, float* out_dist, std::size_t threads,
                       std::uint64_t* out_distances) const {
  if (k == 0) throw std::invalid_argument("k must be >= 1");
  std::shared_lock<std::shared_mutex> lock(mutex_);
  if (filter && filter->empty()) filter = nullptr;
  // ef is the walk's beam width; it may be below k (see TopCollector): k results are returned all
  // the same, the k best of every node the walk evaluated.
  const std::size_t ef_eff = ef == 0 ? ef_ : ef;
  const Graph& g = *hnsw_;
  const DistFn dist = make_dist(g, metric_, copy_.get(), copy_stride(), walk_);
  // Built once per call, shared read-only by every thread and query of the batch.
  std::unique_ptr<SlotFilter> sf;
  if (filter) sf = std::make_unique<SlotFilter>(g, slots_.get(), slots_cap_, *filter, nq);
  const bool any_deleted = g.num_deleted_ != 0;
  parallel_for(nq, threads, [&](std::size_t b, std::size_t e) {
    Scratch sc;
    sc.code.resize(dim_);
    for (std::size_t q = b; q < e; ++q) {
      const float* x = queries + q * dim_;
      const WalkQuery wq = dist.prepare(x, sc.code.data());
      if (sf)
        search_knn(g, dist, wq, ef_eff, k, *sf, sc);
      else if (any_deleted)
        search_knn(g, dist, wq, ef_eff, k, AdmitLive{g}, sc);
      else
        search_knn(g, dist, wq, ef_eff, k, AdmitAll{}, sc);
      if (out_distances) out_distances[q] = sc.distances;
      rerank_exact(dist, x, sc);
      const std::size_t got = emit_topk(g, sc, k, out_ids + q * k, out_dist + q * k);
      pad(out_ids + q * k, out_dist + q * k, got, k);
    }
  });
}

void HnswIndex::search_groups(const float* queries, std::size_t nq, std::size_t k, std::size_t ef, const Filter* filter,
                              std::uint64_t* out_groups, std::uint64_t* out_ids, float* out_dist,
                              std::size_t threads) const {
  if (k == 0) throw std::invalid_argument("k must be >= 1");
  std::shared_lock<std::shared_mutex> lock(mutex_);
  if (filter && filter->empty()) filter = nullptr;
  // Unlike search(), ef counts distinct groups here, and every frame of a kept group that is
  // closer than the ef-th group gets visited: on video data the cost grows with ef times the
  // frames per video, so the default is a small multiple of k, not the index's ef.
  const std::size_t ef_eff = std::max(ef == 0 ? HnswParams::kDefaultGroupEf : ef, k);
  const Graph& g = *hnsw_;
  const DistFn dist = make_dist(g, metric_, copy_.get(), copy_stride(), walk_);
  std::unique_ptr<SlotFilter> sf;
  if (filter) sf = std::make_unique<SlotFilter>(g, slots_.get(), slots_cap_, *filter, nq);
  const AdmitLive live{g};
  parallel_for(nq, threads, [&](std::size_t b, std::size_t e) {
    Scratch sc;
    sc.code.resize(dim_);
    std::vector<GroupEntry> kept;
    kept.reserve(ef_eff + 1);
    for (std::size_t q = b; q < e; ++q) {
      const float* x = queries + q * dim_;
      const WalkQuery wq = dist.prepare(x, sc.code.data());
      kept.clear();
      if (sf) {
        GroupBestCollector<SlotFilter> coll{ef_eff, *sf, slots_.get(), kept, dist.copy != nullptr};
        search_layer0(g, dist, wq, coll, sc);
      } else {
        GroupBestCollector<AdmitLive> coll{ef_eff, live, slots_.get(), kept, dist.copy != nullptr};
        search_layer0(g, dist, wq, coll, sc);
      }
      if (dist.copy)
        for (GroupEntry& ge : kept) settle_group_exact(dist, x, ge);
      std::sort(kept.begin(), kept.end(), group_before);
      std::uint64_t* og = out_groups + q * k;
      std::uint64_t* oi = out_ids + q * k;
      float* od = out_dist + q * k;
      const std::size_t got = std::min(k, kept.size());
      for (std::size_t j = 0; j < got; ++j) {
        og[j] = kept[j].group;
        oi[j] = g.getExternalLabel(kept[j].slot);
        od[j] = kept[j].dist;
      }
      pad(oi, od, got, k);
      for (std::size_t j = got; j < k; ++j) og[j] = kNoId;
    }
  });
}

// ---------------------------------------------------------------------------------------------
namespace {

// hnswlib 0.8's saveIndex header (detail::HnswlibHeader's fields, in its write order).
std::vector<char> graph_header_bytes(const Graph& g) {
  std::vector<char> out;
  out.reserve(detail::HnswlibHeader::kBytes);
  auto put = [&](const auto& v) {
    const char* p = reinterpret_cast<const char*>(&v);
    out.insert(out.end(), p, p + sizeof v);
  };
  const std::size_t cur = g.cur_element_count;
  put(g.offsetLevel0_), put(g.max_elements_), put(cur), put(g.size_data_per_element_), put(g.label_offset_);
  put(g.offsetData_), put(g.maxlevel_), put(g.enterpoint_node_), put(g.maxM_), put(g.maxM0_), put(g.M_);
  put(g.mult_), put(g.ef_construction_);
  return out;
}

// The upper-level link lists as saveIndex writes them: per element, u32 bytes + the lists.
std::vector<char> graph_link_bytes(const Graph& g) {
  std::vector<char> out;
  const std::size_t cur = g.cur_element_count;
  for (std::size_t i = 0; i < cur; ++i) {
    const int level = g.element_levels_[i];
    const auto bytes = static_cast<std::uint32_t>(level > 0 ? g.size_links_per_element_ * level : 0);
    const char* p = reinterpret_cast<const char*>(&bytes);
    out.insert(out.end(), p, p + sizeof bytes);
    if (bytes) out.insert(out.end(), g.linkLists_[i], g.linkLists_[i] + bytes);
  }
  return out;
}

bool read_at(int fd, void* dest, std::size_t n, std::uint64_t offset) {
  auto* p = static_cast<char*>(dest);
  while (n > 0) {
    const ssize_t r = ::pread(fd, p, n, static_cast<off_t>(offset));
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return false;
    p += r;
    n -= static_cast<std::size_t>(r);
    offset += static_cast<std::uint64_t>(r);
  }
  return true;
}

// Reads n bytes at `offset` into dest and adds them to crc: pieces read and checksummed on every
// core (each piece is checksummed while it is still in cache), joined in file order.
bool read_checked(int fd, void* dest, std::uint64_t n, std::uint64_t offset, Crc32& crc) {
  constexpr std::uint64_t kPiece = std::uint64_t{16} << 20;
  const std::size_t pieces = static_cast<std::size_t>((n + kPiece - 1) / kPiece);
  std::vector<std::uint32_t> crcs(pieces);
  std::atomic<bool> ok{true};
  parallel_for(pieces, default_threads(), [&](std::size_t b, std::size_t e) {
    for (std::size_t i = b; i < e && ok.load(std::memory_order_relaxed); ++i) {
      const std::uint64_t at = i * kPiece, len = std::min(kPiece, n - at);
      char* p = static_cast<char*>(dest) + at;
      if (!read_at(fd, p, static_cast<std::size_t>(len), offset + at)) {
        ok.store(false);
        return;
      }
      Crc32 piece;
      piece.update(p, static_cast<std::size_t>(len));
      crcs[i] = piece.value();
    }
  });
  if (!ok.load()) return false;
  for (std::size_t i = 0; i < pieces; ++i) crc.append(crcs[i], std::min(kPiece, n - i * kPiece));
  return true;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
void HnswIndex::save(const std::string& path) const {
  // add_mutex_ stops writers; the shared lock lets searches continue while we write.
  std::lock_guard<std::mutex> add_lock(add_mutex_);
  std::shared_lock<std::shared_mutex> lock(mutex_);
  const std::string out_tmp = temp_name(path, "part");
  struct Cleanup {
    std::vector<std::string> paths;
    ~Cleanup() {
      for (auto& p : paths) std::remove(p.c_str());
    }
  } cleanup{{out_tmp}};

  // The graph section is what hnswlib's saveIndex writes, taken from memory (no temp file).
  const Graph& g = *hnsw_;
  const std::size_t used = g.cur_element_count;
  const std::vector<char> graph_head = graph_header_bytes(g);
  const std::vector<char> links = graph_link_bytes(g);
  const std::uint64_t level0 = std::uint64_t(used) * g.size_data_per_element_;

  FileHeader h{};
  std::memcpy(h.magic, kMagic, sizeof kMagic);
  h.version = kFormatVersion;
  h.dim = static_cast<std::uint32_t>(dim_);
  h.metric = static_cast<std::uint32_t>(metric_);
  h.M = params_.M;
  h.ef_construction = params_.ef_construction;
  h.ef = ef_;
  h.seed = params_.seed;
  h.capacity = g.max_elements_;
  h.n_live = meta_.size();
  h.graph_bytes = graph_head.size() + level0 + links.size();

  int fd = ::open(out_tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) throw std::runtime_error("HnswIndex.save: cannot create " + out_tmp + ": " + std::strerror(errno));
  FdCloser closer{fd};
  Crc32 crc;
  write_all(fd, &h, sizeof kMagic, nullptr, out_tmp);
  write_all(fd, reinterpret_cast<const char*>(&h) + sizeof kMagic, sizeof h - sizeof kMagic, &crc, out_tmp);
  write_all(fd, graph_head.data(), graph_head.size(), &crc, out_tmp);
  write_all(fd, g.data_level0_memory_, static_cast<std::size_t>(level0), &crc, out_tmp);
  write_all(fd, links.data(), links.size(), &crc, out_tmp);
  std::vector<FileRow> rows;
  rows.reserve(meta_.size());
  for (const auto& [id, m] : meta_) rows.push_back(FileRow{id, m.group});
  std::sort(rows.begin(), rows.end(), [](const FileRow& a, const FileRow& b) { return a.id < b.id; });
  write_all(fd, rows.data(), rows.size() * sizeof(FileRow), &crc, out_tmp);
  const WalkSectionHeader walk{static_cast<std::uint32_t>(walk_), 0, copy_stride()};
  write_all(fd, &walk, sizeof walk, &crc, out_tmp);
  if (copy_) write_all(fd, copy_.get(), used * copy_stride(), &crc, out_tmp);
  std::uint32_t sum = crc.value();
  write_all(fd, &sum, sizeof sum, nullptr, out_tmp);
  if (::fsync(fd) != 0) throw std::runtime_error("HnswIndex.save: fsync failed: " + std::string(std::strerror(errno)));
  closer.fd = -1;
  if (::close(fd) != 0) throw std::runtime_error("HnswIndex.save: close failed: " + std::string(std::strerror(errno)));
  if (std::rename(out_tmp.c_str(), path.c_str()) != 0)
    throw std::runtime_error("HnswIndex.save: cannot rename to " + path + ": " + std::strerror(errno));
  cleanup.paths.pop_back();  // out_tmp is now `path`
  // Make the rename itself durable.
  std::string dir = std::filesystem::absolute(path).parent_path().string();
  int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
}

// Reads the file straight into the structures that serve searches: hnswlib's layer-0 block (huge-
// page aligned, in place of hnswlib's loadIndex, which needs a path and re-reads it), the link
// lists, the id table and (format 3) the walk copy; the pieces are read and checksummed on every
// core. Nothing read is trusted before the checksum matched and the graph passed its checks.
std::unique_ptr<HnswIndex> HnswIndex::load(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) bad_file(path, "cannot open file");
  FdCloser closer{fd};
  const off_t end = ::lseek(fd, 0, SEEK_END);
  if (end < 0) bad_file(path, "cannot open file");
  const std::uint64_t size = static_cast<std::uint64_t>(end);
  FileHeader h{};
  if (size < sizeof h + 4 || !read_at(fd, &h, sizeof h, 0))
    bad_file(path, "too short to be a frameseek HNSW index (truncated?)");
  if (std::memcmp(h.magic, kMagic, sizeof kMagic) != 0) bad_file(path, "not a frameseek HNSW index file (bad magic)");
  if (h.version < kOldestFormatVersion || h.version > kFormatVersion)
    bad_file(path, "unsupported format version " + std::to_string(h.version) + " (this build reads " +
                       std::to_string(kOldestFormatVersion) + " to " + std::to_string(kFormatVersion) + ")");
  if (h.dim == 0 || h.dim > 65536 || h.metric > 1 || h.M < 2 || h.M > 2048 || h.ef == 0 || h.ef_construction == 0 ||
      h.n_live > h.capacity || h.capacity > (std::uint64_t{1} << 40))
    bad_file(path, "header holds impossible values (corrupted)");
  const std::uint64_t row_bytes = h.version == 1 ? sizeof(FileRowV1) : sizeof(FileRow);
  const std::uint64_t rows_bytes = h.n_live * row_bytes;
  const bool has_walk = h.version >= kFirstVersionWithWalkCopy;
  const std::uint64_t walk_at = sizeof h + h.graph_bytes + rows_bytes;  // format 3's walk section
  const std::uint64_t tail = has_walk ? sizeof(WalkSectionHeader) + 4 : 4;
  if (h.graph_bytes > size || walk_at > size || size - walk_at < tail || (!has_walk && size != walk_at + tail))
    bad_file(path, "size " + std::to_string(size) + " does not match its header (truncated or corrupted)");
  WalkSectionHeader walk{};
  if (has_walk && !read_at(fd, &walk, sizeof walk, walk_at)) bad_file(path, "unexpected end of file");

  // hnswlib's header drives allocations and offsets: check it before anything is allocated
  std::array<unsigned char, detail::HnswlibHeader::kBytes> graph_head{};
  if (!read_at(fd, graph_head.data(), std::min<std::uint64_t>(h.graph_bytes, graph_head.size()), sizeof h))
    bad_file(path, "unexpected end of file");
  const std::string graph_problem = detail::graph_header_problem(graph_head.data(), h.graph_bytes, h.dim, h.M,
                                                                 h.ef_construction, h.capacity, h.n_live);
  if (!graph_problem.empty()) bad_file(path, graph_problem);
  const detail::HnswlibHeader gh = detail::HnswlibHeader::parse(graph_head.data());
  const std::uint64_t level0_in_file = gh.cur_element_count * gh.size_data_per_element;
  const std::uint64_t links_bytes = h.graph_bytes - graph_head.size() - level0_in_file;  // >= 0: checked above

  HnswParams params;
  params.M = h.M;
  params.ef_construction = h.ef_construction;
  params.seed = h.seed;
  std::unique_ptr<HnswIndex> idx(new HnswIndex(h.dim, static_cast<Metric>(h.metric), params));
  std::uint64_t walk_bytes = 0;
  if (has_walk) {
    if (walk.precision > static_cast<std::uint32_t>(WalkPrecision::Int8) || walk.reserved != 0)
      bad_file(path, "walk copy section holds impossible values (corrupted)");
    idx->walk_ = static_cast<WalkPrecision>(walk.precision);
    if (walk.stride != idx->copy_stride()) bad_file(path, "walk copy section does not match the header");
    walk_bytes = gh.cur_element_count * walk.stride;
    if (size - walk_at - tail != walk_bytes)
      bad_file(path, "size " + std::to_string(size) + " does not match its header (truncated or corrupted)");
  }

  // The graph, as hnswlib's loadIndex sets it up (its members are public), reading into place.
  auto graph = std::make_unique<Graph>(idx->space_.get());
  Graph& gr = *graph;
  const std::size_t cap = h.capacity;
  gr.offsetLevel0_ = gh.offset_level0;
  gr.max_elements_ = cap;
  gr.size_data_per_element_ = gh.size_data_per_element;
  gr.label_offset_ = gh.label_offset;
  gr.offsetData_ = gh.offset_data;
  gr.maxlevel_ = gh.maxlevel;
  gr.enterpoint_node_ = gh.enterpoint;
  gr.maxM_ = gh.max_m;
  gr.maxM0_ = gh.max_m0;
  gr.M_ = gh.m;
  gr.mult_ = gh.mult;
  gr.ef_construction_ = gh.ef_construction;
  gr.data_size_ = idx->space_->get_data_size();
  gr.fstdistfunc_ = idx->space_->get_dist_func();
  gr.dist_func_param_ = idx->space_->get_dist_func_param();
  gr.size_links_per_element_ = gr.maxM_ * sizeof(hnswlib::tableint) + sizeof(hnswlib::linklistsizeint);
  gr.size_links_level0_ = gr.maxM0_ * sizeof(hnswlib::tableint) + sizeof(hnswlib::linklistsizeint);
  gr.revSize_ = 1.0 / gr.mult_;
  gr.allow_replace_deleted_ = true;
  const std::size_t block = cap * gr.size_data_per_element_;
  void* level0 = nullptr;
  if (::posix_memalign(&level0, kHugePage, std::max<std::size_t>(block, 1)) != 0) throw std::bad_alloc();
  // free()d by hnswlib, as its malloc'ed block; read into 4 KiB pages (see collapse_huge_pages)
  gr.data_level0_memory_ = static_cast<char*>(level0);
  gr.linkLists_ = static_cast<char**>(std::calloc(std::max<std::size_t>(cap, 1), sizeof(void*)));
  if (!gr.linkLists_) throw std::bad_alloc();
  gr.element_levels_ = std::vector<int>(cap);
  std::vector<std::mutex>(cap).swap(gr.link_list_locks_);
  std::vector<std::mutex>(Graph::MAX_LABEL_OPERATION_LOCKS).swap(gr.label_op_locks_);
  gr.visited_list_pool_ = std::make_unique<hnswlib::VisitedListPool>(1, cap);
  idx->hnsw_ = std::move(graph);
  idx->resize_slots(cap, /*huge_now=*/false);  // and the walk copy's block, read into below (format 3)

  Crc32 crc;
  crc.update(reinterpret_cast<const char*>(&h) + sizeof kMagic, sizeof h - sizeof kMagic);
  crc.update(graph_head.data(), graph_head.size());
  std::vector<char> links(links_bytes), raw(rows_bytes);
  std::uint32_t stored = 0;
  const std::uint64_t links_at = sizeof h + graph_head.size() + level0_in_file;
  bool ok = read_checked(fd, gr.data_level0_memory_, level0_in_file, sizeof h + graph_head.size(), crc) &&
            read_checked(fd, links.data(), links_bytes, links_at, crc) &&
            read_checked(fd, raw.data(), rows_bytes, links_at + links_bytes, crc);
  if (ok && has_walk) {
    crc.update(&walk, sizeof walk);
    ok = walk_bytes == 0 || read_checked(fd, idx->copy_.get(), walk_bytes, walk_at + sizeof walk, crc);
  }
  if (!ok || !read_at(fd, &stored, sizeof stored, size - 4)) bad_file(path, "unexpected end of file");
  if (crc.value() != stored) bad_file(path, "checksum mismatch (the file is corrupted)");

  // The upper-level link lists (saveIndex's layout: per element, u32 bytes + its lists).
  const std::size_t used = gh.cur_element_count;
  gr.cur_element_count = used;  // from here the graph's destructor frees what was parsed
  std::uint64_t at = 0;
  for (std::size_t i = 0; i < used; ++i) {
    std::uint32_t bytes;
    if (links_bytes - at < sizeof bytes) bad_file(path, "graph section's link lists are truncated");
    std::memcpy(&bytes, links.data() + at, sizeof bytes);
    at += sizeof bytes;
    if (bytes == 0) continue;
    if (bytes % gr.size_links_per_element_ != 0 || bytes > links_bytes - at)
      bad_file(path, "graph section's link lists are truncated or corrupted");
    char* list = static_cast<char*>(std::malloc(bytes));
    if (!list) throw std::bad_alloc();
    std::memcpy(list, links.data() + at, bytes);
    gr.linkLists_[i] = list;
    gr.element_levels_[i] = static_cast<int>(bytes / gr.size_links_per_element_);
    at += bytes;
  }
  if (at != links_bytes) bad_file(path, "graph section has bytes after its last link list");
  std::vector<char>().swap(links);
  gr.label_lookup_.reserve(used);
  for (std::size_t i = 0; i < used; ++i) {
    gr.label_lookup_[gr.getExternalLabel(static_cast<hnswlib::tableint>(i))] = static_cast<hnswlib::tableint>(i);
    if (gr.isMarkedDeleted(static_cast<hnswlib::tableint>(i))) {
      gr.num_deleted_ += 1;
      gr.deleted_elements.insert(static_cast<hnswlib::tableint>(i));
    }
  }

  std::vector<FileRow> rows(h.n_live);
  for (std::uint64_t i = 0; i < h.n_live; ++i)  // (id, group) lead both row layouts
    std::memcpy(&rows[i], raw.data() + i * row_bytes, sizeof(FileRow));
  std::vector<char>().swap(raw);
  if (gr.data_size_ != h.dim * sizeof(float) || gr.M_ != h.M) bad_file(path, "graph section does not match the header");
  const std::string links_problem = detail::graph_links_problem(gr);
  if (!links_problem.empty()) bad_file(path, links_problem);
  if (gr.cur_element_count - gr.num_deleted_ != h.n_live)
    bad_file(path, "graph and id table disagree on the number of vectors");
  idx->meta_.reserve(h.n_live);
  std::vector<hnswlib::tableint> row_slots(h.n_live);
  for (std::uint64_t i = 0; i < h.n_live; ++i) {
    // by value: FileRow is packed, and binding a reference to its misaligned id is undefined
    const std::uint64_t id = rows[i].id;
    auto it = gr.label_lookup_.find(id);
    if (it == gr.label_lookup_.end() || gr.isMarkedDeleted(it->second))
      bad_file(path, "id table names a vector the graph does not hold");
    idx->meta_[id] = Meta{rows[i].group};
    row_slots[i] = it->second;
  }
  if (idx->meta_.size() != h.n_live) bad_file(path, "id table has duplicates");
  // formats 1-2 keep no walk copy: quantise every vector again
  if (!has_walk) idx->fill_copy();
  for (std::uint64_t i = 0; i < h.n_live; ++i) {  // publish_slot's writes, without its label lookup
    SlotMeta& sm = idx->slots_[row_slots[i]];
    sm.group.store(rows[i].group, std::memory_order_relaxed);
    sm.live.store(1, std::memory_order_relaxed);  // nothing searches the index before load returns
  }
  idx->ef_ = h.ef;
  gr.setEf(h.ef);
  // later faults and khugepaged may use huge pages here; collapse_huge_pages does it now
  advise_huge_pages(gr.data_level0_memory_, level0_bytes(gr));
  if (idx->copy_) advise_huge_pages(idx->copy_.get(), idx->copy_cap_ * idx->copy_stride());
  return idx;
}

std::size_t HnswIndex::collapse_huge_pages() {
#if defined(__linux__)
  constexpr int kCollapse = 25;  // MADV_COLLAPSE (Linux 6.1), absent from older headers
  constexpr std::size_t kChunk = std::size_t{32} << 20;
  std::size_t collapsed = 0;
  for (std::size_t at = 0;; at += kChunk) {
    std::shared_lock<std::shared_mutex> lock(mutex_);  // resize (exclusive) may move the blocks between chunks
    const std::pair<char*, std::size_t> blocks[] = {
        {hnsw_->data_level0_memory_, level0_bytes(*hnsw_)},
        {reinterpret_cast<char*>(copy_.get()), copy_ ? copy_cap_ * copy_stride() : 0}};
    bool more = false;
    for (const auto& [p, bytes] : blocks) {
      if (!p || at >= bytes) continue;
      more = true;
      const auto lo = (reinterpret_cast<std::uintptr_t>(p) + at + kHugePage - 1) / kHugePage * kHugePage;
      const auto hi = (reinterpret_cast<std::uintptr_t>(p) + std::min(bytes, at + kChunk)) / kHugePage * kHugePage;
      if (hi <= lo) continue;
      if (::madvise(reinterpret_cast<void*>(lo), hi - lo, kCollapse) == 0)
        collapsed += hi - lo;
      else if (errno == EINVAL || errno == ENOSYS)
        return collapsed;  // this kernel cannot collapse on request (or THP is off)
      // EAGAIN / ENOMEM: no huge page free for some of it now; khugepaged may do it later
    }
    if (!more) return collapsed;
  }
#else
  return 0;
#endif
}

}  // namespace frameseek
