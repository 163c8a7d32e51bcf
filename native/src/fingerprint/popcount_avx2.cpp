// AVX2 popcount kernels (compiled with -mavx2): per-byte counts by a 4-bit lookup table (pshufb),
// summed into 32-bit lanes with maddubs/madd. Tails go through the scalar kernel.
#include <immintrin.h>

#include <algorithm>

#include "frameseek/fingerprint.hpp"
#include "hamming_blocks.hpp"

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

// hamming_blocks: a block's 16 rows as two groups of 8 lanes (hamming_blocks.hpp).
struct Lanes8 {
  static constexpr std::size_t kLanes = 8;
  using Words = __m256i;
  using Bytes = __m256i;
  static Words zero_words() { return _mm256_setzero_si256(); }
  static Bytes zero_bytes() { return _mm256_setzero_si256(); }
  static Bytes add_counts(Bytes acc, std::uint32_t q_word, const std::uint32_t* rows) {
    return _mm256_add_epi8(acc,
                           popcount_epi8(_mm256_xor_si256(_mm256_set1_epi32(static_cast<int>(q_word)),
                                                          _mm256_loadu_si256(reinterpret_cast<const __m256i*>(rows)))));
  }
  static Words widen_add(Words acc, Bytes counts) {
    return _mm256_add_epi32(acc,
                            _mm256_madd_epi16(_mm256_maddubs_epi16(counts, _mm256_set1_epi8(1)), _mm256_set1_epi16(1)));
  }
  static void store(std::uint32_t* out, Words w) { _mm256_storeu_si256(reinterpret_cast<__m256i*>(out), w); }
};

}  // namespace

const PopcountKernels& avx2_popcount_kernels() {
  static const PopcountKernels k{SimdLevel::Avx2, xor_popcount, hamming, hamming_blocks_bytewise<Lanes8>};
  return k;
}

}  // namespace frameseek::fingerprint::detail
