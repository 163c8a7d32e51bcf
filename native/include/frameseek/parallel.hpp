// A tiny fork-join helper over std::thread. We avoid OpenMP on purpose: libgomp's thread pool
// does not survive fork(), and the server may pre-fork worker processes.
#pragma once
#include <cstddef>
#include <functional>

namespace frameseek {

// Number of worker threads to use when the caller passes 0 (hardware concurrency, at least 1).
std::size_t default_threads();

// Calls fn(begin, end) over [0, n) split into contiguous chunks on up to `threads` threads
// (0 = default_threads()). The first exception thrown by any chunk is rethrown in the caller.
void parallel_for(std::size_t n, std::size_t threads,
                  const std::function<void(std::size_t begin, std::size_t end)>& fn);

}  // namespace frameseek
