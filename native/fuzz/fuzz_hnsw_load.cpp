// Fuzz target: HnswIndex::load on damaged snapshot files. A loaded file must either be refused
// with std::invalid_argument (any other exception, a crash, a sanitizer report, or an allocation
// beyond libFuzzer's limit is a finding) or give an index that works: search, search_groups,
// add and remove on it stay within bounds.
//
// Input: one flag byte, then the file. The snapshot ends in a CRC-32 of everything after the
// magic (format 5: but the float32 section its trailer names, which has a CRC of its own), so almost
// every mutation is refused by the checksum alone; with flag bit 0 set the
// harness re-seals the mutated file with a correct CRC first, so the fuzzer also reaches the
// header checks and the graph reader behind them (a file damaged before it was checksummed,
// or written by something else). The header's capacity is clamped to 4096 slots in both modes:
// capacity is a reservation the file's size cannot bound (a legitimate index may reserve far more
// than it holds), and load makes it before the checksum at the file's end is read, so a large one
// is a deliberate allocation, not a parser bug; load checks it against the machine's memory,
// tests/native/test_hnsw_snapshot_damage.py covers that check.
#include <sys/mman.h>
#include <unistd.h>
#include <zlib.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "frameseek/hnsw_index.hpp"

using namespace frameseek;

namespace {

constexpr std::size_t kMagicBytes = 8;
constexpr std::size_t kCapacityAt = 56;  // FileHeader::capacity (hnsw_index.cpp's file format)
constexpr std::size_t kHeaderBytes = 80;
constexpr std::uint64_t kMaxFuzzCapacity = 4096;
constexpr std::uint32_t kFirstSplitCrcVersion = 5;  // the float32 section's own CRC (hnsw_snapshot.cpp)
constexpr std::size_t kVectorTrailerBytes = 20;     // its trailer: u64 offset, u64 bytes, u32 CRC

std::uint32_t crc_of(const std::uint8_t* p, std::uint64_t n, std::uint32_t crc = 0) {
  return static_cast<std::uint32_t>(crc32(crc, p, static_cast<uInt>(n)));
}

void clamp_capacity(std::vector<std::uint8_t>& f) {
  if (f.size() < kHeaderBytes) return;
  std::uint64_t cap;
  std::memcpy(&cap, f.data() + kCapacityAt, sizeof cap);
  if (cap > kMaxFuzzCapacity) {
    cap %= kMaxFuzzCapacity + 1;
    std::memcpy(f.data() + kCapacityAt, &cap, sizeof cap);
  }
}

void reseal(std::vector<std::uint8_t>& f) {
  if (f.size() < kHeaderBytes + 4) return;
  std::uint32_t version;
  std::memcpy(&version, f.data() + kMagicBytes, sizeof version);
  std::uint64_t at = 0, len = 0;  // format 5: the float32 section its trailer names has its own CRC
  if (version >= kFirstSplitCrcVersion && f.size() >= kHeaderBytes + kVectorTrailerBytes + 4) {
    std::memcpy(&at, f.data() + f.size() - kVectorTrailerBytes - 4, sizeof at);
    std::memcpy(&len, f.data() + f.size() - kVectorTrailerBytes - 4 + 8, sizeof len);
  }
  const std::uint64_t end = f.size() - kVectorTrailerBytes - 4;
  if (at >= kMagicBytes && at <= end && len <= end - at) {
    const std::uint32_t vectors = crc_of(f.data() + at, len);
    std::memcpy(f.data() + f.size() - 8, &vectors, 4);
    const std::uint32_t rest =
        crc_of(f.data() + at + len, f.size() - 4 - at - len, crc_of(f.data() + kMagicBytes, at - kMagicBytes));
    std::memcpy(f.data() + f.size() - 4, &rest, 4);
    return;
  }
  const std::uint32_t crc =
      static_cast<std::uint32_t>(crc32(0, f.data() + kMagicBytes, static_cast<uInt>(f.size() - kMagicBytes - 4)));
  std::memcpy(f.data() + f.size() - 4, &crc, 4);
}

void exercise(HnswIndex& idx) {
  const std::size_t dim = idx.dim();
  std::vector<float> q(dim, 0.5f);
  constexpr std::size_t k = 4;
  std::uint64_t ids[k], groups[k];
  float dist[k];
  idx.search(q.data(), 1, k, 0, nullptr, ids, dist, 1);
  for (std::uint64_t id : ids)
    if (id != kNoId && !idx.contains(id)) std::abort();  // a result the index does not hold
  idx.search_groups(q.data(), 1, k, 0, nullptr, groups, ids, dist, 1);
  (void)idx.check_mapped_vectors();  // a mapped float32 section: read back whole
  const std::uint64_t fresh = kNoId - 1;
  if (idx.contains(fresh)) return;
  idx.add(&fresh, q.data(), 1, nullptr, 1);
  idx.search(q.data(), 1, k, 8, nullptr, ids, dist, 1);
  idx.remove(&fresh, 1);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 1) return 0;
  std::vector<std::uint8_t> file(data + 1, data + size);
  clamp_capacity(file);
  if (data[0] & 1) reseal(file);

  // load() takes a path: an anonymous in-memory file, named through /proc.
  const int fd = memfd_create("snapshot", MFD_CLOEXEC);
  if (fd < 0) std::abort();
  if (!file.empty() && write(fd, file.data(), file.size()) != static_cast<ssize_t>(file.size())) std::abort();
  const std::string path = "/proc/self/fd/" + std::to_string(fd);
  try {
    auto idx = HnswIndex::load(path);
    exercise(*idx);
  } catch (const std::invalid_argument&) {
    // refused: the expected outcome for a damaged file
  }
  close(fd);
  return 0;
}
