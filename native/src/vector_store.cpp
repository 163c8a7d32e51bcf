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

void VectorStore::map_rows(std::size_t rows, bool huge) {
  const std::size_t bytes = rows * row_bytes_;
  void* p;
  if (fd_ >= 0) {
    if (::ftruncate(fd_, static_cast<off_t>(bytes)) != 0) fail("cannot size the vector file in " + dir_);
    p = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd_, 0);
  } else {
    p = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  }
  if (p == MAP_FAILED) throw std::bad_alloc();
  base_ = static_cast<char*>(p);
  rows_ = rows;
  advise(base_, bytes, fd_ >= 0, huge);
}

void VectorStore::advise_huge() { advise(base_, bytes(), fd_ >= 0, true); }

void VectorStore::resize(std::size_t rows, bool huge) {
  if (rows == rows_) return;
  char* old = base_;
  const std::size_t old_bytes = bytes(), keep = std::min(rows, rows_) * row_bytes_;
  base_ = nullptr;
  rows_ = 0;
  if (rows == 0) {
    if (old) ::munmap(old, old_bytes);
    if (fd_ >= 0 && ::ftruncate(fd_, 0) != 0) fail("cannot size the vector file in " + dir_);
    return;
  }
  if (fd_ >= 0 && old) {
    // The file keeps the rows: grow or shrink it and map it again (never copies).
    ::munmap(old, old_bytes);
    map_rows(rows, huge);
    return;
  }
  try {
    map_rows(rows, huge);
  } catch (...) {
    base_ = old;
    rows_ = old_bytes / row_bytes_;
    throw;
  }
  if (old) {
    std::memcpy(base_, old, keep);
    ::munmap(old, old_bytes);
  }
}

void VectorStore::use_directory(const std::string& directory) {
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
    std::memcpy(base_, old, old_bytes);
    ::munmap(old, old_bytes);
  }
  if (old_fd >= 0) ::close(old_fd);
}

}  // namespace frameseek::detail
