// The runtime CPU dispatch that the distance kernels (dispatch.cpp) and the popcount kernels
// (fingerprint/dispatch.cpp) share. Each family lists the levels this build compiled, each with
// its kernel table and the CPU features it needs (those differ: the popcount AVX-512 path needs
// VPOPCNTDQ, the distance AVX2 path FMA and F16C); looking a level up, the levels this CPU runs
// and the checked access of one level are written here once.
#pragma once
#include <initializer_list>
#include <stdexcept>
#include <string>
#include <vector>

#include "frameseek/distance.hpp"  // SimdLevel, simd_level_name

namespace frameseek::detail {

template <class Table>
struct CompiledLevel {
  SimdLevel level;
  const Table& (*table)();
  bool (*cpu_runs)();  // whether this CPU (and OS) runs the level's instructions
};

template <class Table>
class KernelFamily {
 public:
  // The levels compiled into this build, ascending.
  KernelFamily(std::initializer_list<CompiledLevel<Table>> levels) : levels_(levels) {}

  // The level's table, or nullptr when this build lacks it (whatever the CPU).
  const Table* table_for(SimdLevel level) const {
    const CompiledLevel<Table>* l = find(level);
    return l ? &l->table() : nullptr;
  }
  // Compiled in and run by this CPU.
  bool cpu_supports(SimdLevel level) const {
    const CompiledLevel<Table>* l = find(level);
    return l && l->cpu_runs();
  }
  std::vector<SimdLevel> compiled_levels() const {
    std::vector<SimdLevel> out;
    for (const auto& l : levels_) out.push_back(l.level);
    return out;
  }
  std::vector<SimdLevel> supported_levels() const {  // ascending
    std::vector<SimdLevel> out;
    for (const auto& l : levels_)
      if (l.cpu_runs()) out.push_back(l.level);
    return out;
  }
  // One level's table; std::runtime_error "<what> <level> is not available" when the build or
  // the CPU lacks it.
  const Table& checked(SimdLevel level, const std::string& what) const {
    const Table* t = table_for(level);
    if (!t || !cpu_supports(level)) throw std::runtime_error(what + " " + simd_level_name(level) + " is not available");
    return *t;
  }

 private:
  const CompiledLevel<Table>* find(SimdLevel level) const {
    for (const auto& l : levels_)
      if (l.level == level) return &l;
    return nullptr;
  }
  std::vector<CompiledLevel<Table>> levels_;
};

inline bool always() { return true; }  // Scalar, and NEON (baseline on aarch64)

}  // namespace frameseek::detail
