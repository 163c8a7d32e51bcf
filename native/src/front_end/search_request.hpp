// SearchByVector in the native front end: the request parsed by field number, the search run by
// the core (SearchDirectory::nearest_videos), the response encoded by hand - two small messages,
// so the front end links no libprotobuf and the core knows no protobuf at all.
//
// Free functions, so that a fuzz harness can include this header alone (it needs no gRPC):
// parse_request / parse_video_name (request bytes -> SearchRequest) and encode_response
// (hits -> SearchResponse bytes).
//
// The fast path covers a known collection, a valid vector and options, and the video filters
// (SearchFilter.videos / exclude_videos). Anything else (label filters, which need the catalog;
// unknown collections; invalid input; a directory that is not ready; a hit whose Video message is
// not known yet) answers false, and the front end passes the call to the Python service, which owns
// validation and error reporting and runs the same core search.
#pragma once
#include <atomic>
#include <cstdint>
#include <memory>
#include <shared_mutex>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "frameseek/search_directory.hpp"

namespace frameseek::front_end {

struct SearchRequest {
  std::string parent;
  std::vector<float> vector;
  std::int64_t k = 0, matches = 0, ef = 0;
  float min_score = 0.0f;
  // SearchFilter.videos / exclude_videos as (collection id, video id)
  bool has_videos = false;
  std::vector<std::pair<std::string, std::uint64_t>> videos, exclude;
};

// "collections/{c}/videos/{digits}" -> (c, id); false when malformed (the Python path then reports it).
bool parse_video_name(const std::uint8_t* data, std::size_t size, std::pair<std::string, std::uint64_t>* out);
// A serialised SearchByVectorRequest; false when it has anything the fast path does not take
// (label filters, unknown fields, malformed bytes).
bool parse_request(const std::uint8_t* data, std::size_t size, SearchRequest* out);
// A SearchResponse: hits[i] with the serialised Video videos[i]; proto3 leaves out zero scalars.
void encode_response(const std::vector<VideoHit>& hits, const std::vector<const std::string*>& videos,
                     const std::string& model, std::string* out);

// The serialised frameseek.v1.Video of each active video (from the Python translator, so both
// paths answer identical messages), kept in step with the storage's commits. Ready once it holds
// every active video's (the front end's switch for its fast path).
class VideoMessages {
 public:
  void set_ready(bool ready) { ready_.store(ready, std::memory_order_release); }
  bool ready() const { return ready_.load(std::memory_order_acquire); }
  void put(std::uint64_t video_id, std::uint32_t collection_id, std::string message);
  void remove(std::uint64_t video_id);
  void remove_collection(std::uint32_t collection_id);  // and every message of its videos
  std::shared_ptr<const std::string> get(std::uint64_t video_id) const;
  std::size_t size() const;

 private:
  mutable std::shared_mutex mu_;
  struct Entry {
    std::uint32_t collection_id;
    std::shared_ptr<const std::string> message;
  };
  std::unordered_map<std::uint64_t, Entry> messages_;
  std::atomic<bool> ready_{false};
};

// Serialised SearchByVectorRequest -> serialised SearchResponse. Returns false (response
// untouched) when the request is not for the fast path; see the header comment.
bool answer_search_by_vector(const SearchDirectory& directory, const VideoMessages& messages,
                             const std::uint8_t* request, std::size_t size, std::string* response);

}  // namespace frameseek::front_end
