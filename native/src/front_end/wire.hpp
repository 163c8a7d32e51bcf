// The few protobuf wire-format primitives the native SearchByVector path needs, so the native core
// does not link libprotobuf for two small messages. Format:
// https://protobuf.dev/programming-guides/encoding/ (varint tags, length-delimited, fixed32/64).
#pragma once
#include <cstdint>
#include <cstring>
#include <string>

namespace frameseek::wire {

enum : std::uint32_t { kVarint = 0, kFixed64 = 1, kLen = 2, kFixed32 = 5 };

struct Span {
  const std::uint8_t* data;
  std::size_t size;
};

// Reads fields in order; any malformed input turns ok() false and ends next().
class Reader {
 public:
  Reader(const std::uint8_t* data, std::size_t size) : p_(data), end_(data + size) {}

  bool next(std::uint32_t* field, std::uint32_t* type) {
    if (!ok_ || p_ == end_) return false;
    const std::uint64_t tag = varint();
    *field = static_cast<std::uint32_t>(tag >> 3);
    *type = static_cast<std::uint32_t>(tag & 7);
    if (*field == 0) ok_ = false;
    return ok_;
  }

  std::uint64_t varint() {
    std::uint64_t v = 0;
    for (unsigned shift = 0; shift < 64; shift += 7) {
      if (p_ == end_) break;
      const std::uint8_t b = *p_++;
      v |= std::uint64_t(b & 0x7F) << shift;
      if (!(b & 0x80)) return v;
    }
    ok_ = false;
    return 0;
  }

  Span bytes() {
    const std::uint64_t n = varint();
    if (!ok_ || n > std::uint64_t(end_ - p_)) {
      ok_ = false;
      return {p_, 0};
    }
    Span s{p_, static_cast<std::size_t>(n)};
    p_ += n;
    return s;
  }

  float fixed32_float() {
    float f = 0.0f;
    if (end_ - p_ < 4) {
      ok_ = false;
      return f;
    }
    std::memcpy(&f, p_, 4);  // little-endian host
    p_ += 4;
    return f;
  }

  bool ok() const { return ok_; }

 private:
  const std::uint8_t* p_;
  const std::uint8_t* end_;
  bool ok_ = true;
};

class Writer {
 public:
  explicit Writer(std::string* out) : out_(out) {}

  void varint(std::uint64_t v) {
    while (v > 0x7F) {
      out_->push_back(static_cast<char>((v & 0x7F) | 0x80));
      v >>= 7;
    }
    out_->push_back(static_cast<char>(v));
  }
  void tag(std::uint32_t field, std::uint32_t type) { varint((std::uint64_t(field) << 3) | type); }
  void bytes_field(std::uint32_t field, const char* data, std::size_t n) {
    tag(field, kLen);
    varint(n);
    out_->append(data, n);
  }
  void float_field(std::uint32_t field, float f) {
    tag(field, kFixed32);
    char b[4];
    std::memcpy(b, &f, 4);
    out_->append(b, 4);
  }
  void double_field(std::uint32_t field, double d) {
    tag(field, kFixed64);
    char b[8];
    std::memcpy(b, &d, 8);
    out_->append(b, 8);
  }

 private:
  std::string* out_;
};

}  // namespace frameseek::wire
