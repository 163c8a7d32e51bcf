// Fuzz target: the SearchResponse encoder of the native SearchByVector path (front_end::encode_response
// over wire::Writer). From fuzzer-chosen hits (arbitrary video bytes, any float/double bit
// patterns: NaN, infinities, -0.0, subnormals; long strings that need multi-byte lengths) it checks
// that the encoding decodes, with an independent strict decoder, back to exactly the same hits and
// model, proto3 style: +0.0 scalars and an empty model are left out, everything else (-0.0 and
// NaN included) is kept bit for bit. wire::Reader must also walk the same bytes without error.
#include <fuzzer/FuzzedDataProvider.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "response_decoder.hpp"
#include "search_request.hpp"
#include "wire.hpp"

using namespace frameseek;

namespace {

void check(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "property violated: %s\n", what);
    std::abort();
  }
}

template <typename T>
bool same_bits(T a, T b) {
  return std::memcmp(&a, &b, sizeof a) == 0;
}

template <typename T>
bool is_plus_zero(T x) {
  return same_bits(x, T(0));
}

// a scalar proto3 leaves out when it is +0.0: decoded "absent" must mean exactly that
template <typename T>
bool scalar_matches(bool present, T decoded, T original) {
  return present ? same_bits(decoded, original) : is_plus_zero(original);
}

template <typename T>
T any_bits(FuzzedDataProvider& in) {
  using U = std::conditional_t<sizeof(T) == 4, std::uint32_t, std::uint64_t>;
  const U u = in.ConsumeIntegral<U>();
  T x;
  std::memcpy(&x, &u, sizeof x);
  return x;
}

// Walks every level of the message with wire::Reader, the parser the request side uses.
bool reader_walks(const std::string& bytes, int depth) {
  wire::Reader r(reinterpret_cast<const std::uint8_t*>(bytes.data()), bytes.size());
  std::uint32_t field, type;
  while (r.next(&field, &type)) {
    if (type == wire::kLen) {
      const wire::Span s = r.bytes();
      // hits (1) hold a video (1, opaque) and matches (3); matches hold only scalars
      if (r.ok() && depth == 0 && field == 1 &&
          !reader_walks(std::string(reinterpret_cast<const char*>(s.data), s.size), 1))
        return false;
    } else if (type == wire::kFixed32) {
      r.fixed32_float();
    } else if (type == wire::kFixed64) {
      r.fixed32_float();
      r.fixed32_float();
    } else {
      return false;
    }
  }
  return r.ok();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  FuzzedDataProvider in(data, size);
  std::vector<VideoHit> hits(in.ConsumeIntegralInRange<std::size_t>(0, 12));
  std::vector<std::string> video_bytes(hits.size());  // each hit's serialised Video (opaque here)
  std::vector<const std::string*> videos;
  for (std::size_t i = 0; i < hits.size(); ++i) {
    VideoHit& h = hits[i];
    // mostly short, sometimes long enough for 2- and 3-byte length varints
    const std::size_t n = in.ConsumeBool() ? in.ConsumeIntegralInRange<std::size_t>(0, 40)
                                           : in.ConsumeIntegralInRange<std::size_t>(0, 20000);
    video_bytes[i] = in.ConsumeBytesAsString(n);
    videos.push_back(&video_bytes[i]);
    h.score = any_bits<float>(in);
    h.matches.resize(in.ConsumeIntegralInRange<std::size_t>(0, 6));
    for (auto& [t, s] : h.matches) {
      t = any_bits<double>(in);
      s = any_bits<float>(in);
    }
  }
  const std::string model = in.ConsumeRandomLengthString(300);

  std::string out;
  front_end::encode_response(hits, videos, model, &out);

  fuzz::DecodedResponse got;
  check(fuzz::decode_response(out, &got), "the encoding decodes");
  check(got.hits.size() == hits.size(), "same number of hits");
  check(got.has_model == !model.empty() && got.model == model, "model kept (absent when empty)");
  for (std::size_t i = 0; i < hits.size(); ++i) {
    const auto& a = hits[i];
    const auto& b = got.hits[i];
    check(b.video == video_bytes[i], "video bytes kept");
    check(scalar_matches(b.has_score, b.score, a.score), "score kept bit for bit (+0.0 left out)");
    check(b.matches.size() == a.matches.size(), "same number of matches");
    for (std::size_t j = 0; j < a.matches.size(); ++j) {
      check(scalar_matches(b.matches[j].has_t, b.matches[j].t, a.matches[j].first), "timestamp kept");
      check(scalar_matches(b.matches[j].has_s, b.matches[j].s, a.matches[j].second), "match score kept");
    }
  }
  check(reader_walks(out, 0), "wire::Reader walks the encoding");
  return 0;
}
