// The bytes side of the native SearchByVector path (search_directory.cpp): the request parser and
// the response encoder. Private to the native core; declared here (rather than in an anonymous
// namespace) so the fuzz targets in native/fuzz/ can drive them directly.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "frameseek/search_directory.hpp"
#include "wire.hpp"

namespace frameseek::search_wire {

// A SearchByVectorRequest as far as the fast path reads it.
struct Request {
  std::string parent;
  std::vector<float> vector;
  std::int64_t k = 0, matches = 0, ef = 0;
  float min_score = 0.0f;
  // SearchFilter.videos / exclude_videos as (collection, video id)
  bool has_videos = false;
  std::vector<std::pair<std::string, std::uint64_t>> videos, exclude;
};

// "collections/{c}/videos/{digits}" -> (c, id), as service.parse_video; false when malformed.
bool parse_video_name(const wire::Span& s, std::pair<std::string, std::uint64_t>* out);

// Serialised SearchByVectorRequest -> Request; false when the bytes are malformed or use a field
// the fast path does not handle (the caller then forwards the request to the Python service).
bool parse_request(const std::uint8_t* data, std::size_t size, Request* out);

// One SearchResponse.hits entry.
struct Hit {
  std::shared_ptr<const DirectoryVideo> video;
  float score;
  std::vector<std::pair<double, float>> matches;  // (timestamp, score)
};

// hits + model -> serialised SearchResponse (appended to *out).
void encode(const std::vector<Hit>& hits, const std::string& model, std::string* out);

}  // namespace frameseek::search_wire
