// Slot-indexed rows of fixed size (HnswIndex's float32 originals), in anonymous memory or in a
// file that is memory-mapped and read on demand.
//
// The file is scratch, not state: it is created unlinked (O_TMPFILE, or created and unlinked at
// once) in the directory the caller names, so it lives exactly as long as the mapping and no crash
// leaves one behind or a stale one to be trusted. What survives a restart is the snapshot (which
// carries the rows itself) and the vector log replayed after it. So the rows cost page cache, which
// the kernel writes back and reclaims under pressure, instead of anonymous memory, and only the
// rows a re-rank or get_vectors touches come back in.
//
// After a load the first rows may instead be the snapshot file's own float32 section, mapped
// privately over the start of the store (map_file_rows): nothing is read until a row is touched,
// and a write to such a row (a removed slot reused) copies its page into anonymous memory, never
// into the snapshot file.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

namespace frameseek::detail {

class VectorStore {
 public:
  explicit VectorStore(std::size_t row_bytes) : row_bytes_(row_bytes) {}
  ~VectorStore();
  VectorStore(const VectorStore&) = delete;
  VectorStore& operator=(const VectorStore&) = delete;

  // Rows held (0: nothing mapped). resize keeps the first min(old, new) rows; the new ones read 0.
  // huge: ask for 2 MiB pages in anonymous memory before the first touch (false for a block that
  // a load is about to read into: see HnswIndex::collapse_huge_pages; advise_huge() later).
  std::size_t rows() const { return rows_; }
  void resize(std::size_t rows, bool huge = true);
  void advise_huge();
  void release() { resize(0); }
  // From now on the rows live in an unlinked file in `directory`; the first `rows_in_use` rows
  // (the slots handed out) are copied there, the rest of the capacity stays a hole in the file
  // (copying all of it wrote a 10M-capacity index's 20 GB of zeros). Throws std::runtime_error
  // when the directory cannot hold it.
  void use_directory(const std::string& directory, std::size_t rows_in_use);
  const std::string& directory() const { return dir_; }
  bool file_backed() const { return fd_ >= 0; }

  // Rows [0, rows) from then on read `fd` at `offset` (a multiple of the page size; rows <= rows()):
  // whole pages through a private mapping laid over the store's, the last partial page read now.
  // The file must not change while mapped (snapshots are written as new files and renamed; an
  // unlinked one stays readable through the mapping). A later resize or use_directory copies
  // the rows into the store's own memory (one read of the section). Throws std::runtime_error.
  void map_file_rows(int fd, std::uint64_t offset, std::size_t rows);
  // Bytes at the start of data() that are such a file mapping (0: none).
  std::size_t file_mapped_bytes() const { return file_mapped_; }

  char* row(std::size_t i) { return base_ + i * row_bytes_; }
  const char* row(std::size_t i) const { return base_ + i * row_bytes_; }
  char* data() { return base_; }
  std::size_t bytes() const { return rows_ * row_bytes_; }

 private:
  void map_rows(std::size_t rows, bool huge);  // a fresh mapping of `rows` rows (anonymous or over fd_)
  void reserve_file(std::size_t bytes);        // fd_ sized to `bytes`, its blocks allocated
  std::size_t row_bytes_;
  std::size_t rows_ = 0;
  char* base_ = nullptr;
  std::size_t file_mapped_ = 0;
  int fd_ = -1;
  std::string dir_;
};

}  // namespace frameseek::detail
