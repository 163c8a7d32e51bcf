// NEON popcount kernels (baseline on aarch64): VCNT counts the bits of each byte, pairwise widening
// adds sum the bytes into 32-bit words (xor_popcount) or into 16-bit accumulators flushed to 64
// bits (hamming). Tails go word by word.
#include <arm_neon.h>

#include <algorithm>

#include "frameseek/fingerprint.hpp"
#include "hamming_blocks.hpp"

namespace frameseek::fingerprint::detail {
namespace {

inline uint8x16_t xor_bytes(const std::uint32_t* a, const std::uint32_t* b) {
  return vreinterpretq_u8_u32(veorq_u32(vld1q_u32(a), vld1q_u32(b)));
}

void xor_popcount(const std::uint32_t* a, const std::uint32_t* b, std::size_t n, std::uint32_t* out) {
  std::size_t i = 0;
  for (; i + 4 <= n; i += 4) vst1q_u32(out + i, vpaddlq_u16(vpaddlq_u8(vcntq_u8(xor_bytes(a + i, b + i)))));
  for (; i < n; ++i) out[i] = static_cast<std::uint32_t>(__builtin_popcount(a[i] ^ b[i]));
}

std::uint64_t hamming(const std::uint32_t* a, const std::uint32_t* b, std::size_t n) {
  // A 16-bit lane gains at most 16 (two bytes of 8 bits) per step of 4 words: flush to 64 bits
  // every 2048 steps (at most 32768), well before it wraps.
  constexpr std::size_t kFlushWords = 4 * 2048;
  uint64x2_t total = vdupq_n_u64(0);
  std::size_t i = 0;
  while (i + 4 <= n) {
    const std::size_t stop = std::min(n - (n - i) % 4, i + kFlushWords);
    uint16x8_t acc = vdupq_n_u16(0);
    for (; i < stop; i += 4) acc = vpadalq_u8(acc, vcntq_u8(xor_bytes(a + i, b + i)));
    total = vpadalq_u32(total, vpaddlq_u16(acc));
  }
  std::uint64_t s = vgetq_lane_u64(total, 0) + vgetq_lane_u64(total, 1);
  for (; i < n; ++i) s += static_cast<std::uint64_t>(__builtin_popcount(a[i] ^ b[i]));
  return s;
}

// hamming_blocks: a block's 16 rows as four groups of 4 lanes (hamming_blocks.hpp).
struct Lanes4 {
  static constexpr std::size_t kLanes = 4;
  using Words = uint32x4_t;
  using Bytes = uint8x16_t;
  static Words zero_words() { return vdupq_n_u32(0); }
  static Bytes zero_bytes() { return vdupq_n_u8(0); }
  static Bytes add_counts(Bytes acc, std::uint32_t q_word, const std::uint32_t* rows) {
    return vaddq_u8(acc, vcntq_u8(vreinterpretq_u8_u32(veorq_u32(vdupq_n_u32(q_word), vld1q_u32(rows)))));
  }
  static Words widen_add(Words acc, Bytes counts) { return vaddq_u32(acc, vpaddlq_u16(vpaddlq_u8(counts))); }
  static void store(std::uint32_t* out, Words w) { vst1q_u32(out, w); }
};

}  // namespace

const PopcountKernels& neon_popcount_kernels() {
  static const PopcountKernels k{SimdLevel::Neon, xor_popcount, hamming, hamming_blocks_bytewise<Lanes4>};
  return k;
}

}  // namespace frameseek::fingerprint::detail
