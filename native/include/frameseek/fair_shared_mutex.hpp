// A reader/writer mutex whose writers cannot be starved by overlapping readers.
//
// std::shared_mutex is glibc's rwlock, which prefers readers: while searches keep overlapping,
// a writer waiting for the exclusive side never gets it (an index's add or remove would wait as
// long as the search load lasts). Here a writer first takes a turnstile that every new reader
// passes through, so it waits only for the readers already inside. Meets the standard's
// SharedMutex requirements (std::unique_lock, std::shared_lock).
//
// Like any writer-preferring lock, a thread must not take the shared side twice: with a writer
// queued in between, the second take would wait for that writer, which waits for the first.
#pragma once
#include <mutex>
#include <shared_mutex>

namespace frameseek {

class FairSharedMutex {
 public:
  void lock() {
    std::lock_guard<std::mutex> turn(turnstile_);
    rw_.lock();
  }
  bool try_lock() { return rw_.try_lock(); }
  void unlock() { rw_.unlock(); }

  void lock_shared() {
    { std::lock_guard<std::mutex> turn(turnstile_); }  // wait behind a writer that is queued
    rw_.lock_shared();
  }
  bool try_lock_shared() { return rw_.try_lock_shared(); }
  void unlock_shared() { rw_.unlock_shared(); }

 private:
  std::mutex turnstile_;
  std::shared_mutex rw_;
};

}  // namespace frameseek
