// A strict, independent decoder of the SearchResponse bytes front_end::encode_response writes: the
// reference the fuzz targets check the encoder against. Deliberately does not use wire::Reader
// (shared bugs would cancel out); it rejects anything protobuf would not read back as the same
// message: overlong or truncated varints, lengths past the end, fields the encoder never writes.
//   SearchResponse { repeated VideoHit hits = 1; string model = 2; }
//   VideoHit       { Video video = 1; float score = 2; repeated FrameMatch matches = 3; }
//   FrameMatch     { double timestamp = 1; float score = 2; }
#pragma once
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

namespace frameseek::fuzz {

struct DecodedMatch {
  bool has_t = false, has_s = false;
  double t = 0;
  float s = 0;
};
struct DecodedHit {
  std::string video;
  bool has_score = false;
  float score = 0;
  std::vector<DecodedMatch> matches;
};
struct DecodedResponse {
  std::vector<DecodedHit> hits;
  bool has_model = false;
  std::string model;
};

class StrictReader {
 public:
  explicit StrictReader(std::string_view s) : s_(s) {}
  bool done() const { return pos_ == s_.size(); }
  bool varint(std::uint64_t* v) {
    *v = 0;
    for (int i = 0; i < 10; ++i) {
      if (pos_ == s_.size()) return false;
      const auto b = static_cast<std::uint8_t>(s_[pos_++]);
      if (i == 9 && b > 1) return false;  // beyond 64 bits
      *v |= std::uint64_t(b & 0x7F) << (7 * i);
      if (!(b & 0x80)) return !(i > 0 && b == 0);  // no overlong encodings from our writer
    }
    return false;
  }
  bool tag(std::uint32_t* field, std::uint32_t* type) {
    std::uint64_t t;
    if (!varint(&t) || (t >> 3) == 0 || (t >> 3) > 0x1FFFFFFF) return false;
    *field = static_cast<std::uint32_t>(t >> 3);
    *type = static_cast<std::uint32_t>(t & 7);
    return true;
  }
  bool bytes(std::string_view* out) {
    std::uint64_t n;
    if (!varint(&n) || n > s_.size() - pos_) return false;
    *out = s_.substr(pos_, n);
    pos_ += n;
    return true;
  }
  template <typename T>
  bool fixed(T* out) {
    if (s_.size() - pos_ < sizeof(T)) return false;
    std::memcpy(out, s_.data() + pos_, sizeof(T));
    pos_ += sizeof(T);
    return true;
  }

 private:
  std::string_view s_;
  std::size_t pos_ = 0;
};

inline bool decode_match(std::string_view s, DecodedMatch* m) {
  StrictReader r(s);
  std::uint32_t f, t;
  while (!r.done()) {
    if (!r.tag(&f, &t)) return false;
    if (f == 1 && t == 1 && !m->has_t) {
      m->has_t = true;
      if (!r.fixed(&m->t)) return false;
    } else if (f == 2 && t == 5 && !m->has_s) {
      m->has_s = true;
      if (!r.fixed(&m->s)) return false;
    } else {
      return false;
    }
  }
  return true;
}

inline bool decode_hit(std::string_view s, DecodedHit* h) {
  StrictReader r(s);
  std::uint32_t f, t;
  bool has_video = false;
  while (!r.done()) {
    if (!r.tag(&f, &t)) return false;
    std::string_view b;
    if (f == 1 && t == 2 && !has_video && h->matches.empty() && !h->has_score) {
      has_video = true;
      if (!r.bytes(&b)) return false;
      h->video.assign(b);
    } else if (f == 2 && t == 5 && !h->has_score && h->matches.empty()) {
      h->has_score = true;
      if (!r.fixed(&h->score)) return false;
    } else if (f == 3 && t == 2) {
      h->matches.emplace_back();
      if (!r.bytes(&b) || !decode_match(b, &h->matches.back())) return false;
    } else {
      return false;
    }
  }
  return has_video;  // the encoder always writes the video, first
}

inline bool decode_response(std::string_view s, DecodedResponse* out) {
  StrictReader r(s);
  std::uint32_t f, t;
  while (!r.done()) {
    if (!r.tag(&f, &t)) return false;
    std::string_view b;
    if (f == 1 && t == 2 && !out->has_model) {
      out->hits.emplace_back();
      if (!r.bytes(&b) || !decode_hit(b, &out->hits.back())) return false;
    } else if (f == 2 && t == 2 && !out->has_model) {
      out->has_model = true;
      if (!r.bytes(&b)) return false;
      out->model.assign(b);
    } else {
      return false;
    }
  }
  return true;
}

}  // namespace frameseek::fuzz
