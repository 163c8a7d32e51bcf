// Python surface of the frame-vote aggregation (frameseek/aggregate.hpp). Checks dtypes and shapes,
// converts float32/float64 where documented, releases the GIL for the work itself.
#include <pybind11/numpy.h>
#include <pybind11/stl.h>

#include <cmath>
#include <string>

#include "bindings.hpp"
#include "frameseek/aggregate.hpp"

namespace py = pybind11;

namespace frameseek::bindings {
namespace {

py::array require_array(const py::handle& obj, const char* name) {
  if (!py::isinstance<py::array>(obj))
    throw py::type_error(std::string(name) + " must be a numpy array, got " +
                         std::string(py::str(py::type::of(obj).attr("__name__"))));
  return py::reinterpret_borrow<py::array>(obj);
}

std::string dtype_name(const py::array& a) { return py::str(a.dtype()); }

// Floating input (float32 or float64) as a C-contiguous array of T; copies only when needed.
template <class T>
py::array_t<T, py::array::c_style> floating(const py::handle& obj, const char* name, py::ssize_t ndim) {
  py::array a = require_array(obj, name);
  if (a.dtype().kind() != 'f' || (a.itemsize() != 4 && a.itemsize() != 8))
    throw py::type_error(std::string(name) + " must be float32 or float64, got " + dtype_name(a));
  if (a.ndim() != ndim)
    throw py::value_error(std::string(name) + " must be " + std::to_string(ndim) + "-D, got " +
                          std::to_string(a.ndim()) + "-D");
  return py::array_t<T, py::array::c_style | py::array::forcecast>::ensure(a);
}

py::array_t<std::uint64_t, py::array::c_style> uint64_2d(const py::handle& obj, const char* name) {
  py::array a = require_array(obj, name);
  if (!a.dtype().is(py::dtype::of<std::uint64_t>()))
    throw py::type_error(std::string(name) + " must be uint64, got " + dtype_name(a));
  if (a.ndim() != 2)
    throw py::value_error(std::string(name) + " must be 2-D [q, k], got " + std::to_string(a.ndim()) + "-D");
  return py::array_t<std::uint64_t, py::array::c_style>::ensure(a);
}

void same_shape(const py::array& a, const py::array& ref, const char* name) {
  if (a.shape(0) != ref.shape(0) || a.shape(1) != ref.shape(1))
    throw py::value_error(std::string(name) + " has shape (" + std::to_string(a.shape(0)) + ", " +
                          std::to_string(a.shape(1)) + "), neighbor_ids has (" + std::to_string(ref.shape(0)) + ", " +
                          std::to_string(ref.shape(1)) + ")");
}

py::dict segment_dict(const AlignedSegment& s) {
  py::dict d;
  d["query_start"] = s.query_start;
  d["query_end"] = s.query_end;
  d["ref_start"] = s.ref_start;
  d["ref_end"] = s.ref_end;
  d["offset"] = s.offset;
  d["speed"] = s.speed;
  d["score"] = s.score;
  d["frames"] = s.frames;
  return d;
}

py::dict candidate_dict(const Candidate& c) {
  py::dict d;
  d["video"] = c.video;
  d["score"] = c.score;
  d["votes"] = c.votes;
  d["query_coverage"] = c.query_coverage;
  d["ref_coverage"] = std::isnan(c.ref_coverage) ? py::object(py::none()) : py::object(py::float_(c.ref_coverage));
  py::list segs;
  for (const auto& s : c.segments) segs.append(segment_dict(s));
  d["segments"] = segs;
  return d;
}

const char* kAggregateDoc = R"doc(Rank reference videos for a query video from per-frame kNN results.

Arguments (q query frames, k neighbours each; all [q, k] arrays share one shape):
  query_times      float32/float64 [q]   query frame timestamps, seconds (any order)
  neighbor_ids     uint64 [q, k]         reference frame ids; NO_ID pads missing neighbours
  neighbor_groups  uint64 [q, k]         video (group) of each reference frame
  neighbor_times   float32/float64 [q,k] reference frame timestamps, seconds
  neighbor_sims    float32/float64 [q,k] similarity, higher = closer (for metric "ip": 1 - distance)
  neighbor_weights float32/float64 [q,k] optional, in [0, 1]: down-weights votes (see
                   neighbor_idf_weights); None = all 1
  ref_durations    optional {video: seconds}, needed for ref_coverage
Values in NO_ID slots are never read (NaN allowed there). Non-contiguous or float64 inputs are
copied; other dtypes raise TypeError; wrong shapes, NaN/inf values or bad parameters ValueError.

Method: per video, a Hough vote over (speed, offset) of the points (t_query, t_ref) with the
speeds on a geometric grid, least-squares refinement of the winning line, one-to-one assignment
of query and reference frames inside a +-offset_tolerance band, segments cut at gaps > max_gap;
repeated for up to max_segments disjoint query segments.

Parameters:
  min_similarity=0.5      neighbours below this do not vote (tune per embedder)
  speed_min=0.5, speed_max=2.0, speed_step=0.03
                          speed range (reference s per query s) and relative grid step
  offset_tolerance=1.0    seconds: Hough bin width and inlier band; ~1-2 reference frame intervals
  max_gap=3.0             seconds between matched query frames before a segment is cut
  min_segment_frames=3    fewest matched frames in a segment (1 for a still image query)
  min_segment_duration=0  seconds, shortest segment
  frame_interval=None     query sampling interval; None = median gap of query_times
  ref_frame_interval=None reference sampling interval; None = per video, the median gap of its
                          matched reference times (capped at offset_tolerance). A reference frame
                          serves at most ceil(ref_frame_interval / (speed * frame_interval))
                          query frames (1 unless the query is sampled denser than the reference)
  max_segments=4          segments per video
  max_candidates=20       videos returned
  min_score=0.0           videos below are dropped
  refine_iterations=10    most least-squares rounds (stops early when the line converges)
  threads=1               worker threads over videos (0 = all cores); the result is the same

Returns a list (score descending, then video ascending) of dicts:
  video, score in [0,1] (sum over matched query frames of frame time * weight * similarity,
  divided by the query's sampled duration), votes (matched frame pairs), query_coverage (fraction
  of query time inside segments), ref_coverage (fraction of the reference, None without
  ref_durations), segments: list of dicts query_start, query_end, ref_start, ref_end, offset,
  speed (t_ref = offset + speed * t_query), score (matched weight density in [0,1]), frames.)doc";

}  // namespace

void bind_aggregate(py::module_& m) {
  m.def(
      "aggregate",
      [](const py::handle& query_times, const py::handle& neighbor_ids, const py::handle& neighbor_groups,
         const py::handle& neighbor_times, const py::handle& neighbor_sims, const py::handle& neighbor_weights,
         const std::optional<std::unordered_map<std::uint64_t, double>>& ref_durations, double min_similarity,
         double speed_min, double speed_max, double speed_step, double offset_tolerance, double max_gap,
         int min_segment_frames, double min_segment_duration, std::optional<double> frame_interval,
         std::optional<double> ref_frame_interval, int max_segments, int max_candidates, double min_score,
         int refine_iterations, int threads) {
        auto qt = floating<double>(query_times, "query_times", 1);
        auto ids = uint64_2d(neighbor_ids, "neighbor_ids");
        auto groups = uint64_2d(neighbor_groups, "neighbor_groups");
        auto rt = floating<double>(neighbor_times, "neighbor_times", 2);
        auto sims = floating<float>(neighbor_sims, "neighbor_sims", 2);
        std::optional<py::array_t<float, py::array::c_style>> w;
        if (!neighbor_weights.is_none()) w = floating<float>(neighbor_weights, "neighbor_weights", 2);
        same_shape(groups, ids, "neighbor_groups");
        same_shape(rt, ids, "neighbor_times");
        same_shape(sims, ids, "neighbor_sims");
        if (w) same_shape(*w, ids, "neighbor_weights");
        if (qt.shape(0) != ids.shape(0))
          throw py::value_error("query_times has " + std::to_string(qt.shape(0)) + " frames, neighbor_ids has " +
                                std::to_string(ids.shape(0)) + " rows");
        if (threads < 0) throw py::value_error("threads must be >= 0");
        if (frame_interval && !(*frame_interval > 0)) throw py::value_error("frame_interval must be > 0 or None");
        if (ref_frame_interval && !(*ref_frame_interval > 0))
          throw py::value_error("ref_frame_interval must be > 0 or None");

        AggregateParams p;
        p.min_similarity = min_similarity;
        p.speed_min = speed_min;
        p.speed_max = speed_max;
        p.speed_step = speed_step;
        p.offset_tolerance = offset_tolerance;
        p.max_gap = max_gap;
        p.min_segment_frames = min_segment_frames;
        p.min_segment_duration = min_segment_duration;
        p.frame_interval = frame_interval.value_or(0.0);
        p.ref_frame_interval = ref_frame_interval.value_or(0.0);
        p.max_segments = max_segments;
        p.max_candidates = max_candidates;
        p.min_score = min_score;
        p.refine_iterations = refine_iterations;
        p.threads = static_cast<std::size_t>(threads);

        AggregateInput in;
        in.q = static_cast<std::size_t>(ids.shape(0));
        in.k = static_cast<std::size_t>(ids.shape(1));
        in.query_times = qt.data();
        in.ids = ids.data();
        in.groups = groups.data();
        in.ref_times = rt.data();
        in.sims = sims.data();
        in.weights = w ? w->data() : nullptr;
        std::vector<Candidate> out;
        {
          py::gil_scoped_release release;
          out = aggregate(in, p, ref_durations ? &*ref_durations : nullptr);
        }
        py::list result;
        for (const auto& c : out) result.append(candidate_dict(c));
        return result;
      },
      kAggregateDoc, py::arg("query_times"), py::arg("neighbor_ids"), py::arg("neighbor_groups"),
      py::arg("neighbor_times"), py::arg("neighbor_sims"), py::arg("neighbor_weights") = py::none(), py::kw_only(),
      py::arg("ref_durations") = py::none(), py::arg("min_similarity") = 0.5, py::arg("speed_min") = 0.5,
      py::arg("speed_max") = 2.0, py::arg("speed_step") = 0.03, py::arg("offset_tolerance") = 1.0,
      py::arg("max_gap") = 3.0, py::arg("min_segment_frames") = 3, py::arg("min_segment_duration") = 0.0,
      py::arg("frame_interval") = py::none(), py::arg("ref_frame_interval") = py::none(), py::arg("max_segments") = 4,
      py::arg("max_candidates") = 20, py::arg("min_score") = 0.0, py::arg("refine_iterations") = 10,
      py::arg("threads") = 1);

  m.def(
      "neighbor_idf_weights",
      [](const py::handle& neighbor_ids, const py::handle& neighbor_groups, const py::handle& neighbor_sims,
         double min_similarity, double margin, double free_videos, double power) {
        auto ids = uint64_2d(neighbor_ids, "neighbor_ids");
        auto groups = uint64_2d(neighbor_groups, "neighbor_groups");
        auto sims = floating<float>(neighbor_sims, "neighbor_sims", 2);
        same_shape(groups, ids, "neighbor_groups");
        same_shape(sims, ids, "neighbor_sims");
        const auto q = static_cast<std::size_t>(ids.shape(0)), k = static_cast<std::size_t>(ids.shape(1));
        py::array_t<float> out({ids.shape(0), ids.shape(1)});
        float* o = out.mutable_data();
        {
          py::gil_scoped_release release;
          neighbor_idf_weights(q, k, ids.data(), groups.data(), sims.data(), min_similarity, margin, free_videos, power,
                               o);
        }
        return out;
      },
      R"doc(IDF-like vote weights float32[q, k] computed from the neighbour table itself.

For query frame i, df_i = number of distinct videos among its neighbours with similarity >=
max(min_similarity, best_i - margin), best_i being the row's highest similarity; all its
neighbours get min(1, free_videos / df_i) ** power, padding slots 0. A frame whose
near-duplicates span many videos (title card, logo, test pattern) then votes little, a true match
is not diluted by weaker unrelated neighbours, and a library holding up to free_videos copies of
one video is not penalised (margin=inf counts every neighbour above min_similarity). Use it with
FlatIndex/HnswIndex.search results (k frames); with search_groups every row spans k videos by
construction and only min_similarity separates real matches. Multiply with reference-side weights
if the catalog has them (e.g. 1 / number of videos holding a near-duplicate of that frame).)doc",
      py::arg("neighbor_ids"), py::arg("neighbor_groups"), py::arg("neighbor_sims"), py::kw_only(),
      py::arg("min_similarity") = 0.5, py::arg("margin") = 0.1, py::arg("free_videos") = 2.0, py::arg("power") = 1.0);

  m.def(
      "aggregate_speed_grid",
      [](double speed_min, double speed_max, double speed_step) {
        AggregateParams p;
        p.speed_min = speed_min, p.speed_max = speed_max, p.speed_step = speed_step;
        return speed_grid(p);
      },
      "Speeds (ascending) the aggregation's Hough vote tries for these parameters; holds 1.0 when in range.",
      py::kw_only(), py::arg("speed_min") = 0.5, py::arg("speed_max") = 2.0, py::arg("speed_step") = 0.03);
}

}  // namespace frameseek::bindings
