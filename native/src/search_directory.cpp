// The one vector search: see search_directory.hpp.
#include "frameseek/search_directory.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <optional>
#include <stdexcept>

#include "frameseek/filter.hpp"
#include "frameseek/flat_index.hpp"
#include "frameseek/hnsw_index.hpp"

namespace frameseek {

namespace {

// Two result lists of one query, each best first and padded with kNoId / +inf, merged into the k
// best (`key` = the id, or the group for a group search), each key once.
void merge_results(std::size_t k, const std::uint64_t* a_keys, const std::uint64_t* a_ids, const float* a_dist,
                   const std::uint64_t* b_keys, const std::uint64_t* b_ids, const float* b_dist,
                   std::uint64_t* out_keys, std::uint64_t* out_ids, float* out_dist) {
  std::unordered_set<std::uint64_t> seen;
  seen.reserve(2 * k);
  std::size_t i = 0, j = 0, n = 0;
  while (n < k && (i < k || j < k)) {
    const bool take_a = j >= k || (i < k && a_dist[i] <= b_dist[j]);
    const std::size_t at = take_a ? i++ : j++;
    const std::uint64_t key = (take_a ? a_keys : b_keys)[at];
    if (key == kNoId || !seen.insert(key).second) continue;
    out_keys[n] = key;
    if (out_ids) out_ids[n] = (take_a ? a_ids : b_ids)[at];
    out_dist[n++] = (take_a ? a_dist : b_dist)[at];
  }
  for (; n < k; ++n) {
    out_keys[n] = kNoId;
    if (out_ids) out_ids[n] = kNoId;
    out_dist[n] = std::numeric_limits<float>::infinity();
  }
}

}  // namespace

LiveIndex::LiveIndex(const HnswIndex& graph, const FlatIndex* fresh) : graph_(graph), fresh_(fresh) {}

std::size_t LiveIndex::dim() const { return graph_.dim(); }
Metric LiveIndex::metric() const { return graph_.metric(); }
std::size_t LiveIndex::fresh_size() const { return fresh_ ? fresh_->size() : 0; }
std::size_t LiveIndex::size() const { return graph_.size() + fresh_size(); }
bool LiveIndex::has_fresh() const { return fresh_ && fresh_->size() != 0; }

bool LiveIndex::contains(std::uint64_t id) const {
  return (fresh_ && fresh_->contains(id)) || graph_.contains(id);  // the segment first (see the header)
}

void LiveIndex::search(const float* queries, std::size_t nq, std::size_t k, std::size_t ef, const Filter* filter,
                       std::uint64_t* out_ids, float* out_dist, std::size_t threads) const {
  if (!has_fresh()) {  // empty now: whatever it held is in the graph already
    graph_.search(queries, nq, k, ef, filter, out_ids, out_dist, threads);
    return;
  }
  std::vector<std::uint64_t> f_ids(nq * k), g_ids(nq * k, kNoId);
  std::vector<float> f_dist(nq * k), g_dist(nq * k, std::numeric_limits<float>::infinity());
  fresh_->search(queries, nq, k, filter, threads, f_ids.data(), f_dist.data());
  graph_.search(queries, nq, k, ef, filter, g_ids.data(), g_dist.data(), threads);
  for (std::size_t q = 0; q < nq; ++q) {
    const std::size_t o = q * k;
    merge_results(k, &f_ids[o], nullptr, &f_dist[o], &g_ids[o], nullptr, &g_dist[o], out_ids + o, nullptr,
                  out_dist + o);
  }
}

void LiveIndex::search_groups(const float* queries, std::size_t nq, std::size_t k, std::size_t ef, const Filter* filter,
                              std::uint64_t* out_groups, std::uint64_t* out_ids, float* out_dist,
                              std::size_t threads) const {
  if (!has_fresh()) {
    graph_.search_groups(queries, nq, k, ef, filter, out_groups, out_ids, out_dist, threads);
    return;
  }
  std::vector<std::uint64_t> f_groups(nq * k), f_ids(nq * k), g_groups(nq * k, kNoId), g_ids(nq * k, kNoId);
  std::vector<float> f_dist(nq * k), g_dist(nq * k, std::numeric_limits<float>::infinity());
  fresh_->search_groups(queries, nq, k, filter, threads, f_groups.data(), f_ids.data(), f_dist.data());
  graph_.search_groups(queries, nq, k, ef, filter, g_groups.data(), g_ids.data(), g_dist.data(), threads);
  // a group's best vector is the better of its best in each part, and a group among the k best
  // overall is among the k best of the part that holds that vector
  for (std::size_t q = 0; q < nq; ++q) {
    const std::size_t o = q * k;
    merge_results(k, &f_groups[o], &f_ids[o], &f_dist[o], &g_groups[o], &g_ids[o], &g_dist[o], out_groups + o,
                  out_ids + o, out_dist + o);
  }
}

void LiveIndex::get_vectors(const std::uint64_t* ids, std::size_t n, float* out) const {
  if (!has_fresh()) {
    graph_.get_vectors(ids, n, out);
    return;
  }
  std::unique_ptr<bool[]> found(new bool[n]);
  if (fresh_->get_vectors(ids, n, out, found.get()) == n) return;
  std::vector<std::uint64_t> rest;
  std::vector<std::size_t> rows;
  for (std::size_t i = 0; i < n; ++i)
    if (!found[i]) rest.push_back(ids[i]), rows.push_back(i);
  std::vector<float> vectors(rest.size() * dim());
  graph_.get_vectors(rest.data(), rest.size(), vectors.data());
  for (std::size_t r = 0; r < rows.size(); ++r) std::copy_n(vectors.data() + r * dim(), dim(), out + rows[r] * dim());
}

void SearchDirectory::put_collection(std::shared_ptr<DirectoryCollection> c) {
  std::unique_lock lock(mu_);
  by_id_[c->id] = c;
  by_name_[c->name] = c;
  if (c->is_default) by_name_[""] = std::move(c);
}

void SearchDirectory::remove_collection(std::uint32_t id) {
  std::unique_lock lock(mu_);
  by_id_.erase(id);
  for (auto it = by_name_.begin(); it != by_name_.end();)
    it = it->second->id == id ? by_name_.erase(it) : std::next(it);
  for (auto it = videos_.begin(); it != videos_.end();)
    it = it->second->collection_id == id ? videos_.erase(it) : std::next(it);
}

void SearchDirectory::put_video(std::uint64_t video_id, std::shared_ptr<const DirectoryVideo> v) {
  std::unique_lock lock(mu_);
  videos_[video_id] = std::move(v);
}

void SearchDirectory::remove_video(std::uint64_t video_id) {
  std::unique_lock lock(mu_);
  videos_.erase(video_id);
}

std::size_t SearchDirectory::videos() const {
  std::shared_lock lock(mu_);
  return videos_.size();
}

std::size_t SearchDirectory::collections() const {
  std::shared_lock lock(mu_);
  return by_id_.size();
}

std::shared_ptr<DirectoryCollection> SearchDirectory::collection(std::string_view name) const {
  std::shared_lock lock(mu_);
  auto it = by_name_.find(std::string(name));
  return it == by_name_.end() ? nullptr : it->second;
}

std::shared_ptr<DirectoryCollection> SearchDirectory::collection(std::uint32_t id) const {
  std::shared_lock lock(mu_);
  auto it = by_id_.find(id);
  return it == by_id_.end() ? nullptr : it->second;
}

std::shared_ptr<const DirectoryVideo> SearchDirectory::video(std::uint64_t id) const {
  std::shared_lock lock(mu_);
  auto it = videos_.find(id);
  return it == videos_.end() ? nullptr : it->second;
}

namespace {

// The live index as a KnnSource (one query at a time, the caller's thread).
class IndexKnn final : public KnnSource {
 public:
  explicit IndexKnn(const LiveIndex& index) : index_(index) {}
  std::size_t dim() const override { return index_.dim(); }
  Metric metric() const override { return index_.metric(); }
  void search(const float* q, std::size_t k, std::size_t ef, const Filter* f, std::uint64_t* ids,
              float* dist) const override {
    index_.search(q, 1, k, ef, f, ids, dist, 1);
  }
  void search_groups(const float* q, std::size_t k, std::size_t ef, const Filter* f, std::uint64_t* gids,
                     std::uint64_t* ids, float* dist) const override {
    index_.search_groups(q, 1, k, ef, f, gids, ids, dist, 1);
  }

 private:
  const LiveIndex& index_;
};

// (sample id, distance) results, best first -> per-video hits: at most k videos (not excluded),
// m distinct timestamps each.
class Collector {
 public:
  Collector(const SearchDirectory& dir, std::size_t k, std::size_t m, float min_score, Metric metric,
            const std::unordered_set<std::uint64_t>* exclude)
      : dir_(dir), k_(k), m_(m), min_score_(min_score), metric_(metric), exclude_(exclude) {}

  float score(float dist) const { return metric_ == Metric::IP ? 1.0f - dist : 1.0f - dist / 2.0f; }

  void collect(const std::uint64_t* ids, const float* dist, std::size_t n) {
    constexpr std::uint64_t kIndexMask = (std::uint64_t{1} << kSampleBits) - 1;
    for (std::size_t i = 0; i < n; ++i) {
      if (ids[i] == kNoId) continue;
      const float s = score(dist[i]);
      if (!(s >= min_score_)) continue;
      const std::uint64_t vid = ids[i] >> kSampleBits;
      // vectors past a video's samples are coarse twins of them: vector i is sample i % samples
      const std::size_t idx = static_cast<std::size_t>(ids[i] & kIndexMask);
      auto it = slot_.find(vid);
      if (it == slot_.end()) {
        if (hits_.size() >= k_ || (exclude_ && exclude_->count(vid))) continue;
        auto v = dir_.video(vid);
        if (!v || v->timestamps.empty()) continue;  // deleted between the search and now
        slot_.emplace(vid, hits_.size());
        hits_.push_back(VideoHit{vid, s, {{v->timestamps[idx % v->timestamps.size()], s}}});
        videos_.push_back(std::move(v));
        continue;
      }
      VideoHit& h = hits_[it->second];
      const auto& times = videos_[it->second]->timestamps;
      if (h.matches.size() < m_) {
        const double t = times[idx % times.size()];
        bool seen = false;  // the group search may repeat a kNN frame
        for (const auto& mt : h.matches) seen |= mt.first == t;
        if (!seen) {
          h.matches.emplace_back(t, s);
          h.score = std::max(h.score, s);
        }
      }
    }
  }

  std::size_t size() const { return hits_.size(); }
  std::vector<VideoHit> take() {
    std::stable_sort(hits_.begin(), hits_.end(),
                     [](const VideoHit& a, const VideoHit& b) { return a.score > b.score; });
    for (VideoHit& h : hits_)
      std::stable_sort(h.matches.begin(), h.matches.end(),
                       [](const auto& a, const auto& b) { return a.second > b.second; });
    return std::move(hits_);
  }

 private:
  const SearchDirectory& dir_;
  std::size_t k_, m_;
  float min_score_;
  Metric metric_;
  const std::unordered_set<std::uint64_t>* exclude_;
  std::vector<VideoHit> hits_;
  std::vector<std::shared_ptr<const DirectoryVideo>> videos_;  // hits_[i]'s video
  std::unordered_map<std::uint64_t, std::size_t> slot_;
};

SampledSearch sampled(const std::vector<float>& query, std::size_t k, float min_score, std::size_t ef,
                      const std::vector<VideoHit>& hits) {
  SampledSearch s{query, static_cast<int>(k), min_score, static_cast<int>(ef), {}};
  s.videos.reserve(hits.size());
  for (const VideoHit& h : hits) s.videos.push_back(h.video_id);
  return s;
}

}  // namespace

// A search restricted to a few videos scores their vectors exactly instead of walking the graph:
// a walk confined to a sliver of the graph can stop short of a video's best frame (the kill -9
// benchmark met a video whose own frame scored 0.887 against it instead of its best ~0.95, after
// some restarts), and scoring kExactFilterMax vectors costs about one unfiltered walk. False
// when the videos hold more vectors than that, or when one was deleted meanwhile: the caller walks.
bool SearchDirectory::exact_videos(const DirectoryCollection& coll, const std::vector<float>& q,
                                   const std::unordered_set<std::uint64_t>& videos, std::vector<std::uint64_t>* out_ids,
                                   std::vector<float>* out_dist) const {
  const LiveIndex& index = *coll.index;
  std::vector<std::uint64_t> ids;
  for (std::uint64_t v : videos) {
    auto dv = video(v);
    if (!dv || dv->collection_id != coll.id) continue;  // not (or no longer) in this collection
    const std::uint64_t n = dv->timestamps.size(), first = v << kSampleBits;
    const std::uint64_t count = n && index.contains(first | n) ? 2 * n : n;  // with coarse twins
    if (ids.size() + count > kExactFilterMax) return false;
    for (std::uint64_t i = 0; i < count; ++i) ids.push_back(first | i);
  }
  const std::size_t dim = index.dim();
  std::vector<float> vectors(ids.size() * dim), dist(ids.size());
  try {
    index.get_vectors(ids.data(), ids.size(), vectors.data());
  } catch (const std::invalid_argument&) {  // a video removed since its directory entry was read
    return false;
  }
  const Kernels& kern = kernels();
  if (index.metric() == Metric::IP) {
    kern.dot_many(q.data(), vectors.data(), ids.size(), dim, dist.data());
    for (float& d : dist) d = 1.0f - d;  // the index's IP distance
  } else {
    kern.l2sq_many(q.data(), vectors.data(), ids.size(), dim, dist.data());
  }
  std::vector<std::size_t> order(ids.size());
  std::iota(order.begin(), order.end(), std::size_t{0});
  std::sort(order.begin(), order.end(),
            [&](std::size_t a, std::size_t b) { return dist[a] < dist[b] || (dist[a] == dist[b] && ids[a] < ids[b]); });
  out_ids->resize(ids.size());
  out_dist->resize(ids.size());
  for (std::size_t i = 0; i < order.size(); ++i) (*out_ids)[i] = ids[order[i]], (*out_dist)[i] = dist[order[i]];
  return true;
}

QueryError SearchDirectory::nearest_videos(DirectoryCollection& coll, const float* query, std::size_t dim,
                                           const NearestOptions& o, std::vector<VideoHit>* out) const {
  out->clear();
  if (o.k < 0 || o.k > kMaxK || o.matches < 0 || o.matches > kMaxMatchesPerVideo || o.ef < 0 || o.ef > kMaxEf ||
      std::isnan(o.min_score))
    return QueryError::kOptions;
  std::optional<IndexKnn> live;
  if (coll.index) live.emplace(*coll.index);
  const KnnSource& index = live ? static_cast<const KnnSource&>(*live) : *coll.source;
  if (dim != index.dim()) return QueryError::kDimension;
  // One double sum of squares is the finiteness check too: squares of finite floats cannot
  // overflow a double, so the sum is non-finite exactly when a value is NaN or infinite.
  double ss = 0.0;
  for (std::size_t i = 0; i < dim; ++i) ss += static_cast<double>(query[i]) * query[i];
  if (!std::isfinite(ss)) return QueryError::kNonFinite;
  std::vector<float> q(query, query + dim);
  if (index.metric() == Metric::IP) {
    if (ss == 0.0) return QueryError::kZero;
    const float norm = static_cast<float>(std::sqrt(ss));
    for (float& v : q) v /= norm;
  }
  const std::size_t want = o.k ? static_cast<std::size_t>(o.k) : kDefaultK;
  const std::size_t m = o.matches ? static_cast<std::size_t>(o.matches) : 1;
  // 0: the collection's tuned breadth, else the index default
  const std::size_t ef = static_cast<std::size_t>(o.ef ? o.ef : coll.search_ef.load(std::memory_order_relaxed));
  std::optional<Filter> filter;
  if (o.videos) {
    if (o.videos->empty()) return QueryError::kNone;  // nothing to find
    filter.emplace();
    filter->groups = *o.videos;
  }
  const std::size_t k = want + (o.exclude ? o.exclude->size() : 0);
  const Filter* f = filter ? &*filter : nullptr;

  Collector hits(*this, want, m, o.min_score, index.metric(), o.exclude);
  std::vector<std::uint64_t> ids, gids;
  std::vector<float> dist;
  if (o.videos && coll.index && exact_videos(coll, q, *o.videos, &ids, &dist)) {
    hits.collect(ids.data(), dist.data(), ids.size());
    *out = hits.take();
    return QueryError::kNone;
  }
  auto group_search = [&] {
    gids.assign(k, kNoId);
    ids.assign(k, kNoId);
    dist.assign(k, 0.0f);
    index.search_groups(q.data(), k, ef, f, gids.data(), ids.data(), dist.data());
    hits.collect(ids.data(), dist.data(), k);
  };

  bool skip_knn = false;
  if (m == 1) {
    const std::uint64_t n = coll.searches.fetch_add(1, std::memory_order_relaxed);
    skip_knn = coll.knn_miss.load(std::memory_order_relaxed) > kKnnMissSkip && n % kKnnProbeEvery != 0;
  }
  if (skip_knn) {
    group_search();  // on this collection the kNN almost never yields k videos
  } else {
    const std::size_t kf = std::min<std::size_t>(std::max<std::size_t>(k * m * 4, 32), kMaxEf);
    ids.assign(kf, kNoId);
    dist.assign(kf, 0.0f);
    index.search(q.data(), kf, ef, f, ids.data(), dist.data());
    hits.collect(ids.data(), dist.data(), kf);
    // frames beyond the kNN score at most its last frame: if that one fails min_score, so do they
    const bool full = std::none_of(ids.begin(), ids.end(), [](std::uint64_t id) { return id == kNoId; });
    const bool more = full && hits.score(dist[kf - 1]) >= o.min_score;
    if (m == 1) {
      const double missed = hits.size() < want && more ? 1.0 : 0.0;
      coll.knn_miss.store(0.9 * coll.knn_miss.load(std::memory_order_relaxed) + 0.1 * missed,
                          std::memory_order_relaxed);
    }
    if (hits.size() < want && more) group_search();
  }
  *out = hits.take();
  if (!o.videos && !o.exclude && coll.sampler.want()) coll.sampler.put(sampled(q, want, o.min_score, ef, *out));
  return QueryError::kNone;
}

void SearchSampler::configure(std::uint64_t every, std::size_t capacity) {
  std::lock_guard lock(mu_);
  capacity_ = capacity;
  if (queue_.size() > capacity_) queue_.resize(capacity_);
  every_.store(every, std::memory_order_relaxed);
}

bool SearchSampler::want() {
  const std::uint64_t every = every_.load(std::memory_order_relaxed);
  return every != 0 && seen_.fetch_add(1, std::memory_order_relaxed) % every == 0;
}

void SearchSampler::put(SampledSearch s) {
  std::lock_guard lock(mu_);
  if (queue_.size() >= capacity_) {
    dropped_.fetch_add(1, std::memory_order_relaxed);
    return;
  }
  queue_.push_back(std::move(s));
}

std::vector<SampledSearch> SearchSampler::take() {
  std::lock_guard lock(mu_);
  return std::exchange(queue_, {});
}

}  // namespace frameseek
