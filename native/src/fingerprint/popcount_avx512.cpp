// AVX-512 popcount kernels (compiled with -mavx512f -mavx512vpopcntdq; dispatch hands this table
// out only when the CPU reports both): VPOPCNTD on 16 words at a time, masked tails.
#include <immintrin.h>

#include "frameseek/fingerprint.hpp"

namespace frameseek::fingerprint::detail {
namespace {

inline __mmask16 tail_mask(std::size_t rem) { return static_cast<__mmask16>((1u << rem) - 1u); }

void xor_popcount(const std::uint32_t* a, const std::uint32_t* b, std::size_t n, std::uint32_t* out) {
  std::size_t i = 0;
  for (; i + 16 <= n; i += 16) {
    __m512i x = _mm512_xor_si512(_mm512_loadu_si512(a + i), _mm512_loadu_si512(b + i));
    _mm512_storeu_si512(out + i, _mm512_popcnt_epi32(x));
  }
  if (i < n) {
    const __mmask16 m = tail_mask(n - i);
    __m512i x = _mm512_xor_si512(_mm512_maskz_loadu_epi32(m, a + i), _mm512_maskz_loadu_epi32(m, b + i));
    _mm512_mask_storeu_epi32(out + i, m, _mm512_popcnt_epi32(x));
  }
}

std::uint64_t hamming(const std::uint32_t* a, const std::uint32_t* b, std::size_t n) {
  __m512i acc = _mm512_setzero_si512();  // 64-bit lanes: VPOPCNTQ of 64-bit words never overflows
  std::size_t i = 0;
  for (; i + 16 <= n; i += 16) {
    __m512i x = _mm512_xor_si512(_mm512_loadu_si512(a + i), _mm512_loadu_si512(b + i));
    acc = _mm512_add_epi64(acc, _mm512_popcnt_epi64(x));
  }
  if (i < n) {
    const __mmask16 m = tail_mask(n - i);
    __m512i x = _mm512_xor_si512(_mm512_maskz_loadu_epi32(m, a + i), _mm512_maskz_loadu_epi32(m, b + i));
    acc = _mm512_add_epi64(acc, _mm512_popcnt_epi64(x));
  }
  // stored and summed: GCC 12's _mm512_reduce_add_epi64 warns (-Wuninitialized) inside its header
  alignas(64) std::uint64_t lanes[8];
  _mm512_store_si512(lanes, acc);
  std::uint64_t s = 0;
  for (std::uint64_t l : lanes) s += l;
  return s;
}

// A block's 16 rows in the 16 lanes: one broadcast word of q against word w of every row.
void hamming_blocks(const std::uint32_t* q, const std::uint32_t* blocks, std::size_t n_rows, std::size_t words,
                    std::uint32_t* out) {
  static_assert(kBlockRows == 16, "one 32-bit lane a row");
  const auto step = [&](__m512i acc, const std::uint32_t* blk, std::size_t w) {
    return _mm512_add_epi32(acc, _mm512_popcnt_epi32(_mm512_xor_si512(_mm512_set1_epi32(static_cast<int>(q[w])),
                                                                      _mm512_loadu_si512(blk + w * 16))));
  };
  for (std::size_t r = 0; r < n_rows; r += 16) {
    const std::uint32_t* blk = blocks + r * words;
    __m512i acc0 = _mm512_setzero_si512(), acc1 = _mm512_setzero_si512();  // two chains: popcnt latency
    std::size_t w = 0;
    for (; w + 2 <= words; w += 2) {
      acc0 = step(acc0, blk, w);
      acc1 = step(acc1, blk, w + 1);
    }
    if (w < words) acc0 = step(acc0, blk, w);
    const __m512i d = _mm512_add_epi32(acc0, acc1);
    if (r + 16 <= n_rows)
      _mm512_storeu_si512(out + r, d);
    else
      _mm512_mask_storeu_epi32(out + r, tail_mask(n_rows - r), d);
  }
}

}  // namespace

const PopcountKernels& avx512_popcount_kernels() {
  static const PopcountKernels k{SimdLevel::Avx512, xor_popcount, hamming, hamming_blocks};
  return k;
}

}  // namespace frameseek::fingerprint::detail
