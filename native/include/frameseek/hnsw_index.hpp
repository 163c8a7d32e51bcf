// Approximate nearest-neighbour index: hnswlib's HNSW graph (>= 0.8, header-only, fetched at
// configure time) running on frameseek's own SIMD kernels, plus what hnswlib leaves to the caller:
//   * per-vector metadata (group = video id) and C++ filters over it,
//   * automatic capacity growth, slot reuse after removal (hnswlib's replace_deleted),
//   * per-call ef without racing on hnswlib's shared ef_ field,
//   * group-by search (top-k distinct videos, best frame each),
//   * a self-describing, checksummed, atomically written file format.
// hnswlib builds and maintains the graph; searches run frameseek's own walk over it (see
// search_layer0 in hnsw_index.cpp: direct kernel calls, whole-vector prefetch, filters evaluated
// on dense per-slot metadata instead of hashing every candidate's label).
//
// Memory: hnswlib's per-element data is the walk code (int8 by default: dim codes + scale +
// squared norm), so the graph is built on the same distances the walks use and a node's links and
// code sit in one layer-0 record. The float32 originals, read only to re-rank a walk's results and
// by get_vectors, live in a separate slot-indexed store: anonymous memory, or a memory-mapped file
// read on demand once store_vectors_in() names a directory.
//
// Thread safety: any number of search()/search_groups() calls may run concurrently with each
// other and with add(). add() calls are serialised among themselves (each one is internally
// multithreaded). remove(), resize(), save() and changing ef take the index exclusively for a
// short time. Concurrency between searches and inserts relies on hnswlib's own per-node locks.
#pragma once
#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "frameseek/distance.hpp"
#include "frameseek/fair_shared_mutex.hpp"
#include "frameseek/filter.hpp"

namespace hnswlib {
template <typename dist_t>
class HierarchicalNSW;
}

namespace frameseek {

class KernelSpace;  // hnswlib::SpaceInterface<float> over the walk codes; defined in hnsw_index.cpp
namespace detail {
class VectorStore;     // vector_store.hpp
class IdTable;         // id_table.hpp
struct MappedSection;  // hnsw_internal.hpp
struct RouteTable;     // hnsw_internal.hpp
}  // namespace detail

struct HnswParams {
  // Defaults chosen on clustered "video-like" 512-d data inserted video by video (the
  // worst realistic order); see HnswIndex's Python docstring and benchmarks/native/bench_hnsw.py.
  static constexpr std::size_t kDefaultM = 32;
  static constexpr std::size_t kDefaultEfConstruction = 300;
  static constexpr std::size_t kDefaultEf = 64;
  static constexpr std::size_t kDefaultGroupEf = 16;  // distinct groups kept by search_groups
  static constexpr std::size_t kMaxLayer0Links = 4096;
  // Layer-0 link slots of a graph whose M0 is 0 (see M0): 3/2 of M, at least kMinDefaultLayer0Links
  // (2 * M, hnswlib's count, where that is fewer): 48 at M 32, 32 at M 16, 96 at M 64.
  static constexpr std::size_t kMinDefaultLayer0Links = 48;
  static constexpr std::size_t default_layer0_links(std::size_t m) {
    return std::min(2 * m, std::max(m + m / 2, kMinDefaultLayer0Links));
  }

  std::size_t M = kDefaultM;
  std::size_t ef_construction = kDefaultEfConstruction;
  std::size_t seed = 100;
  // Link slots per node on layer 0, at least M (every node holds them, used or not: 4 bytes each);
  // 0: default_layer0_links(M). hnswlib and faiss give 2 * M; 3/2 of M takes 64 B a vector off at
  // M 32, which is what brings 10M 512-d vectors under 0.8 KB of memory each, for a few per cent
  // of speed at equal recall (benchmarks/scale/README.md):
  //   * 10M video-like vectors, restarted: 779 B a vector against 843 B; recall@10 0.958 / 0.975 /
  //     0.985 at ef 12 / 16 / 32 against 0.974 / 0.982 / 0.992, so one thread answers 9,175 / 7,192
  //     QPS at recall 0.95 / 0.99 against 9,531 / 7,775 (-4 / -7 %); the build took 9 % more CPU.
  //   * the load benchmark's 1M vectors through the server: the source video first for 0.990 at
  //     the default breadth (ef 64) against 0.997, 0.977 against 0.987 at ef 32; 3,275 QPS at p99
  //     9.46 ms against 3,151 at 9.54 ms (benchmarks/load/README.md).
  // The server's breadth tuning (target_recall) absorbs the difference. The floor of 48 is the
  // fewest slots measured without a loss: sparser lists lose reach or recall on some data.
  //   * M 16 with 24 slots left near-identical frames (a static shot) out of reach: a self-search
  //     at ef 400 missed 1.3 % of a static-shot test set (none with 32), and a SearchByVector hit
  //     lost its video's exact best frame (tests/server/test_search_paths.py).
  //   * M 32 with 32 slots (715 B a vector at 10M): the source video first for 0.970 at ef 64 on
  //     the load data.
  //   * M 8 with 8 slots (random 48-d vectors): recall 0.93 at ef 200 against >= 0.97.
  // A collection chooses with IndexSettings.layer0_links (2 * M included).
  std::size_t M0 = 0;
};

class HnswIndex {
 public:
  // max_elements is the initial capacity; add() grows it as needed.
  HnswIndex(std::size_t dim, Metric metric, std::size_t max_elements, HnswParams params = {});
  ~HnswIndex();
  HnswIndex(const HnswIndex&) = delete;
  HnswIndex& operator=(const HnswIndex&) = delete;

  std::size_t dim() const { return dim_; }
  Metric metric() const { return metric_; }
  std::size_t M() const { return params_.M; }
  std::size_t M0() const { return params_.M0; }  // layer-0 link slots (HnswParams::M0 resolved)
  std::size_t ef_construction() const { return params_.ef_construction; }
  std::size_t ef() const;
  void set_ef(std::size_t ef);
  // What the walks read. Walks are bound by fetching each visited vector from memory (1M x 512
  // does not fit any cache), so they may read a compact copy of the vectors instead of the
  // float32 originals; the results are then re-ranked on the float32 vectors, so returned
  // distances stay exact and only the routing (and near-ties in what is kept) carries the
  // copy's rounding.
  //   Float32: the originals themselves (dim*4 bytes per slot; no separate store).
  //   Float16: IEEE fp16 copy (dim*2 bytes per slot; relative rounding ~5e-4).
  //   Int8 (default): per-vector symmetric int8 codes x ~ scale * code, code in [-127, 127],
  //     plus the scale and the exact squared norm (dim + 8 bytes per slot; distances from exact
  //     int32 code dot products).
  // The copy is hnswlib's element data (the graph is built on it too); the float32 originals then
  // live in the vector store (see store_vectors_in). Changing it re-encodes every slot's element
  // data; save() stores the codes and the originals (format 4), so load() re-encodes nothing. An
  // add whose vectors the copy cannot hold (fp16: |x| > 65504; int8: |x| > 1e17, where the
  // squared norm would overflow) switches the index to Float32 for good.
  enum class WalkPrecision { Float32 = 0, Float16 = 1, Int8 = 2 };
  WalkPrecision walk_precision() const { return walk_; }
  // hnswlib's element data per slot at p: Int8 dim + 8 (codes, scale, squared norm), Float16
  // dim * 2, Float32 dim * 4; rounded up to whole u32s (hnswlib's link lists must stay aligned).
  static std::size_t code_bytes(std::size_t dim, WalkPrecision p);
  void set_walk_precision(WalkPrecision p);
  // Moves the float32 originals (and every later one) into an unlinked, memory-mapped file in
  // `directory`, read on demand (see vector_store.hpp). Throws std::runtime_error when the file
  // cannot be created. Without it they stay in anonymous memory (Float32 walks keep none).
  void store_vectors_in(const std::string& directory);
  bool vectors_file_backed() const;
  std::size_t capacity() const;       // slots allocated (live + deleted-but-reusable + free)
  std::size_t size() const;           // live vectors
  std::size_t deleted_slots() const;  // removed vectors whose slots await reuse
  bool contains(std::uint64_t id) const;

  // Adds n vectors (row-major n x dim). groups may be null (group defaults to the id). Throws std::invalid_argument on
  // an id already present (in the index or twice in the batch), on kNoId, and on non-finite values; in that case
  // nothing is added. threads = 0 uses every core.
  void add(const std::uint64_t* ids, const float* vectors, std::size_t n, const std::uint64_t* groups,
           std::size_t threads = 0);
  // Marks the ids deleted (their slots are reused by later adds); unknown ids are ignored.
  // Returns how many were present.
  std::size_t remove(const std::uint64_t* ids, std::size_t n);
  // Sets the capacity; throws std::invalid_argument below the number of occupied slots.
  void resize(std::size_t max_elements);

  // k nearest neighbours of each of nq queries. out_ids/out_dist are nq x k, padded with
  // kNoId / +inf. ef = the walk's beam width (0: the index default); it may be below k, and the
  // k results are then the k best of every node the walk evaluated. filter may be null.
  // out_distances, if not null (nq entries): the distance evaluations of each query's layer-0 walk
  // (its cost, machine-independent; used by tests and benchmarks).
  void search(const float* queries, std::size_t nq, std::size_t k, std::size_t ef, const Filter* filter,
              std::uint64_t* out_ids, float* out_dist, std::size_t threads = 0,
              std::uint64_t* out_distances = nullptr) const;
  // Top-k distinct groups per query, each with its best (closest) vector. The search keeps
  // max(ef, k) distinct groups in its result set (ef = 0: kDefaultGroupEf), so ef plays the same
  // recall/speed role as in search(). Outputs are nq x k, padded with kNoId / +inf.
  void search_groups(const float* queries, std::size_t nq, std::size_t k, std::size_t ef, const Filter* filter,
                     std::uint64_t* out_groups, std::uint64_t* out_ids, float* out_dist, std::size_t threads = 0) const;

  // Copies the stored vectors of n live ids into out (n x dim, row-major), exactly as added.
  // Throws std::invalid_argument on an id that is not live (absent or removed). Used to compare a
  // query densely with one indexed video's frames (frameseek.matching.refine_alignment).
  void get_vectors(const std::uint64_t* ids, std::size_t n, float* out) const;

  // Atomic write (temp file + fsync + rename) of a versioned, checksummed file (format 5: the
  // graph with its walk codes, the id table and the float32 originals, page-aligned with a CRC of
  // their own; see hnsw_snapshot.cpp).
  void save(const std::string& path) const;
  // Reads formats 1-5 straight into place (no temp file; pieces read and checksummed on every
  // core). Throws std::invalid_argument (mapped to ValueError) on a missing, truncated, corrupted
  // or foreign file. Format 5's float32 originals are not read: the vector store maps them from the
  // file (pages come in as re-ranks and get_vectors touch rows), and their CRC is left to
  // check_mapped_vectors(); the graph, its codes and the ids are read and checked here.
  // vectors_directory: as store_vectors_in() (rows added later live there; formats 1-4 read their
  // originals straight into that file).
  static std::unique_ptr<HnswIndex> load(const std::string& path, const std::string& vectors_directory = {});
  // Checks the float32 section that load() mapped instead of reading against its CRC, reading it
  // once from the file (not through the mapping, where a reused slot's row differs by design).
  // Returns "" when it is intact or nothing was mapped, else what is wrong: re-ranking distances
  // and get_vectors of the damaged rows are then wrong (the walks' codes were checked at load).
  // Needs no lock; meant for a low-priority thread once the server serves.
  std::string check_mapped_vectors() const;
  // Bytes of the snapshot's float32 section the vector store maps (0: none, or copied out since).
  std::size_t mapped_vector_bytes() const;
  // load() reads into 4 KiB pages: asking for 2 MiB pages while reading made the kernel compact
  // memory first (THP defrag = madvise), which tripled the CPU of a restart on a fragmented host.
  // This moves the layer-0 block and the anonymous vector store onto huge pages afterwards (MADV_COLLAPSE,
  // Linux >= 6.1), 32 MiB at a time under the shared lock, so searches and adds go on meanwhile;
  // meant for a low-priority thread once the server serves. Returns the bytes collapsed (0 where
  // the kernel cannot: the walk then stays on 4 KiB pages until khugepaged collapses them).
  std::size_t collapse_huge_pages();

  // Per-vector metadata (the group), dense by hnswlib's internal slot, so the search loop evaluates filters
  // with plain array reads instead of hashing the label of every candidate. live = 0 marks a slot
  // that is free, removed, or not yet published by add() (such slots pass no filter). Written by
  // add() right after each insertion (under the shared lock, hence atomics) and by remove();
  // reallocated only under the exclusive lock.
  struct SlotMeta {
    std::atomic<std::uint64_t> group{0};
    std::atomic<std::uint32_t> live{0};
  };

 private:
  HnswIndex(std::size_t dim, Metric metric, HnswParams params);  // for load(): no graph yet
  void grow_for(std::size_t n_new);                              // caller holds mutex_ exclusively
  // caller holds mutex_ exclusively; huge_now false: no huge-page advice yet (load: see above)
  void resize_slots(std::size_t cap, bool huge_now = true);
  // After the graph holds a vector in slot: writes its float32 original vec to the store and marks
  // the slot live.
  void publish_slot(std::uint32_t slot, std::uint64_t group, const float* vec);
  std::uint32_t slot_of(std::uint64_t id) const;    // id's slot (live or removed), or IdTable::kAbsent
  void encode(const float* vec, char* code) const;  // vec's element data at walk_
  const float* original(std::size_t slot) const;    // the slot's float32 vector
  // Re-encodes every slot's element data at p (caller holds mutex_ exclusively or owns the index).
  void reencode(WalkPrecision p);
  bool copy_holds(const float* vectors, std::size_t n, WalkPrecision p) const;  // see set_walk_precision
  std::size_t live_count() const;                                               // caller holds mutex_
  void relink_if_unreachable(std::uint32_t slot, const float* vec);             // see hnsw_index.cpp
  // Brings routes_ up to date with the graph (caller holds mutex_ exclusively): appends the sampled
  // ones among the `touched` slots (new or reused), or rebuilds the table when the graph's size
  // raised the sampling rate, or rebuild is set (load, re-encoding). See RouteTable.
  void refresh_routes(const std::vector<std::uint32_t>& touched, bool rebuild);
  const detail::RouteTable* walk_routes() const;  // routes_ for a walk's entry points; null while empty
  static constexpr std::size_t kRelinkEf = 32;    // breadth of the reachability probe
  static constexpr std::size_t kRelinkFanIn = 4;  // in-links given to each new vector
  static constexpr bool kRelinkOnlyUnreachable = false;

  std::size_t dim_;
  Metric metric_;
  HnswParams params_;
  WalkPrecision walk_ = WalkPrecision::Int8;
  std::unique_ptr<KernelSpace> space_;  // distances on walk_'s codes (hnswlib keeps pointers into it)
  std::unique_ptr<hnswlib::HierarchicalNSW<float>> hnsw_;
  // id -> slot of every occupied slot (live, or removed and awaiting reuse), in place of hnswlib's
  // label_lookup_, which add() keeps empty (see IdTable); guarded by ids_mutex_.
  std::unique_ptr<detail::IdTable> ids_;
  mutable std::mutex ids_mutex_;
  std::unique_ptr<SlotMeta[]> slots_;  // hnsw_->max_elements_ entries (see SlotMeta)
  std::size_t slots_cap_ = 0;
  // The float32 originals by slot (dim floats each), written before a slot is published and
  // resized with slots_ under the exclusive lock. Empty exactly when walk_ is Float32 (hnswlib's
  // element data is then the original itself).
  std::unique_ptr<detail::VectorStore> store_;
  // What check_mapped_vectors reads: the snapshot file (kept open) and its float32 section.
  std::unique_ptr<detail::MappedSection> mapped_section_;
  // The walks' layer-0 entry points besides the greedy descent (see RouteTable); changed only
  // under the exclusive lock.
  std::unique_ptr<detail::RouteTable> routes_;
  std::size_t ef_ = HnswParams::kDefaultEf;
  // add()s inserting under the shared lock: while none is, every slot a walk can reach is
  // published, and the re-rank skips its per-result live check (a cache miss per result).
  std::atomic<int> inserting_{0};
  mutable FairSharedMutex mutex_;  // shared: search, add's graph insertion; exclusive: the rest
  mutable std::mutex add_mutex_;   // one add() at a time (each is multithreaded inside)
};

}  // namespace frameseek
