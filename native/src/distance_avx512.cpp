// AVX-512 kernels (compiled with -mavx512f/bw/dq/vl -mfma; dispatch only hands this table out
// after the CPU reported those features). Tails use masked loads, so no scalar epilogue and no
// read past the end of a row.
#include <immintrin.h>

#include "frameseek/distance.hpp"
#include "simd_tiles.hpp"

namespace frameseek::detail {
namespace {

struct Avx512 {
  using V = __m512;
  static constexpr std::size_t W = 16;
  static inline V zero() { return _mm512_setzero_ps(); }
  static inline V load(const float* p) { return _mm512_loadu_ps(p); }
  static inline V load_tail(const float* p, std::size_t rem) {
    return _mm512_maskz_loadu_ps(static_cast<__mmask16>((1u << rem) - 1u), p);
  }
  static inline V fma(V a, V b, V acc) { return _mm512_fmadd_ps(a, b, acc); }
  static inline V sub(V a, V b) { return _mm512_sub_ps(a, b); }
  static inline float reduce(V v) { return _mm512_reduce_add_ps(v); }
  static inline void reduce4(V a, V b, V c, V d, float* out) {
    // 512 -> 256 per register, then the AVX 4-way hadd tree: one 128-bit result [sa sb sc sd].
    __m256 a8 = _mm256_add_ps(_mm512_castps512_ps256(a), _mm512_extractf32x8_ps(a, 1));
    __m256 b8 = _mm256_add_ps(_mm512_castps512_ps256(b), _mm512_extractf32x8_ps(b, 1));
    __m256 c8 = _mm256_add_ps(_mm512_castps512_ps256(c), _mm512_extractf32x8_ps(c, 1));
    __m256 d8 = _mm256_add_ps(_mm512_castps512_ps256(d), _mm512_extractf32x8_ps(d, 1));
    __m256 t = _mm256_hadd_ps(_mm256_hadd_ps(a8, b8), _mm256_hadd_ps(c8, d8));
    _mm_storeu_ps(out, _mm_add_ps(_mm256_castps256_ps128(t), _mm256_extractf128_ps(t, 1)));
  }
};

using tiles::DotOp;
using tiles::L2Op;

float l2sq(const float* a, const float* b, std::size_t d) { return tiles::pair<Avx512, L2Op>(a, b, d); }
float dot(const float* a, const float* b, std::size_t d) { return tiles::pair<Avx512, DotOp>(a, b, d); }
void l2sq_many(const float* q, const float* x, std::size_t n, std::size_t d, float* out) {
  tiles::many<Avx512, L2Op>(q, x, n, d, out);
}
void dot_many(const float* q, const float* x, std::size_t n, std::size_t d, float* out) {
  tiles::many<Avx512, DotOp>(q, x, n, d, out);
}
// 4 queries x 4 vectors = 16 accumulators + 4 vector registers + temporaries of 32 zmm. (4x3
// measured ~1.6x slower on Zen 4 for 512-d rows; 6x4 no faster than 4x4.)
void l2sq_block(const float* q, std::size_t nq, const float* x, std::size_t n, std::size_t d,
                float* out, std::size_t ldo) {
  tiles::block<Avx512, L2Op, 4, 4>(q, nq, x, n, d, out, ldo);
}
void dot_block(const float* q, std::size_t nq, const float* x, std::size_t n, std::size_t d,
               float* out, std::size_t ldo) {
  tiles::block<Avx512, DotOp, 4, 4>(q, nq, x, n, d, out, ldo);
}

}  // namespace

const Kernels& avx512_kernels() {
  static const Kernels k{SimdLevel::Avx512, l2sq, dot, l2sq_many, dot_many, l2sq_block, dot_block};
  return k;
}

}  // namespace frameseek::detail
