// Portable scalar kernels: the reference path and the fallback on CPUs without a SIMD path.
#include "frameseek/distance.hpp"
#include "frameseek/half.hpp"

namespace frameseek::detail {
namespace {

float l2sq(const float* a, const float* b, std::size_t d) {
  float s = 0.f;
  for (std::size_t i = 0; i < d; ++i) {
    float t = a[i] - b[i];
    s += t * t;
  }
  return s;
}

float dot(const float* a, const float* b, std::size_t d) {
  float s = 0.f;
  for (std::size_t i = 0; i < d; ++i) s += a[i] * b[i];
  return s;
}

void l2sq_many(const float* q, const float* x, std::size_t n, std::size_t d, float* out) {
  for (std::size_t i = 0; i < n; ++i) out[i] = l2sq(q, x + i * d, d);
}

void dot_many(const float* q, const float* x, std::size_t n, std::size_t d, float* out) {
  for (std::size_t i = 0; i < n; ++i) out[i] = dot(q, x + i * d, d);
}

void l2sq_block(const float* q, std::size_t nq, const float* x, std::size_t n, std::size_t d, float* out,
                std::size_t ldo) {
  for (std::size_t i = 0; i < nq; ++i) l2sq_many(q + i * d, x, n, d, out + i * ldo);
}

void dot_block(const float* q, std::size_t nq, const float* x, std::size_t n, std::size_t d, float* out,
               std::size_t ldo) {
  for (std::size_t i = 0; i < nq; ++i) dot_many(q + i * d, x, n, d, out + i * ldo);
}

float l2sq_f16(const float* a, const std::uint16_t* b, std::size_t d) {
  float s = 0.f;
  for (std::size_t i = 0; i < d; ++i) {
    float t = a[i] - half_to_float(b[i]);
    s += t * t;
  }
  return s;
}

float dot_f16(const float* a, const std::uint16_t* b, std::size_t d) {
  float s = 0.f;
  for (std::size_t i = 0; i < d; ++i) s += a[i] * half_to_float(b[i]);
  return s;
}

void l2sq_block_f16(const float* q, std::size_t nq, const std::uint16_t* x, std::size_t n, std::size_t d, float* out,
                    std::size_t ldo) {
  for (std::size_t i = 0; i < nq; ++i)
    for (std::size_t j = 0; j < n; ++j) out[i * ldo + j] = l2sq_f16(q + i * d, x + j * d, d);
}

void dot_block_f16(const float* q, std::size_t nq, const std::uint16_t* x, std::size_t n, std::size_t d, float* out,
                   std::size_t ldo) {
  for (std::size_t i = 0; i < nq; ++i)
    for (std::size_t j = 0; j < n; ++j) out[i * ldo + j] = dot_f16(q + i * d, x + j * d, d);
}

std::int32_t dot_i8(const std::int8_t* a, const std::int8_t* b, std::size_t d) {
  std::int32_t s = 0;
  for (std::size_t i = 0; i < d; ++i) s += std::int32_t{a[i]} * std::int32_t{b[i]};
  return s;
}

}  // namespace

const Kernels& scalar_kernels() {
  static const Kernels k{SimdLevel::Scalar, l2sq,      dot,      l2sq_many, dot_many,
                         l2sq_block,        dot_block, l2sq_f16, dot_f16,   l2sq_block_f16,
                         dot_block_f16,     dot_i8,    "scalar"};
  return k;
}

}  // namespace frameseek::detail
