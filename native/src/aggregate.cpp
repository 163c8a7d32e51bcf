// Frame-vote aggregation; the method is described in frameseek/aggregate.hpp.
#include "frameseek/aggregate.hpp"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <optional>
#include <stdexcept>
#include <string>

#include "frameseek/parallel.hpp"

namespace frameseek {
namespace {

// One usable neighbour. qi is the rank of its query frame in time order.
struct Match {
  std::uint64_t group;
  std::uint64_t ref;
  std::uint32_t qi;
  double tq, tr;
  float val;  // weight * clamp(similarity, 0, 1): what this match adds to a score
};

// Shared, read-only facts about the query.
struct QueryCtx {
  const AggregateParams* p;
  std::vector<double> speeds;
  std::vector<double> times;        // query times in ascending order (index = qi)
  std::vector<double> cell;         // time each query frame stands for (index = qi)
  std::vector<double> cell_prefix;  // cell_prefix[i] = sum of cell[0..i)
  double total = 0;                 // sum of cells: the query's sampled duration
  double dt = 1;                    // query frame interval
  const std::unordered_map<std::uint64_t, double>* ref_durations;

  // Query time (sum of cells) of the frames with time in [a, b].
  double cells_between(double a, double b) const {
    auto lo = std::lower_bound(times.begin(), times.end(), a) - times.begin();
    auto hi = std::upper_bound(times.begin(), times.end(), b) - times.begin();
    return hi > lo ? cell_prefix[hi] - cell_prefix[lo] : 0.0;
  }
};

struct Line {
  double speed, offset;
  double at(double tq) const { return offset + speed * tq; }
};

struct Fit {
  bool ok;
  Line line;
};

// Weighted least squares t_r = offset + speed * t_q over (tq, tr, w). The slope is kept inside
// [smin, smax]; with a clamped or undefined slope only the offset is refit (weighted mean).
Fit fit_line(const std::vector<double>& tq, const std::vector<double>& tr, const std::vector<double>& w,
             double fallback_speed, double smin, double smax) {
  double sw = 0, sx = 0, sy = 0;
  for (std::size_t i = 0; i < tq.size(); ++i) sw += w[i], sx += w[i] * tq[i], sy += w[i] * tr[i];
  if (sw <= 0) return {false, {fallback_speed, 0}};
  const double mx = sx / sw, my = sy / sw;
  double sxx = 0, sxy = 0;
  for (std::size_t i = 0; i < tq.size(); ++i) {
    const double dx = tq[i] - mx;
    sxx += w[i] * dx * dx;
    sxy += w[i] * dx * (tr[i] - my);
  }
  double speed = fallback_speed;
  // A slope needs query frames spread in time; below a millisecond of spread it is noise.
  if (sxx > 1e-6 * sw) speed = std::clamp(sxy / sxx, smin, smax);
  return {true, {speed, my - speed * mx}};
}

class VideoAligner {
 public:
  VideoAligner(const QueryCtx& ctx, const Match* m, std::size_t n) : ctx_(ctx), p_(*ctx.p), m_(m), n_(n) {
    // Dense local indices for the distinct query frames and reference frames of this video.
    qlocal_.resize(n);
    std::uint32_t nq = 0;
    for (std::size_t j = 0; j < n; ++j) {
      if (j > 0 && m[j].qi != m[j - 1].qi) ++nq;
      qlocal_[j] = nq;
    }
    nq_ = n ? nq + 1 : 0;
    std::vector<std::uint64_t> refs(n);
    for (std::size_t j = 0; j < n; ++j) refs[j] = m[j].ref;
    std::sort(refs.begin(), refs.end());
    refs.erase(std::unique(refs.begin(), refs.end()), refs.end());
    rlocal_.resize(n);
    for (std::size_t j = 0; j < n; ++j)
      rlocal_[j] = static_cast<std::uint32_t>(std::lower_bound(refs.begin(), refs.end(), m[j].ref) - refs.begin());
    nr_ = refs.size();
    // Reference sampling interval: given, or the median gap between this video's distinct matched
    // reference times (consecutive frames for a true copy), capped at offset_tolerance so sparse
    // chance matches cannot claim a long interval.
    ref_dt_ = p_.ref_frame_interval;
    if (!(ref_dt_ > 0)) {
      std::vector<double> rt(n);
      for (std::size_t j = 0; j < n; ++j) rt[j] = m[j].tr;
      std::sort(rt.begin(), rt.end());
      std::vector<double> gaps;
      for (std::size_t j = 1; j < n; ++j)
        if (rt[j] > rt[j - 1]) gaps.push_back(rt[j] - rt[j - 1]);
      ref_dt_ = 0;
      if (!gaps.empty()) {
        std::nth_element(gaps.begin(), gaps.begin() + gaps.size() / 2, gaps.end());
        ref_dt_ = std::min(gaps[gaps.size() / 2], p_.offset_tolerance);
      }
    }
  }

  std::optional<Candidate> run() {
    if (nq_ < static_cast<std::size_t>(p_.min_segment_frames)) return std::nullopt;
    active_.assign(n_, 1);
    q_stamp_.assign(nq_, 0);
    r_stamp_.assign(nr_, 0);
    r_used_.assign(nr_, 0);
    r_spent_.assign(nr_, 0);
    Candidate cand;
    cand.video = m_[0].group;
    double matched = 0, covered = 0;
    const int max_attempts = 2 * p_.max_segments + 2;
    for (int attempt = 0; attempt < max_attempts; ++attempt) {
      if (static_cast<int>(cand.segments.size()) >= p_.max_segments) break;
      Peak peak = hough_peak();
      // A line through fewer than two query frames cannot be told from chance.
      if (peak.frames == 0 || (peak.frames < 2 && p_.min_segment_frames >= 2)) break;
      Line line = refine({ctx_.speeds[peak.speed_index], peak.offset});
      extract(line, attempt + 1, cand, matched, covered);
    }
    if (cand.segments.empty()) return std::nullopt;
    std::sort(cand.segments.begin(), cand.segments.end(),
              [](const AlignedSegment& a, const AlignedSegment& b) { return a.query_start < b.query_start; });
    cand.score = std::clamp(matched / ctx_.total, 0.0, 1.0);
    cand.query_coverage = std::clamp(covered / ctx_.total, 0.0, 1.0);
    cand.ref_coverage = ref_coverage(cand);
    return cand;
  }

 private:
  struct Peak {
    double score = 0;
    std::size_t frames = 0;  // distinct query frames in the cell
    std::size_t speed_index = 0;
    double offset = 0;
  };

  // Hough vote over (speed, offset) on the active matches. Each query frame adds only its best
  // match to a cell. Two half-shifted bin phases make every offset window of half a bin fall
  // fully inside some cell.
  Peak hough_peak() {
    Peak best;
    const double W = p_.offset_tolerance;
    for (std::size_t si = 0; si < ctx_.speeds.size(); ++si) {
      const double v = ctx_.speeds[si];
      idx_.clear();
      off_.clear();
      double bmin = INFINITY, bmax = -INFINITY;
      for (std::size_t j = 0; j < n_; ++j) {
        if (!active_[j]) continue;
        idx_.push_back(j);
        const double b = m_[j].tr - v * m_[j].tq;
        off_.push_back(b);
        bmin = std::min(bmin, b);
        bmax = std::max(bmax, b);
      }
      if (idx_.empty()) return best;
      for (double& b : off_) b = (b - bmin) / W;  // offsets in bins from the smallest
      for (int phase = 0; phase < 2; ++phase) {
        const double shift = 0.5 * phase;
        const auto nbins = static_cast<std::size_t>(std::floor((bmax - bmin) / W + shift)) + 1;
        bins_.resize(idx_.size());
        for (std::size_t t = 0; t < idx_.size(); ++t) bins_[t] = static_cast<std::size_t>(off_[t] + shift);
        auto consider = [&](double score, std::size_t frames, std::size_t bin) {
          if (score > best.score) {
            best.score = score;
            best.frames = frames;
            best.speed_index = si;
            best.offset = bmin + (static_cast<double>(bin) + 0.5 - shift) * W;
          }
        };
        if (nbins <= 4 * idx_.size() + 64) {
          // Dense accumulator. Matches come in query-frame order, so "the frame last seen in
          // this bin" is enough to keep one (the best) contribution per frame and bin.
          sum_.assign(nbins, 0.0);
          cnt_.assign(nbins, 0);
          lastq_.assign(nbins, UINT32_MAX);
          lastv_.assign(nbins, 0.0f);
          for (std::size_t t = 0; t < idx_.size(); ++t) {
            const std::size_t bin = bins_[t];
            const std::uint32_t lq = qlocal_[idx_[t]];
            const float val = m_[idx_[t]].val;
            if (lastq_[bin] == lq) {
              if (val > lastv_[bin]) sum_[bin] += val - lastv_[bin], lastv_[bin] = val;
            } else {
              sum_[bin] += val, ++cnt_[bin], lastq_[bin] = lq, lastv_[bin] = val;
            }
          }
          for (std::size_t bin = 0; bin < nbins; ++bin) consider(sum_[bin], cnt_[bin], bin);
        } else {
          // Sparse offsets (few matches over a long range): sort by bin instead. A stable order
          // on (bin, position) keeps query-frame order inside a bin.
          order_.resize(idx_.size());
          std::iota(order_.begin(), order_.end(), std::size_t{0});
          std::sort(order_.begin(), order_.end(),
                    [&](std::size_t a, std::size_t b) { return bins_[a] != bins_[b] ? bins_[a] < bins_[b] : a < b; });
          std::size_t t = 0;
          while (t < order_.size()) {
            const std::size_t bin = bins_[order_[t]];
            double sum = 0;
            std::size_t frames = 0;
            std::uint32_t lq = UINT32_MAX;
            float lv = 0;
            for (; t < order_.size() && bins_[order_[t]] == bin; ++t) {
              const std::size_t j = idx_[order_[t]];
              if (qlocal_[j] == lq) {
                if (m_[j].val > lv) sum += m_[j].val - lv, lv = m_[j].val;
              } else {
                sum += m_[j].val, ++frames, lq = qlocal_[j], lv = m_[j].val;
              }
            }
            consider(sum, frames, bin);
          }
        }
      }
    }
    return best;
  }

  // Least-squares refinement: per query frame its best band match, weighted by val.
  Line refine(Line line) {
    std::vector<double> tq, tr, w;
    for (int it = 0; it < p_.refine_iterations; ++it) {
      tq.clear(), tr.clear(), w.clear();
      std::size_t j = 0;
      while (j < n_) {
        const std::uint32_t lq = qlocal_[j];
        std::size_t pick = n_;
        double pick_res = 0;
        for (; j < n_ && qlocal_[j] == lq; ++j) {
          if (!active_[j]) continue;
          const double res = std::abs(m_[j].tr - line.at(m_[j].tq));
          if (res > p_.offset_tolerance) continue;
          // The most similar band match, not the one nearest the current line: near-duplicate
          // neighbours of the true frame always offer one near any line, which would only
          // confirm the seed instead of correcting it.
          if (pick == n_ || m_[j].val > m_[pick].val || (m_[j].val == m_[pick].val && res < pick_res))
            pick = j, pick_res = res;
        }
        if (pick != n_) tq.push_back(m_[pick].tq), tr.push_back(m_[pick].tr), w.push_back(m_[pick].val);
      }
      Fit f = fit_line(tq, tr, w, line.speed, p_.speed_min, p_.speed_max);
      if (!f.ok) break;
      const bool same = std::abs(f.line.speed - line.speed) < 1e-12 && std::abs(f.line.offset - line.offset) < 1e-9;
      line = f.line;
      if (same) break;
    }
    return line;
  }

  // One-to-one assignment inside the band of `line`, cut into segments; accepts the good ones.
  void extract(const Line& line, std::uint32_t stamp, Candidate& cand, double& matched, double& covered) {
    band_.clear();
    for (std::size_t j = 0; j < n_; ++j) {
      if (!active_[j]) continue;
      const double res = std::abs(m_[j].tr - line.at(m_[j].tq));
      if (res <= p_.offset_tolerance) band_.push_back({j, res});
    }
    std::sort(band_.begin(), band_.end(), [&](const BandMatch& a, const BandMatch& b) {
      const Match &x = m_[a.j], &y = m_[b.j];
      if (x.val != y.val) return x.val > y.val;
      if (a.res != b.res) return a.res < b.res;
      if (x.qi != y.qi) return x.qi < y.qi;
      return x.ref < y.ref;
    });
    // A reference frame stands for ref_dt of reference time, i.e. ref_dt / speed of query time:
    // when the query is sampled more densely than that (slow motion, higher sampling rate) it may
    // serve that many query frames, otherwise exactly one.
    const double per_ref = ref_dt_ / (line.speed * ctx_.dt);
    const std::uint32_t capacity = per_ref > 1 ? static_cast<std::uint32_t>(std::ceil(per_ref - 1e-6)) : 1u;
    pairs_.clear();
    for (const BandMatch& bm : band_) {
      const std::uint32_t lq = qlocal_[bm.j], lr = rlocal_[bm.j];
      if (q_stamp_[lq] == stamp) continue;
      if (r_stamp_[lr] != stamp) r_stamp_[lr] = stamp, r_used_[lr] = 0;
      if (r_used_[lr] >= capacity) continue;
      q_stamp_[lq] = stamp;
      ++r_used_[lr];
      pairs_.push_back(bm.j);
    }
    std::sort(pairs_.begin(), pairs_.end(), [&](std::size_t a, std::size_t b) { return m_[a].qi < m_[b].qi; });

    // Matches of this line are spent whether or not they make a segment, so a failed line is
    // not found again.
    for (const BandMatch& bm : band_) active_[bm.j] = 0;

    auto crosses_accepted = [&](double a, double b) {
      for (const AlignedSegment& s : cand.segments)
        if (s.query_start > a && s.query_start < b) return true;
      return false;
    };
    std::size_t start = 0;
    for (std::size_t t = 1; t <= pairs_.size(); ++t) {
      const bool cut = t == pairs_.size() || m_[pairs_[t]].tq - m_[pairs_[t - 1]].tq > p_.max_gap ||
                       crosses_accepted(m_[pairs_[t - 1]].tq, m_[pairs_[t]].tq);
      if (!cut) continue;
      accept_run(start, t, line, cand, matched, covered);
      start = t;
    }
  }

  void accept_run(std::size_t a, std::size_t b, const Line& line, Candidate& cand, double& matched, double& covered) {
    const std::size_t frames = b - a;
    if (frames == 0 || frames < static_cast<std::size_t>(p_.min_segment_frames)) return;
    if (static_cast<int>(cand.segments.size()) >= p_.max_segments) return;
    const double qs = m_[pairs_[a]].tq, qe = m_[pairs_[b - 1]].tq;
    if (qe - qs < p_.min_segment_duration) return;
    std::vector<double> tq, tr, w;
    double seg_matched = 0;
    for (std::size_t t = a; t < b; ++t) {
      const Match& mm = m_[pairs_[t]];
      tq.push_back(mm.tq), tr.push_back(mm.tr), w.push_back(mm.val);
      seg_matched += ctx_.cell[mm.qi] * mm.val;
    }
    Fit f = fit_line(tq, tr, w, line.speed, p_.speed_min, p_.speed_max);
    const Line seg_line = f.ok ? f.line : line;
    const double extent = ctx_.cells_between(qs, qe);
    AlignedSegment s;
    s.query_start = qs;
    s.query_end = qe;
    s.speed = seg_line.speed;
    s.offset = seg_line.offset;
    s.ref_start = seg_line.at(qs);
    s.ref_end = seg_line.at(qe);
    s.frames = static_cast<int>(frames);
    s.score = extent > 0 ? std::clamp(seg_matched / extent, 0.0, 1.0) : 0.0;
    cand.segments.push_back(s);
    cand.votes += s.frames;
    matched += seg_matched;
    covered += extent;
    // Query time inside an accepted segment is explained, and its reference frames are spent:
    // later lines must look elsewhere (one static reference frame cannot seed segment after
    // segment).
    for (std::size_t t = a; t < b; ++t) r_spent_[rlocal_[pairs_[t]]] = 1;
    for (std::size_t j = 0; j < n_; ++j)
      if (active_[j] && ((m_[j].tq >= qs && m_[j].tq <= qe) || r_spent_[rlocal_[j]])) active_[j] = 0;
  }

  double ref_coverage(const Candidate& cand) const {
    if (!ctx_.ref_durations) return std::numeric_limits<double>::quiet_NaN();
    auto it = ctx_.ref_durations->find(cand.video);
    if (it == ctx_.ref_durations->end() || !(it->second > 0)) return std::numeric_limits<double>::quiet_NaN();
    const double dur = it->second;
    // A frame is shown from its timestamp for one interval, so a segment covers the reference
    // from ref_start to one (speed-scaled) query interval past ref_end; union, clipped to the video.
    std::vector<std::pair<double, double>> iv;
    for (const AlignedSegment& s : cand.segments) {
      double lo = std::min(s.ref_start, s.ref_end), hi = std::max(s.ref_start, s.ref_end) + ctx_.dt * s.speed;
      lo = std::max(lo, 0.0), hi = std::min(hi, dur);
      if (hi > lo) iv.emplace_back(lo, hi);
    }
    std::sort(iv.begin(), iv.end());
    double total = 0, cur_lo = 0, cur_hi = -1;
    for (auto& [lo, hi] : iv) {
      if (lo > cur_hi) {
        if (cur_hi > cur_lo) total += cur_hi - cur_lo;
        cur_lo = lo, cur_hi = hi;
      } else {
        cur_hi = std::max(cur_hi, hi);
      }
    }
    if (cur_hi > cur_lo) total += cur_hi - cur_lo;
    return std::clamp(total / dur, 0.0, 1.0);
  }

  struct BandMatch {
    std::size_t j;
    double res;
  };

  const QueryCtx& ctx_;
  const AggregateParams& p_;
  const Match* m_;
  std::size_t n_;
  std::vector<std::uint32_t> qlocal_, rlocal_;
  std::size_t nq_ = 0, nr_ = 0;
  std::vector<char> active_, r_spent_;
  std::vector<std::uint32_t> q_stamp_, r_stamp_, r_used_;
  double ref_dt_ = 0;
  // scratch buffers reused across speeds / attempts
  std::vector<std::size_t> idx_, bins_, order_, pairs_;
  std::vector<double> sum_, off_;
  std::vector<std::uint32_t> cnt_, lastq_;
  std::vector<float> lastv_;
  std::vector<BandMatch> band_;
};

[[noreturn]] void bad(const std::string& msg) { throw std::invalid_argument(msg); }

}  // namespace

void validate(const AggregateParams& p) {
  auto finite = [](double x, const char* name) {
    if (!std::isfinite(x)) bad(std::string(name) + " must be finite");
  };
  finite(p.min_similarity, "min_similarity");
  finite(p.speed_min, "speed_min");
  finite(p.speed_max, "speed_max");
  finite(p.speed_step, "speed_step");
  finite(p.offset_tolerance, "offset_tolerance");
  finite(p.max_gap, "max_gap");
  finite(p.min_segment_duration, "min_segment_duration");
  finite(p.frame_interval, "frame_interval");
  finite(p.min_score, "min_score");
  finite(p.ref_frame_interval, "ref_frame_interval");
  if (!(p.speed_min > 0)) bad("speed_min must be > 0");
  if (!(p.speed_max >= p.speed_min)) bad("speed_max must be >= speed_min");
  if (!(p.speed_step > 0)) bad("speed_step must be > 0");
  // The bounds keep offset bins (timestamps up to 1e9 s / tolerance) within integer range.
  if (!(p.offset_tolerance >= 1e-6 && p.offset_tolerance <= 1e6))
    bad("offset_tolerance must be in [1e-6, 1e6] seconds");
  if (!(p.max_gap >= 0)) bad("max_gap must be >= 0 seconds");
  if (p.min_segment_frames < 1) bad("min_segment_frames must be >= 1");
  if (!(p.min_segment_duration >= 0)) bad("min_segment_duration must be >= 0 seconds");
  if (p.max_segments < 1) bad("max_segments must be >= 1");
  if (p.max_candidates < 1) bad("max_candidates must be >= 1");
  if (p.refine_iterations < 0 || p.refine_iterations > 100) bad("refine_iterations must be in [0, 100]");
  const double n = std::log(p.speed_max / p.speed_min) / std::log1p(p.speed_step);
  if (n > 4096) bad("speed grid too fine: speed_step gives more than 4096 speeds in [speed_min, speed_max]");
}

std::vector<double> speed_grid(const AggregateParams& p) {
  validate(p);
  const double lr = std::log1p(p.speed_step);
  // Powers of (1 + step) so that 1.0 is on the grid, plus both ends of the range.
  const auto kmin = static_cast<long>(std::ceil(std::log(p.speed_min) / lr - 1e-9));
  const auto kmax = static_cast<long>(std::floor(std::log(p.speed_max) / lr + 1e-9));
  std::vector<double> g{p.speed_min};
  for (long k = kmin; k <= kmax; ++k) g.push_back(k == 0 ? 1.0 : std::exp(lr * static_cast<double>(k)));
  g.push_back(p.speed_max);
  for (double& v : g) v = std::clamp(v, p.speed_min, p.speed_max);
  std::sort(g.begin(), g.end());
  // Drop near-duplicates (the range ends often sit on the grid already).
  std::vector<double> out;
  for (double v : g)
    if (out.empty() || v > out.back() * (1 + 1e-9)) out.push_back(v);
  return out;
}

std::vector<Candidate> aggregate(const AggregateInput& in, const AggregateParams& p,
                                 const std::unordered_map<std::uint64_t, double>* ref_durations) {
  validate(p);
  const std::size_t q = in.q, k = in.k;
  // Timestamps are seconds; the bound keeps bin arithmetic exact and far from integer overflow.
  constexpr double kMaxTime = 1e9;
  for (std::size_t i = 0; i < q; ++i)
    if (!(std::abs(in.query_times[i]) <= kMaxTime))
      bad("query_times[" + std::to_string(i) + "] is not finite or beyond 1e9 seconds");
  for (std::size_t i = 0; i < q * k; ++i) {
    if (in.ids[i] == kNoId) continue;
    const auto where = [&] { return "[" + std::to_string(i / k) + ", " + std::to_string(i % k) + "]"; };
    if (std::isnan(in.sims[i]) || in.sims[i] == INFINITY) bad("neighbor_sims" + where() + " is NaN or +inf");
    if (!(std::abs(in.ref_times[i]) <= kMaxTime))
      bad("neighbor_times" + where() + " is not finite or beyond 1e9 seconds");
    if (in.weights && !(in.weights[i] >= 0.0f && in.weights[i] <= 1.0f))
      bad("neighbor_weights" + where() + " must be in [0, 1]");
  }
  if (ref_durations)
    for (auto& [g, d] : *ref_durations)
      if (!std::isfinite(d) || d < 0) bad("ref_durations[" + std::to_string(g) + "] must be finite and >= 0");
  if (q == 0 || k == 0) return {};

  QueryCtx ctx;
  ctx.p = &p;
  ctx.ref_durations = ref_durations;
  ctx.speeds = speed_grid(p);
  std::vector<std::uint32_t> order(q), rank(q);
  std::iota(order.begin(), order.end(), 0u);
  std::stable_sort(order.begin(), order.end(),
                   [&](std::uint32_t a, std::uint32_t b) { return in.query_times[a] < in.query_times[b]; });
  ctx.times.resize(q);
  for (std::size_t r = 0; r < q; ++r)
    rank[order[r]] = static_cast<std::uint32_t>(r), ctx.times[r] = in.query_times[order[r]];
  if (p.frame_interval > 0) {
    ctx.dt = p.frame_interval;
  } else {
    std::vector<double> gaps;
    for (std::size_t r = 1; r < q; ++r)
      if (ctx.times[r] > ctx.times[r - 1]) gaps.push_back(ctx.times[r] - ctx.times[r - 1]);
    if (!gaps.empty()) {
      std::nth_element(gaps.begin(), gaps.begin() + gaps.size() / 2, gaps.end());
      ctx.dt = gaps[gaps.size() / 2];
    }
  }
  // A frame stands for the time up to halfway to its neighbours, at most half an interval each
  // side: uniform sampling gives every frame dt, and gaps left by dropped blank frames do not
  // count as query time.
  ctx.cell.resize(q);
  ctx.cell_prefix.assign(q + 1, 0.0);
  for (std::size_t r = 0; r < q; ++r) {
    const double left = r == 0 ? ctx.dt / 2 : std::min(ctx.dt / 2, (ctx.times[r] - ctx.times[r - 1]) / 2);
    const double right = r + 1 == q ? ctx.dt / 2 : std::min(ctx.dt / 2, (ctx.times[r + 1] - ctx.times[r]) / 2);
    ctx.cell[r] = left + right;
    ctx.cell_prefix[r + 1] = ctx.cell_prefix[r] + ctx.cell[r];
  }
  ctx.total = ctx.cell_prefix[q];

  std::vector<Match> matches;
  matches.reserve(q * k / 2);
  for (std::size_t i = 0; i < q; ++i) {
    for (std::size_t c = 0; c < k; ++c) {
      const std::size_t s = i * k + c;
      if (in.ids[s] == kNoId || !(in.sims[s] >= p.min_similarity)) continue;
      const float w = in.weights ? in.weights[s] : 1.0f;
      const float val = w * std::clamp(in.sims[s], 0.0f, 1.0f);
      if (!(val > 0)) continue;
      matches.push_back({in.groups[s], in.ids[s], rank[i], in.query_times[i], in.ref_times[s], val});
    }
  }
  // Canonical order: the result must not depend on the neighbour order within a row. The same
  // reference frame listed twice for one query frame counts once (its best value). Then, within
  // a query frame, best value first: the Hough accumulator meets each frame's best match in a
  // cell first, so a cell's sum is exactly the sum of per-frame maxima in query-frame order.
  std::sort(matches.begin(), matches.end(), [](const Match& a, const Match& b) {
    if (a.group != b.group) return a.group < b.group;
    if (a.qi != b.qi) return a.qi < b.qi;
    if (a.ref != b.ref) return a.ref < b.ref;
    if (a.val != b.val) return a.val > b.val;
    return a.tr < b.tr;
  });
  matches.erase(
      std::unique(matches.begin(), matches.end(),
                  [](const Match& a, const Match& b) { return a.group == b.group && a.qi == b.qi && a.ref == b.ref; }),
      matches.end());
  std::sort(matches.begin(), matches.end(), [](const Match& a, const Match& b) {
    if (a.group != b.group) return a.group < b.group;
    if (a.qi != b.qi) return a.qi < b.qi;
    if (a.val != b.val) return a.val > b.val;
    return a.ref < b.ref;
  });

  // Videos that cannot hold a segment are dropped here, before any per-video work (with k
  // neighbours from a large library most videos are hit once or twice): a segment needs
  // min_segment_frames distinct query frames whose consecutive gaps are <= max_gap.
  std::vector<std::pair<std::size_t, std::size_t>> ranges;
  for (std::size_t a = 0; a < matches.size();) {
    std::size_t b = a, run = 0, longest = 0;
    for (; b < matches.size() && matches[b].group == matches[a].group; ++b) {
      if (b > a && matches[b].qi == matches[b - 1].qi) continue;
      run = (b > a && matches[b].tq - matches[b - 1].tq <= p.max_gap) ? run + 1 : 1;
      longest = std::max(longest, run);
    }
    if (longest >= static_cast<std::size_t>(p.min_segment_frames)) ranges.emplace_back(a, b);
    a = b;
  }
  std::vector<std::optional<Candidate>> found(ranges.size());
  parallel_for(ranges.size(), p.threads, [&](std::size_t begin, std::size_t end) {
    for (std::size_t r = begin; r < end; ++r) {
      VideoAligner va(ctx, matches.data() + ranges[r].first, ranges[r].second - ranges[r].first);
      found[r] = va.run();
    }
  });

  std::vector<Candidate> out;
  for (auto& f : found)
    if (f && f->score >= p.min_score) out.push_back(std::move(*f));
  std::sort(out.begin(), out.end(), [](const Candidate& a, const Candidate& b) {
    return a.score != b.score ? a.score > b.score : a.video < b.video;
  });
  if (out.size() > static_cast<std::size_t>(p.max_candidates)) out.resize(p.max_candidates);
  return out;
}

void neighbor_idf_weights(std::size_t q, std::size_t k, const std::uint64_t* ids, const std::uint64_t* groups,
                          const float* sims, double min_similarity, double margin, double free_videos, double power,
                          float* out) {
  if (!std::isfinite(min_similarity)) bad("min_similarity must be finite");
  if (!(margin >= 0)) bad("margin must be >= 0");
  if (!(free_videos >= 1) || !std::isfinite(free_videos)) bad("free_videos must be >= 1");
  if (!(power >= 0) || !std::isfinite(power)) bad("power must be >= 0");
  std::vector<std::uint64_t> row;
  for (std::size_t i = 0; i < q; ++i) {
    row.clear();
    double best = -INFINITY;
    for (std::size_t c = 0; c < k; ++c) {
      const std::size_t s = i * k + c;
      if (ids[s] == kNoId) continue;
      if (std::isnan(sims[s])) bad("neighbor_sims[" + std::to_string(i) + ", " + std::to_string(c) + "] is NaN");
      best = std::max(best, static_cast<double>(sims[s]));
    }
    // Only videos about as similar as the row's best count: a true match at 0.9 is not diluted by
    // unrelated neighbours at 0.55, while a title card that 20 videos share at ~0.95 is.
    const double cut = std::max(min_similarity, best - margin);
    for (std::size_t c = 0; c < k; ++c) {
      const std::size_t s = i * k + c;
      if (ids[s] != kNoId && sims[s] >= cut) row.push_back(groups[s]);
    }
    std::sort(row.begin(), row.end());
    const auto df = static_cast<double>(std::unique(row.begin(), row.end()) - row.begin());
    const float w = df <= free_videos ? 1.0f : static_cast<float>(std::pow(free_videos / df, power));
    for (std::size_t c = 0; c < k; ++c) out[i * k + c] = ids[i * k + c] == kNoId ? 0.0f : w;
  }
}

}  // namespace frameseek
