// AVX2 popcount kernels (compiled with -mavx2): per-byte counts by a 4-bit lookup table (pshufb),
// summed into 32-bit lanes with maddubs/madd. Tails go through the scalar kernel.
#include <immintrin.h>

#include <algorithm>

#include "frameseek/fingerprint.hpp"

namespace frameseek::fingerprint::detail {
namespace {

inline __m256i popcount_epi8(__m256i v) {  // 0..8 per byte
  const __m256i lut =
      _mm256_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4, 0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4);
  const __m256i low = _mm256_set1_epi8(0x0f);
  __m256i lo = _mm256_shuffle_epi8(lut, _mm256_and_si256(v, low));
  __m256i hi = _mm256_shuffle_epi8(lut, _mm256_and_si256(_mm256_srli_epi16(v, 4), low));
  return _mm256_add_epi8(lo, hi);
}

inline __m256i popcount_epi32(__m256i v) {
  __m256i pairs = _mm256_maddubs_epi16(popcount_epi8(v), _mm256_set1_epi8(1));
  return _mm256_madd_epi16(pairs, _mm256_set1_epi16(1));
}

void xor_popcount(const std::uint32_t* a, const std::uint32_t* b, std::size_t n, std::uint32_t* out) {
  std::size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    __m256i x = _mm256_xor_si256(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(a + i)),
                                 _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b + i)));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + i), popcount_epi32(x));
  }
  for (; i < n; ++i) out[i] = static_cast<std::uint32_t>(__builtin_popcount(a[i] ^ b[i]));
}

std::uint64_t hamming(const std::uint32_t* a, const std::uint32_t* b, std::size_t n) {
  __m256i acc = _mm256_setzero_si256();  // 32-bit lanes: at most 32 per word, flushed to 64 bits
  std::uint64_t s = 0;
  std::size_t i = 0;
  while (i + 8 <= n) {
    // a 32-bit lane gains at most 32 per step: flush well before 2^32
    const std::size_t stop = std::min(n - (n - i) % 8, i + (std::size_t{1} << 24));
    for (; i < stop; i += 8) {
      __m256i x = _mm256_xor_si256(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(a + i)),
                                   _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b + i)));
      acc = _mm256_add_epi32(acc, popcount_epi32(x));
    }
    alignas(32) std::uint32_t lanes[8];
    _mm256_store_si256(reinterpret_cast<__m256i*>(lanes), acc);
    for (std::uint32_t l : lanes) s += l;
    acc = _mm256_setzero_si256();
  }
  for (; i < n; ++i) s += static_cast<std::uint64_t>(__builtin_popcount(a[i] ^ b[i]));
  return s;
}

// A block's 16 rows as two halves of 8 lanes. Per-byte counts (at most 8 a word) add up in bytes
// for up to 31 words before they are widened into the 32-bit lanes.
void hamming_blocks(const std::uint32_t* q, const std::uint32_t* blocks, std::size_t n_rows, std::size_t words,
                    std::uint32_t* out) {
  static_assert(kBlockRows == 16, "two halves of 8 lanes");
  constexpr std::size_t kByteWords = 31;  // 31 * 8 = 248 < 256
  for (std::size_t r = 0; r < n_rows; r += 16) {
    const std::uint32_t* blk = blocks + r * words;
    alignas(32) std::uint32_t d[16];
    for (std::size_t half = 0; half < 2; ++half) {
      __m256i acc = _mm256_setzero_si256();
      for (std::size_t w0 = 0; w0 < words; w0 += kByteWords) {
        __m256i bytes = _mm256_setzero_si256();
        for (std::size_t w = w0; w < std::min(words, w0 + kByteWords); ++w) {
          const __m256i x =
              _mm256_xor_si256(_mm256_set1_epi32(static_cast<int>(q[w])),
                               _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk + w * 16 + half * 8)));
          bytes = _mm256_add_epi8(bytes, popcount_epi8(x));
        }
        acc = _mm256_add_epi32(
            acc, _mm256_madd_epi16(_mm256_maddubs_epi16(bytes, _mm256_set1_epi8(1)), _mm256_set1_epi16(1)));
      }
      _mm256_store_si256(reinterpret_cast<__m256i*>(d + half * 8), acc);
    }
    std::copy(d, d + std::min<std::size_t>(16, n_rows - r), out + r);
  }
}

}  // namespace

const PopcountKernels& avx2_popcount_kernels() {
  static const PopcountKernels k{SimdLevel::Avx2, xor_popcount, hamming, hamming_blocks};
  return k;
}

}  // namespace frameseek::fingerprint::detail
