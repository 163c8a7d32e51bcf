// HnswIndex::save / HnswIndex::load: the snapshot file (format below).
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <stdexcept>

#include <hnswlib/hnswlib.h>
#include <zlib.h>

#include "frameseek/hnsw_index.hpp"
#include "frameseek/parallel.hpp"
#include "hnsw_graph_check.hpp"
#include "hnsw_internal.hpp"
#include "id_table.hpp"
#include "vector_store.hpp"

namespace frameseek {

namespace {

using detail::advise_huge_pages;
using detail::Graph;
using detail::level0_bytes;

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
//           version 4: the graph's element data is the walk code (HnswIndex::code_bytes at the
//           walk precision; format 1-3 graphs hold float32) | rows | u32 walk precision |
//           u32 reserved | u64 stride (= the element data's bytes) | the float32 originals of
//           every slot the graph holds (dim * 4 bytes each; none for a float32 walk, whose
//           element data they are). Self-contained: the vector store's file is scratch.
//           version 5: as 4, but zero bytes up to the next multiple of kVectorAlign in the file
//           before the float32 originals when they fill at least that much (so that a load maps
//           them instead of reading them), and after them a VectorTrailer: their file offset,
//           their bytes and a CRC-32 of them alone.
//   Trailer u32 CRC-32 (IEEE, as zlib's) of everything from `version` up to the trailer (format 5:
//           except the float32 originals, which their own CRC covers: a load checks the rest and
//           leaves the originals' CRC to HnswIndex::check_mapped_vectors, after the start; the
//           VectorTrailer lets a checker skip them without parsing the file).
constexpr char kMagic[8] = {'F', 'S', 'E', 'E', 'K', 'H', 'N', 'S'};
constexpr std::uint32_t kFormatVersion = 5;
constexpr std::uint32_t kOldestFormatVersion = 1;
constexpr std::uint32_t kFirstVersionWithWalkCopy = 3;
constexpr std::uint32_t kFirstVersionWithCodes = 4;          // element data = walk code, originals after
constexpr std::uint32_t kFirstVersionWithMappedVectors = 5;  // originals aligned, with their own CRC
// The originals' alignment in format 5: x86-64's and most aarch64 kernels' page size (a load on a
// machine with larger pages reads them instead of mapping them).
constexpr std::uint64_t kVectorAlign = 4096;

// Format 5's zero bytes before originals of `vector_bytes` that start at file offset `at`.
std::uint64_t vector_padding(std::uint64_t at, std::uint64_t vector_bytes) {
  return vector_bytes < kVectorAlign ? 0 : (kVectorAlign - at % kVectorAlign) % kVectorAlign;
}

// Format 3's walk copy stride (whole cache lines of int8 codes, or fp16), skipped on load.
std::uint64_t v3_copy_stride(std::uint64_t dim, WalkPrecision p) {
  switch (p) {
    case WalkPrecision::Float16:
      return dim * 2;
    case WalkPrecision::Int8:
      return (dim + 8 + 63) / 64 * 64;
    default:
      return 0;
  }
}

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
struct VectorTrailer {  // format 5
  std::uint64_t offset, bytes;
  std::uint32_t crc;
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
  std::shared_lock<FairSharedMutex> lock(mutex_);
  // Snapshots come when inserts pause (or every so many): the lock pages they touched go back.
  struct ReleaseLocks {
    Graph& g;
    ~ReleaseLocks() { detail::release_idle_locks(g); }
  } release_locks{*hnsw_};
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
  h.n_live = live_count();
  h.graph_bytes = graph_head.size() + level0 + links.size();

  int fd = ::open(out_tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) throw std::runtime_error("HnswIndex.save: cannot create " + out_tmp + ": " + std::strerror(errno));
  FdCloser closer{fd};
  Crc32 crc;
  std::uint64_t at = sizeof h;  // file offset of what is written next
  auto put = [&](const void* data, std::size_t n, Crc32* sum) {
    write_all(fd, data, n, sum, out_tmp);
    at += n;
  };
  write_all(fd, &h, sizeof kMagic, nullptr, out_tmp);
  write_all(fd, reinterpret_cast<const char*>(&h) + sizeof kMagic, sizeof h - sizeof kMagic, &crc, out_tmp);
  put(graph_head.data(), graph_head.size(), &crc);
  put(g.data_level0_memory_, static_cast<std::size_t>(level0), &crc);
  put(links.data(), links.size(), &crc);
  std::vector<FileRow> rows;
  rows.reserve(h.n_live);
  for (std::size_t s = 0; s < used; ++s)
    if (!g.isMarkedDeleted(static_cast<hnswlib::tableint>(s)))
      rows.push_back(FileRow{g.getExternalLabel(static_cast<hnswlib::tableint>(s)),
                             slots_[s].group.load(std::memory_order_relaxed)});
  std::sort(rows.begin(), rows.end(), [](const FileRow& a, const FileRow& b) { return a.id < b.id; });
  put(rows.data(), rows.size() * sizeof(FileRow), &crc);
  const WalkSectionHeader walk{static_cast<std::uint32_t>(walk_), 0, g.data_size_};
  put(&walk, sizeof walk, &crc);
  const std::size_t vector_bytes = walk_ == WalkPrecision::Float32 ? 0 : used * dim_ * sizeof(float);
  const std::vector<char> padding(vector_padding(at, vector_bytes), 0);
  put(padding.data(), padding.size(), &crc);
  Crc32 vector_crc;
  put(store_->data(), vector_bytes, &vector_crc);
  const VectorTrailer vector_trailer{at - vector_bytes, vector_bytes, vector_crc.value()};
  put(&vector_trailer, sizeof vector_trailer, &crc);
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
// lists, the id table and (format 4) the float32 originals into the vector store; the pieces are
// read and checksummed on every core. Formats 1-3 hold float32 element data: they load as a
// float32 walk and are then re-encoded at their walk precision (format 3's copy is only checked). Nothing read is
// trusted before the checksum matched and the graph passed its checks.
std::unique_ptr<HnswIndex> HnswIndex::load(const std::string& path, const std::string& vectors_directory) {
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
  const bool has_mapped_vectors = h.version >= kFirstVersionWithMappedVectors;
  const std::uint64_t trailer = (has_mapped_vectors ? sizeof(VectorTrailer) : 0) + 4;
  const std::uint64_t tail = has_walk ? sizeof(WalkSectionHeader) + trailer : 4;
  if (h.graph_bytes > size || walk_at > size || size - walk_at < tail || (!has_walk && size != walk_at + tail))
    bad_file(path, "size " + std::to_string(size) + " does not match its header (truncated or corrupted)");
  WalkSectionHeader walk{};
  if (has_walk && !read_at(fd, &walk, sizeof walk, walk_at)) bad_file(path, "unexpected end of file");
  if (has_walk && (walk.precision > static_cast<std::uint32_t>(WalkPrecision::Int8) || walk.reserved != 0))
    bad_file(path, "walk copy section holds impossible values (corrupted)");
  const bool has_codes = h.version >= kFirstVersionWithCodes;
  // what the walks of the file's graph read: its element data (float32 before format 4)
  const WalkPrecision graph_walk = has_codes ? static_cast<WalkPrecision>(walk.precision) : WalkPrecision::Float32;
  const std::uint64_t data_bytes = code_bytes(h.dim, graph_walk);

  // hnswlib's header drives allocations and offsets: check it before anything is allocated
  std::array<unsigned char, detail::HnswlibHeader::kBytes> graph_head{};
  if (!read_at(fd, graph_head.data(), std::min<std::uint64_t>(h.graph_bytes, graph_head.size()), sizeof h))
    bad_file(path, "unexpected end of file");
  const std::string graph_problem = detail::graph_header_problem(graph_head.data(), h.graph_bytes, data_bytes, h.M,
                                                                 h.ef_construction, h.capacity, h.n_live);
  if (!graph_problem.empty()) bad_file(path, graph_problem);
  const detail::HnswlibHeader gh = detail::HnswlibHeader::parse(graph_head.data());
  const std::uint64_t level0_in_file = gh.cur_element_count * gh.size_data_per_element;
  const std::uint64_t links_bytes = h.graph_bytes - graph_head.size() - level0_in_file;  // >= 0: checked above

  HnswParams params;
  params.M = h.M;
  params.M0 = gh.max_m0;
  params.ef_construction = h.ef_construction;
  params.seed = h.seed;
  std::unique_ptr<HnswIndex> idx(new HnswIndex(h.dim, static_cast<Metric>(h.metric), params));
  idx->walk_ = graph_walk;
  if (!vectors_directory.empty()) idx->store_->use_directory(vectors_directory, 0);  // empty yet
  idx->space_ = std::make_unique<KernelSpace>(h.dim, static_cast<Metric>(h.metric), graph_walk);
  std::uint64_t walk_bytes = 0;  // format 3: its walk copy; format 4-5: the float32 originals
  std::uint64_t padding = 0;     // format 5: zero bytes before the originals
  if (has_walk) {
    const std::uint64_t stride =
        has_codes ? data_bytes : v3_copy_stride(h.dim, static_cast<WalkPrecision>(walk.precision));
    if (walk.stride != stride) bad_file(path, "walk copy section does not match the header");
    const std::uint64_t row = has_codes ? (graph_walk == WalkPrecision::Float32 ? 0 : h.dim * sizeof(float)) : stride;
    walk_bytes = gh.cur_element_count * row;
    if (has_mapped_vectors) padding = vector_padding(walk_at + sizeof walk, walk_bytes);
    if (size - walk_at - tail != walk_bytes + padding)
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
  if (::posix_memalign(&level0, detail::kHugePage, std::max<std::size_t>(block, 1)) != 0) throw std::bad_alloc();
  // free()d by hnswlib, as its malloc'ed block; read into 4 KiB pages (see collapse_huge_pages)
  gr.data_level0_memory_ = static_cast<char*>(level0);
  gr.linkLists_ = static_cast<char**>(std::calloc(std::max<std::size_t>(cap, 1), sizeof(void*)));
  if (!gr.linkLists_) throw std::bad_alloc();
  gr.element_levels_ = std::vector<int>(cap);
  std::vector<std::mutex>(cap).swap(gr.link_list_locks_);
  std::vector<std::mutex>(Graph::MAX_LABEL_OPERATION_LOCKS).swap(gr.label_op_locks_);
  gr.visited_list_pool_ = std::make_unique<hnswlib::VisitedListPool>(1, cap);
  idx->hnsw_ = std::move(graph);
  idx->resize_slots(cap, /*huge_now=*/false);  // and the vector store, read into below (format 4)

  Crc32 crc;
  crc.update(reinterpret_cast<const char*>(&h) + sizeof kMagic, sizeof h - sizeof kMagic);
  crc.update(graph_head.data(), graph_head.size());
  std::vector<char> links(links_bytes), raw(rows_bytes);
  std::uint32_t stored = 0;
  const std::uint64_t links_at = sizeof h + graph_head.size() + level0_in_file;
  bool ok = read_checked(fd, gr.data_level0_memory_, level0_in_file, sizeof h + graph_head.size(), crc) &&
            read_checked(fd, links.data(), links_bytes, links_at, crc) &&
            read_checked(fd, raw.data(), rows_bytes, links_at + links_bytes, crc);
  const std::uint64_t vectors_at = walk_at + sizeof walk + padding;
  // format 5: the originals are mapped (below) where the file's offset suits this machine's pages
  const auto page = static_cast<std::uint64_t>(::sysconf(_SC_PAGESIZE));
  const bool map_vectors = has_mapped_vectors && walk_bytes > 0 && vectors_at % page == 0;
  VectorTrailer vector_trailer{};
  if (ok && has_walk) {
    crc.update(&walk, sizeof walk);
    std::vector<char> skipped(padding);
    ok = read_at(fd, skipped.data(), skipped.size(), walk_at + sizeof walk);
    crc.update(skipped.data(), skipped.size());
    std::vector<char> v3_copy(has_codes ? 0 : walk_bytes);  // checked, then dropped (re-encoded below)
    char* dest = has_codes ? idx->store_->data() : v3_copy.data();
    Crc32 vectors;  // format 5: the originals' own CRC
    if (ok && !map_vectors && walk_bytes > 0)
      ok = read_checked(fd, dest, walk_bytes, vectors_at, has_mapped_vectors ? vectors : crc);
    if (ok && has_mapped_vectors) {
      ok = read_at(fd, &vector_trailer, sizeof vector_trailer, size - trailer);
      crc.update(&vector_trailer, sizeof vector_trailer);
      if (ok && (vector_trailer.offset != vectors_at || vector_trailer.bytes != walk_bytes))
        bad_file(path, "float32 vectors' trailer does not match the header (corrupted)");
      if (ok && !map_vectors && vectors.value() != vector_trailer.crc)
        bad_file(path, "checksum mismatch in the float32 vectors (the file is corrupted)");
    }
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
  detail::IdTable& ids = *idx->ids_;
  ids.reserve(used);
  for (std::size_t i = 0; i < used; ++i) {
    const std::uint64_t label = gr.getExternalLabel(static_cast<hnswlib::tableint>(i));
    if (label == kNoId) bad_file(path, "graph section holds the reserved id 2**64-1");
    ids.assign(label, static_cast<hnswlib::tableint>(i));
    if (gr.isMarkedDeleted(static_cast<hnswlib::tableint>(i))) {
      gr.num_deleted_ += 1;
      gr.deleted_elements.insert(static_cast<hnswlib::tableint>(i));
    }
  }

  std::vector<FileRow> rows(h.n_live);
  for (std::uint64_t i = 0; i < h.n_live; ++i)  // (id, group) lead both row layouts
    std::memcpy(&rows[i], raw.data() + i * row_bytes, sizeof(FileRow));
  std::vector<char>().swap(raw);
  if (gr.data_size_ != data_bytes || gr.M_ != h.M) bad_file(path, "graph section does not match the header");
  const std::string links_problem = detail::graph_links_problem(gr);
  if (!links_problem.empty()) bad_file(path, links_problem);
  if (gr.cur_element_count - gr.num_deleted_ != h.n_live)
    bad_file(path, "graph and id table disagree on the number of vectors");
  for (std::uint64_t i = 0; i < h.n_live; ++i) {  // publish_slot's writes, without its label lookup
    // by value: FileRow is packed, and binding a reference to its misaligned id is undefined
    const std::uint64_t id = rows[i].id;
    const std::uint32_t slot = ids.find(id);
    if (slot == detail::IdTable::kAbsent || gr.isMarkedDeleted(slot))
      bad_file(path, "id table names a vector the graph does not hold");
    SlotMeta& sm = idx->slots_[slot];
    if (sm.live.load(std::memory_order_relaxed)) bad_file(path, "id table has duplicates");
    sm.group.store(rows[i].group, std::memory_order_relaxed);
    sm.live.store(1, std::memory_order_relaxed);  // nothing searches the index before load returns
  }
  // formats 1-3: the float32 graph gets the walk codes it was saved with (formats 1-2: int8)
  if (!has_codes) idx->set_walk_precision(has_walk ? static_cast<WalkPrecision>(walk.precision) : WalkPrecision::Int8);
  idx->ef_ = h.ef;
  gr.setEf(h.ef);
  // later faults and khugepaged may use huge pages here; collapse_huge_pages does it now
  if (map_vectors) {  // last: nothing above may throw after the store maps the file
    idx->store_->map_file_rows(fd, vectors_at, used);
    auto section = std::make_unique<detail::MappedSection>();
    section->offset = vectors_at;
    section->bytes = walk_bytes;
    section->crc = vector_trailer.crc;
    section->fd = closer.fd;  // kept open for check_mapped_vectors
    closer.fd = -1;
    idx->mapped_section_ = std::move(section);
  }
  advise_huge_pages(gr.data_level0_memory_, level0_bytes(gr));
  detail::release_idle_locks(gr);  // written whole above, locked by no one yet
  idx->store_->advise_huge();
  idx->refresh_routes({}, /*rebuild=*/true);
  return idx;
}

std::string HnswIndex::check_mapped_vectors() const {
  const detail::MappedSection* section = mapped_section_.get();
  if (!section) return {};
  // one piece at a time on this thread (a low-priority one: no parallel_for); what it reads stays
  // in the page cache, where the mapping's next faults find it
  constexpr std::uint64_t kPiece = std::uint64_t{4} << 20;
  std::vector<char> piece(static_cast<std::size_t>(std::min(kPiece, section->bytes)));
  Crc32 crc;
  for (std::uint64_t at = 0; at < section->bytes; at += kPiece) {
    const std::uint64_t len = std::min(kPiece, section->bytes - at);
    if (!read_at(section->fd, piece.data(), static_cast<std::size_t>(len), section->offset + at))
      return "the snapshot's float32 vectors cannot be read: " + std::string(std::strerror(errno));
    crc.update(piece.data(), static_cast<std::size_t>(len));
  }
  if (crc.value() != section->crc)
    return "the snapshot's float32 vectors fail their checksum (re-ranking distances and get_vectors of "
           "the damaged rows are wrong; the graph and its codes were checked at load)";
  return {};
}

std::size_t HnswIndex::mapped_vector_bytes() const {
  std::shared_lock<FairSharedMutex> lock(mutex_);
  return store_->file_mapped_bytes();
}

}  // namespace frameseek
