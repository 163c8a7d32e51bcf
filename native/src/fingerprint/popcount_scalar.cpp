// Scalar popcount kernels: the reference path every other one is tested against, and the fallback.

#include "frameseek/fingerprint.hpp"

namespace frameseek::fingerprint::detail {
namespace {

void xor_popcount(const std::uint32_t* a, const std::uint32_t* b, std::size_t n, std::uint32_t* out) {
  for (std::size_t i = 0; i < n; ++i) out[i] = static_cast<std::uint32_t>(__builtin_popcount(a[i] ^ b[i]));
}

std::uint64_t hamming(const std::uint32_t* a, const std::uint32_t* b, std::size_t n) {
  std::uint64_t s = 0;
  for (std::size_t i = 0; i < n; ++i) s += static_cast<std::uint64_t>(__builtin_popcount(a[i] ^ b[i]));
  return s;
}

void hamming_blocks(const std::uint32_t* q, const std::uint32_t* blocks, std::size_t n_rows, std::size_t words,
                    std::uint32_t* out) {
  for (std::size_t r = 0; r < n_rows; ++r) {
    std::uint32_t d = 0;
    for (std::size_t w = 0; w < words; ++w)
      d += static_cast<std::uint32_t>(__builtin_popcount(q[w] ^ blocks[block_offset(r, w, words)]));
    out[r] = d;
  }
}

}  // namespace

const PopcountKernels& scalar_popcount_kernels() {
  static const PopcountKernels k{SimdLevel::Scalar, xor_popcount, hamming, hamming_blocks};
  return k;
}

}  // namespace frameseek::fingerprint::detail
