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

// One query against n_rows rows of `words` words each (the HNSW route table's sign bits): the
// per-pair kernel inlined, not called through the table once per row.
void hamming_rows(const std::uint32_t* q, const std::uint32_t* rows, std::size_t n_rows, std::size_t words,
                  std::uint32_t* out) {
  for (std::size_t i = 0; i < n_rows; ++i) out[i] = static_cast<std::uint32_t>(hamming(q, rows + i * words, words));
}

}  // namespace

const PopcountKernels& avx512_popcount_kernels() {
  static const PopcountKernels k{SimdLevel::Avx512, xor_popcount, hamming, hamming_rows};
  return k;
}

}  // namespace frameseek::fingerprint::detail
