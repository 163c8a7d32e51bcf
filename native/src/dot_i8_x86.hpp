// int8 inner product for the x86 tables (AVX2 and AVX-512 translation units include it; each
// compiles it with its own flags, both at least AVX2). `static`: each translation unit keeps its own
// copy, so the linker never hands the AVX-512-compiled one to the AVX2 table. See Kernels::dot_i8.
#pragma once
#include <immintrin.h>

#include <cstddef>
#include <cstdint>

namespace frameseek::detail {

// 32 codes per step: maddubs multiplies u8 x s8 into 16-bit pair sums, so feed it |a| and
// sign(a)*b (exact for codes in [-127, 127]); madd with ones widens the pairs to int32. Two
// accumulators hide the add latency; the tail (d % 32) is scalar.
// The sum of a vector's 8 int32 lanes (also the last step of the AVX-512 VNNI kernel's sum).
static inline std::int32_t hsum_epi32(__m256i v) {
  __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(1, 0, 3, 2)));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(2, 3, 0, 1)));
  return _mm_cvtsi128_si32(s);
}

static inline std::int32_t dot_i8_x86(const std::int8_t* a, const std::int8_t* b, std::size_t d) {
  const __m256i ones = _mm256_set1_epi16(1);
  __m256i acc0 = _mm256_setzero_si256(), acc1 = _mm256_setzero_si256();
  std::size_t i = 0;
  for (; i + 64 <= d; i += 64) {
    const __m256i a0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a + i));
    const __m256i b0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b + i));
    const __m256i a1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a + i + 32));
    const __m256i b1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b + i + 32));
    acc0 = _mm256_add_epi32(
        acc0, _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_abs_epi8(a0), _mm256_sign_epi8(b0, a0)), ones));
    acc1 = _mm256_add_epi32(
        acc1, _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_abs_epi8(a1), _mm256_sign_epi8(b1, a1)), ones));
  }
  for (; i + 32 <= d; i += 32) {
    const __m256i a0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a + i));
    const __m256i b0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b + i));
    acc0 = _mm256_add_epi32(
        acc0, _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_abs_epi8(a0), _mm256_sign_epi8(b0, a0)), ones));
  }
  std::int32_t r = hsum_epi32(_mm256_add_epi32(acc0, acc1));
  for (; i < d; ++i) r += std::int32_t{a[i]} * std::int32_t{b[i]};
  return r;
}

}  // namespace frameseek::detail
