// Audio fingerprint matching: Chromaprint's raw 32-bit sub-fingerprints compared by bit error rate.
//
// * Popcount kernels (XOR + popcount of 32-bit words) in one translation unit per SIMD path
//   (src/fingerprint/popcount_*.cpp), picked at run time like the distance kernels: AVX-512 with
//   VPOPCNTDQ, AVX2 (nibble lookup), NEON (VCNT; baseline on aarch64), scalar. FRAMESEEK_SIMD caps
//   the level here too.
// * FingerprintIndex: every video's sub-fingerprints, an inverted index over their two 16-bit
//   halves ("bands": a noisy copy rarely keeps all 32 bits, but often one half), offset voting
//   over the postings a query hits, and verification of the best (video, offset) candidates by
//   bit error rate over a sliding window, which places the match (query start <-> reference start,
//   matched length in sub-fingerprints).
#pragma once
#include <cstddef>
#include <cstdint>
#include <unordered_map>
#include <vector>

#include "frameseek/distance.hpp"  // SimdLevel
#include "frameseek/fair_shared_mutex.hpp"

namespace frameseek::fingerprint {

struct PopcountKernels {
  SimdLevel level;
  // out[i] = popcount(a[i] ^ b[i]) for i < n
  void (*xor_popcount)(const std::uint32_t* a, const std::uint32_t* b, std::size_t n, std::uint32_t* out);
  // sum over i < n of popcount(a[i] ^ b[i])
  std::uint64_t (*hamming)(const std::uint32_t* a, const std::uint32_t* b, std::size_t n);
  // out[i] = the Hamming distance of q (`words` words) to row i, i < n_rows, of `blocks`: rows in
  // the block layout below, block_words(n_rows, words) words (HnswIndex's route table scan).
  void (*hamming_blocks)(const std::uint32_t* q, const std::uint32_t* blocks, std::size_t n_rows, std::size_t words,
                         std::uint32_t* out);
};

// hamming_blocks' layout: rows in blocks of kBlockRows, word-major inside a block (word w of row r
// at block_offset(r, w, words)). A SIMD lane then sums one row's distance over the words, with no
// horizontal sum a row: on Zen 4, 0.8 ns a 512-bit row against 3.9 ns row-major (AVX-512; the
// 10M index's 9,766-row route table, a third of its walk's time row-major). The last block is
// padded to whole rows.
constexpr std::size_t kBlockRows = 16;
inline std::size_t block_offset(std::size_t row, std::size_t word, std::size_t words) {
  return row / kBlockRows * kBlockRows * words + word * kBlockRows + row % kBlockRows;
}
inline std::size_t block_words(std::size_t n_rows, std::size_t words) {
  return (n_rows + kBlockRows - 1) / kBlockRows * kBlockRows * words;
}
// Writes row r (`words` words, contiguous) into `blocks`.
inline void set_block_row(std::uint32_t* blocks, std::size_t r, const std::uint32_t* row, std::size_t words) {
  for (std::size_t w = 0; w < words; ++w) blocks[block_offset(r, w, words)] = row[w];
}

// The table for the best level this CPU has (at most FRAMESEEK_SIMD when set), fixed at first call.
const PopcountKernels& popcount_kernels();
// One level's table (test hook); throws std::runtime_error when not compiled in or the CPU lacks it.
const PopcountKernels& popcount_kernels_for(SimdLevel level);
std::vector<SimdLevel> popcount_supported_levels();  // ascending

namespace detail {
const PopcountKernels& scalar_popcount_kernels();
#if defined(FRAMESEEK_HAVE_X86)
const PopcountKernels& avx2_popcount_kernels();
const PopcountKernels& avx512_popcount_kernels();
#endif
#if defined(FRAMESEEK_HAVE_NEON)
const PopcountKernels& neon_popcount_kernels();
#endif
}  // namespace detail

// One placed match of a query against one indexed video. Positions and length count
// sub-fingerprints; the caller turns them into seconds (Chromaprint's item duration).
struct Match {
  std::uint64_t video;
  std::int64_t query_start;
  std::int64_t ref_start;
  std::int64_t length;
  double ber;           // bit error rate over the matched stretch (0 identical, ~0.5 unrelated)
  std::uint32_t votes;  // postings that voted for this offset (diagnostic)
};

struct MatchParams {
  std::size_t max_results = 10;           // videos returned at most (best first)
  std::uint32_t min_votes = 2;            // postings agreeing on an offset before it is verified
  std::size_t max_candidates = 64;        // (video, offset) candidates verified at most
  std::size_t max_offsets_per_video = 4;  // of which from one video at most
  std::size_t window = 16;                // sub-fingerprints in the sliding bit-error window
  double max_window_ber = 0.35;           // a window at most this bad belongs to a match
  std::size_t min_length = 16;            // shortest match reported (sub-fingerprints)
  std::size_t max_postings = 20000;       // band values more common than this are skipped (silence, hum)
};

// The matched stretch of a query aligned to a reference at `offset` (ref position = query position
// + offset): the longest run of sliding windows with BER <= max_window_ber. length 0: none.
Match verify_offset(const std::uint32_t* query, std::size_t m, const std::uint32_t* ref, std::size_t n,
                    std::int64_t offset, const MatchParams& params);

class FingerprintIndex {
 public:
  static constexpr int kBands = 2;
  static constexpr int kBandBits = 16;

  // Adds (or replaces) one video's sub-fingerprints.
  void add(std::uint64_t video, const std::uint32_t* fp, std::size_t n);
  bool remove(std::uint64_t video);  // false: not indexed
  bool contains(std::uint64_t video) const;
  std::size_t size() const;   // videos
  std::size_t items() const;  // sub-fingerprints over all videos
  // The videos containing the query, best (lowest BER x longest) first, one match per video.
  std::vector<Match> search(const std::uint32_t* query, std::size_t m, const MatchParams& params) const;

 private:
  struct Posting {
    std::uint32_t slot;
    std::uint32_t pos;
  };
  static std::size_t key(int band, std::uint32_t value) {
    return (static_cast<std::size_t>(band) << kBandBits) | ((value >> (band * kBandBits)) & 0xffffu);
  }
  void remove_locked(std::uint32_t slot);

  std::vector<std::vector<Posting>> postings_ = std::vector<std::vector<Posting>>(kBands << kBandBits);
  std::vector<std::vector<std::uint32_t>> fps_;  // by slot
  std::vector<std::uint64_t> video_of_slot_;
  std::vector<std::uint32_t> free_slots_;
  std::unordered_map<std::uint64_t, std::uint32_t> slot_of_video_;
  std::size_t items_ = 0;
  mutable FairSharedMutex mu_;  // searches cannot keep a new soundtrack out
};

}  // namespace frameseek::fingerprint
