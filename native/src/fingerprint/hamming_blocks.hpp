// The loop of PopcountKernels::hamming_blocks for a SIMD path whose popcount leaves per-byte counts
// (AVX2's nibble lookup, NEON's VCNT): a block's rows in groups of P::kLanes 32-bit lanes, the byte
// counts of up to kByteWords words added in bytes (at most 8 a word: 31 * 8 = 248 < 256), then
// widened into the 32-bit lanes.
//
// Each translation unit defines its policy P in an anonymous namespace, so every instantiation has
// internal linkage and code compiled with one TU's -m flags is never merged with another's.
// Policy contract:
//   static constexpr std::size_t kLanes;  using Words = <kLanes x u32>;  using Bytes = <4 * kLanes x u8>;
//   Words zero_words(); Bytes zero_bytes();
//   Bytes add_counts(Bytes acc, std::uint32_t q_word, const std::uint32_t* rows)  // + popcount bytes of q ^
//   rows[0..kLanes) Words widen_add(Words acc, Bytes counts);  void store(std::uint32_t* out, Words);
#pragma once
#include <algorithm>
#include <cstddef>
#include <cstdint>

#include "frameseek/fingerprint.hpp"

namespace frameseek::fingerprint::detail {

template <class P>
void hamming_blocks_bytewise(const std::uint32_t* q, const std::uint32_t* blocks, std::size_t n_rows, std::size_t words,
                             std::uint32_t* out) {
  static_assert(kBlockRows % P::kLanes == 0, "whole lane groups a block");
  constexpr std::size_t kByteWords = 31;
  for (std::size_t r = 0; r < n_rows; r += kBlockRows) {
    const std::uint32_t* blk = blocks + r * words;
    alignas(64) std::uint32_t d[kBlockRows];
    for (std::size_t g = 0; g < kBlockRows / P::kLanes; ++g) {
      typename P::Words acc = P::zero_words();
      for (std::size_t w0 = 0; w0 < words; w0 += kByteWords) {
        typename P::Bytes counts = P::zero_bytes();
        for (std::size_t w = w0; w < std::min(words, w0 + kByteWords); ++w)
          counts = P::add_counts(counts, q[w], blk + w * kBlockRows + g * P::kLanes);
        acc = P::widen_add(acc, counts);
      }
      P::store(d + g * P::kLanes, acc);
    }
    std::copy(d, d + std::min(kBlockRows, n_rows - r), out + r);
  }
}

}  // namespace frameseek::fingerprint::detail
