// NEON kernels for aarch64 (Advanced SIMD is baseline there, so no extra flags and no CPU check).
// NEON has no masked load: tails are copied into a zeroed register-sized buffer, which never reads
// past the end of a row.
#include <arm_neon.h>

#include <cstdint>
#include <cstring>

#include "frameseek/distance.hpp"
#include "simd_tiles.hpp"

namespace frameseek::detail {
namespace {

struct Neon {
  using V = float32x4_t;
  static constexpr std::size_t W = 4;
  static inline V zero() { return vdupq_n_f32(0.0f); }
  static inline V load(const float* p) { return vld1q_f32(p); }
  static inline V load_tail(const float* p, std::size_t rem) {
    float buf[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    std::memcpy(buf, p, rem * sizeof(float));
    return vld1q_f32(buf);
  }
  static inline V load(const std::uint16_t* p) { return vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(p))); }
  static inline V load_tail(const std::uint16_t* p, std::size_t rem) {
    std::uint16_t buf[4] = {0, 0, 0, 0};  // +0.0 in fp16
    std::memcpy(buf, p, rem * sizeof(std::uint16_t));
    return vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(buf)));
  }
  static inline V fma(V a, V b, V acc) { return vfmaq_f32(acc, a, b); }
  static inline V sub(V a, V b) { return vsubq_f32(a, b); }
  static inline float reduce(V v) { return vaddvq_f32(v); }
  static inline void reduce4(V a, V b, V c, V d, float* out) {
    // pairwise adds: [a0+a1 a2+a3 b0+b1 b2+b3], then across both -> [sa sb sc sd]
    vst1q_f32(out, vpaddq_f32(vpaddq_f32(a, b), vpaddq_f32(c, d)));
  }
};

using tiles::DotOp;
using tiles::L2Op;

float l2sq(const float* a, const float* b, std::size_t d) { return tiles::pair<Neon, L2Op>(a, b, d); }
float dot(const float* a, const float* b, std::size_t d) { return tiles::pair<Neon, DotOp>(a, b, d); }
void l2sq_many(const float* q, const float* x, std::size_t n, std::size_t d, float* out) {
  tiles::many<Neon, L2Op>(q, x, n, d, out);
}
void dot_many(const float* q, const float* x, std::size_t n, std::size_t d, float* out) {
  tiles::many<Neon, DotOp>(q, x, n, d, out);
}
// 32 q-registers: 4x3 accumulators + 3 vectors + temporaries fit for both metrics.
void l2sq_block(const float* q, std::size_t nq, const float* x, std::size_t n, std::size_t d, float* out,
                std::size_t ldo) {
  tiles::block<Neon, L2Op, 4, 3>(q, nq, x, n, d, out, ldo);
}
void dot_block(const float* q, std::size_t nq, const float* x, std::size_t n, std::size_t d, float* out,
               std::size_t ldo) {
  tiles::block<Neon, DotOp, 4, 3>(q, nq, x, n, d, out, ldo);
}

float l2sq_f16(const float* a, const std::uint16_t* b, std::size_t d) { return tiles::pair<Neon, L2Op>(a, b, d); }
float dot_f16(const float* a, const std::uint16_t* b, std::size_t d) { return tiles::pair<Neon, DotOp>(a, b, d); }
void l2sq_block_f16(const float* q, std::size_t nq, const std::uint16_t* x, std::size_t n, std::size_t d, float* out,
                    std::size_t ldo) {
  tiles::block<Neon, L2Op, 4, 3>(q, nq, x, n, d, out, ldo);
}
void dot_block_f16(const float* q, std::size_t nq, const std::uint16_t* x, std::size_t n, std::size_t d, float* out,
                   std::size_t ldo) {
  tiles::block<Neon, DotOp, 4, 3>(q, nq, x, n, d, out, ldo);
}

// 16 codes per step: widening multiplies (s8 x s8 -> s16, exact) accumulated pairwise into s32.
std::int32_t dot_i8(const std::int8_t* a, const std::int8_t* b, std::size_t d) {
  int32x4_t acc = vdupq_n_s32(0);
  std::size_t i = 0;
  for (; i + 16 <= d; i += 16) {
    const int8x16_t va = vld1q_s8(a + i), vb = vld1q_s8(b + i);
    acc = vpadalq_s16(acc, vmull_s8(vget_low_s8(va), vget_low_s8(vb)));
    acc = vpadalq_s16(acc, vmull_high_s8(va, vb));
  }
  std::int32_t r = vaddvq_s32(acc);
  for (; i < d; ++i) r += std::int32_t{a[i]} * std::int32_t{b[i]};
  return r;
}

}  // namespace

const Kernels& neon_kernels() {
  static const Kernels k{SimdLevel::Neon, l2sq,      dot,         l2sq_many, dot_many,
                         l2sq_block,      dot_block, l2sq_f16,    dot_f16,   l2sq_block_f16,
                         dot_block_f16,   dot_i8,    "neon smull"};
  return k;
}

}  // namespace frameseek::detail
