// What hnsw_index.cpp (inserts, walks) and hnsw_snapshot.cpp (save/load) share: the space hnswlib
// computes its distances in, and the huge-page advice for the blocks walks read.
#pragma once
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <mutex>
#include <unordered_map>
#include <utility>
#include <vector>

#include <hnswlib/hnswlib.h>

#include "frameseek/distance.hpp"
#include "frameseek/fingerprint.hpp"
#include "frameseek/half.hpp"
#include "frameseek/hnsw_index.hpp"

namespace frameseek {

using WalkPrecision = HnswIndex::WalkPrecision;

namespace detail {

// A snapshot's float32 section that a load mapped instead of reading (format 5): the file, kept
// open so that HnswIndex::check_mapped_vectors reads the very file mapped (its path may name a
// newer snapshot by then), where the section lies, and its CRC-32.
struct MappedSection {
  int fd = -1;
  std::uint64_t offset = 0, bytes = 0;
  std::uint32_t crc = 0;
  MappedSection() = default;
  MappedSection(const MappedSection&) = delete;
  MappedSection& operator=(const MappedSection&) = delete;
  ~MappedSection() {
    if (fd >= 0) ::close(fd);
  }
};

// Symmetric per-vector int8 code: x ~ scale * code, code in [-127, 127] (never -128: see
// Kernels::dot_i8), scale = max|x| / 127. Returns the scale.
inline float quantize_i8(const float* x, std::size_t d, std::int8_t* code) {
  float m = 0.0f;
  for (std::size_t i = 0; i < d; ++i) m = std::max(m, std::fabs(x[i]));
  const float scale = m > 0.0f ? m / 127.0f : 1.0f;
  for (std::size_t i = 0; i < d; ++i)
    code[i] = static_cast<std::int8_t>(std::lrint(std::clamp(x[i] / scale, -127.0f, 127.0f)));
  return scale;
}

// An int8 element: dim codes, then the scale and the exact squared norm (unaligned: no padding,
// the record is what hnswlib stores per node).
inline float i8_scale(const char* row, std::size_t dim) {
  float v;
  std::memcpy(&v, row + dim, sizeof v);
  return v;
}
inline float i8_norm(const char* row, std::size_t dim) {
  float v;
  std::memcpy(&v, row + dim + sizeof(float), sizeof v);
  return v;
}

}  // namespace detail

// ---------------------------------------------------------------------------------------------
// Space: hnswlib calls dist(a, b, param) through a plain function pointer on two elements' data,
// which is the walk code (HnswIndex::WalkPrecision): so insertion (addPoint's neighbour searches
// and pruning) runs on the same compact codes as the walks, like faiss's IndexHNSWSQ, and with
// the kernels the runtime dispatch picked. IP is reported as 1 - dot (a distance, smaller =
// closer), like hnswlib's own space.
class KernelSpace : public hnswlib::SpaceInterface<float> {
 public:
  struct Param {
    std::size_t dim;
    float (*fn)(const float*, const float*, std::size_t);
    float (*fn16)(const float*, const std::uint16_t*, std::size_t);
    std::int32_t (*fn8)(const std::int8_t*, const std::int8_t*, std::size_t);
    bool ip;
  };

  KernelSpace(std::size_t dim, Metric metric, WalkPrecision p) : bytes_(HnswIndex::code_bytes(dim, p)) {
    const Kernels& k = kernels();
    const bool l2 = metric == Metric::L2;
    param_ = Param{dim, l2 ? k.l2sq : k.dot, l2 ? k.l2sq_f16 : k.dot_f16, k.dot_i8, !l2};
    dist_ = p == WalkPrecision::Int8 ? &i8 : p == WalkPrecision::Float16 ? &f16 : &f32;
  }
  std::size_t get_data_size() override { return bytes_; }
  hnswlib::DISTFUNC<float> get_dist_func() override { return dist_; }
  void* get_dist_func_param() override { return &param_; }

  // The int8 distance of two codes (or a query's code and an element's), from the exact int32
  // code dot product, the scales and the exact squared norms.
  static float from_i8(const Param& q, float dot, float na, float nb) {
    return q.ip ? 1.0f - dot : na + nb - 2.0f * dot;
  }

 private:
  static float f32(const void* a, const void* b, const void* p) {
    auto* q = static_cast<const Param*>(p);
    const float d = q->fn(static_cast<const float*>(a), static_cast<const float*>(b), q->dim);
    return q->ip ? 1.0f - d : d;
  }
  static float f16(const void* a, const void* b, const void* p) {
    auto* q = static_cast<const Param*>(p);
    thread_local std::vector<float> af;  // one side widened (the kernels take float x half)
    af.resize(q->dim);
    auto* ah = static_cast<const std::uint16_t*>(a);
    for (std::size_t i = 0; i < q->dim; ++i) af[i] = half_to_float(ah[i]);
    const float d = q->fn16(af.data(), static_cast<const std::uint16_t*>(b), q->dim);
    return q->ip ? 1.0f - d : d;
  }
  static float i8(const void* a, const void* b, const void* p) {
    auto* q = static_cast<const Param*>(p);
    auto* ra = static_cast<const char*>(a);
    auto* rb = static_cast<const char*>(b);
    const float sa = detail::i8_scale(ra, q->dim), sb = detail::i8_scale(rb, q->dim);
    const float dot = sa * sb *
                      static_cast<float>(q->fn8(reinterpret_cast<const std::int8_t*>(ra),
                                                reinterpret_cast<const std::int8_t*>(rb), q->dim));
    return from_i8(*q, dot, detail::i8_norm(ra, q->dim), detail::i8_norm(rb, q->dim));
  }
  std::size_t bytes_;
  Param param_{};
  hnswlib::DISTFUNC<float> dist_ = nullptr;
};

namespace detail {

using Graph = hnswlib::HierarchicalNSW<float>;

// Walks touch one random row per visited node across gigabytes (1M x 512-d int8 records: 0.8 GB).
// With 4 KiB pages nearly every visit also misses the TLB and walks the page tables; 2 MiB
// transparent huge pages take that away. Where THP is "madvise" (the Debian default) a region
// gets them only when asked; elsewhere this is a no-op.
constexpr std::size_t kHugePage = std::size_t{2} << 20;

inline std::size_t level0_bytes(const Graph& g) { return g.max_elements_ * g.size_data_per_element_; }

// Layer-0 entry points found by comparing the query with a sample of the nodes, besides the greedy
// descent through hnswlib's upper layers. The descent follows distances, and on a library of well-
// separated clusters (topics of videos: a cluster's frames at cosine ~0.5 to each other, every
// other frame at ~0) the distances to all the wrong clusters are alike: from a wrong cluster no
// neighbour points toward the right one, so the descent ends wherever it happened to enter, and the
// layer-0 walk explores that cluster until its beam is full. That, not the links within a cluster,
// is what lost recall with n (10M video-like frames, M 32: recall@10 0.70 at ef 64, the source
// video first for 0.77; at 1M 0.96 / 0.975, the misses mostly queries that found none of their 10).
// The table holds a uniform sample of the graph's nodes: slot s is in it when the low bits of a
// hash of s are zero, 1 in `rate` (a power of two, so each sample holds the next one: a rising rate
// only drops rows). The rate is a function of the slots used alone (the smallest power of two
// leaving at most budget(n) rows expected), so a live index and its reloaded copy sample the same
// nodes. budget(n) = max(kSmallRows, n / kSampling), at most kMaxRows: 512-1,024 rows up to 262k
// vectors, one node in 256 from there to 4.2M (3,906 at 1M), 8,192-16,384 rows above (9,766 at
// 10M). On the load benchmark's 1M vectors (2,000 topics) one node in 256 found the source video
// first for 0.985 of the queries at ef 32 against 0.965 with one in 1,024, in fewer distance
// evaluations (1,108 against 1,270 a query): the walk starts nearer. A walk ranks all of them by
// the Hamming distance between sign bits (the query's and each node's: one bit per dimension,
// contiguous, 64 B a node at 512-d; the angle between two vectors is pi times the share of
// differing signs, on average), takes the kCandidates best, computes their walk distances, and
// starts from the kSeeds closest as well as from the descent's end. Sign bits rank by angle around
// the origin, which suits an inner-product index of normalised embeddings; on other data they are
// a coarser filter, and the walk distance still picks the seeds. Derived from the graph (rebuilt on
// load and re-encoding, extended by add), never saved.
struct RouteTable {
  static constexpr std::size_t kMaxRows = 16384;
  static constexpr std::size_t kSmallRows = 1024;
  static constexpr std::size_t kSampling = 256;
  static std::size_t budget(std::size_t n) { return std::min(kMaxRows, std::max(kSmallRows, n / kSampling)); }
  static std::uint32_t rate_for(std::size_t n) {
    std::uint32_t r = 1;
    while (n / r > budget(n)) r *= 2;
    return r;
  }
  static bool sampled(hnswlib::tableint s, std::uint32_t rate) {
    std::uint32_t h = s;  // murmur3's finaliser: consecutive slots (one video's frames) spread evenly
    h ^= h >> 16;
    h *= 0x85ebca6bu;
    h ^= h >> 13;
    h *= 0xc2b2ae35u;
    h ^= h >> 16;
    return (h & (rate - 1)) == 0;
  }
  // Re-scored by walk distance: 8 found the same 4 closest as 32 on 1M video-like vectors (the
  // same recall at every ef), at 24 fewer random row reads a walk.
  static constexpr std::size_t kCandidates = 8;
  static constexpr std::size_t kSeeds = 4;
  std::uint32_t rate = 0;  // 1 in rate slots sampled; 0: not built yet
  std::size_t words = 0;   // u32 words of sign bits per node: ceil(dim / 32)
  std::vector<hnswlib::tableint> slots;
  std::vector<std::uint32_t> bits;                          // slots.size() x words, fingerprint's block layout
  std::unordered_map<hnswlib::tableint, std::uint32_t> at;  // slot -> its row (a reused slot is rewritten)

  // Whether a graph of n slots, of which `touched` are new or reused, needs this table changed: the
  // rate rose, or some of them are sampled.
  bool changed_by(const std::vector<std::uint32_t>& touched, std::size_t n) const {
    return rate != rate_for(n) ||
           std::any_of(touched.begin(), touched.end(), [&](std::uint32_t s) { return sampled(s, rate); });
  }
  // Sets slot s's sign bits (`words` of them), appending a row if s has none yet.
  void set_bits(hnswlib::tableint s, const std::uint32_t* row) {
    const auto [it, added] = at.emplace(s, static_cast<std::uint32_t>(slots.size()));
    if (added) {
      slots.push_back(s);
      bits.resize(fingerprint::block_words(slots.size(), words));
    }
    fingerprint::set_block_row(bits.data(), it->second, row, words);
  }
};

// The whole pages of `page` bytes inside [p, p + bytes): [lo, hi), empty when hi <= lo.
inline std::pair<std::uintptr_t, std::uintptr_t> whole_pages(const void* p, std::size_t bytes, std::uintptr_t page) {
  const auto begin = reinterpret_cast<std::uintptr_t>(p);
  return {(begin + page - 1) / page * page, (begin + bytes) / page * page};
}

inline void advise_huge_pages(void* p, std::size_t bytes) {
#ifdef MADV_HUGEPAGE
  const auto [lo, hi] = whole_pages(p, bytes, kHugePage);
  if (hi > lo) ::madvise(reinterpret_cast<void*>(lo), hi - lo, MADV_HUGEPAGE);  // advice: failure is harmless
#else
  (void)p, (void)bytes;
#endif
}

// hnswlib gives every slot a std::mutex (40 B a vector: 400 MB at 10M), written whole when the
// array is made (construction, resizeIndex, a load) and locked only by inserts, which run under
// HnswIndex's add_mutex_. An unlocked std::mutex is all zero bytes here (glibc; checked once
// below), and so is a private anonymous page after MADV_DONTNEED. So, while no insert runs, the
// array's whole pages can go back to the kernel: they come back zeroed, i.e. unlocked, when an
// insert next locks one of their mutexes. The caller holds add_mutex_ (or owns the graph alone).
// Costs a page fault per page an insert touches again, so it is done where the array was just
// written whole or inserts have paused: after a load or a growth, and after a save.
inline bool unlocked_mutex_is_zero_bytes() {
  static const bool zero = [] {
    std::mutex m;
    m.lock();
    m.unlock();
    unsigned char bytes[sizeof(std::mutex)];
    std::memcpy(bytes, static_cast<const void*>(&m), sizeof bytes);
    return std::all_of(bytes, bytes + sizeof bytes, [](unsigned char b) { return b == 0; });
  }();
  return zero;
}

template <class Graph>
void release_idle_locks(Graph& g) {
#ifdef MADV_DONTNEED
  if (!unlocked_mutex_is_zero_bytes() || g.link_list_locks_.empty()) return;
  const auto [lo, hi] = whole_pages(g.link_list_locks_.data(), g.link_list_locks_.size() * sizeof(std::mutex),
                                    static_cast<std::uintptr_t>(::sysconf(_SC_PAGESIZE)));
  if (hi > lo) ::madvise(reinterpret_cast<void*>(lo), hi - lo, MADV_DONTNEED);  // failure: they stay resident
#else
  (void)g;
#endif
}

}  // namespace detail
}  // namespace frameseek
