#include "frameseek/hnsw_index.hpp"

#include <sys/mman.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <limits>
#include <optional>
#include <stdexcept>
#include <type_traits>
#include <unordered_set>

#include <hnswlib/hnswlib.h>

#include "frameseek/distance.hpp"
#include "frameseek/fingerprint.hpp"  // popcount kernels
#include "frameseek/half.hpp"
#include "frameseek/parallel.hpp"
#include "hnsw_internal.hpp"
#include "id_table.hpp"
#include "vector_store.hpp"

namespace frameseek {

namespace {

using detail::advise_huge_pages;
using detail::Graph;
using detail::level0_bytes;

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
// The walk reads the graph's element data, a compact code of each vector
// (HnswIndex::walk_precision: int8 codes by default, or fp16), right after the node's links in its
// layer-0 record: a walk is bound by fetching each visited vector from memory (1M x 512-d does not
// fit any cache), and a quarter (int8) or half (fp16) of the bytes per vector cut that; the int8
// dot product is also 2.5x fewer instructions than fp16's convert + FMA. The result set is then re-
// ranked with the float32 vectors (rerank_exact), so reported distances are exact and only the
// routing carries the copy's rounding (int8: ~1e-3 absolute on a unit-vector inner product, well
// below the gaps between a walk's candidates).
// One query as the walk reads it: the float32 vector and, for an int8 walk, its code.
struct WalkQuery {
  const float* f;
  const std::int8_t* code = nullptr;
  float scale = 0.0f;
  float norm = 0.0f;  // squared
};

struct DistFn {
  const KernelSpace::Param* p;
  const Graph* g;
  const float* originals;  // the float32 store by slot; null: the element data is the original (Float32)
  WalkPrecision prec;
  std::size_t dim;
  // The distance of a search over g: on the walk's int8/fp16 rows, re-ranked on the float32
  // originals in `store`, or (Float32) on the graph's own float32 rows (store unused).
  static DistFn for_search(const Graph& g, WalkPrecision prec, detail::VectorStore* store, std::size_t dim) {
    return {static_cast<const KernelSpace::Param*>(g.dist_func_param_), &g,
            prec == WalkPrecision::Float32 ? nullptr : reinterpret_cast<const float*>(store->data()), prec, dim};
  }
  const char* addr(hnswlib::tableint x) const { return g->getDataByInternalId(x); }
  std::size_t bytes() const { return g->data_size_; }
  bool reranks() const { return originals != nullptr; }  // the walk reads codes: re-rank on float32
  // Fills q's int8 code (into `code`, dim entries) when the walk reads int8.
  WalkQuery prepare(const float* q, std::int8_t* code) const {
    WalkQuery w{q};
    if (prec == WalkPrecision::Int8) {
      w.code = code;
      w.scale = detail::quantize_i8(q, dim, code);
      w.norm = kernels().dot(q, q, dim);
    }
    return w;
  }
  float operator()(const WalkQuery& q, hnswlib::tableint x) const { return on_row(q, addr(x)); }
  // The walk's distance to one element's data (a node's, or its copy in a RouteTable).
  float on_row(const WalkQuery& q, const char* row) const {
    if (prec == WalkPrecision::Int8) {
      const float dot = q.scale * detail::i8_scale(row, dim) *
                        static_cast<float>(p->fn8(q.code, reinterpret_cast<const std::int8_t*>(row), dim));
      return KernelSpace::from_i8(*p, dot, q.norm, detail::i8_norm(row, dim));
    }
    const float d = prec == WalkPrecision::Float16 ? p->fn16(q.f, reinterpret_cast<const std::uint16_t*>(row), dim)
                                                   : p->fn(q.f, reinterpret_cast<const float*>(row), dim);
    return p->ip ? 1.0f - d : d;
  }
  const float* original(hnswlib::tableint x) const {
    return originals ? originals + std::size_t(x) * dim : reinterpret_cast<const float*>(addr(x));
  }
  float exact(const float* q, hnswlib::tableint x) const {
    const float d = p->fn(q, original(x), dim);
    return p->ip ? 1.0f - d : d;
  }
};

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
  std::vector<std::pair<float, hnswlib::tableint>> top;              // max-heap: worst result on top
  std::vector<std::pair<float, hnswlib::tableint>> cand;             // min-heap (std::greater)
  std::vector<hnswlib::tableint> fresh;                              // unvisited neighbours of one node
  std::vector<hnswlib::tableint> hop;                                // ... its rejected ones a walk steps over
  std::vector<float> beam;                                           // TopCollector's beam when ef < k
  std::vector<float> routes;                                         // TopCollector's rejected routing beam
  std::vector<std::pair<float, hnswlib::tableint>> held;             // rejected nodes the routing beam turned away
  std::vector<std::pair<float, hnswlib::tableint>> entries;          // the route table's closest nodes (max-heap)
  std::vector<std::pair<std::uint32_t, hnswlib::tableint>> by_bits;  // its best by sign bits (max-heap)
  std::vector<std::uint32_t> bits;                                   // the query's sign bits
  std::vector<std::uint32_t> hamming;                                // its distance to each route node
  const detail::RouteTable* route_table = nullptr;                   // null or empty: the descent alone
  std::size_t distances = 0;                                         // distance evaluations of the last walk
  std::vector<std::int8_t> code;                                     // the query's int8 code (int8 walk)
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
// label lookup). Mapping a random half of 200k ids took 9.5 ms a call with hnswlib's label map and
// a read of each slot's deleted mark (a cache miss in the graph's records), a quarter of a
// 1,000-query batch; 3 ms with the id table's prefetched lookups, the filter's flat id list and a
// read of each slot's live flag, and a quarter less again without that read (200k slots of 16 B).
// The bitmap is kept with the filter (Filter::compiled) and used again by its next search of this
// index while the id table is unchanged (IdTable::version): a filter searched batch after batch
// maps its ids once, and then even a one-query call of a big id set walks on the bitmap.
class SlotFilter {
 public:
  SlotFilter(const Graph& g, const HnswIndex::SlotMeta* slots, std::size_t n_slots, const Filter& f, std::size_t nq,
             const detail::IdTable& ids, std::mutex& ids_mutex)
      : g_(g), slots_(slots), f_(f), any_deleted_(g.num_deleted_ != 0) {
    if (f.ids) {
      // The slots the table holds for the ids, removed ones included: a removed slot stays removed
      // (and is turned away below, as any_deleted_ is then set) until an add() takes it over, which
      // first drops its old id from the table under the exclusive lock, i.e. not during this call.
      // A slot an add() is inserting is in the table before it is published; the re-rank drops it.
      std::lock_guard<std::mutex> l(ids_mutex);
      const std::uint64_t version = ids.version();
      if (f.compiled) compiled_ = f.compiled->get(version, n_slots, f.ids->size());
      if (!compiled_ && f.ids->size() <= std::max<std::size_t>(4096, 1024 * nq)) {
        auto c = std::make_shared<CompiledIds>();
        c->version = version;
        c->slots = n_slots;
        c->values = f.ids->size();
        c->bits.assign((n_slots + 63) / 64, 0);
        ids.find_each(f.ids->begin(), f.ids->end(), [&](std::uint64_t, hnswlib::tableint s) {
          if (s < n_slots) c->bits[s >> 6] |= std::uint64_t{1} << (s & 63);
        });
        if (f.compiled) f.compiled->put(c);
        compiled_ = std::move(c);
      }
      if (compiled_) bits_ = compiled_->bits.data();
    }
    bits_only_ = bits_ && !any_deleted_ && !f.groups;
    // The share of the graph's slots the filter admits, from an even sample of them.
    const std::size_t used = std::min<std::size_t>(g.cur_element_count, n_slots);
    const std::size_t n_sample = std::min<std::size_t>(used, kShareSample);
    std::size_t admitted = 0;
    for (std::size_t i = 0; i < n_sample; ++i) admitted += (*this)(static_cast<hnswlib::tableint>(i * used / n_sample));
    share_ = n_sample ? static_cast<double>(admitted) / static_cast<double>(n_sample) : 1.0;
  }
  double admitted_share() const { return share_; }
  // The common filter, an id set mapped to bits with nothing deleted, is one bit test inlined into
  // the walk (a call a neighbour cost a random-half filter 4 % of its time); the rest is a call.
  bool operator()(hnswlib::tableint s) const {
    if (bits_only_) return (bits_[s >> 6] >> (s & 63)) & 1u;
    return admits(s);
  }

 private:
  bool admits(hnswlib::tableint s) const {
    if (any_deleted_ && g_.isMarkedDeleted(s)) return false;
    if (bits_) {
      if (!((bits_[s >> 6] >> (s & 63)) & 1u)) return false;
    } else if (f_.ids && !f_.ids->count(g_.getExternalLabel(s))) {
      return false;
    }
    if (!f_.groups) return true;
    const HnswIndex::SlotMeta& m = slots_[s];
    if (!m.live.load(std::memory_order_acquire)) return false;
    return f_.groups->count(m.group.load(std::memory_order_relaxed)) != 0;
  }

  const Graph& g_;
  const HnswIndex::SlotMeta* slots_;
  const Filter& f_;
  bool any_deleted_;
  std::shared_ptr<const CompiledIds> compiled_;  // the ids as a bitmap over slots, or null: hashed
  const std::uint64_t* bits_ = nullptr;          // compiled_'s
  bool bits_only_ = false;                       // bits_ alone decide: nothing deleted, no groups
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

// Pushes v into `heap`, a max-heap of the `cap` smallest values pushed so far (the largest drops
// out beyond cap). Returns whether it is full, i.e. whether its front is now the cap-th smallest.
template <class T>
bool push_capped(std::vector<T>& heap, T v, std::size_t cap) {
  heap.push_back(std::move(v));
  std::push_heap(heap.begin(), heap.end());
  if (heap.size() > cap) {
    std::pop_heap(heap.begin(), heap.end());
    heap.pop_back();
  }
  return heap.size() >= cap;
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
  static constexpr bool kFiltered = std::is_same_v<Admit, SlotFilter>;  // a filter's walk (not deleted-only)
  static constexpr bool kSeedFromUpperLayers = kFiltered;
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
  bool hops = false;                                           // two_hop_share() of the filter
  // Whether the walk may step over x (a rejected neighbour, see search_layer0's two hops); only
  // filters can, so the other walks compile the check out.
  bool rejects(hnswlib::tableint x) const { return kFiltered && hops && !admit(x); }
  // A rejected node the walk stepped over unevaluated: held (at no distance, so resume() expands
  // it whatever its bound) while results are missing, as offer_rejected holds the ones it turns
  // away, so that k results still come back whenever k are reachable.
  void skip(hnswlib::tableint x) {
    if (top.size() < keep) held.emplace_back(std::numeric_limits<float>::infinity(), x);
  }
  // Until `keep` results exist the walk goes on (so k results come back whenever k are reachable).
  float bound() const { return ef < keep && top.size() >= keep ? beam_lower : lower; }
  float offer_bound() const { return lower; }
  bool offer(float d, hnswlib::tableint x) {
    if (!admit(x)) return offer_rejected(d, x);
    const bool expand = d < bound();
    if (push_capped(top, {d, x}, keep)) lower = top.front().first;
    if (ef < keep && expand && push_capped(beam, d, ef)) beam_lower = beam.front();
    return expand;
  }
  bool offer_rejected(float d, hnswlib::tableint x) {
    if (d >= bound()) return false;
    if (route == std::numeric_limits<std::size_t>::max()) return true;  // unbounded (no filter)
    if (d >= route_lower) {
      if (top.size() < keep) held.emplace_back(d, x);
      return false;
    }
    if (push_capped(routes, d, route)) route_lower = routes.front();
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
  static constexpr bool kSeedFromUpperLayers = false;
  bool rejects(hnswlib::tableint) const { return false; }
  void skip(hnswlib::tableint) {}
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
    const Entry cand{d, group, x, 0, {}};
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

// The sign bits of a vector (bit i of word i / 32: x[i] > 0), as RouteTable keeps them.
template <class Positive>
void sign_bits(std::size_t dim, std::uint32_t* out, const Positive& positive) {
  for (std::size_t w = 0; w < (dim + 31) / 32; ++w) {
    std::uint32_t word = 0;
    for (std::size_t i = w * 32; i < std::min(dim, w * 32 + 32); ++i)
      word |= std::uint32_t{positive(i)} << (i - w * 32);
    out[w] = word;
  }
}

// The RouteTable::kSeeds route nodes closest to q, into sc.entries (see RouteTable).
void route_entries(const DistFn& dist, const WalkQuery& q, Scratch& sc) {
  using detail::RouteTable;
  sc.entries.clear();
  const RouteTable* r = sc.route_table;
  if (!r) return;
  sc.bits.resize(r->words);
  sign_bits(dist.dim, sc.bits.data(), [&](std::size_t i) { return q.f[i] > 0.0f; });
  const std::size_t n = r->slots.size();
  constexpr std::size_t kRun = 16;
  sc.hamming.resize((n + kRun - 1) / kRun * kRun);
  fingerprint::popcount_kernels().hamming_blocks(sc.bits.data(), r->bits.data(), n, r->words, sc.hamming.data());
  // The kCandidates smallest (distance, slot) pairs, whatever the table's order (a loaded index and
  // the live one it was saved from hold the same nodes in another order, and answer alike). Once
  // the first rows fill them, few rows qualify: a run of kRun is skipped on one test, a loop of a
  // fixed count the compiler vectorises (the runs past n are padding).
  sc.by_bits.clear();
  std::uint32_t worst = std::numeric_limits<std::uint32_t>::max();
  const std::uint32_t* h = sc.hamming.data();
  for (std::size_t b = 0; b < n; b += kRun) {
    unsigned any = 0;
    for (std::size_t i = b; i < b + kRun; ++i) any |= h[i] <= worst;
    if (!any) continue;
    for (std::size_t i = b; i < std::min(n, b + kRun); ++i)
      if (h[i] <= worst && push_capped(sc.by_bits, {h[i], r->slots[i]}, RouteTable::kCandidates))
        worst = sc.by_bits.front().first;
  }
  for (const auto& c : sc.by_bits) __builtin_prefetch(dist.addr(c.second), 0, 3);
  for (const auto& c : sc.by_bits) push_capped(sc.entries, {dist(q, c.second), c.second}, RouteTable::kSeeds);
  sc.distances += sc.by_bits.size();
}

// A filtered walk inside a region its filter excludes (the query's own video under a group filter:
// hundreds of near-identical frames whose lists point mostly at each other) evaluated every
// rejected neighbour only to route through it. When more than kTwoHopNum / kTwoHopDen of an
// expanded node's list is rejected, the walk steps over its new rejected neighbours instead
// (ACORN's two hops): their own unvisited admitted neighbours are evaluated in their place, up to
// the node's list length, and the rejected ones are held for resume() unevaluated. Under a
// random-half filter a list is almost never so one-sided, and the walk goes as before (the share
// is of the whole list: its new neighbours alone are often a rejected one or two late in a walk).
// Measured on 200k video-like vectors (M 32, every other video excluded): recall 0.95 in 225
// distance evaluations a query instead of 315, 0.97 in 281 instead of 440 (benchmarks/README.md).
constexpr std::size_t kTwoHopNum = 9, kTwoHopDen = 10;
template <class Collector>
void two_hops(const Graph& g, Collector& coll, hnswlib::vl_type* visited, hnswlib::vl_type mark, std::size_t cap,
              const DistFn& dist, Scratch& sc) {
  using hnswlib::tableint;
  sc.hop.clear();
  std::size_t kept = 0;
  for (const tableint x : sc.fresh) (coll.rejects(x) ? sc.hop.push_back(x) : void(sc.fresh[kept++] = x));
  sc.fresh.resize(kept);
  for (const tableint r : sc.hop) {
    coll.skip(r);
    if (sc.fresh.size() >= cap) continue;
    const unsigned int* ll = g.get_linklist0(r);
    const std::size_t n = g.getListCount(const_cast<unsigned int*>(ll));
    const tableint* nb = reinterpret_cast<const tableint*>(ll + 1);
    for (std::size_t j = 0; j < n && sc.fresh.size() < cap; ++j) {
      const tableint x = nb[j];
      if (visited[x] == mark || coll.rejects(x)) continue;
      visited[x] = mark;
      sc.fresh.push_back(x);
      __builtin_prefetch(dist.addr(x), 0, 3);
    }
  }
}

// Best-first search of layer 0 from the upper layers' entry point and the route table's closest nodes. Every visited
// node is offered to the collector; non-admitted nodes route the walk (TopCollector bounds how many). A filtered k-NN
// walk also starts from the closest admitted node the greedy descent evaluated on the upper layers: when the filter
// excludes the query's neighbourhood (its own video), it is an admitted node near the query that the layer-0 walk
// would otherwise reach only through the excluded region. The closest one alone: offering every admitted node the
// descent evaluated (~100 a query at M 32, most of them far) cost a random-half filter 6-9 % of its time at equal
// recall, and kept the every-other-video filter's recall no better (0.966 against 0.965 at ef 16; 200k vectors).
template <class Collector>
void search_layer0(const Graph& g, const DistFn& dist, const WalkQuery& q, Collector& coll, Scratch& sc) {
  using hnswlib::tableint;
  sc.cand.clear();
  const auto entry = entry_point(g);
  if (!entry) return;
  std::pair<float, tableint> seed{std::numeric_limits<float>::infinity(), 0};
  auto [ep, ep_d] = descend(g, dist, q, entry->first, entry->second, [&](float d, tableint x) {
    if (Collector::kSeedFromUpperLayers && d < seed.first && coll.admit(x)) seed = {d, x};
  });
  // hnswlib's addPoint links a new node top-down, and its upper-level neighbours point at it before
  // its own layer-0 list is written: a descent during that insert can end on it, and a walk from a
  // node without layer-0 links sees that node alone (one distance, an almost empty result). Start
  // from the entry point then: a node becomes the entry point only once all its levels are linked.
  if (ep != entry->first && g.getListCount(g.get_linklist0(ep)) == 0) {
    ep = entry->first;
    ep_d = dist(q, ep);
  }
  hnswlib::VisitedList* vl = g.visited_list_pool_->getFreeVisitedList();
  hnswlib::vl_type* visited = vl->mass;
  const hnswlib::vl_type mark = vl->curV;
  const std::size_t vec_bytes = dist.bytes();
  auto by_dist_gt = std::greater<std::pair<float, tableint>>();
  sc.distances = 1;
  coll.offer(ep_d, ep);  // the entry points are expanded whatever the collector says
  sc.cand.emplace_back(ep_d, ep);
  visited[ep] = mark;
  route_entries(dist, q, sc);
  for (const auto& [d, x] : sc.entries) {
    if (visited[x] == mark) continue;
    visited[x] = mark;
    coll.offer(d, x);
    sc.cand.emplace_back(d, x);
    std::push_heap(sc.cand.begin(), sc.cand.end(), by_dist_gt);
  }
  if (const auto [d, x] = seed; d < std::numeric_limits<float>::infinity() && visited[x] != mark) {
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
      std::size_t rejected = 0;
      for (std::size_t j = 0; j < n; ++j) {
        const tableint x = nb[j];
        rejected += coll.rejects(x);
        if (visited[x] == mark) continue;
        visited[x] = mark;
        sc.fresh.push_back(x);
        __builtin_prefetch(dist.addr(x), 0, 3);
      }
      if (rejected * kTwoHopDen > n * kTwoHopNum) two_hops(g, coll, visited, mark, n, dist, sc);
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

// Walks that may step over rejected nodes (two_hops): filters admitting at least this share. Deleted
// nodes route as before, and so do small allowed sets (not measured with two hops).
constexpr double kTwoHopMinShare = 0.25;
template <class Admit>
bool two_hop_share(const Admit&) {
  return false;
}
bool two_hop_share(const SlotFilter& f) { return f.admitted_share() >= kTwoHopMinShare; }

template <class Admit>
void search_knn(const Graph& g, const DistFn& dist, const WalkQuery& q, std::size_t ef, std::size_t k,
                const Admit& admit, Scratch& sc) {
  sc.top.clear();
  sc.beam.clear();
  sc.routes.clear();
  sc.held.clear();
  TopCollector<Admit> coll{ef, std::max(ef, k), route_width(ef, admit), admit, sc.top, sc.beam, sc.routes, sc.held};
  coll.hops = two_hop_share(admit);
  search_layer0(g, dist, q, coll, sc);
}

// After a walk on the codes: the float32 distance of every kept result (the order may change in
// near-ties). A slot add() has linked but not yet published has no original in the store yet
// (add() learns the slot from hnswlib only once it is linked): it is dropped, as if the walk had
// run a moment earlier (its add() has not returned). slots: null when no add() was inserting.
void rerank_exact(const DistFn& dist, const HnswIndex::SlotMeta* slots, const float* q, Scratch& sc) {
  if (!dist.reranks()) return;
  // The float32 rows are cold (the walk read the codes): fetch the next ones while computing.
  const std::size_t n = sc.top.size();
  const auto result_row = [&](std::size_t i) { return reinterpret_cast<const char*>(dist.original(sc.top[i].second)); };
  std::size_t kept = 0;
  for (std::size_t j = 0; j < n; ++j) {
    prefetch_ahead(j, n, result_row, dist.dim * sizeof(float));
    const hnswlib::tableint x = sc.top[j].second;
    if (slots && !slots[x].live.load(std::memory_order_acquire)) continue;  // pairs with publish_slot's release
    sc.top[kept++] = {dist.exact(q, x), x};
  }
  sc.top.resize(kept);
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

// hnswlib gives every node 2 * M link slots on layer 0 (maxM0_) and offers no other size: a fresh
// graph with another count is laid out again here, before it holds a node (the records' layout is
// hnswlib's own members, as its loadIndex sets them). Its neighbour selection still links a new
// node to M others and prunes a full layer-0 list to maxM0_ (so M0 >= M).
void set_layer0_links(Graph& g, std::size_t m0) {
  if (m0 == g.maxM0_) return;
  std::free(g.data_level0_memory_);
  g.data_level0_memory_ = nullptr;
  g.maxM0_ = m0;
  g.size_links_level0_ = m0 * sizeof(hnswlib::tableint) + sizeof(hnswlib::linklistsizeint);
  g.offsetData_ = g.size_links_level0_;
  g.label_offset_ = g.size_links_level0_ + g.data_size_;
  g.size_data_per_element_ = g.label_offset_ + sizeof(hnswlib::labeltype);
  g.data_level0_memory_ = static_cast<char*>(std::malloc(g.max_elements_ * g.size_data_per_element_));
  if (!g.data_level0_memory_) throw std::bad_alloc();
}

void pad(std::uint64_t* ids, float* dist, std::size_t from, std::size_t k) {
  for (std::size_t j = from; j < k; ++j) {
    ids[j] = kNoId;
    dist[j] = std::numeric_limits<float>::infinity();
  }
}

}  // namespace

// ---------------------------------------------------------------------------------------------
HnswIndex::HnswIndex(std::size_t dim, Metric metric, HnswParams params)
    : dim_(dim),
      metric_(metric),
      params_(params),
      space_(std::make_unique<KernelSpace>(dim, metric, walk_)),
      ids_(std::make_unique<detail::IdTable>()),
      store_(std::make_unique<detail::VectorStore>(dim * sizeof(float))),
      routes_(std::make_unique<detail::RouteTable>()) {
  if (dim == 0 || dim > 65536) throw std::invalid_argument("dim must be in [1, 65536]");
  if (params.M < 2 || params.M > 2048) throw std::invalid_argument("M must be in [2, 2048]");
  if (params_.M0 == 0) params_.M0 = HnswParams::default_layer0_links(params.M);
  if (params_.M0 < params.M || params_.M0 > HnswParams::kMaxLayer0Links)
    throw std::invalid_argument("M0 must be in [M, " + std::to_string(HnswParams::kMaxLayer0Links) + "]");
  if (params.ef_construction < 1) throw std::invalid_argument("ef_construction must be >= 1");
}

HnswIndex::HnswIndex(std::size_t dim, Metric metric, std::size_t max_elements, HnswParams params)
    : HnswIndex(dim, metric, params) {
  hnsw_ = std::make_unique<Graph>(space_.get(), std::max<std::size_t>(max_elements, 1), params.M,
                                  params.ef_construction, params.seed, /*allow_replace_deleted=*/true);
  set_layer0_links(*hnsw_, params_.M0);
  advise_huge_pages(hnsw_->data_level0_memory_, level0_bytes(*hnsw_));
  detail::release_idle_locks(*hnsw_);
  hnsw_->setEf(ef_);
  resize_slots(hnsw_->max_elements_);
}

HnswIndex::~HnswIndex() = default;

std::size_t HnswIndex::ef() const {
  std::shared_lock<FairSharedMutex> lock(mutex_);
  return ef_;
}

void HnswIndex::set_ef(std::size_t ef) {
  if (ef < 1) throw std::invalid_argument("ef must be >= 1");
  std::unique_lock<FairSharedMutex> lock(mutex_);  // searchKnn reads hnsw_->ef_ unlocked
  ef_ = ef;
  hnsw_->setEf(ef);
}

std::size_t HnswIndex::capacity() const {
  std::shared_lock<FairSharedMutex> lock(mutex_);
  return hnsw_->max_elements_;
}

// Occupied slots less removed ones: hnswlib's own counts (exact whenever no add() is running).
std::size_t HnswIndex::live_count() const { return hnsw_->cur_element_count - hnsw_->num_deleted_; }

std::size_t HnswIndex::size() const {
  std::shared_lock<FairSharedMutex> lock(mutex_);
  return live_count();
}

std::size_t HnswIndex::deleted_slots() const {
  std::shared_lock<FairSharedMutex> lock(mutex_);
  return hnsw_->num_deleted_;
}

std::uint32_t HnswIndex::slot_of(std::uint64_t id) const {
  std::lock_guard<std::mutex> l(ids_mutex_);
  return ids_->find(id);
}

bool HnswIndex::contains(std::uint64_t id) const {
  std::shared_lock<FairSharedMutex> lock(mutex_);
  const std::uint32_t s = slot_of(id);
  return s != detail::IdTable::kAbsent && !hnsw_->isMarkedDeleted(s);
}

void HnswIndex::store_vectors_in(const std::string& directory) {
  std::lock_guard<std::mutex> add_lock(add_mutex_);
  std::unique_lock<FairSharedMutex> lock(mutex_);
  store_->use_directory(directory, hnsw_->cur_element_count);  // the slots handed out so far
}

bool HnswIndex::vectors_file_backed() const {
  std::shared_lock<FairSharedMutex> lock(mutex_);
  return store_->file_backed();
}

const float* HnswIndex::original(std::size_t slot) const {
  return walk_ == WalkPrecision::Float32 ? reinterpret_cast<const float*>(hnsw_->getDataByInternalId(slot))
                                         : reinterpret_cast<const float*>(store_->row(slot));
}

void HnswIndex::get_vectors(const std::uint64_t* ids, std::size_t n, float* out) const {
  // The shared lock keeps remove() (exclusive) from freeing a slot while it is copied, and add()
  // only fills free or deleted slots, so a live id's data cannot change under us.
  std::shared_lock<FairSharedMutex> lock(mutex_);
  std::vector<hnswlib::tableint> slots(n);
  {
    std::lock_guard<std::mutex> l(ids_mutex_);
    for (std::size_t i = 0; i < n; ++i) {
      const std::uint32_t s = ids_->find(ids[i]);
      if (s == detail::IdTable::kAbsent || hnsw_->isMarkedDeleted(s) || !slots_[s].live.load(std::memory_order_acquire))
        throw std::invalid_argument("id " + std::to_string(ids[i]) + " is not in the index");
      slots[i] = s;
    }
  }
  for (std::size_t i = 0; i < n; ++i) {
    const float* src = original(slots[i]);
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
  detail::release_idle_locks(*hnsw_);
  resize_slots(want);
}

void HnswIndex::resize_slots(std::size_t cap, bool huge_now) {
  if (cap == slots_cap_ && store_->rows() == (walk_ == WalkPrecision::Float32 ? 0 : cap)) return;
  if (cap != slots_cap_) {
    std::unique_ptr<SlotMeta[]> fresh(new SlotMeta[cap]);
    const std::size_t keep = std::min(cap, slots_cap_);
    for (std::size_t i = 0; i < keep; ++i) {
      fresh[i].group.store(slots_[i].group.load(std::memory_order_relaxed), std::memory_order_relaxed);
      fresh[i].live.store(slots_[i].live.load(std::memory_order_relaxed), std::memory_order_relaxed);
    }
    slots_ = std::move(fresh);
    slots_cap_ = cap;
  }
  store_->resize(walk_ == WalkPrecision::Float32 ? 0 : cap, huge_now);
}

namespace {
// What a code holds before its padding (code_bytes rounds it up to whole u32s: hnswlib's records
// start with u32 link lists, so every record size must keep them aligned).
std::size_t code_payload(std::size_t dim, WalkPrecision p) {
  switch (p) {
    case WalkPrecision::Float16:
      return dim * sizeof(std::uint16_t);
    case WalkPrecision::Int8:
      return dim + 2 * sizeof(float);  // codes, scale, squared norm
    default:
      return dim * sizeof(float);
  }
}
}  // namespace

std::size_t HnswIndex::code_bytes(std::size_t dim, WalkPrecision p) {
  return (code_payload(dim, p) + sizeof(std::uint32_t) - 1) / sizeof(std::uint32_t) * sizeof(std::uint32_t);
}

void HnswIndex::encode(const float* vec, char* code) const {
  switch (walk_) {
    case WalkPrecision::Float16: {
      auto* h = reinterpret_cast<std::uint16_t*>(code);
      for (std::size_t i = 0; i < dim_; ++i) h[i] = float_to_half(vec[i]);
      break;
    }
    case WalkPrecision::Int8: {
      const float scale = detail::quantize_i8(vec, dim_, reinterpret_cast<std::int8_t*>(code));
      const float norm = kernels().dot(vec, vec, dim_);
      std::memcpy(code + dim_, &scale, sizeof scale);
      std::memcpy(code + dim_ + sizeof scale, &norm, sizeof norm);
      break;
    }
    default:
      std::memcpy(code, vec, dim_ * sizeof(float));
  }
  const std::size_t payload = code_payload(dim_, walk_);
  std::memset(code + payload, 0, code_bytes(dim_, walk_) - payload);  // files stay deterministic
}

void HnswIndex::set_walk_precision(WalkPrecision p) {
  std::lock_guard<std::mutex> add_lock(add_mutex_);
  std::unique_lock<FairSharedMutex> lock(mutex_);
  if (p == walk_) return;
  // Every stored vector must fit the codes, or the walk stays on float32 (see add()).
  const std::size_t used = hnsw_->cur_element_count;
  std::atomic<bool> all_in_range{true};
  parallel_for(used, default_threads(), [&](std::size_t b, std::size_t e) {
    for (std::size_t s = b; s < e && all_in_range.load(std::memory_order_relaxed); ++s)
      if (!copy_holds(original(s), 1, p)) all_in_range.store(false);
  });
  reencode(all_in_range.load() ? p : WalkPrecision::Float32);
}

// Rewrites hnswlib's layer-0 block with every occupied slot's element data at p (links, labels
// and the deleted marks copied as they are), moving the float32 originals into the store or back
// into the element data. Removed slots are re-encoded too: they still route walks.
void HnswIndex::reencode(WalkPrecision p) {
  if (p == walk_) return;
  Graph& g = *hnsw_;
  const std::size_t used = g.cur_element_count, cap = g.max_elements_;
  const WalkPrecision was = walk_;
  if (was == WalkPrecision::Float32) {  // the originals leave the element data: keep them in the store
    store_->resize(cap);
    parallel_for(used, default_threads(), [&](std::size_t b, std::size_t e) {
      for (std::size_t s = b; s < e; ++s) std::memcpy(store_->row(s), g.getDataByInternalId(s), dim_ * sizeof(float));
    });
  }
  auto space = std::make_unique<KernelSpace>(dim_, metric_, p);
  const std::size_t data = space->get_data_size();
  const std::size_t record = g.offsetData_ + data + sizeof(hnswlib::labeltype);
  void* block = nullptr;
  if (::posix_memalign(&block, detail::kHugePage, std::max<std::size_t>(cap * record, 1)) != 0) throw std::bad_alloc();
  advise_huge_pages(block, cap * record);
  char* fresh = static_cast<char*>(block);
  walk_ = p;  // encode() and original() below: the new codes from the store (or the store itself)
  parallel_for(used, default_threads(), [&](std::size_t b, std::size_t e) {
    for (std::size_t s = b; s < e; ++s) {
      const char* old = g.data_level0_memory_ + s * g.size_data_per_element_;
      char* rec = fresh + s * record;
      std::memcpy(rec, old, g.offsetData_);  // the level-0 links and the deleted mark
      encode(reinterpret_cast<const float*>(store_->row(s)), rec + g.offsetData_);  // the store holds them now
      std::memcpy(rec + g.offsetData_ + data, old + g.label_offset_, sizeof(hnswlib::labeltype));
    }
  });
  std::free(g.data_level0_memory_);  // hnswlib's malloc'ed block (or load's posix_memalign'ed one)
  g.data_level0_memory_ = fresh;
  g.data_size_ = data;
  g.size_data_per_element_ = record;
  g.label_offset_ = g.offsetData_ + data;
  g.fstdistfunc_ = space->get_dist_func();
  g.dist_func_param_ = space->get_dist_func_param();
  space_ = std::move(space);
  if (p == WalkPrecision::Float32) store_->release();
  refresh_routes({}, /*rebuild=*/true);  // the table copies the codes
}

void HnswIndex::refresh_routes(const std::vector<std::uint32_t>& touched, bool rebuild) {
  using detail::RouteTable;
  RouteTable& r = *routes_;
  const Graph& g = *hnsw_;
  std::vector<std::uint32_t> row_bits((dim_ + 31) / 32);
  const auto node_bits = [&](hnswlib::tableint s) {  // the sign bits of a node's element data, into row_bits
    const char* row = g.getDataByInternalId(s);
    std::uint32_t* out = row_bits.data();
    switch (walk_) {
      case WalkPrecision::Int8:
        return sign_bits(dim_, out, [&](std::size_t i) { return reinterpret_cast<const std::int8_t*>(row)[i] > 0; });
      case WalkPrecision::Float16:
        return sign_bits(dim_, out, [&](std::size_t i) {
          const std::uint16_t h = reinterpret_cast<const std::uint16_t*>(row)[i];
          return (h & 0x8000u) == 0 && (h & 0x7fffu) != 0;
        });
      default:
        return sign_bits(dim_, out, [&](std::size_t i) { return reinterpret_cast<const float*>(row)[i] > 0.0f; });
    }
  };
  const auto add_row = [&](hnswlib::tableint s) {  // s's row of the table, written or rewritten
    node_bits(s);
    r.set_bits(s, row_bits.data());
  };
  const std::size_t used = g.cur_element_count;
  if (!rebuild && r.rate == RouteTable::rate_for(used)) {
    for (const hnswlib::tableint s : touched)
      if (RouteTable::sampled(s, r.rate)) add_row(s);
    return;
  }
  r = RouteTable{};
  r.rate = RouteTable::rate_for(used);
  r.words = (dim_ + 31) / 32;
  r.slots.reserve(used / r.rate + 64);
  for (std::size_t s = 0; s < used; ++s)
    if (RouteTable::sampled(static_cast<hnswlib::tableint>(s), r.rate)) add_row(static_cast<hnswlib::tableint>(s));
}

const detail::RouteTable* HnswIndex::walk_routes() const { return routes_->slots.empty() ? nullptr : routes_.get(); }

namespace {
constexpr float kHalfMax = 65504.0f;  // largest finite fp16
constexpr float kInt8MaxAbs = 1e17f;  // keeps the float32 squared norm finite for any dim < 3e4
}  // namespace

bool HnswIndex::copy_holds(const float* vectors, std::size_t n, WalkPrecision p) const {
  if (p == WalkPrecision::Float32) return true;
  const float limit = p == WalkPrecision::Float16 ? kHalfMax : kInt8MaxAbs;
  for (std::size_t i = 0; i < n * dim_; ++i)
    if (std::fabs(vectors[i]) > limit) return false;
  return true;
}

void HnswIndex::publish_slot(std::uint32_t slot, std::uint64_t group, const float* vec) {
  if (walk_ != WalkPrecision::Float32) std::memcpy(store_->row(slot), vec, dim_ * sizeof(float));
  SlotMeta& sm = slots_[slot];
  sm.group.store(group, std::memory_order_relaxed);
  sm.live.store(1, std::memory_order_release);  // pairs with the acquires in SlotFilter and rerank_exact
}

void HnswIndex::add(const std::uint64_t* ids, const float* vectors, std::size_t n, const std::uint64_t* groups,
                    std::size_t threads) {
  if (n == 0) return;
  for (std::size_t i = 0; i < n * dim_; ++i)
    if (!std::isfinite(vectors[i]))
      throw std::invalid_argument("vectors contain NaN or infinity (row " + std::to_string(i / dim_) + ")");

  std::lock_guard<std::mutex> add_lock(add_mutex_);
  Graph& g = *hnsw_;
  std::vector<std::size_t> fresh;            // rows that go into removed slots or new ones
  std::vector<std::size_t> revived;          // rows whose id is still a removed node of the graph
  std::vector<std::uint32_t> revived_slots;  // ... and that node
  std::vector<hnswlib::tableint> recycled;   // the removed slots the first fresh rows go into
  std::vector<char> codes;                   // each row's element data (hnswlib copies it into its node)
  std::size_t code_size = 0;
  auto group_of = [&](std::size_t i) { return groups ? groups[i] : ids[i]; };
  {
    std::unique_lock<FairSharedMutex> lock(mutex_);
    std::unordered_set<std::uint64_t> batch;
    batch.reserve(n);
    {
      std::lock_guard<std::mutex> l(ids_mutex_);
      for (std::size_t i = 0; i < n; ++i) {
        if (ids[i] == kNoId) throw std::invalid_argument("id 2**64-1 is reserved (NO_ID)");
        const std::uint32_t s = ids_->find(ids[i]);
        const bool stored = s != detail::IdTable::kAbsent && !g.isMarkedDeleted(s);
        if (stored || !batch.insert(ids[i]).second)
          throw std::invalid_argument("duplicate id " + std::to_string(ids[i]));
        // An id that was removed but whose node has not been recycled yet goes back into its own
        // node: a second node would leave two slots with one label.
        if (s == detail::IdTable::kAbsent) {
          fresh.push_back(i);
        } else {
          revived.push_back(i);
          revived_slots.push_back(s);
        }
      }
    }
    // The codes bound magnitudes (fp16: 65504): beyond that they would route on infinities, so
    // such an index walks on its float32 vectors from now on.
    if (!copy_holds(vectors, n, walk_)) reencode(WalkPrecision::Float32);
    code_size = g.data_size_;
    codes.resize(n * code_size);
    parallel_for(n, threads == 0 ? default_threads() : threads, [&](std::size_t b, std::size_t e) {
      for (std::size_t i = b; i < e; ++i) encode(vectors + i * dim_, codes.data() + i * code_size);
    });
    for (std::size_t r = 0; r < revived.size(); ++r) {
      const std::size_t i = revived[r];
      const std::uint32_t s = revived_slots[r];
      g.unmarkDeletedInternal(s);
      g.updatePoint(codes.data() + i * code_size, s, 1.0f);
      publish_slot(s, group_of(i), vectors + i * dim_);
    }
    if (!revived.empty()) refresh_routes(revived_slots, /*rebuild=*/false);
    // After the revivals: a revived slot is no longer free for the fresh rows.
    grow_for(fresh.size());
    // hnswlib's replace_deleted, done here so that the id table follows: the first fresh rows take
    // removed slots over (their old ids leave the table now; their links are rewritten below).
    {
      std::lock_guard<std::mutex> dl(g.deleted_elements_lock);
      for (auto it = g.deleted_elements.begin(); recycled.size() < fresh.size() && it != g.deleted_elements.end();) {
        recycled.push_back(*it);
        it = g.deleted_elements.erase(it);
      }
    }
    std::lock_guard<std::mutex> l(ids_mutex_);
    for (std::size_t j = 0; j < recycled.size(); ++j) {
      ids_->erase(g.getExternalLabel(recycled[j]));
      g.setExternalLabel(recycled[j], ids[fresh[j]]);
      ids_->assign(ids[fresh[j]], recycled[j]);
    }
  }
  if (fresh.empty()) return;
  // Searches keep running while the graph grows: they share mutex_ with us and hnswlib locks
  // per node. Rows are interleaved across threads (row r -> thread r % T) rather than split in
  // contiguous blocks, so the threads work on different videos' worth of frames at once.
  // (A row that fails stays out of the graph.)
  std::shared_lock<FairSharedMutex> lock(mutex_);
  struct Inserting {
    std::atomic<int>& n;
    explicit Inserting(std::atomic<int>& c) : n(c) { n.fetch_add(1, std::memory_order_seq_cst); }
    ~Inserting() { n.fetch_sub(1, std::memory_order_release); }  // after every publish_slot
  } inserting(inserting_);
  std::size_t t = threads == 0 ? default_threads() : threads;
  t = std::min(t, fresh.size());
  std::vector<std::uint32_t> added(fresh.size());  // each fresh row's slot (a failed row throws out of add)
  parallel_for(t, t, [&](std::size_t b, std::size_t e) {
    for (std::size_t w = b; w < e; ++w)
      for (std::size_t j = w; j < fresh.size(); j += t) {
        const std::size_t i = fresh[j];
        const char* code = codes.data() + i * code_size;
        std::uint32_t s;
        if (j < recycled.size()) {  // what hnswlib's addPoint(replace_deleted) does after its label bookkeeping
          s = recycled[j];
          g.unmarkDeletedInternal(s);
          g.updatePoint(code, s, 1.0f);
        } else {
          s = g.addPoint(code, ids[i], /*level=*/-1);
          {  // hnswlib records the label in its own map too: ours is the one kept
            std::lock_guard<std::mutex> l(g.label_lookup_lock);
            g.label_lookup_.erase(ids[i]);
          }
          std::lock_guard<std::mutex> l(ids_mutex_);
          ids_->assign(ids[i], s);
        }
        added[j] = s;
        publish_slot(s, group_of(i), vectors + i * dim_);
      }
  });
  // Second pass once the whole batch is in (later frames are what prune earlier ones' links).
  parallel_for(t, t, [&](std::size_t b, std::size_t e) {
    for (std::size_t w = b; w < e; ++w)
      for (std::size_t j = w; j < fresh.size(); j += t) relink_if_unreachable(added[j], vectors + fresh[j] * dim_);
  });
  // The batch's sampled nodes (1 in RouteTable's rate of it) join the route table: under the
  // exclusive lock, taken only when there are some or the rate rises.
  if (!routes_->changed_by(added, g.cur_element_count)) return;
  lock.unlock();
  std::unique_lock<FairSharedMutex> exclusive(mutex_);
  refresh_routes(added, /*rebuild=*/false);
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
// At 1M (one add per video) the probe found a wrong cluster as often as the descent does (see
// RouteTable); with the route table's entry points, and out-links from the new vector to the
// vectors it found, recall@10 at ef 16 went 0.951 -> 0.994 (0.977 with the entry points in the
// searches alone). Costs about one extra search per inserted vector (build CPU +16 % at 1M).
// Caller holds mutex_ shared.
void HnswIndex::relink_if_unreachable(std::uint32_t slot, const float* vec) {
  using hnswlib::tableint;
  const tableint x = slot;
  // The probe is a search's own walk (the route table's entry points included), so a new vector
  // whose cluster the greedy descent misses is linked with its true neighbours all the same.
  const Graph& g = *hnsw_;
  const DistFn dist = DistFn::for_search(g, walk_, store_.get(), dim_);
  thread_local Scratch sc;
  sc.code.resize(dim_);
  sc.route_table = walk_routes();
  search_knn(g, dist, dist.prepare(vec, sc.code.data()), kRelinkEf, kRelinkEf, AdmitLive{g}, sc);
  std::sort(sc.top.begin(), sc.top.end());  // (walk distance, slot), closest first
  if (kRelinkOnlyUnreachable)
    for (const auto& r : sc.top)
      if (r.second == x) return;
  std::size_t linked = 0;
  for (const auto& r : sc.top) {
    if (linked == kRelinkFanIn) break;
    const tableint y = r.second;
    if (y == x) continue;
    {  // and out-links to them where its list has room (hnswlib's heuristic leaves most of it empty here)
      std::lock_guard<std::mutex> l(hnsw_->link_list_locks_[x]);
      hnswlib::linklistsizeint* ll = hnsw_->get_linklist0(x);
      const std::size_t n = hnsw_->getListCount(ll);
      auto* links = reinterpret_cast<tableint*>(ll + 1);
      if (n < hnsw_->maxM0_ && std::find(links, links + n, y) == links + n) {
        links[n] = y;
        hnsw_->setListCount(ll, static_cast<unsigned short>(n + 1));
      }
    }
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
  std::unique_lock<FairSharedMutex> lock(mutex_);
  std::size_t removed = 0;
  for (std::size_t i = 0; i < n; ++i) {
    const std::uint32_t slot = slot_of(ids[i]);
    if (slot == detail::IdTable::kAbsent || hnsw_->isMarkedDeleted(slot)) continue;
    hnsw_->markDeletedInternal(slot);
    slots_[slot].live.store(0, std::memory_order_release);
    ++removed;
  }
  return removed;
}

void HnswIndex::resize(std::size_t max_elements) {
  std::lock_guard<std::mutex> add_lock(add_mutex_);
  std::unique_lock<FairSharedMutex> lock(mutex_);
  if (max_elements < hnsw_->cur_element_count)
    throw std::invalid_argument("max_elements " + std::to_string(max_elements) + " is below the " +
                                std::to_string(hnsw_->cur_element_count.load()) +
                                " occupied slots (live + removed awaiting reuse)");
  hnsw_->resizeIndex(std::max<std::size_t>(max_elements, 1));
  detail::release_idle_locks(*hnsw_);
  resize_slots(hnsw_->max_elements_);
}

void HnswIndex::search(const float* queries, std::size_t nq, std::size_t k, std::size_t ef, const Filter* filter,
                       std::uint64_t* out_ids, float* out_dist, std::size_t threads,
                       std::uint64_t* out_distances) const {
  if (k == 0) throw std::invalid_argument("k must be >= 1");
  std::shared_lock<FairSharedMutex> lock(mutex_);
  if (filter && filter->empty()) filter = nullptr;
  // ef is the walk's beam width; it may be below k (see TopCollector): k results are returned all
  // the same, the k best of every node the walk evaluated.
  const std::size_t ef_eff = ef == 0 ? ef_ : ef;
  const Graph& g = *hnsw_;
  const DistFn dist = DistFn::for_search(g, walk_, store_.get(), dim_);
  // Built once per call, shared read-only by every thread and query of the batch.
  std::unique_ptr<SlotFilter> sf;
  if (filter) sf = std::make_unique<SlotFilter>(g, slots_.get(), slots_cap_, *filter, nq, *ids_, ids_mutex_);
  const bool any_deleted = g.num_deleted_ != 0;
  parallel_for(nq, threads, [&](std::size_t b, std::size_t e) {
    Scratch sc;
    sc.code.resize(dim_);
    sc.route_table = walk_routes();
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
      // Read after the walk: 0 means every add() whose nodes it could have reached had published them.
      std::atomic_thread_fence(std::memory_order_acquire);
      const bool unpublished = inserting_.load(std::memory_order_acquire) != 0;
      rerank_exact(dist, unpublished ? slots_.get() : nullptr, x, sc);
      const std::size_t got = emit_topk(g, sc, k, out_ids + q * k, out_dist + q * k);
      pad(out_ids + q * k, out_dist + q * k, got, k);
    }
  });
}

void HnswIndex::search_groups(const float* queries, std::size_t nq, std::size_t k, std::size_t ef, const Filter* filter,
                              std::uint64_t* out_groups, std::uint64_t* out_ids, float* out_dist,
                              std::size_t threads) const {
  if (k == 0) throw std::invalid_argument("k must be >= 1");
  std::shared_lock<FairSharedMutex> lock(mutex_);
  if (filter && filter->empty()) filter = nullptr;
  // Unlike search(), ef counts distinct groups here, and every frame of a kept group that is
  // closer than the ef-th group gets visited: on video data the cost grows with ef times the
  // frames per video, so the default is a small multiple of k, not the index's ef.
  const std::size_t ef_eff = std::max(ef == 0 ? HnswParams::kDefaultGroupEf : ef, k);
  const Graph& g = *hnsw_;
  const DistFn dist = DistFn::for_search(g, walk_, store_.get(), dim_);
  std::unique_ptr<SlotFilter> sf;
  if (filter) sf = std::make_unique<SlotFilter>(g, slots_.get(), slots_cap_, *filter, nq, *ids_, ids_mutex_);
  const AdmitLive live{g};
  parallel_for(nq, threads, [&](std::size_t b, std::size_t e) {
    Scratch sc;
    sc.code.resize(dim_);
    sc.route_table = walk_routes();
    std::vector<GroupEntry> kept;
    kept.reserve(ef_eff + 1);
    for (std::size_t q = b; q < e; ++q) {
      const float* x = queries + q * dim_;
      const WalkQuery wq = dist.prepare(x, sc.code.data());
      kept.clear();
      if (sf) {
        GroupBestCollector<SlotFilter> coll{ef_eff, *sf, slots_.get(), kept, dist.reranks()};
        search_layer0(g, dist, wq, coll, sc);
      } else {
        GroupBestCollector<AdmitLive> coll{ef_eff, live, slots_.get(), kept, dist.reranks()};
        search_layer0(g, dist, wq, coll, sc);
      }
      if (dist.reranks())
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

std::size_t HnswIndex::collapse_huge_pages() {
#if defined(__linux__)
  constexpr int kCollapse = 25;  // MADV_COLLAPSE (Linux 6.1), absent from older headers
  constexpr std::size_t kChunk = std::size_t{32} << 20;
  std::size_t collapsed = 0;
  for (std::size_t at = 0;; at += kChunk) {
    std::shared_lock<FairSharedMutex> lock(mutex_);  // resize (exclusive) may move the blocks between chunks
    const std::pair<char*, std::size_t> blocks[] = {
        {hnsw_->data_level0_memory_, level0_bytes(*hnsw_)},
        // (the anonymous store's own rows: not the snapshot's mapped ones, which collapsing would read)
        {store_->file_backed() ? nullptr : store_->data() + store_->file_mapped_bytes(),
         store_->bytes() - store_->file_mapped_bytes()}};
    bool more = false;
    for (const auto& [p, bytes] : blocks) {
      if (!p || at >= bytes) continue;
      more = true;
      const auto [lo, hi] = detail::whole_pages(p + at, std::min(bytes, at + kChunk) - at, detail::kHugePage);
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
