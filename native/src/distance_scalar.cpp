// Portable scalar kernels: the reference path and the fallback on CPUs without a SIMD path.
#include "frameseek/distance.hpp"

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

}  // namespace

const Kernels& scalar_kernels() {
  static const Kernels k{SimdLevel::Scalar, l2sq, dot, l2sq_many, dot_many};
  return k;
}

}  // namespace frameseek::detail
