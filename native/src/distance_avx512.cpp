// AVX-512 kernels (compiled with -mavx512f/bw/dq/vl -mfma; dispatch only hands this table out
// after the CPU reported those features). Tails use masked loads, so no scalar epilogue and no
// read past the end of a row.
#include <immintrin.h>

#include <cstdint>

#include "dot_i8_x86.hpp"
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
  // maskz_cvtph with a full mask is the same vcvtph2ps; plain _mm512_cvtph_ps trips GCC 12's
  // -Wmaybe-uninitialized inside its own header (it merges into an "undefined" register).
  static inline V load(const std::uint16_t* p) {
    return _mm512_maskz_cvtph_ps(static_cast<__mmask16>(0xffffu),
                                 _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
  }
  static inline V load_tail(const std::uint16_t* p, std::size_t rem) {
    return _mm512_maskz_cvtph_ps(static_cast<__mmask16>(0xffffu),
                                 _mm256_maskz_loadu_epi16(static_cast<__mmask16>((1u << rem) - 1u), p));
  }
  static inline V fma(V a, V b, V acc) { return _mm512_fmadd_ps(a, b, acc); }
  static inline V sub(V a, V b) { return _mm512_sub_ps(a, b); }
  // 256-bit halves. GCC 12's _mm512_castps512_ps256 / extract / _mm512_reduce_add_ps merge into
  // an "undefined" register and warn (-Wuninitialized) inside its own header; the zero-masked
  // extract is the same instruction without that. Only used in the horizontal sums.
  static inline __m256 half256(V v, int hi) {
    return _mm256_castpd_ps(hi ? _mm512_maskz_extractf64x4_pd(static_cast<__mmask8>(0xf), _mm512_castps_pd(v), 1)
                               : _mm512_maskz_extractf64x4_pd(static_cast<__mmask8>(0xf), _mm512_castps_pd(v), 0));
  }
  static inline __m256 fold(V v) { return _mm256_add_ps(half256(v, 0), half256(v, 1)); }
  static inline float reduce(V v) {
    __m256 s8 = fold(v);
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(s8), _mm256_extractf128_ps(s8, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
  }
  static inline void reduce4(V a, V b, V c, V d, float* out) {
    // 512 -> 256 per register, then the AVX 4-way hadd tree: one 128-bit result [sa sb sc sd].
    __m256 a8 = fold(a);
    __m256 b8 = fold(b);
    __m256 c8 = fold(c);
    __m256 d8 = fold(d);
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
void l2sq_block(const float* q, std::size_t nq, const float* x, std::size_t n, std::size_t d, float* out,
                std::size_t ldo) {
  tiles::block<Avx512, L2Op, 4, 4>(q, nq, x, n, d, out, ldo);
}
void dot_block(const float* q, std::size_t nq, const float* x, std::size_t n, std::size_t d, float* out,
               std::size_t ldo) {
  tiles::block<Avx512, DotOp, 4, 4>(q, nq, x, n, d, out, ldo);
}

float l2sq_f16(const float* a, const std::uint16_t* b, std::size_t d) { return tiles::pair<Avx512, L2Op>(a, b, d); }
float dot_f16(const float* a, const std::uint16_t* b, std::size_t d) { return tiles::pair<Avx512, DotOp>(a, b, d); }
void l2sq_block_f16(const float* q, std::size_t nq, const std::uint16_t* x, std::size_t n, std::size_t d, float* out,
                    std::size_t ldo) {
  tiles::block<Avx512, L2Op, 4, 4>(q, nq, x, n, d, out, ldo);
}
void dot_block_f16(const float* q, std::size_t nq, const std::uint16_t* x, std::size_t n, std::size_t d, float* out,
                   std::size_t ldo) {
  tiles::block<Avx512, DotOp, 4, 4>(q, nq, x, n, d, out, ldo);
}

// int8 inner product with AVX-512 VNNI: vpdpbusd multiplies u8 x s8 and sums each 4 products
// into an int32 lane in one instruction, so |a| and sign(a)*b (the mask sub: AVX-512 has no
// 512-bit sign_epi8) are all it needs per 64 codes. Exact for codes in [-127, 127]. Tails use
// masked loads (zeros add nothing).
__attribute__((target("avx512vnni"))) inline __m512i dot_i8_step(__m512i acc, __m512i a, __m512i b) {
  return _mm512_dpbusd_epi32(acc, _mm512_abs_epi8(a),
                             _mm512_mask_sub_epi8(b, _mm512_movepi8_mask(a), _mm512_setzero_si512(), b));
}
__attribute__((target("avx512vnni"))) std::int32_t dot_i8_vnni(const std::int8_t* a, const std::int8_t* b,
                                                               std::size_t d) {
  const __m512i zero = _mm512_setzero_si512();
  __m512i acc0 = zero, acc1 = zero;
  std::size_t i = 0;
  for (; i + 128 <= d; i += 128) {
    acc0 = dot_i8_step(acc0, _mm512_loadu_si512(a + i), _mm512_loadu_si512(b + i));
    acc1 = dot_i8_step(acc1, _mm512_loadu_si512(a + i + 64), _mm512_loadu_si512(b + i + 64));
  }
  for (; i < d; i += 64) {
    const __mmask64 m = d - i >= 64 ? ~__mmask64{0} : (__mmask64{1} << (d - i)) - 1;
    acc0 = dot_i8_step(acc0, _mm512_maskz_loadu_epi8(m, a + i), _mm512_maskz_loadu_epi8(m, b + i));
  }
  // _mm512_reduce_add_epi32 trips GCC 12's -Wuninitialized (see Avx512::half256); the zero-masked
  // extract is the same instruction.
  const __m512i acc = _mm512_add_epi32(acc0, acc1);
  return hsum_epi32(
      _mm256_add_epi32(_mm512_maskz_extracti64x4_epi64(0xf, acc, 0), _mm512_maskz_extracti64x4_epi64(0xf, acc, 1)));
}

}  // namespace

const Kernels& avx512_kernels() {
  // Where the CPU has VNNI (Ice Lake / Sapphire Rapids, Zen 4 on): one vpdpbusd per 64 codes.
  // Measured on Zen 4 (200k vectors, M 32, int8 walk, one thread; three A/B runs, separate
  // processes alternated): 3-13 % less time a query than the 256-bit maddubs path at every ef and
  // filter, the same results; 9.5 against 13 ns a hot 512-d pair. Without VNNI dot_i8_x86 stays
  // 256-bit (AVX-512 has no 512-bit sign_epi8). Not measured on Intel (no host here); Sapphire
  // Rapids runs 512-bit ops at full width, where one instruction per 64 codes should gain more.
  static const bool vnni = __builtin_cpu_supports("avx512vnni");
  static const Kernels k{SimdLevel::Avx512,
                         l2sq,
                         dot,
                         l2sq_many,
                         dot_many,
                         l2sq_block,
                         dot_block,
                         l2sq_f16,
                         dot_f16,
                         l2sq_block_f16,
                         dot_block_f16,
                         vnni ? dot_i8_vnni : dot_i8_x86,
                         vnni ? "avx512 vnni" : "avx2 maddubs"};
  return k;
}

}  // namespace frameseek::detail
