// SearchByVector's request and response bytes around the core search: see search_request.hpp.
#include "search_request.hpp"

#include <cmath>
#include <cstring>
#include <mutex>
#include <string_view>
#include <unordered_set>

#include "wire.hpp"

namespace frameseek::front_end {

bool parse_video_name(const std::uint8_t* data, std::size_t size, std::pair<std::string, std::uint64_t>* out) {
  const std::string_view name(reinterpret_cast<const char*>(data), size);
  constexpr std::string_view kColl = "collections/", kVideos = "/videos/";
  if (name.substr(0, kColl.size()) != kColl) return false;
  const std::size_t slash = name.find('/', kColl.size());
  if (slash == std::string_view::npos || name.substr(slash, kVideos.size()) != kVideos) return false;
  const std::string_view coll = name.substr(kColl.size(), slash - kColl.size());
  const std::string_view digits = name.substr(slash + kVideos.size());
  if (coll.empty() || digits.empty() || digits.size() > 18) return false;
  std::uint64_t id = 0;
  for (char c : digits) {
    if (c < '0' || c > '9') return false;
    id = id * 10 + static_cast<std::uint64_t>(c - '0');
  }
  *out = {std::string(coll), id};
  return true;
}

namespace {

// SearchFilter (labels=1, videos=2, exclude_videos=3). Labels need the catalog: those requests go
// to the Python path.
bool parse_filter(wire::Reader r, SearchRequest* out) {
  std::uint32_t field, type;
  while (r.next(&field, &type)) {
    if (type != wire::kLen || (field != 2 && field != 3)) return false;
    std::pair<std::string, std::uint64_t> v;
    const auto s = r.bytes();
    if (!r.ok() || !parse_video_name(s.data, s.size, &v)) return false;
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
bool parse_options(wire::Reader r, SearchRequest* out) {
  std::uint32_t field, type;
  while (r.next(&field, &type)) {
    if (type == wire::kVarint && field >= 1 && field <= 4 && field != 2) {
      const auto v = static_cast<std::int64_t>(r.varint());
      (field == 1 ? out->k : field == 3 ? out->matches : out->ef) = static_cast<std::int32_t>(v);
    } else if (field == 2 && type == wire::kFixed32) {
      out->min_score = r.fixed32_float();
    } else if (field == 5 && type == wire::kLen) {
      const auto s = r.bytes();
      if (!r.ok() || !parse_filter(wire::Reader(s.data, s.size), out)) return false;
    } else {
      return false;  // a field this build does not know
    }
  }
  return r.ok();
}

// proto3 leaves out zero scalars (but not -0.0)
bool nonzero(double x) { return x != 0.0 || std::signbit(x); }

}  // namespace

bool parse_request(const std::uint8_t* data, std::size_t size, SearchRequest* out) {
  wire::Reader r(data, size);
  std::uint32_t field, type;
  while (r.next(&field, &type)) {
    if (field == 1 && type == wire::kLen) {
      auto s = r.bytes();
      if (!r.ok()) return false;
      out->parent.assign(reinterpret_cast<const char*>(s.data), s.size);
    } else if (field == 2 && type == wire::kLen) {  // packed floats
      auto s = r.bytes();
      if (!r.ok() || s.size % 4) return false;
      const std::size_t n = s.size / 4, at = out->vector.size();
      out->vector.resize(at + n);
      if (n) std::memcpy(out->vector.data() + at, s.data, s.size);  // little-endian hosts only (x86, arm)
    } else if (field == 2 && type == wire::kFixed32) {              // unpacked, also valid proto3
      out->vector.push_back(r.fixed32_float());
    } else if (field == 3 && type == wire::kLen) {
      auto s = r.bytes();
      if (!r.ok() || !parse_options(wire::Reader(s.data, s.size), out)) return false;
    } else {
      return false;
    }
  }
  return r.ok();
}

void encode_response(const std::vector<VideoHit>& hits, const std::vector<const std::string*>& videos,
                     const std::string& model, std::string* out) {
  wire::Writer w(out);
  std::string hit, match;
  for (std::size_t i = 0; i < hits.size(); ++i) {
    const VideoHit& h = hits[i];
    hit.clear();
    wire::Writer hw(&hit);
    hw.bytes_field(1, videos[i]->data(), videos[i]->size());
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

void VideoMessages::put(std::uint64_t video_id, std::uint32_t collection_id, std::string message) {
  Entry e{collection_id, std::make_shared<const std::string>(std::move(message))};
  std::unique_lock lock(mu_);
  messages_[video_id] = std::move(e);
}

void VideoMessages::remove(std::uint64_t video_id) {
  std::unique_lock lock(mu_);
  messages_.erase(video_id);
}

void VideoMessages::remove_collection(std::uint32_t collection_id) {
  std::unique_lock lock(mu_);
  for (auto it = messages_.begin(); it != messages_.end();)
    it = it->second.collection_id == collection_id ? messages_.erase(it) : std::next(it);
}

std::shared_ptr<const std::string> VideoMessages::get(std::uint64_t video_id) const {
  std::shared_lock lock(mu_);
  auto it = messages_.find(video_id);
  return it == messages_.end() ? nullptr : it->second.message;
}

std::size_t VideoMessages::size() const {
  std::shared_lock lock(mu_);
  return messages_.size();
}

bool answer_search_by_vector(const SearchDirectory& directory, const VideoMessages& messages, const std::uint8_t* data,
                             std::size_t size, std::string* response) {
  if (!directory.ready() || !messages.ready()) return false;
  SearchRequest req;
  if (!parse_request(data, size, &req)) return false;
  constexpr std::string_view kColl = "collections/";
  std::string_view parent(req.parent);
  if (!parent.empty()) {
    if (parent.substr(0, kColl.size()) != kColl) return false;
    parent.remove_prefix(kColl.size());
    if (parent.empty()) return false;
  }
  auto coll = directory.collection(parent);
  if (!coll || !coll->index) return false;
  if (req.k > kMaxK || req.matches > kMaxMatchesPerVideo || req.ef > kMaxEf) return false;  // before the int cast
  // SearchFilter.videos of this collection restrict the search, exclude_videos are skipped; a
  // video of another collection admits and excludes nothing here (ids are per collection's name)
  std::unordered_set<std::uint64_t> videos, exclude;
  for (const auto& [c, id] : req.videos)
    if (c == coll->name) videos.insert(id);
  for (const auto& [c, id] : req.exclude)
    if (c == coll->name) exclude.insert(id);
  NearestOptions o;
  o.k = static_cast<int>(req.k);
  o.matches = static_cast<int>(req.matches);
  o.ef = static_cast<int>(req.ef);
  o.min_score = req.min_score;
  o.videos = req.has_videos ? &videos : nullptr;
  o.exclude = exclude.empty() ? nullptr : &exclude;
  std::vector<VideoHit> hits;
  if (directory.nearest_videos(*coll, req.vector.data(), req.vector.size(), o, &hits) != QueryError::kNone)
    return false;  // the Python service reports it
  std::vector<std::shared_ptr<const std::string>> held;
  std::vector<const std::string*> videos_out;
  held.reserve(hits.size());
  videos_out.reserve(hits.size());
  for (const VideoHit& h : hits) {
    held.push_back(messages.get(h.video_id));
    if (!held.back()) return false;  // committed a moment ago, its message not yet here
    videos_out.push_back(held.back().get());
  }
  response->clear();
  encode_response(hits, videos_out, coll->model, response);
  return true;
}

}  // namespace frameseek::front_end
