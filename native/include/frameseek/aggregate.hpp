// Frame-vote aggregation: turns the per-frame kNN results of a query video into a ranked list of
// reference videos, each with the time segments that copy it.
//
// Model. Every neighbour (query frame i at t_q, reference frame r of video g at t_r, similarity s,
// weight w) is a point (t_q, t_r) in that video's match plane. A true copy puts its points on a
// line  t_r = offset + speed * t_q  (speed = reference seconds per query second: 1.25 when the
// query plays the reference 1.25x faster). Outliers (wrong neighbours, repeated content) are
// scattered. So, per video:
//   1. Hough vote over (speed, offset): speeds on a geometric grid, offsets binned by
//      `offset_tolerance` seconds at two half-shifted phases. A query frame adds at most its best
//      match to a cell, so one static query frame matching many reference frames is one vote.
//   2. The best cell seeds a line; a weighted least-squares fit on the matches inside the
//      +-offset_tolerance band refines speed and offset (a few rounds; speed stays in range).
//   3. Matches in the band are assigned one-to-one (each query frame used once, each reference
//      frame once -- or, when the query is sampled denser than the reference along this line,
//      by at most ref_frame_interval / (speed * frame_interval) query frames, the query time it
//      legitimately explains; best weighted similarity first), sorted by query time and cut into
//      segments wherever consecutive matched query frames are more than `max_gap` apart.
//      Segments with at least `min_segment_frames` frames are kept.
//   4. Query frames inside accepted segments are removed and the vote repeats, so one video can
//      yield several segments (e.g. a query assembled from two parts of it), disjoint in query
//      time.
// Score. Each query frame carries a time cell (its share of the query's sampled duration, about
// one frame interval). Video score = sum over matched frames of cell * w * clamp(s, 0, 1) divided
// by the total query duration, so it lies in [0, 1]: a full exact copy with weights 1 scores ~1,
// unmatched or weakly matched query time lowers it. Coverage counts distinct query (reference)
// time, never matches, so a static frame matching many others cannot fake a long segment.
// Everything is deterministic: inputs are canonicalised (sorted) first and all ties are broken on
// ids, so the result does not depend on neighbour order within a row or on thread count.
#pragma once
#include <cstddef>
#include <cstdint>
#include <limits>
#include <unordered_map>
#include <vector>

#include "frameseek/filter.hpp"  // kNoId: padding id in kNN results

namespace frameseek {

struct AggregateParams {
  double min_similarity = 0.5;  // neighbours below this similarity do not vote
  double speed_min = 0.5;       // speed range searched (reference s per query s)
  double speed_max = 2.0;
  double speed_step = 0.03;           // relative step of the geometric speed grid (grid holds 1.0)
  double offset_tolerance = 1.0;      // s: Hough offset bin width and inlier band half-width
  double max_gap = 3.0;               // s: largest gap between matched query frames in one segment
  int min_segment_frames = 3;         // fewest matched query frames for a segment
  double min_segment_duration = 0.0;  // s: shortest query extent for a segment
  double frame_interval = 0.0;        // s: query sampling interval; <= 0 = median gap of query times
  double ref_frame_interval = 0.0;    // s: reference sampling interval; <= 0 = estimated per video
  int max_segments = 4;               // most segments per video
  int max_candidates = 20;            // most videos returned
  double min_score = 0.0;             // videos scoring below this are dropped
  int refine_iterations = 10;         // most least-squares refinement rounds per line (stops when converged)
  std::size_t threads = 1;            // worker threads over videos (0 = all cores)
};

// Validates a parameter set; throws std::invalid_argument with a message naming the parameter.
void validate(const AggregateParams& p);

// The speed grid the Hough vote uses for these parameters (ascending, contains 1.0 when in range).
std::vector<double> speed_grid(const AggregateParams& p);

struct AlignedSegment {
  double query_start = 0, query_end = 0;  // s, first and last matched query frame
  double ref_start = 0, ref_end = 0;      // s, the fitted line at query_start / query_end
  double offset = 0;                      // s: t_ref = offset + speed * t_query
  double speed = 1;                       // reference seconds per query second
  double score = 0;                       // [0,1]: matched weight over the query time inside the segment
  int frames = 0;                         // matched (query frame, reference frame) pairs, one-to-one
};

struct Candidate {
  std::uint64_t video = 0;    // the neighbours' group
  int votes = 0;              // matched pairs over all segments
  double score = 0;           // [0,1], see above
  double query_coverage = 0;  // fraction of query time inside the segments
  // fraction of the reference duration inside the segments; NaN when its duration is unknown
  double ref_coverage = std::numeric_limits<double>::quiet_NaN();
  std::vector<AlignedSegment> segments;  // by query_start
};

// Borrowed views of the inputs; all [q, k] arrays are row-major. Values at slots whose id is kNoId
// are never read. weights may be null (all 1).
struct AggregateInput {
  std::size_t q = 0, k = 0;
  const double* query_times = nullptr;    // [q] seconds
  const std::uint64_t* ids = nullptr;     // [q,k] reference frame ids, kNoId = no neighbour
  const std::uint64_t* groups = nullptr;  // [q,k] video of each reference frame
  const double* ref_times = nullptr;      // [q,k] seconds
  const float* sims = nullptr;            // [q,k] similarity, higher = closer
  const float* weights = nullptr;         // [q,k] in [0,1] or null
};

// Validates values (finite times, no NaN similarity, weights in [0,1]) and aggregates. Results are
// sorted by score descending, then video ascending. ref_durations (video -> seconds) is optional.
std::vector<Candidate> aggregate(const AggregateInput& in, const AggregateParams& p,
                                 const std::unordered_map<std::uint64_t, double>* ref_durations);

// IDF-like per-neighbour weights from the neighbour table itself: df_i = number of distinct videos
// among query frame i's neighbours with similarity >= max(min_similarity, best_i - margin), where
// best_i is the row's highest similarity; every neighbour of that row gets
// min(1, free_videos / df_i) ^ power (rows with df_i <= free_videos keep weight 1, so a library
// holding a few copies of one video is not penalised). Padding slots get 0.
void neighbor_idf_weights(std::size_t q, std::size_t k, const std::uint64_t* ids, const std::uint64_t* groups,
                          const float* sims, double min_similarity, double margin, double free_videos, double power,
                          float* out);

}  // namespace frameseek
