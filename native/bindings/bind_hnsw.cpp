// frameseek._native.HnswIndex: approximate search on an hnswlib graph (see hnsw_index.hpp).
#include <pybind11/numpy.h>

#include "bind_common.hpp"
#include "bindings.hpp"
#include "frameseek/flat_index.hpp"  // parse_metric / metric_name
#include "frameseek/hnsw_index.hpp"

namespace py = pybind11;
using namespace pybind11::literals;

namespace frameseek::bindings {

namespace {

std::string walk_precision_name(HnswIndex::WalkPrecision p) {
  switch (p) {
    case HnswIndex::WalkPrecision::Float16:
      return "float16";
    case HnswIndex::WalkPrecision::Int8:
      return "int8";
    default:
      return "float32";
  }
}

HnswIndex::WalkPrecision parse_walk_precision(const std::string& name) {
  if (name == "int8") return HnswIndex::WalkPrecision::Int8;
  if (name == "float16") return HnswIndex::WalkPrecision::Float16;
  if (name == "float32") return HnswIndex::WalkPrecision::Float32;
  throw std::invalid_argument("walk_precision must be 'int8', 'float16' or 'float32', not '" + name + "'");
}

constexpr const char* kClassDoc =
    R"doc(Approximate nearest-neighbour index (HNSW, hnswlib 0.8 graph on frameseek's SIMD kernels).

Each vector has a uint64 id and a group (its video id; defaults to the id). metric 'ip' reports 1 - dot (use L2-normalised vectors for cosine), 'l2' the
squared Euclidean distance. Missing result slots are NO_ID / +inf.

Defaults (M=32, ef_construction=300, ef=64) were chosen on clustered, L2-normalised 512-d
"video-like" data (benchmarks/datasets.py) inserted video by video, the order a library is
ingested in and the one that hurts HNSW: on runs of near-identical consecutive frames hnswlib's
neighbour heuristic prunes the in-links of earlier frames as later ones arrive, until short runs
of frames are reachable from nowhere and recall stops improving with ef. Measured on 30k
vectors, recall@10 at ef=64: plain hnswlib M=16/efc=200 0.961 (shuffled order 1.00), M=32/
efc=300 0.974. So after each add() every new vector is looked up once more (ef=32) and the 4
nearest vectors that search reached get an in-link to it (a full neighbour list gives up its
farthest link). With that repair: M=16/efc=200 0.991, M=32/efc=300 1.000 (already at ef=32),
for ~1.3x the build time. search_groups with its default ef=16 reached 0.998 group recall@10.
benchmarks/native/bench_hnsw.py measures the recall/QPS trade-off at 200k against hnswlib and
faiss.

A large library is also clustered (topics of videos, unrelated to each other): the greedy descent
through the upper layers then often ends in a wrong cluster, every other cluster looking equally
far. So every walk (and the in-link probe of add()) also starts from the 4 closest nodes of a route
table, a uniform sample of the graph (512-1,024 nodes up to 262k vectors, 1 in 256 up to 4.2M, then 8-16k) ranked by
the Hamming distance of sign bits: recall@10 at ef=16 on 1M video-like vectors 0.951 -> 0.994, on
10M 0.669 -> 0.981 (benchmarks/scale/README.md).

Layer 0 holds hnsw_default_layer0_links(M) link slots a node (3/2 of M, at least 48; hnswlib's 2 * M where that is fewer)
unless M0 says otherwise (at least M): 48 at M=32 is what brings 10M 512-d vectors under 0.8 KB
each (779 B against 843 B with 2 * M), for 4-7 % of single-thread QPS at equal recall there.
M0=32 takes 64 B a vector more off; on the load benchmark's data the source video then came first
for 0.970 instead of 0.997 at ef 64 (1M vectors).

Thread safety: searches may run from many threads at once and concurrently with add() (the GIL
is released). remove(), resize(), save() and setting ef wait for running adds; remove/resize/ef
also briefly wait for running searches. Removed ids free their slot for later adds
(as hnswlib's replace_deleted), so a steady add/remove churn keeps the capacity bounded.)doc";

constexpr const char* kSearchDoc =
    "Approximate top-k: (ids uint64[q, k], distances float32[q, k]) ascending; missing "
    "slots NO_ID / +inf. ef = the walk's beam width (None: the index's ef); below k the walk "
    "stops earlier and still returns the k best of every node it evaluated. The filter is "
    "evaluated in C++ during the graph walk. A 1-D query is one row.";

constexpr const char* kSearchGroupsDoc =
    "Top-k distinct groups (videos): (groups uint64[q, k], best id per group uint64[q, k], "
    "distances float32[q, k]); missing slots NO_ID / NO_ID / +inf. The graph walk keeps "
    "max(ef, k) distinct groups (ef=None: 16, not the index's ef) and admits a frame only "
    "if it beats its group's best, so k frames of one video never crowd out the other "
    "videos. Cost grows with ef x frames per video: keep ef a small multiple of k.";

}  // namespace

void bind_hnsw(py::module_& m) {
  // The graph's defaults, chosen on video-like data (hnsw_index.hpp); new collections take them too.
  m.attr("HNSW_DEFAULT_M") = py::int_(HnswParams::kDefaultM);
  m.attr("HNSW_DEFAULT_EF_CONSTRUCTION") = py::int_(HnswParams::kDefaultEfConstruction);
  m.attr("HNSW_DEFAULT_EF") = py::int_(HnswParams::kDefaultEf);
  m.def(
      "hnsw_default_layer0_links", [](py::ssize_t M) { return HnswParams::default_layer0_links(positive(M, "M")); },
      "M"_a,
      "Layer-0 link slots of a graph built with M0 = 0: 3/2 of M, at least 48 (hnswlib's 2 * M where that is fewer).");
  m.attr("HNSW_MAX_LAYER0_LINKS") = py::int_(HnswParams::kMaxLayer0Links);
  py::class_<HnswIndex> cls(m, "HnswIndex", kClassDoc);
  cls.def(py::init([](py::ssize_t dim, const std::string& metric, py::ssize_t max_elements, py::ssize_t M,
                      py::ssize_t ef_construction, py::ssize_t seed, py::ssize_t M0) {
            HnswParams p;
            p.M = positive(M, "M");
            if (M0 < 0) throw py::value_error("M0 must be >= 0 (0: hnsw_default_layer0_links(M))");
            p.M0 = static_cast<std::size_t>(M0);
            p.ef_construction = positive(ef_construction, "ef_construction");
            if (seed < 0) throw py::value_error("seed must be >= 0");
            p.seed = static_cast<std::size_t>(seed);
            if (max_elements < 0) throw py::value_error("max_elements must be >= 0");
            return new HnswIndex(positive(dim, "dim"), parse_metric(metric), static_cast<std::size_t>(max_elements), p);
          }),
          "dim"_a, "metric"_a = "ip", "max_elements"_a = 1024, "M"_a = HnswParams::kDefaultM,
          "ef_construction"_a = HnswParams::kDefaultEfConstruction, "seed"_a = 100, "M0"_a = 0,
          "max_elements is only the initial capacity: add() grows it. M0: link slots per node on layer 0 "
          "(at least M; 0: hnsw_default_layer0_links(M)). Each slot costs 4 B a vector; whether recall holds "
          "with fewer depends on the data (measure it).")
      .def_property_readonly("dim", &HnswIndex::dim)
      .def_property_readonly("metric", [](const HnswIndex& x) { return metric_name(x.metric()); })
      .def_property_readonly("M", &HnswIndex::M)
      .def_property_readonly("M0", &HnswIndex::M0)
      .def_property_readonly("ef_construction", &HnswIndex::ef_construction)
      .def_property(
          "ef", py::cpp_function(&HnswIndex::ef, kNoGil),
          [](HnswIndex& x, py::ssize_t ef) {
            const std::size_t e = positive(ef, "ef");
            py::gil_scoped_release release;  // waits for running searches, which may need the GIL
            x.set_ef(e);
          },
          "Default search breadth (used when search(ef=None)); at least k is always used.")
      .def_property(
          "walk_precision", [](const HnswIndex& x) { return walk_precision_name(x.walk_precision()); },
          [](HnswIndex& x, const std::string& name) {
            const auto p = parse_walk_precision(name);
            py::gil_scoped_release release;  // waits for running searches; rebuilds the copy
            x.set_walk_precision(p);
          },
          "What the graph is built on and the walks read: 'int8' (default: per-vector int8 codes, "
          "dim + 8 bytes per slot), 'float16' (dim*2 bytes) or 'float32' (dim*4). With int8/float16 "
          "the float32 originals are kept apart (in memory, or in a mapped file: "
          "store_vectors_in) and results are re-ranked on them, so returned distances are exact "
          "whatever it is. Reads 'float32' after an add whose values the codes cannot hold. Saved "
          "with the index (codes and originals, so that load re-encodes nothing).")
      .def(
          "store_vectors_in",
          [](HnswIndex& x, const std::string& directory) {
            py::gil_scoped_release release;  // waits for running adds and searches
            x.store_vectors_in(directory);
          },
          "directory"_a,
          "Keep the float32 originals (read only to re-rank results and by get_vectors) in an "
          "unlinked file in `directory`, memory-mapped and read on demand, instead of anonymous "
          "memory. The file is scratch: it vanishes with the index or the process; snapshots "
          "carry the vectors themselves. OSError/RuntimeError when it cannot be created.")
      .def_property_readonly("vectors_file_backed", py::cpp_function(&HnswIndex::vectors_file_backed, kNoGil),
                             "Whether the float32 originals live in a mapped file (store_vectors_in).")
      .def_property_readonly("capacity", py::cpp_function(&HnswIndex::capacity, kNoGil),
                             "Allocated slots (live + removed awaiting reuse + free).")
      .def_property_readonly("deleted_slots", py::cpp_function(&HnswIndex::deleted_slots, kNoGil),
                             "Slots of removed vectors that the next adds will reuse.")
      .def("__len__", &HnswIndex::size, kNoGil)
      .def("__contains__", &contains_id<HnswIndex>, "id"_a)
      .def("__repr__",
           [](const HnswIndex& x) {
             std::size_t size, ef;
             {
               py::gil_scoped_release release;
               size = x.size();
               ef = x.ef();
             }
             return "HnswIndex(dim=" + std::to_string(x.dim()) + ", metric='" + metric_name(x.metric()) +
                    "', size=" + std::to_string(size) + ", M=" + std::to_string(x.M()) +
                    ", ef_construction=" + std::to_string(x.ef_construction()) + ", ef=" + std::to_string(ef) + ")";
           })
      .def(
          "add",
          [](HnswIndex& x, py::handle ids, py::handle vectors, py::handle groups, py::ssize_t threads) {
            const AddCall a(x.dim(), ids, vectors, groups);
            const std::size_t nt = check_threads(threads);
            py::gil_scoped_release release;
            x.add(a.ids.data(), a.vectors.data(), a.n, a.group_ptr, nt);
          },
          "ids"_a, "vectors"_a, "groups"_a = py::none(), "threads"_a = 0,
          "Add vectors float32[n, dim] under ids uint64[n] (groups default to the ids), on `threads` threads (0 = all "
          "cores). Grows the capacity as needed and reuses "
          "removed slots. A duplicate id (stored or repeated), NO_ID, or NaN/inf raises "
          "ValueError and nothing is added.")
      .def(
          "remove",
          [](HnswIndex& x, py::handle ids) {
            auto id = as_uint_vector<std::uint64_t>(ids, "ids");
            py::gil_scoped_release release;
            return x.remove(id.data(), static_cast<std::size_t>(id.size()));
          },
          "ids"_a,
          "Remove these ids (they are never returned again; their slots are reused by later "
          "adds). Returns how many were present; absent ids are ignored.")
      .def(
          "resize",
          [](HnswIndex& x, py::ssize_t max_elements) {
            if (max_elements < 0) throw py::value_error("max_elements must be >= 0");
            py::gil_scoped_release release;
            x.resize(static_cast<std::size_t>(max_elements));
          },
          "max_elements"_a, "Set the capacity (ValueError below the occupied slots: live + removed awaiting reuse).");
  def_graph_searches(cls, kSearchDoc, kSearchGroupsDoc);
  cls.def(
         "walk_distances",
         [](const HnswIndex& x, py::handle queries, py::ssize_t k, py::handle ef, py::handle filter) {
           const SearchCall c(x.dim(), queries, k, ef, filter, 0);
           SearchResults out(c.nq, c.k, false);
           py::array_t<std::uint64_t> cost(static_cast<py::ssize_t>(c.nq));
           std::uint64_t* cost_ptr = cost.mutable_data();
           {
             py::gil_scoped_release release;
             x.search(c.queries(), c.nq, c.k, c.ef, c.filter, out.id_ptr, out.dist_ptr, 0, cost_ptr);
           }
           return cost;
         },
         "queries"_a, "k"_a, "ef"_a = py::none(), "filter"_a = py::none(),
         "The cost of search(queries, k, ef, filter): distance evaluations of each query's layer-0 "
         "walk, uint64[q] (machine-independent, unlike its time).")
      .def("get_vectors", &stored_vectors<HnswIndex>, "ids"_a,
           "The stored vectors of these ids, float32[n, dim], exactly as added (in the ids' "
           "order). ValueError on an id that is not in the index (absent or removed).")
      .def(
          "save",
          [](const HnswIndex& x, const std::string& path) {
            py::gil_scoped_release release;
            x.save(path);
          },
          "path"_a, "Write a versioned, CRC-32-checked file atomically (temp file + fsync + rename).")
      .def("check_mapped_vectors", &HnswIndex::check_mapped_vectors, kNoGil,
           "Check the snapshot's float32 vectors that load mapped instead of reading against their "
           "CRC-32 (one read of the file). Returns '' when intact or nothing is mapped, else what is "
           "wrong: re-ranking and get_vectors of damaged rows are then wrong (the graph and its "
           "codes were checked at load).")
      .def_property_readonly("mapped_vector_bytes", &HnswIndex::mapped_vector_bytes,
                             "Bytes of the snapshot's float32 vectors mapped from its file (0: none).")
      .def("collapse_huge_pages", &HnswIndex::collapse_huge_pages, kNoGil,
           "Move the walk's memory onto 2 MiB pages now (load reads into 4 KiB pages, so that a "
           "restart does not wait for the kernel to compact memory); searches and adds go on "
           "meanwhile. Returns the bytes collapsed (0 where the kernel cannot: Linux < 6.1).")
      .def_static(
          "load",
          [](const std::string& path, py::handle vectors_dir) {
            const std::string dir = vectors_dir.is_none() ? std::string{} : vectors_dir.cast<std::string>();
            py::gil_scoped_release release;
            return HnswIndex::load(path, dir);
          },
          "path"_a, "vectors_dir"_a = py::none(),
          "Read a file written by save() (format 4, or formats 1-3 of earlier builds, whose codes "
          "are re-encoded). vectors_dir: as store_vectors_in(vectors_dir), the float32 originals "
          "read straight into the mapped file. ValueError on a missing, truncated, corrupted or "
          "foreign file.");
}

}  // namespace frameseek::bindings
