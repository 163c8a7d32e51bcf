// frameseek._native.SearchDirectory: the one vector search (see search_directory.hpp), and the
// bounds and defaults of its options (MAX_K, ...), which Python reads from here.
#include <algorithm>

#include <pybind11/numpy.h>
#include <pybind11/stl.h>

#include "bind_common.hpp"
#include "bindings.hpp"
#include "frameseek/filter.hpp"
#include "frameseek/flat_index.hpp"
#include "frameseek/hnsw_index.hpp"
#include "frameseek/search_directory.hpp"

namespace py = pybind11;
using namespace pybind11::literals;

namespace frameseek::bindings {

namespace {

// Keeps a Python object (the LiveIndex) alive for as long as a search may use it; the last
// reference may drop on a gRPC thread, which then takes the GIL to release it.
std::shared_ptr<void> keep_alive(py::object obj) {
  return std::shared_ptr<void>(new py::object(std::move(obj)), [](void* p) {
    py::gil_scoped_acquire gil;
    delete static_cast<py::object*>(p);
  });
}

using U64Array = py::array_t<std::uint64_t, py::array::c_style | py::array::forcecast>;

std::unordered_set<std::uint64_t> id_set(const U64Array& a) {
  if (a.ndim() != 1) throw py::value_error("video ids must be 1-D");
  return {a.data(), a.data() + a.size()};
}

// A Python object's kNN as a KnnSource (frameseek.storage.scaleout's Milvus collections): it has
// `dim`, `metric` ("ip" | "l2"), search(query, k, ef, groups) -> (ids uint64[k], dist float32[k])
// and search_groups(query, k, ef, groups) -> (groups, ids, dist), groups = the filter's video ids
// (uint64 array) or None. Called with the GIL taken; a Python exception propagates.
class PyKnnSource final : public KnnSource {
 public:
  explicit PyKnnSource(py::object obj)
      : obj_(std::move(obj)),
        dim_(obj_.attr("dim").cast<std::size_t>()),
        metric_(obj_.attr("metric").cast<std::string>() == "ip" ? Metric::IP : Metric::L2) {}
  ~PyKnnSource() override {  // the last reference may drop on a gRPC thread
    py::gil_scoped_acquire gil;
    obj_ = py::object();
  }
  std::size_t dim() const override { return dim_; }
  Metric metric() const override { return metric_; }
  void search(const float* q, std::size_t k, std::size_t ef, const Filter* f, std::uint64_t* ids,
              float* dist) const override {
    py::gil_scoped_acquire gil;
    auto r = obj_.attr("search")(query(q), k, ef, groups(f)).cast<py::tuple>();
    copy(r[0], ids, k);
    copy(r[1], dist, k);
  }
  void search_groups(const float* q, std::size_t k, std::size_t ef, const Filter* f, std::uint64_t* gids,
                     std::uint64_t* ids, float* dist) const override {
    py::gil_scoped_acquire gil;
    auto r = obj_.attr("search_groups")(query(q), k, ef, groups(f)).cast<py::tuple>();
    copy(r[0], gids, k);
    copy(r[1], ids, k);
    copy(r[2], dist, k);
  }

 private:
  py::array_t<float> query(const float* q) const {
    py::array_t<float> a(static_cast<py::ssize_t>(dim_));
    std::copy(q, q + dim_, a.mutable_data());
    return a;
  }
  static py::object groups(const Filter* f) {
    if (!f || !f->groups) return py::none();
    py::array_t<std::uint64_t> a(static_cast<py::ssize_t>(f->groups->size()));
    std::copy(f->groups->begin(), f->groups->end(), a.mutable_data());
    return std::move(a);
  }
  template <typename T>
  static void copy(py::handle src, T* out, std::size_t k) {
    auto a = py::array_t<T, py::array::c_style | py::array::forcecast>::ensure(src);
    if (!a || a.ndim() != 1 || static_cast<std::size_t>(a.size()) != k)
      throw py::value_error("a KnnSource must return 1-D arrays of k results");
    std::copy(a.data(), a.data() + k, out);
  }
  py::object obj_;
  std::size_t dim_;
  Metric metric_;
};

// A LiveIndex made here around a bare HnswIndex (no fresh segment: a replica's collection), with
// the Python object it reads, released under the GIL.
struct GraphOnly {
  py::object graph;
  LiveIndex live;
  explicit GraphOnly(py::object g) : graph(std::move(g)), live(graph.cast<const HnswIndex&>(), nullptr) {}
};

constexpr const char* kLiveDoc = R"doc(A collection's searchable vectors: its HnswIndex (`graph`) and
its fresh segment (a FlatIndex, or None): vectors acknowledged by a commit that the storage's
linker has not yet inserted into the graph. search / search_groups / get_vectors / `in` behave
as HnswIndex's over both parts (the segment is searched exactly, results merged, a vector in both
for a moment counts once). Holds references to both indexes, which stay alive with it.)doc";

void bind_live_index(py::module_& m) {
  py::class_<LiveIndex, std::shared_ptr<LiveIndex>> live(m, "LiveIndex", kLiveDoc);
  live.def(py::init([](const HnswIndex& graph, const FlatIndex* fresh) {
             if (fresh && (fresh->dim() != graph.dim() || fresh->metric() != graph.metric()))
               throw py::value_error("the fresh segment's dimension and metric must be the graph's");
             return std::make_shared<LiveIndex>(graph, fresh);
           }),
           "graph"_a, "fresh"_a = py::none(), py::keep_alive<1, 2>(), py::keep_alive<1, 3>())
      .def_property_readonly("dim", &LiveIndex::dim)
      .def_property_readonly("metric", [](const LiveIndex& x) { return metric_name(x.metric()); })
      .def_property_readonly(
          "fresh_size",
          [](const LiveIndex& x) {
            py::gil_scoped_release release;  // waits on the segment's lock
            return x.fresh_size();
          },
          "Vectors waiting in the fresh segment to be linked into the graph.")
      .def("__len__", &LiveIndex::size, kNoGil)
      .def("__contains__", &contains_id<LiveIndex>, "id"_a)
      .def("get_vectors", &stored_vectors<LiveIndex>, "ids"_a,
           "HnswIndex.get_vectors over both parts (ValueError on an id in neither).");
  def_graph_searches(live, "HnswIndex.search over the graph and the fresh segment.",
                     "HnswIndex.search_groups over the graph and the fresh segment.");
}

constexpr const char* kDirectoryDoc = R"doc(The server's vector search: collections (id, name, model,
live HnswIndex) and videos (collection, per-sample timestamps), pushed from the storage's commits
(frameseek.service.search keeps it), and nearest_videos(). The native front end answers
SearchByVector from the same directory.)doc";

constexpr const char* kNearestDoc = R"doc(The best videos for one query vector, best
first: [(video id, score, [(timestamp, score), ...])], at most k videos (0 = DEFAULT_K) with up
to `matches` timestamps each (0 = 1), best first.
A frame kNN of max(k * matches * 4, 32) grouped by video, topped up by a group-by search when it
yields fewer than k videos although it came back full; one-match searches skip the kNN on a
collection where it rarely suffices (KNN_MISS_SKIP, KNN_PROBE_EVERY). `videos`: only these video
ids (an empty array finds nothing); `exclude`: never these (asked for on top of k). The query
(float32[dim]) is normalised here for the IP metric. Runs without the GIL. ValueError (reason
OPTIONS_OUT_OF_RANGE, DIMENSION_MISMATCH, NON_FINITE_VECTOR or ZERO_VECTOR) when it cannot search;
KeyError for an unknown collection id.)doc";

const char* reason(QueryError e) {
  switch (e) {
    case QueryError::kOptions:
      return "OPTIONS_OUT_OF_RANGE";
    case QueryError::kDimension:
      return "DIMENSION_MISMATCH";
    case QueryError::kNonFinite:
      return "NON_FINITE_VECTOR";
    case QueryError::kZero:
      return "ZERO_VECTOR";
    default:
      return "";
  }
}

std::shared_ptr<DirectoryCollection> known(const SearchDirectory& d, std::uint32_t collection_id) {
  auto coll = d.collection(collection_id);
  if (!coll) throw py::key_error("collection " + std::to_string(collection_id));
  return coll;
}

// What the recall monitor (frameseek.service.recall) reads and sets: the tuned breadth of searches
// that set no ef, and the sampled searches.
void bind_recall_hooks(py::class_<SearchDirectory, std::shared_ptr<SearchDirectory>>& dir) {
  dir.def(
         "set_search_ef",
         [](const SearchDirectory& d, std::uint32_t collection_id, int ef) {
           if (ef < 0 || ef > kMaxEf) throw py::value_error("ef must be in 0..MAX_EF");
           known(d, collection_id)->search_ef.store(ef, std::memory_order_relaxed);
         },
         "collection_id"_a, "ef"_a, "The breadth of the collection's searches that set no ef (0: the index's default).")
      .def(
          "search_ef",
          [](const SearchDirectory& d, std::uint32_t collection_id) {
            return known(d, collection_id)->search_ef.load(std::memory_order_relaxed);
          },
          "collection_id"_a)
      .def(
          "sample_searches",
          [](const SearchDirectory& d, std::uint32_t collection_id, std::uint64_t every, std::size_t capacity) {
            known(d, collection_id)->sampler.configure(every, capacity);
          },
          "collection_id"_a, "every"_a, "capacity"_a,
          "Keep every `every`-th unfiltered search of the collection (0 = none), at most `capacity` "
          "until taken.")
      .def(
          "take_sampled_searches",
          [](const SearchDirectory& d, std::uint32_t collection_id) {
            auto coll = known(d, collection_id);
            std::vector<SampledSearch> taken = coll->sampler.take();
            py::list out(taken.size());
            for (std::size_t i = 0; i < taken.size(); ++i) {
              SampledSearch& s = taken[i];
              py::array_t<float> q(static_cast<py::ssize_t>(s.query.size()));
              std::copy(s.query.begin(), s.query.end(), q.mutable_data());
              py::array_t<std::uint64_t> v(static_cast<py::ssize_t>(s.videos.size()));
              std::copy(s.videos.begin(), s.videos.end(), v.mutable_data());
              out[i] = py::make_tuple(q, s.k, s.min_score, s.ef, v);
            }
            return py::make_tuple(out, coll->sampler.dropped());
          },
          "collection_id"_a,
          "([(query float32[dim] as searched, k, min_score, ef used, video ids returned)], searches "
          "not kept because the queue was full, in all).");
}

}  // namespace

void bind_search(py::module_& m) {
  bind_live_index(m);
  m.attr("SAMPLE_BITS") = py::int_(kSampleBits);
  m.attr("MAX_K") = py::int_(kMaxK);
  m.attr("DEFAULT_K") = py::int_(kDefaultK);
  m.attr("MAX_MATCHES_PER_VIDEO") = py::int_(kMaxMatchesPerVideo);
  m.attr("MAX_EF") = py::int_(kMaxEf);
  m.attr("KNN_MISS_SKIP") = py::float_(kKnnMissSkip);
  m.attr("KNN_PROBE_EVERY") = py::int_(kKnnProbeEvery);

  py::class_<SearchDirectory, std::shared_ptr<SearchDirectory>> dir(m, "SearchDirectory", kDirectoryDoc);
  dir.def(py::init<>())
      .def(
          "put_collection",
          [](SearchDirectory& d, const std::string& name, std::uint32_t id, const std::string& model, bool is_default,
             py::object index) {
            auto c = std::make_shared<DirectoryCollection>();
            c->name = name;
            c->id = id;
            c->model = model;
            c->is_default = is_default;
            if (py::isinstance<LiveIndex>(index)) {
              c->index = &index.cast<const LiveIndex&>();
              c->owner = keep_alive(index);
            } else if (py::isinstance<HnswIndex>(index)) {
              auto* held = new GraphOnly(index);
              c->index = &held->live;
              c->owner = std::shared_ptr<void>(held, [](void* p) {
                py::gil_scoped_acquire gil;
                delete static_cast<GraphOnly*>(p);
              });
            } else {  // an external engine's kNN (see PyKnnSource)
              auto source = std::make_shared<PyKnnSource>(index);
              c->source = source.get();
              c->owner = std::shared_ptr<void>(source, source.get());
            }
            d.put_collection(std::move(c));
          },
          "name"_a, "id"_a, "model"_a, "is_default"_a, "index"_a)
      .def("remove_collection", &SearchDirectory::remove_collection, "id"_a)
      .def(
          "put_video",
          [](SearchDirectory& d, std::uint64_t video_id, std::uint32_t collection_id,
             py::array_t<double, py::array::c_style | py::array::forcecast> timestamps) {
            if (timestamps.ndim() != 1) throw py::value_error("timestamps must be 1-D");
            auto v = std::make_shared<DirectoryVideo>();
            v->collection_id = collection_id;
            v->timestamps.assign(timestamps.data(), timestamps.data() + timestamps.size());
            d.put_video(video_id, std::move(v));
          },
          "video_id"_a, "collection_id"_a, "timestamps"_a)
      .def(
          "put_videos",
          // many videos in one call (a start fills the directory with every stored video): video i
          // has the timestamps[offsets[i]:offsets[i + 1]]; the GIL is released meanwhile
          [](SearchDirectory& d, U64Array video_ids,
             py::array_t<std::uint32_t, py::array::c_style | py::array::forcecast> collection_ids,
             py::array_t<std::int64_t, py::array::c_style | py::array::forcecast> offsets,
             py::array_t<double, py::array::c_style | py::array::forcecast> timestamps) {
            const auto n = video_ids.size();
            if (video_ids.ndim() != 1 || collection_ids.ndim() != 1 || offsets.ndim() != 1 || timestamps.ndim() != 1)
              throw py::value_error("put_videos takes 1-D arrays");
            if (collection_ids.size() != n || offsets.size() != n + 1)
              throw py::value_error("put_videos: one collection id per video and len(video_ids) + 1 offsets");
            const auto* off = offsets.data();
            if (off[0] != 0 || off[n] != timestamps.size())
              throw py::value_error("put_videos: offsets must run from 0 to len(timestamps)");
            for (py::ssize_t i = 0; i < n; ++i)
              if (off[i + 1] < off[i]) throw py::value_error("put_videos: offsets must not decrease");
            const auto* ids = video_ids.data();
            const auto* colls = collection_ids.data();
            const auto* ts = timestamps.data();
            py::gil_scoped_release release;
            for (py::ssize_t i = 0; i < n; ++i) {
              auto v = std::make_shared<DirectoryVideo>();
              v->collection_id = colls[i];
              v->timestamps.assign(ts + off[i], ts + off[i + 1]);
              d.put_video(ids[i], std::move(v));
            }
          },
          "video_ids"_a, "collection_ids"_a, "offsets"_a, "timestamps"_a)
      .def("remove_video", &SearchDirectory::remove_video, "video_id"_a)
      .def_property("ready", &SearchDirectory::ready, &SearchDirectory::set_ready)
      .def_property_readonly("video_count", &SearchDirectory::videos)
      .def_property_readonly("collection_count", &SearchDirectory::collections)
      .def(
          "nearest_videos",
          [](const SearchDirectory& d, std::uint32_t collection_id,
             py::array_t<float, py::array::c_style | py::array::forcecast> query, int k, int matches, float min_score,
             int ef, std::optional<U64Array> videos, std::optional<U64Array> exclude) {
            auto coll = d.collection(collection_id);
            if (!coll) throw py::key_error("collection " + std::to_string(collection_id));
            if (query.ndim() != 1) throw py::value_error("query must be 1-D");
            std::optional<std::unordered_set<std::uint64_t>> only, skip;
            if (videos) only = id_set(*videos);
            if (exclude) skip = id_set(*exclude);
            NearestOptions o;
            o.k = k;
            o.matches = matches;
            o.min_score = min_score;
            o.ef = ef;
            o.videos = only ? &*only : nullptr;
            o.exclude = skip ? &*skip : nullptr;
            std::vector<VideoHit> hits;
            QueryError err;
            {
              py::gil_scoped_release release;
              err = d.nearest_videos(*coll, query.data(), static_cast<std::size_t>(query.size()), o, &hits);
            }
            if (err != QueryError::kNone) throw py::value_error(reason(err));
            py::list out(hits.size());
            for (std::size_t i = 0; i < hits.size(); ++i)
              out[i] = py::make_tuple(hits[i].video_id, hits[i].score, py::cast(hits[i].matches));
            return out;
          },
          "collection_id"_a, "query"_a, "k"_a = 0, "matches"_a = 0, "min_score"_a = 0.0f, "ef"_a = 0,
          "videos"_a = py::none(), "exclude"_a = py::none(), kNearestDoc);
  bind_recall_hooks(dir);
}

}  // namespace frameseek::bindings
