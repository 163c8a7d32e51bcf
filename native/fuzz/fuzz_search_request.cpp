// Fuzz target: the native front end's SearchByVector path, from request bytes to response bytes.
//   1. front_end::parse_request never crashes, and whatever it accepts survives a canonical
//      re-encode: parse(encode(parse(x))) == parse(x), field for field (floats bit for bit).
//   2. front_end::answer_search_by_vector over a small real SearchDirectory (an L2 and a cosine
//      collection with HNSW indexes) and VideoMessages answers only requests that parse, and every
//      answer is a well-formed SearchResponse (checked by an independent decoder): at most k hits,
//      known videos of the asked collection only, each at most once, inside the videos filter and
//      outside exclude_videos, by score descending, 1..max_matches_per_video matches.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <set>
#include <string>

#include "frameseek/flat_index.hpp"
#include "frameseek/hnsw_index.hpp"
#include "frameseek/search_directory.hpp"
#include "response_decoder.hpp"
#include "search_request.hpp"
#include "wire.hpp"

using namespace frameseek;

namespace {

constexpr std::size_t kDim = 4;

void check(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "property violated: %s\n", what);
    std::abort();
  }
}

struct World {
  SearchDirectory dir;
  front_end::VideoMessages messages;
  // every serialised Video VideoMessages holds -> (collection short name, video id)
  std::map<std::string, std::pair<std::string, std::uint64_t>> videos;
};

// Two collections of a few videos each; sample ids are video << kSampleBits | sample index.
World* make_world() {
  auto* w = new World;
  std::uint64_t video = 1;
  for (std::uint32_t cid : {1u, 2u}) {
    const Metric metric = cid == 1 ? Metric::L2 : Metric::IP;
    auto index = std::make_shared<HnswIndex>(kDim, metric, 64, HnswParams{4, 16, 7});
    std::vector<std::uint64_t> ids, groups;
    std::vector<float> vecs;
    for (int v = 0; v < 4; ++v, ++video) {
      auto dv = std::make_shared<DirectoryVideo>();
      dv->collection_id = cid;
      // a Video message holding its name (field 1), as the Python translator's would
      const std::string name = "collections/" + std::to_string(cid) + "/videos/" + std::to_string(video);
      std::string message;
      wire::Writer(&message).bytes_field(1, name.data(), name.size());
      for (int s = 0; s < 5; ++s) {
        dv->timestamps.push_back(0.5 * s);
        ids.push_back(video << kSampleBits | std::uint64_t(s));
        groups.push_back(video);
        for (std::size_t d = 0; d < kDim; ++d) vecs.push_back(std::sin(float(video * 7 + s * 3 + d)));
      }
      w->videos[message] = {std::to_string(cid), video};
      w->messages.put(video, cid, std::move(message));
      w->dir.put_video(video, dv);
    }
    // the last video waits in the fresh segment (acknowledged, not yet linked into the graph)
    const std::size_t linked = ids.size() - 5;
    auto fresh = std::make_shared<FlatIndex>(kDim, metric);
    index->add(ids.data(), vecs.data(), linked, groups.data(), 1);
    fresh->add(5, ids.data() + linked, vecs.data() + linked * kDim, groups.data() + linked);
    auto live = std::make_shared<OwnedLiveIndex>(index, fresh);
    auto c = std::make_shared<DirectoryCollection>();
    c->name = std::to_string(cid);
    c->id = cid;
    c->model = "sscd-disc-mixup";
    c->is_default = cid == 1;
    c->index = &live->live;
    c->owner = live;
    w->dir.put_collection(c);
  }
  w->dir.set_ready(true);
  w->messages.set_ready(true);
  return w;
}

void put_varint_field(wire::Writer& w, std::uint32_t field, std::int64_t v) {
  w.tag(field, wire::kVarint);
  w.varint(static_cast<std::uint64_t>(v));
}

std::string video_name(const std::pair<std::string, std::uint64_t>& v) {
  return "collections/" + v.first + "/videos/" + std::to_string(v.second);
}

// The canonical encoding of what parse_request read (one SearchOptions, packed floats).
std::string encode_request(const front_end::SearchRequest& q) {
  std::string filter, options, out;
  wire::Writer fw(&filter);
  for (const auto& v : q.videos) {
    const std::string n = video_name(v);
    fw.bytes_field(2, n.data(), n.size());
  }
  for (const auto& v : q.exclude) {
    const std::string n = video_name(v);
    fw.bytes_field(3, n.data(), n.size());
  }
  wire::Writer ow(&options);
  put_varint_field(ow, 1, q.k);
  ow.float_field(2, q.min_score);
  put_varint_field(ow, 3, q.matches);
  put_varint_field(ow, 4, q.ef);
  if (!filter.empty()) ow.bytes_field(5, filter.data(), filter.size());
  wire::Writer w(&out);
  w.bytes_field(1, q.parent.data(), q.parent.size());
  w.bytes_field(2, reinterpret_cast<const char*>(q.vector.data()), q.vector.size() * sizeof(float));
  w.bytes_field(3, options.data(), options.size());
  return out;
}

bool same_bits(float a, float b) { return std::memcmp(&a, &b, sizeof a) == 0; }

bool same(const front_end::SearchRequest& a, const front_end::SearchRequest& b) {
  if (a.parent != b.parent || a.k != b.k || a.matches != b.matches || a.ef != b.ef ||
      !same_bits(a.min_score, b.min_score) || a.has_videos != b.has_videos || a.videos != b.videos ||
      a.exclude != b.exclude || a.vector.size() != b.vector.size())
    return false;
  return a.vector.empty() || std::memcmp(a.vector.data(), b.vector.data(), a.vector.size() * 4) == 0;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static World* world = make_world();
  front_end::SearchRequest req;
  const bool parsed = front_end::parse_request(data, size, &req);
  if (parsed) {
    check(req.has_videos == !req.videos.empty(), "has_videos iff a videos filter was read");
    for (const auto* list : {&req.videos, &req.exclude})
      for (const auto& [coll, id] : *list)
        check(!coll.empty() && coll.find('/') == std::string::npos && id < 1000000000000000000ull,
              "video names parse to a collection without '/' and an id of at most 18 digits");
    const std::string canonical = encode_request(req);
    front_end::SearchRequest again;
    check(front_end::parse_request(reinterpret_cast<const std::uint8_t*>(canonical.data()), canonical.size(), &again),
          "the canonical re-encoding parses");
    check(same(req, again), "parse(encode(parse(x))) == parse(x)");
  }

  std::string response;
  if (!front_end::answer_search_by_vector(world->dir, world->messages, data, size, &response)) return 0;
  check(parsed, "the fast path answers only requests that parse");
  fuzz::DecodedResponse decoded;
  check(fuzz::decode_response(response, &decoded), "the response is a well-formed SearchResponse");
  check(decoded.has_model && decoded.model == "sscd-disc-mixup", "the response names the model");
  const std::size_t k = req.k ? static_cast<std::size_t>(req.k) : static_cast<std::size_t>(kDefaultK);
  const std::size_t m = req.matches ? static_cast<std::size_t>(req.matches) : 1;
  check(decoded.hits.size() <= k, "at most k hits");
  std::set<std::string> seen;
  float prev = INFINITY;
  for (const auto& h : decoded.hits) {
    const auto known = world->videos.find(h.video);
    check(known != world->videos.end(), "hits name known videos only");
    const auto& [coll, id] = known->second;
    const std::string asked = req.parent.empty() ? "1" : req.parent.substr(std::strlen("collections/"));
    check(coll == asked, "hits come from the asked collection (the default one for no parent)");
    const std::pair<std::string, std::uint64_t> named{coll, id};
    check(!req.has_videos || std::count(req.videos.begin(), req.videos.end(), named) > 0,
          "a videos filter admits only its videos");
    check(std::count(req.exclude.begin(), req.exclude.end(), named) == 0, "exclude_videos never come back");
    check(seen.insert(h.video).second, "each video at most once");
    check(!h.matches.empty() && h.matches.size() <= m, "1..max_matches_per_video matches per hit");
    const float score = h.has_score ? h.score : 0.0f;
    check(score <= prev, "hits by score descending");
    prev = score;
  }
  return 0;
}
