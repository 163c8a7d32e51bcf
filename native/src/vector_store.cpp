#include "vector_store.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <new>
#include <stdexcept>

namespace frameseek::detail {

namespace {

[[noreturn]] void fail(const std::string& what) { throw std::runtime_error(what + ": " + std::strerror(errno)); }

// Where the kernel reserves a mapping whose first touch is a write (anonymous) it may use 2 MiB
// pages (see advise_huge_pages in hnsw_index.cpp); a file mapping reads on demand, page by page,
// as a re-rank touches one random row at a time.
void advise(char* p, std::size_t bytes, bool file, bool huge) {
  if (!p || bytes == 0) return;
#if defined(MADV_HUGEPAGE)
  if (!file && huge) ::madvise(p, bytes, MADV_HUGEPAGE);  // advice: failure is harmless
#endif
  if (file) ::madvise(p, bytes, MADV_RANDOM);
}

int open_unlinked(const std::string& dir) {
#ifdef O_TMPFILE
  const int fd = ::open(dir.c_str(), O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
  if (fd >= 0) return fd;
#endif
  static std::atomic<unsigned> counter{0};
  const std::string path = dir + "/.vectors." + std::to_string(::getpid()) + "." + std::to_string(counter++) + ".tmp";
  const int fd2 = ::open(path.c_str(), O_CREAT | O_EXCL | O_RDWR | O_CLOEXEC, 0600);
  if (fd2 < 0) fail("cannot create a vector file in " + dir);
  ::unlink(path.c_str());
  return fd2;
}

}  // namespace

VectorStore::~VectorStore() {
  if (base_) ::munmap(base_, bytes());
  if (fd_ >= 0) ::close(fd_);
}

void VectorStore::reserve_file(std::size_t bytes) {
  if (::ftruncate(fd_, static_cast<off_t>(bytes)) != 0) fail("cannot size the vector file in " + dir_);
  // Blocks for every row now (allocated, not written): a later write through the mapping into a
  // hole that a full disk cannot fill would kill the process (SIGBUS) instead of failing here.
  if (const int rc = ::posix_fallocate(fd_, 0, static_cast<off_t>(bytes)); rc != 0) {
    errno = rc;
    fail("no room for the vector file in " + dir_);
  }
}

void VectorStore::map_rows(std::size_t rows, bool huge) {
  const std::size_t bytes = rows * row_bytes_;
  void* p;
  if (fd_ >= 0) {
    reserve_file(bytes);
    p = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd_, 0);
  } else {
    p = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  }
  if (p == MAP_FAILED) throw std::bad_alloc();
  base_ = static_cast<char*>(p);
  rows_ = rows;
  advise(base_, bytes, fd_ >= 0, huge);
}

// (never over the snapshot's mapped rows: collapsing them would read the whole section)
void VectorStore::advise_huge() { advise(base_ + file_mapped_, bytes() - file_mapped_, fd_ >= 0, true); }

void VectorStore::resize(std::size_t rows, bool huge) {
  if (rows == rows_) return;
  char* old = base_;
  const std::size_t old_bytes = bytes(), keep = std::min(rows, rows_) * row_bytes_;
  const std::size_t was_mapped = file_mapped_;
  base_ = nullptr;
  rows_ = 0;
  file_mapped_ = 0;
  if (rows == 0) {
    if (old) ::munmap(old, old_bytes);
    if (fd_ >= 0 && ::ftruncate(fd_, 0) != 0) fail("cannot size the vector file in " + dir_);
    return;
  }
  if (fd_ >= 0 && old) {
    // The file keeps the rows: grow or shrink it and map it again (never copies), except the
    // snapshot's mapped rows, which join it first.
    const std::size_t mapped_keep = std::min(was_mapped, keep);
    for (std::size_t at = 0; at < mapped_keep;) {
      const ssize_t w = ::pwrite(fd_, old + at, mapped_keep - at, static_cast<off_t>(at));
      if (w < 0 && errno == EINTR) continue;
      if (w <= 0) {
        base_ = old;
        rows_ = old_bytes / row_bytes_;
        file_mapped_ = was_mapped;
        fail("cannot write the vector file in " + dir_);
      }
      at += static_cast<std::size_t>(w);
    }
    try {
      reserve_file(rows * row_bytes_);  // before the old mapping goes: a full disk leaves it as it was
    } catch (...) {
      base_ = old;
      rows_ = old_bytes / row_bytes_;
      file_mapped_ = was_mapped;
      throw;
    }
    ::munmap(old, old_bytes);
    map_rows(rows, huge);
    return;
  }
  try {
    map_rows(rows, huge);
  } catch (...) {
    base_ = old;
    rows_ = old_bytes / row_bytes_;
    file_mapped_ = was_mapped;
    throw;
  }
  if (old) {
    std::memcpy(base_, old, keep);
    ::munmap(old, old_bytes);
  }
}

void VectorStore::use_directory(const std::string& directory, std::size_t rows_in_use) {
  if (fd_ >= 0 && directory == dir_) return;
  const int fd = open_unlinked(directory);
  char* old = base_;
  const std::size_t old_rows = rows_, old_bytes = bytes();
  const int old_fd = fd_;
  fd_ = fd;
  dir_ = directory;
  base_ = nullptr;
  rows_ = 0;
  try {
    if (old_rows) map_rows(old_rows, true);
  } catch (...) {
    ::close(fd);
    fd_ = old_fd;
    base_ = old;
    rows_ = old_rows;
    throw;
  }
  if (old) {
    std::memcpy(base_, old, std::min(rows_in_use, old_rows) * row_bytes_);
    ::munmap(old, old_bytes);
  }
  file_mapped_ = 0;
  if (old_fd >= 0) ::close(old_fd);
}

void VectorStore::map_file_rows(int fd, std::uint64_t offset, std::size_t rows) {
  const auto page = static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
  if (rows > rows_ || offset % page != 0 || file_mapped_ != 0)
    throw std::logic_error("VectorStore::map_file_rows: rows beyond the store, an unaligned offset, or mapped twice");
  const std::size_t bytes = rows * row_bytes_, whole = bytes / page * page;
  if (whole > 0) {
    // Read and write: a write copies the page (MAP_PRIVATE), the file never changes. MAP_FIXED
    // replaces the store's pages there, which were never touched (so cost nothing).
    void* p = ::mmap(base_, whole, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_FIXED, fd, static_cast<off_t>(offset));
    if (p == MAP_FAILED) fail("cannot map the snapshot's vectors");
    ::madvise(base_, whole, MADV_RANDOM);  // a re-rank touches one row here, one there
    file_mapped_ = whole;
  }
  for (std::size_t at = whole; at < bytes;) {  // the partial last page: into the store's own memory
    const ssize_t r = ::pread(fd, base_ + at, bytes - at, static_cast<off_t>(offset + at));
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) fail("cannot read the snapshot's vectors");
    at += static_cast<std::size_t>(r);
  }
}

}  // namespace frameseek::detail
