// The one vector search of the server: what it knows about collections and videos (pushed from
// the storage's commits) and the nearest videos of one query vector, without the GIL.
//
// Both callers use this: the Python service (frameseek.service.search, every SearchByVector and
// SearchByImage, filters included) and the native gRPC front end (native/src/front_end/, which
// parses SearchByVectorRequest and encodes SearchResponse around it). This core knows no
// protobuf: a collection is (short name, id, model, LiveIndex), a video (collection,
// per-sample timestamps), a hit (video id, score, (timestamp, score) matches).
//
// nearest_videos: a frame kNN of max(k * matches * 4, 32) frames grouped by video, topped up by a
// group-by search (distinct videos) when that yields fewer than k videos although the kNN came
// back full and its last frame still passes min_score; the grouping is exact (a video absent from
// the kNN has every frame farther than its last frame). Where the fallback is the rule (long
// static shots), one-match searches skip the kNN (a per-collection statistic, see below).
#pragma once
#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include "frameseek/distance.hpp"

namespace frameseek {

class HnswIndex;
class FlatIndex;
struct Filter;

// A collection's searchable vectors in the embedded storage: its HNSW graph and its fresh
// segment, the vectors a commit acknowledged that the storage's linker has not yet inserted into
// the graph (an exact FlatIndex: a commit appends to it instead of waiting for the graph's
// inserts, frameseek.storage.collection_index). Every read of the collection's vectors goes
// through here: searches scan the fresh segment exactly and walk the graph, and merge (kNN by
// distance, group search by group); a vector in both for a moment (linked, not yet removed from
// the segment) counts once. The linker removes vectors from the segment only after the graph
// holds them, so reading the segment before the graph never misses one being moved.
// `fresh` may be null (a collection without one: a replica's). Holds references only: the
// caller keeps both indexes alive. (A graph in its very first insertion has no entry point yet;
// its walk then returns nothing, and those vectors are still in the fresh segment.)
class LiveIndex {
 public:
  LiveIndex(const HnswIndex& graph, const FlatIndex* fresh);
  std::size_t dim() const;
  Metric metric() const;
  const HnswIndex& graph() const { return graph_; }
  std::size_t fresh_size() const;  // vectors waiting to be linked into the graph
  std::size_t size() const;        // both parts (a vector being linked counts twice for a moment)
  bool contains(std::uint64_t id) const;
  // HnswIndex's search and search_groups (same arguments, outputs and padding) over both parts.
  void search(const float* queries, std::size_t nq, std::size_t k, std::size_t ef, const Filter* filter,
              std::uint64_t* out_ids, float* out_dist, std::size_t threads) const;
  void search_groups(const float* queries, std::size_t nq, std::size_t k, std::size_t ef, const Filter* filter,
                     std::uint64_t* out_groups, std::uint64_t* out_ids, float* out_dist, std::size_t threads) const;
  // HnswIndex::get_vectors over both parts (std::invalid_argument on an id in neither).
  void get_vectors(const std::uint64_t* ids, std::size_t n, float* out) const;

 private:
  bool has_fresh() const;
  const HnswIndex& graph_;
  const FlatIndex* fresh_;
};

// Where a collection's frame kNN comes from when it is not a live HnswIndex in this process: an
// external vector engine (Milvus, reached through Python: frameseek.storage.scaleout). The same
// nearest_videos (kNN-first, group-by fallback, frame votes -> videos) runs on its results.
// Distances follow HnswIndex's conventions (IP: 1 - inner product; L2: squared Euclidean);
// outputs are k long, padded with kNoId / +inf. A source may throw (the engine is unreachable):
// the exception leaves nearest_videos.
class KnnSource {
 public:
  virtual ~KnnSource() = default;
  virtual std::size_t dim() const = 0;
  virtual Metric metric() const = 0;
  virtual void search(const float* query, std::size_t k, std::size_t ef, const Filter* filter, std::uint64_t* out_ids,
                      float* out_dist) const = 0;
  virtual void search_groups(const float* query, std::size_t k, std::size_t ef, const Filter* filter,
                             std::uint64_t* out_groups, std::uint64_t* out_ids, float* out_dist) const = 0;
};

// Sample ids encode (video, vector index) as video << kSampleBits | index; a video of n samples
// may also hold coarse twins as vectors n..2n-1 (vector i stands for sample i mod n). Exported to
// Python as _native.SAMPLE_BITS (frameseek/ids.py reads it).
inline constexpr unsigned kSampleBits = 20;

// Search option bounds and defaults, exported to Python (_native.MAX_K, ...) for its error messages.
inline constexpr int kMaxK = 1000;
inline constexpr int kDefaultK = 10;
inline constexpr int kMaxMatchesPerVideo = 100;
inline constexpr int kMaxEf = 4096;
// A search restricted to videos holding at most this many vectors scores them exactly (no walk).
inline constexpr std::size_t kExactFilterMax = 8192;
// How often the kNN-first path needs the group-search fallback, per collection (an exponential
// average over recent one-match-per-video searches). Above kKnnMissSkip the kNN is skipped, except
// every kKnnProbeEvery-th search, which keeps the estimate current as the data changes.
inline constexpr double kKnnMissSkip = 0.8;
inline constexpr std::uint64_t kKnnProbeEvery = 32;

// A search that nearest_videos answered, copied for the server's recall monitor
// (frameseek.service.recall re-runs it exactly in the background and tunes `search_ef` from it).
struct SampledSearch {
  std::vector<float> query;  // as searched (normalised for the IP metric)
  int k = 0;                 // videos asked for
  float min_score = 0.0f;
  int ef = 0;                         // the walk's breadth (0: the index's default)
  std::vector<std::uint64_t> videos;  // what came back, best first
};

// Every `every`-th unfiltered search of a collection, held in a bounded queue until the monitor
// takes it (a search that finds the queue full is not kept, and counted). every = 0: off.
// Costs a search one relaxed atomic increment; only a sampled one copies its query.
class SearchSampler {
 public:
  void configure(std::uint64_t every, std::size_t capacity);
  bool want();  // is this search sampled? (counts it)
  void put(SampledSearch s);
  std::vector<SampledSearch> take();
  std::uint64_t dropped() const { return dropped_.load(std::memory_order_relaxed); }

 private:
  std::atomic<std::uint64_t> every_{0}, seen_{0}, dropped_{0};
  std::mutex mu_;
  std::size_t capacity_ = 0;
  std::vector<SampledSearch> queue_;
};

// A LiveIndex that owns its graph and fresh segment (for C++ callers: self-tests, fuzzers; the
// Python binding keeps the Python objects alive instead).
struct OwnedLiveIndex {
  OwnedLiveIndex(std::shared_ptr<const HnswIndex> g, std::shared_ptr<const FlatIndex> f)
      : graph(std::move(g)), fresh(std::move(f)), live(*graph, fresh.get()) {}
  std::shared_ptr<const HnswIndex> graph;
  std::shared_ptr<const FlatIndex> fresh;
  LiveIndex live;
};

struct DirectoryCollection {
  std::string name;  // the collection's id ("default", ...), not a resource name
  std::uint32_t id = 0;
  std::string model;
  bool is_default = false;
  const LiveIndex* index = nullptr;   // the live index (embedded storage), or
  const KnnSource* source = nullptr;  // an external engine's kNN (exactly one is set)
  std::shared_ptr<void> owner;        // keeps `index` / `source` alive while a search uses it
  // exponential average of "the kNN yielded fewer than k videos"; updated without a lock: a lost
  // update only delays the estimate by one search
  std::atomic<double> knn_miss{0.0};
  std::atomic<std::uint64_t> searches{0};
  // The breadth of searches that set no ef (0: the index's default), tuned by the recall monitor.
  std::atomic<int> search_ef{0};
  SearchSampler sampler;  // searches kept for the recall monitor
};

struct DirectoryVideo {
  std::uint32_t collection_id = 0;
  std::vector<double> timestamps;  // per sample index
};

struct VideoHit {
  std::uint64_t video_id = 0;
  float score = 0.0f;                             // the best match's
  std::vector<std::pair<double, float>> matches;  // (timestamp, score), best first
};

struct NearestOptions {
  int k = 0;               // videos; 0 = kDefaultK
  int matches = 0;         // timestamps per video; 0 = 1
  float min_score = 0.0f;  // matches scoring below are dropped
  int ef = 0;              // 0 = the index's default
  // only these videos (nullptr = every video); an empty set finds nothing
  const std::unordered_set<std::uint64_t>* videos = nullptr;
  // never these videos (asked for on top of k, so k others still come back)
  const std::unordered_set<std::uint64_t>* exclude = nullptr;
};

// Why a query cannot be searched; the caller reports it (the front end passes the call to the
// Python service, which turns it into the gRPC error).
enum class QueryError { kNone, kOptions, kDimension, kNonFinite, kZero };

class SearchDirectory {
 public:
  void put_collection(std::shared_ptr<DirectoryCollection> c);
  void remove_collection(std::uint32_t id);  // and its videos
  void put_video(std::uint64_t video_id, std::shared_ptr<const DirectoryVideo> v);
  void remove_video(std::uint64_t video_id);
  void set_ready(bool ready) { ready_.store(ready, std::memory_order_release); }
  bool ready() const { return ready_.load(std::memory_order_acquire); }
  std::size_t videos() const;
  std::size_t collections() const;

  // by name ("" = the default collection) or id; nullptr when unknown
  std::shared_ptr<DirectoryCollection> collection(std::string_view name) const;
  std::shared_ptr<DirectoryCollection> collection(std::uint32_t id) const;
  std::shared_ptr<const DirectoryVideo> video(std::uint64_t id) const;

  // The best videos for `query` (index.dim() floats; normalised here for the IP metric), best
  // first. Returns the QueryError that stops it (out-of-range options, wrong dimension, NaN or
  // infinity, an all-zero IP query) with `out` empty. Takes no lock across the search: videos
  // deleted meanwhile are skipped.
  QueryError nearest_videos(DirectoryCollection& c, const float* query, std::size_t dim, const NearestOptions& options,
                            std::vector<VideoHit>* out) const;

 private:
  // the vectors of `videos` scored exactly, best first; false when they are too many (or one was
  // removed meanwhile): the caller walks the graph instead
  bool exact_videos(const DirectoryCollection& coll, const std::vector<float>& q,
                    const std::unordered_set<std::uint64_t>& videos, std::vector<std::uint64_t>* ids,
                    std::vector<float>* dist) const;
  mutable std::shared_mutex mu_;
  std::unordered_map<std::string, std::shared_ptr<DirectoryCollection>> by_name_;
  std::unordered_map<std::uint32_t, std::shared_ptr<DirectoryCollection>> by_id_;
  std::unordered_map<std::uint64_t, std::shared_ptr<const DirectoryVideo>> videos_;
  std::atomic<bool> ready_{false};
};

}  // namespace frameseek
