#include "frameseek/parallel.hpp"

#include <algorithm>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

namespace frameseek {

std::size_t default_threads() {
  // Cached: glibc answers hardware_concurrency() by reading /sys/devices/system/cpu/online, a
  // file open per call, which showed up in the profile of one-query server searches.
  static const std::size_t cached = [] {
    const unsigned hc = std::thread::hardware_concurrency();
    return hc == 0 ? std::size_t{1} : std::size_t{hc};
  }();
  return cached;
}

void parallel_for(std::size_t n, std::size_t threads, const std::function<void(std::size_t, std::size_t)>& fn) {
  if (n == 0) return;
  if (n == 1) {  // one query: run inline, no thread count needed
    fn(0, 1);
    return;
  }
  if (threads == 0) threads = default_threads();
  threads = std::min(threads, n);
  if (threads == 1) {
    fn(0, n);
    return;
  }
  std::exception_ptr first_error;
  std::mutex error_mutex;
  std::vector<std::thread> pool;
  pool.reserve(threads - 1);
  const std::size_t chunk = (n + threads - 1) / threads;
  auto run = [&](std::size_t begin, std::size_t end) {
    try {
      fn(begin, end);
    } catch (...) {
      std::lock_guard<std::mutex> lock(error_mutex);
      if (!first_error) first_error = std::current_exception();
    }
  };
  for (std::size_t t = 1; t < threads; ++t) {
    std::size_t begin = t * chunk, end = std::min(n, begin + chunk);
    if (begin >= end) break;
    pool.emplace_back(run, begin, end);
  }
  run(0, std::min(n, chunk));
  for (auto& th : pool) th.join();
  if (first_error) std::rethrow_exception(first_error);
}

}  // namespace frameseek
