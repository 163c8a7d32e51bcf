// NEON popcount kernels (baseline on aarch64): VCNT counts the bits of each byte, pairwise widening
// adds sum the bytes into 32-bit words (xor_popcount) or into 16-bit accumulators flushed to 64
// bits (hamming). Tails go word by word.
#include <arm_neon.h>

#include <algorithm>

#include "frameseek/fingerprint.hpp"

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

// A block's 16 rows as four groups of 4 lanes. Per-byte counts (at most 8 a word) add up in bytes
// for up to 31 words before they are widened into the 32-bit lanes.
void hamming_blocks(const std::uint32_t* q, const std::uint32_t* blocks, std::size_t n_rows, std::size_t words,
                    std::uint32_t* out) {
  static_assert(kBlockRows == 16, "four groups of 4 lanes");
  constexpr std::size_t kByteWords = 31;  // 31 * 8 = 248 < 256
  for (std::size_t r = 0; r < n_rows; r += 16) {
    const std::uint32_t* blk = blocks + r * words;
    std::uint32_t d[16];
    for (std::size_t g = 0; g < 4; ++g) {
      uint32x4_t acc = vdupq_n_u32(0);
      for (std::size_t w0 = 0; w0 < words; w0 += kByteWords) {
        uint8x16_t bytes = vdupq_n_u8(0);
        for (std::size_t w = w0; w < std::min(words, w0 + kByteWords); ++w)
          bytes = vaddq_u8(
              bytes, vcntq_u8(vreinterpretq_u8_u32(veorq_u32(vdupq_n_u32(q[w]), vld1q_u32(blk + w * 16 + g * 4)))));
        acc = vaddq_u32(acc, vpaddlq_u16(vpaddlq_u8(bytes)));
      }
      vst1q_u32(d + g * 4, acc);
    }
    std::copy(d, d + std::min<std::size_t>(16, n_rows - r), out + r);
  }
}

}  // namespace

const PopcountKernels& neon_popcount_kernels() {
  static const PopcountKernels k{SimdLevel::Neon, xor_popcount, hamming, hamming_blocks};
  return k;
}

}  // namespace frameseek::fingerprint::detail
