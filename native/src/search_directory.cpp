// SearchByVector without Python: see search_directory.hpp.
#include "frameseek/search_directory.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <optional>
#include <string_view>
#include <unordered_set>
#include <unordered_map>

#include "frameseek/filter.hpp"
#include "frameseek/hnsw_index.hpp"
#include "search_wire.hpp"
#include "wire.hpp"

namespace frameseek {

void SearchDirectory::put_collection(std::shared_ptr<DirectoryCollection> c) {
  std::unique_lock lock(mu_);
  by_name_[c->name] = c;
  if (c->is_default) by_name_[""] = std::move(c);
}

void SearchDirectory::remove_collection(std::uint32_t id) {
  std::unique_lock lock(mu_);
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
  std::size_t n = 0;
  for (const auto& [name, c] : by_name_) n += !name.empty();
  return n;
}

std::shared_ptr<DirectoryCollection> SearchDirectory::collection(const std::string& parent) const {
  std::shared_lock lock(mu_);
  auto it = by_name_.find(parent);
  return it == by_name_.end() ? nullptr : it->second;
}

std::shared_ptr<const DirectoryVideo> SearchDirectory::video(std::uint64_t id) const {
  std::shared_lock lock(mu_);
  auto it = videos_.find(id);
  return it == videos_.end() ? nullptr : it->second;
}

namespace search_wire {

// "collections/{c}/videos/{digits}" -> (c, id), as service.parse_video; false when malformed
// (the Python path then reports it).
bool parse_video_name(const wire::Span& s, std::pair<std::string, std::uint64_t>* out) {
  const std::string name(reinterpret_cast<const char*>(s.data), s.size);
  constexpr std::string_view kColl = "collections/", kVideos = "/videos/";
  if (name.compare(0, kColl.size(), kColl) != 0) return false;
  const std::size_t slash = name.find('/', kColl.size());
  if (slash == std::string::npos || name.compare(slash, kVideos.size(), kVideos) != 0) return false;
  const std::string coll = name.substr(kColl.size(), slash - kColl.size());
  const std::string digits = name.substr(slash + kVideos.size());
  if (coll.empty() || digits.empty() || digits.size() > 18) return false;
  std::uint64_t id = 0;
  for (char c : digits) {
    if (c < '0' || c > '9') return false;
    id = id * 10 + static_cast<std::uint64_t>(c - '0');
  }
  *out = {coll, id};
  return true;
}

namespace {

// SearchFilter (labels=1, videos=2, exclude_videos=3). Labels need the catalog: those requests go
// to the Python path.
bool parse_filter(wire::Reader r, Request* out) {
  std::uint32_t field, type;
  while (r.next(&field, &type)) {
    if (type != wire::kLen || (field != 2 && field != 3)) return false;
    std::pair<std::string, std::uint64_t> v;
    if (!parse_video_name(r.bytes(), &v)) return false;
    if (field == 2) {
      out->has_videos = true;
      out->videos.push_back(std::move(v));
    } else {
      out->exclude.push_back(std::move(v));
    }
  }
  return r.ok();
}

// SearchOptions (k=1, min_score=2, max_matches_per_video=3, ef=4, filter=5).
bool parse_options(wire::Reader r, Request* out) {
  std::uint32_t field, type;
  while (r.next(&field, &type)) {
    if (type == wire::kVarint && field >= 1 && field <= 4 && field != 2) {
      const auto v = static_cast<std::int64_t>(r.varint());
      (field == 1 ? out->k : field == 3 ? out->matches : out->ef) = static_cast<std::int32_t>(v);
    } else if (field == 2 && type == wire::kFixed32) {
      out->min_score = r.fixed32_float();
    } else if (field == 5 && type == wire::kLen) {
      const auto s = r.bytes();
      if (!parse_filter(wire::Reader(s.data, s.size), out)) return false;
    } else {
      return false;  // a field this build does not know
    }
  }
  return r.ok();
}

}  // namespace

bool parse_request(const std::uint8_t* data, std::size_t size, Request* out) {
  wire::Reader r(data, size);
  std::uint32_t field, type;
  while (r.next(&field, &type)) {
    if (field == 1 && type == wire::kLen) {
      auto s = r.bytes();
      out->parent.assign(reinterpret_cast<const char*>(s.data), s.size);
    } else if (field == 2 && type == wire::kLen) {  // packed floats
      auto s = r.bytes();
      if (s.size % 4) return false;
      if (s.size == 0) continue;  // an empty packed field (memcpy into an empty vector's null data() is UB)
      const std::size_t n = s.size / 4, at = out->vector.size();
      out->vector.resize(at + n);
      std::memcpy(out->vector.data() + at, s.data, s.size);  // little-endian hosts only (x86, arm)
    } else if (field == 2 && type == wire::kFixed32) {  // unpacked, also valid proto3
      out->vector.push_back(r.fixed32_float());
    } else if (field == 3 && type == wire::kLen) {
      auto s = r.bytes();
      if (!parse_options(wire::Reader(s.data, s.size), out)) return false;
    } else {
      return false;
    }
  }
  return r.ok();
}

namespace {
// encode_search_response in servicer.py: proto3 leaves out zero scalars (but not -0.0)
bool nonzero(double x) { return x != 0.0 || std::signbit(x); }
}  // namespace

void encode(const std::vector<Hit>& hits, const std::string& model, std::string* out) {
  wire::Writer w(out);
  std::string hit, match;
  for (const Hit& h : hits) {
    hit.clear();
    wire::Writer hw(&hit);
    hw.bytes_field(1, h.video->video.data(), h.video->video.size());
    if (nonzero(h.score)) hw.float_field(2, h.score);
    for (const auto& [t, s] : h.matches) {
      match.clear();
      wire::Writer mw(&match);
      if (nonzero(t)) mw.double_field(1, t);
      if (nonzero(s)) mw.float_field(2, s);
      hw.bytes_field(3, match.data(), match.size());
    }
    w.bytes_field(1, hit.data(), hit.size());
  }
  if (!model.empty()) w.bytes_field(2, model.data(), model.size());
}

}  // namespace search_wire

namespace {

using search_wire::Hit;
using search_wire::Request;
using search_wire::encode;
using search_wire::parse_request;

using VideoLookup = std::function<std::shared_ptr<const DirectoryVideo>(std::uint64_t)>;

class Collector {
 public:
  Collector(std::size_t k, std::size_t m, float min_score, Metric metric, const VideoLookup& lookup,
            const std::unordered_set<std::uint64_t>& exclude)
      : k_(k), m_(m), min_score_(min_score), metric_(metric), lookup_(lookup), exclude_(exclude) {}

  float score(float dist) const { return metric_ == Metric::IP ? 1.0f - dist : 1.0f - dist / 2.0f; }

  // (sample id, distance) pairs, best first -> per-video hits (_collect in service.py)
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
        if (hits_.size() >= k_ || exclude_.count(vid)) continue;
        auto v = lookup_(vid);
        if (!v || v->timestamps.empty()) continue;  // deleted between the search and now
        slot_.emplace(vid, hits_.size());
        hits_.push_back(Hit{v, s, {{v->timestamps[idx % v->timestamps.size()], s}}});
        continue;
      }
      Hit& h = hits_[it->second];
      if (h.matches.size() < m_ && !h.video->timestamps.empty()) {
        const double t = h.video->timestamps[idx % h.video->timestamps.size()];
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
  std::vector<Hit>& hits() { return hits_; }

 private:
  std::size_t k_, m_;
  float min_score_;
  Metric metric_;
  const VideoLookup& lookup_;
  const std::unordered_set<std::uint64_t>& exclude_;
  std::vector<Hit> hits_;
  std::unordered_map<std::uint64_t, std::size_t> slot_;
};

constexpr double kKnnMissSkip = 0.8;      // FrameSeekService.KNN_MISS_SKIP
constexpr std::uint64_t kKnnProbeEvery = 32;  // FrameSeekService.KNN_PROBE_EVERY

}  // namespace

bool SearchDirectory::search_by_vector(const std::uint8_t* data, std::size_t size,
                                       std::string* response) const {
  if (!ready()) return false;
  Request req;
  if (!parse_request(data, size, &req)) return false;
  auto coll = collection(req.parent);
  if (!coll || !coll->index) return false;
  const HnswIndex& index = *coll->index;
  // Validation mirrors FrameSeekService: anything out of range goes to Python for the error.
  if (req.k < 0 || req.k > kMaxK || req.matches < 0 || req.matches > 100 || req.ef < 0 ||
      req.ef > 4096 || std::isnan(req.min_score))
    return false;
  if (req.vector.size() != index.dim()) return false;
  double ss = 0.0;
  for (float v : req.vector) ss += static_cast<double>(v) * v;
  if (!std::isfinite(ss)) return false;
  if (index.metric() == Metric::IP) {
    if (ss == 0.0) return false;
    const float norm = static_cast<float>(std::sqrt(ss));
    for (float& v : req.vector) v /= norm;
  }
  const std::size_t want = req.k ? static_cast<std::size_t>(req.k) : 10;
  const std::size_t m = req.matches ? static_cast<std::size_t>(req.matches) : 1;
  const std::size_t ef = static_cast<std::size_t>(req.ef);  // 0: the index default
  // Filters as FrameSeekService._groups_filter: `videos` of this collection restrict the search,
  // `exclude_videos` are skipped (and asked for on top of k, so k others still come back).
  const std::string short_name = coll->name.substr(std::string_view("collections/").size());
  std::optional<Filter> filter;
  if (req.has_videos) {
    filter.emplace();
    filter->groups.emplace();
    for (const auto& [c, id] : req.videos)
      if (c == short_name) filter->groups->insert(id);
    if (filter->groups->empty()) {  // none of them in this collection: nothing to find
      response->clear();
      encode({}, coll->model, response);
      return true;
    }
  }
  std::unordered_set<std::uint64_t> exclude;
  for (const auto& [c, id] : req.exclude)
    if (c == short_name) exclude.insert(id);  // another collection's name excludes nothing here
  const std::size_t k = want + exclude.size();
  const Filter* f = filter ? &*filter : nullptr;

  const VideoLookup lookup = [this](std::uint64_t id) { return video(id); };
  Collector hits(want, m, req.min_score, index.metric(), lookup, exclude);
  std::vector<std::uint64_t> ids, gids;
  std::vector<float> dist;
  auto group_search = [&] {
    gids.assign(k, kNoId);
    ids.assign(k, kNoId);
    dist.assign(k, 0.0f);
    index.search_groups(req.vector.data(), 1, k, ef, f, gids.data(), ids.data(), dist.data(), 1);
    hits.collect(ids.data(), dist.data(), k);
  };

  // the same rule and arithmetic (double) as _knn_rarely_enough / _knn_outcome, so both paths
  // make the same choice on the same sequence of searches
  bool skip_knn = false;
  if (m == 1) {
    const std::uint64_t n = coll->searches.fetch_add(1, std::memory_order_relaxed);
    skip_knn = coll->knn_miss.load(std::memory_order_relaxed) > kKnnMissSkip && n % kKnnProbeEvery != 0;
  }
  if (skip_knn) {
    group_search();  // on this collection the kNN almost never yields k videos
  } else {
    const std::size_t kf = std::min<std::size_t>(std::max<std::size_t>(k * m * 4, 32), 4096);
    ids.assign(kf, kNoId);
    dist.assign(kf, 0.0f);
    index.search(req.vector.data(), 1, kf, ef, f, ids.data(), dist.data(), 1);
    hits.collect(ids.data(), dist.data(), kf);
    // frames beyond the kNN score at most its last frame: if that one fails min_score, so do they
    const bool full = std::none_of(ids.begin(), ids.end(), [](std::uint64_t id) { return id == kNoId; });
    const bool more = full && hits.score(dist[kf - 1]) >= req.min_score;
    if (m == 1) {
      const double missed = hits.size() < want && more ? 1.0 : 0.0;
      coll->knn_miss.store(0.9 * coll->knn_miss.load(std::memory_order_relaxed) + 0.1 * missed,
                           std::memory_order_relaxed);
    }
    if (hits.size() < want && more) group_search();
  }
  auto& out = hits.hits();
  std::stable_sort(out.begin(), out.end(), [](const Hit& a, const Hit& b) { return a.score > b.score; });
  for (Hit& h : out)
    std::stable_sort(h.matches.begin(), h.matches.end(),
                     [](const auto& a, const auto& b) { return a.second > b.second; });
  response->clear();
  encode(out, coll->model, response);
  return true;
}

}  // namespace frameseek
