// AVX2 + FMA kernels (compiled with -mavx2 -mfma; dispatch only hands this table out after the
// CPU reported avx2, fma and f16c). Tails use _mm256_maskload_ps, which does not touch masked-off
// lanes, so rows of any length are read exactly to their end.
#include <immintrin.h>

#include <cstdint>
#include <cstring>

#include "dot_i8_x86.hpp"
#include "frameseek/distance.hpp"
#include "simd_tiles.hpp"

namespace frameseek::detail {
namespace {

// Sliding window over {-1 x7, 0 x8}: loading at offset 8 - rem gives rem leading all-ones lanes.
alignas(32) const std::int32_t kTailMask[16] = {-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0};

struct Avx2 {
  using V = __m256;
  static constexpr std::size_t W = 8;
  static inline V zero() { return _mm256_setzero_ps(); }
  static inline V load(const float* p) { return _mm256_loadu_ps(p); }
  static inline V load_tail(const float* p, std::size_t rem) {
    const __m256i m = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(kTailMask + 8 - rem));
    return _mm256_maskload_ps(p, m);
  }
  static inline V load(const std::uint16_t* p) {
    return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  }
  static inline V load_tail(const std::uint16_t* p, std::size_t rem) {
    alignas(16) std::uint16_t buf[8] = {0, 0, 0, 0, 0, 0, 0, 0};  // +0.0 in fp16
    std::memcpy(buf, p, rem * sizeof(std::uint16_t));
    return _mm256_cvtph_ps(_mm_load_si128(reinterpret_cast<const __m128i*>(buf)));
  }
  static inline V fma(V a, V b, V acc) { return _mm256_fmadd_ps(a, b, acc); }
  static inline V sub(V a, V b) { return _mm256_sub_ps(a, b); }
  static inline float reduce(V v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
  }
  static inline void reduce4(V a, V b, V c, V d, float* out) {
    // hadd(hadd(a,b), hadd(c,d)) leaves per-128-bit-lane partial sums [a b c d | a b c d].
    __m256 t = _mm256_hadd_ps(_mm256_hadd_ps(a, b), _mm256_hadd_ps(c, d));
    _mm_storeu_ps(out, _mm_add_ps(_mm256_castps256_ps128(t), _mm256_extractf128_ps(t, 1)));
  }
};

using tiles::DotOp;
using tiles::L2Op;

float l2sq(const float* a, const float* b, std::size_t d) { return tiles::pair<Avx2, L2Op>(a, b, d); }
float dot(const float* a, const float* b, std::size_t d) { return tiles::pair<Avx2, DotOp>(a, b, d); }
void l2sq_many(const float* q, const float* x, std::size_t n, std::size_t d, float* out) {
  tiles::many<Avx2, L2Op>(q, x, n, d, out);
}
void dot_many(const float* q, const float* x, std::size_t n, std::size_t d, float* out) {
  tiles::many<Avx2, DotOp>(q, x, n, d, out);
}
// 16 ymm registers: dot uses 4x3 (12 accumulators + 3 vectors; the query operand can come from
// memory), L2 needs a difference temporary as well, so 3x3.
void l2sq_block(const float* q, std::size_t nq, const float* x, std::size_t n, std::size_t d, float* out,
                std::size_t ldo) {
  tiles::block<Avx2, L2Op, 3, 3>(q, nq, x, n, d, out, ldo);
}
void dot_block(const float* q, std::size_t nq, const float* x, std::size_t n, std::size_t d, float* out,
               std::size_t ldo) {
  tiles::block<Avx2, DotOp, 4, 3>(q, nq, x, n, d, out, ldo);
}

float l2sq_f16(const float* a, const std::uint16_t* b, std::size_t d) { return tiles::pair<Avx2, L2Op>(a, b, d); }
float dot_f16(const float* a, const std::uint16_t* b, std::size_t d) { return tiles::pair<Avx2, DotOp>(a, b, d); }
void l2sq_block_f16(const float* q, std::size_t nq, const std::uint16_t* x, std::size_t n, std::size_t d, float* out,
                    std::size_t ldo) {
  tiles::block<Avx2, L2Op, 3, 3>(q, nq, x, n, d, out, ldo);
}
void dot_block_f16(const float* q, std::size_t nq, const std::uint16_t* x, std::size_t n, std::size_t d, float* out,
                   std::size_t ldo) {
  tiles::block<Avx2, DotOp, 4, 3>(q, nq, x, n, d, out, ldo);
}

}  // namespace

const Kernels& avx2_kernels() {
  static const Kernels k{SimdLevel::Avx2, l2sq,       dot,           l2sq_many, dot_many,
                         l2sq_block,      dot_block,  l2sq_f16,      dot_f16,   l2sq_block_f16,
                         dot_block_f16,   dot_i8_x86, "avx2 maddubs"};
  return k;
}

}  // namespace frameseek::detail
