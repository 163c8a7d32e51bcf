// The native read path of SearchByVector: what the server knows about its collections and videos
// (pushed from Python as they change), and the search itself, from request bytes to response
// bytes, without the GIL.
//
// Why: through grpc.aio a search costs ~1.1 ms of CPU, of which the native kNN is ~0.3 ms; the rest
// is Python transport and glue. The gRPC front end (front_end.hpp) answers SearchByVector from
// here and passes everything else to the Python service.
//
// The fast path covers the plain request only: a known collection, a valid vector and options, no
// filter. Anything else (filters, unknown collections, invalid input, a directory that is not
// ready) returns false and the caller forwards the request to the Python service, which owns
// validation and error reporting. So there is one place where errors are decided, and the fast
// path can only ever answer what the Python path would have answered.
//
// Semantics mirror FrameSeekService._search_sync (server/frameseek/service.py) for the unfiltered
// case: a frame kNN of max(k * matches * 4, 32) grouped by video, topped up by a group-by search
// when it yields fewer than k videos, with the same per-collection statistic that skips the kNN
// where it rarely suffices. tests/server/test_front_end.py checks that both paths agree.
#pragma once
#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "frameseek/distance.hpp"

namespace frameseek {

class HnswIndex;

// Sample ids encode (video, sample index) as video << kSampleBits | index
// (server/frameseek/storage/base.py).
inline constexpr unsigned kSampleBits = 20;
inline constexpr int kMaxK = 1000;  // service.MAX_K

struct DirectoryCollection {
  std::string name;  // "collections/{id}"
  std::uint32_t id = 0;
  std::string model;
  bool is_default = false;
  const HnswIndex* index = nullptr;
  std::shared_ptr<void> owner;  // keeps `index` alive while a search uses it
  // exponential average of "the kNN yielded fewer than k videos" (see _knn_rarely_enough);
  // updated without a lock: a lost update only delays the estimate by one search
  std::atomic<float> knn_miss{0.0f};
  std::atomic<std::uint64_t> searches{0};
};

struct DirectoryVideo {
  std::uint32_t collection_id = 0;
  std::vector<double> timestamps;  // per sample index
  std::string video;               // the serialised frameseek.v1.Video
};

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

  // Serialised SearchByVectorRequest -> serialised SearchResponse. Returns false (response
  // untouched) when the request is not for the fast path; see the header comment.
  bool search_by_vector(const std::uint8_t* request, std::size_t size, std::string* response) const;

 private:
  std::shared_ptr<DirectoryCollection> collection(const std::string& parent) const;
  std::shared_ptr<const DirectoryVideo> video(std::uint64_t id) const;

  mutable std::shared_mutex mu_;
  std::unordered_map<std::string, std::shared_ptr<DirectoryCollection>> by_name_;
  std::unordered_map<std::uint64_t, std::shared_ptr<const DirectoryVideo>> videos_;
  std::atomic<bool> ready_{false};
};

}  // namespace frameseek
