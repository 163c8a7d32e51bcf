// Runtime CPU dispatch for the distance kernels.
#include "frameseek/distance.hpp"

#include <cstdlib>
#include <cstring>
#include <stdexcept>
#if defined(FRAMESEEK_HAVE_X86)
#include <cpuid.h>
#endif

#include "simd_dispatch.hpp"

namespace frameseek {
namespace {

#if defined(FRAMESEEK_HAVE_X86)
// CPUID.1:ECX.F16C directly: clang before 16 has no "f16c" in __builtin_cpu_supports (the AVX2
// check next to it already covers the OS saving the YMM state these instructions need).
bool cpu_has_f16c() {
  unsigned eax, ebx, ecx, edx;
  return __get_cpuid(1, &eax, &ebx, &ecx, &edx) && (ecx & bit_F16C);
}
#endif

// The distance kernels' levels. AVX2 here includes FMA and F16C (fp16 storage); AVX-512 needs
// F, BW, DQ and VL.
const detail::KernelFamily<Kernels>& family() {
  static const detail::KernelFamily<Kernels> f {
    {SimdLevel::Scalar, &detail::scalar_kernels, &detail::always},
#if defined(FRAMESEEK_HAVE_NEON)
        {SimdLevel::Neon, &detail::neon_kernels, &detail::always},
#endif
#if defined(FRAMESEEK_HAVE_X86)
        {SimdLevel::Avx2, &detail::avx2_kernels,
         [] { return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && cpu_has_f16c(); }},
        {SimdLevel::Avx512, &detail::avx512_kernels, [] {
           return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                  __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl");
         }},
#endif
  };
  return f;
}

bool cpu_supports(SimdLevel level) { return family().cpu_supports(level); }
const Kernels* table_for(SimdLevel level) { return family().table_for(level); }

const Kernels& select_kernels() {
  auto levels = supported_levels();  // ascending
  SimdLevel best = levels.back();
  // FRAMESEEK_SIMD=scalar|neon|avx2|avx512 caps the level (for tests and A/B runs); asking for a
  // level this CPU or build lacks is an error rather than a silent fallback.
  if (const char* forced = std::getenv("FRAMESEEK_SIMD"); forced && *forced) {
    SimdLevel want = parse_simd_level(forced);
    if (!cpu_supports(want) || !table_for(want))
      throw std::runtime_error("FRAMESEEK_SIMD=" + std::string(forced) + " is not available on this CPU/build");
    best = want;
  }
  return *table_for(best);
}

}  // namespace

std::vector<SimdLevel> compiled_levels() { return family().compiled_levels(); }

std::vector<SimdLevel> supported_levels() { return family().supported_levels(); }

const Kernels& kernels() {
  static const Kernels& k = select_kernels();
  return k;
}

const Kernels& kernels_for(SimdLevel level) { return family().checked(level, "SIMD level"); }

SimdLevel simd_level() { return kernels().level; }

std::string cpu_vendor() {
#if defined(FRAMESEEK_HAVE_X86)
  unsigned eax, ebx, ecx, edx;
  if (!__get_cpuid(0, &eax, &ebx, &ecx, &edx)) return "";
  char v[12];
  std::memcpy(v, &ebx, 4);
  std::memcpy(v + 4, &edx, 4);
  std::memcpy(v + 8, &ecx, 4);
  return std::string(v, sizeof v);
#else
  return "";
#endif
}

StreamChoice stream_choice_for(SimdLevel selected, const std::string& vendor) {
  if (selected != SimdLevel::Avx512) return {selected, "the selected level"};
  if (vendor == "GenuineIntel")
    return {SimdLevel::Avx512,
            vendor + ": the AVX-512 stream (Sapphire Rapids: 1.03x single-thread sgemv, AVX2 0.89x)"};
  return {SimdLevel::Avx2, (vendor.empty() ? std::string("unknown vendor") : vendor) +
                               ": the AVX2 stream (Zen 4 double-pumps 512-bit ops: AVX-512 took 1.14x the pure-read "
                               "time, AVX2 1.00x)"};
}

const StreamChoice& stream_choice() {
  static const StreamChoice c = []() -> StreamChoice {
    const Kernels& sel = kernels();
    // FRAMESEEK_SCAN_SIMD=<level> overrides the choice (A/B benchmarks, tests of every path); it
    // may not exceed the selected level.
    if (const char* forced = std::getenv("FRAMESEEK_SCAN_SIMD"); forced && *forced) {
      SimdLevel want = parse_simd_level(forced);
      if (!cpu_supports(want) || !table_for(want) || want > sel.level)
        throw std::runtime_error("FRAMESEEK_SCAN_SIMD=" + std::string(forced) +
                                 " is not available on this CPU/build or above the selected level " +
                                 simd_level_name(sel.level));
      return {want, "FRAMESEEK_SCAN_SIMD"};
    }
    StreamChoice by_cpu = stream_choice_for(sel.level, cpu_vendor());
    if (!cpu_supports(by_cpu.level) || !table_for(by_cpu.level)) return {sel.level, "the selected level"};
    return by_cpu;
  }();
  return c;
}

const Kernels& stream_kernels() {
  static const Kernels& k = *table_for(stream_choice().level);
  return k;
}

SimdLevel stream_simd_level() { return stream_kernels().level; }

std::string simd_level_name(SimdLevel level) {
  switch (level) {
    case SimdLevel::Scalar:
      return "scalar";
    case SimdLevel::Neon:
      return "neon";
    case SimdLevel::Avx2:
      return "avx2";
    case SimdLevel::Avx512:
      return "avx512";
  }
  return "unknown";
}

SimdLevel parse_simd_level(const std::string& name) {
  if (name == "scalar") return SimdLevel::Scalar;
  if (name == "neon") return SimdLevel::Neon;
  if (name == "avx2") return SimdLevel::Avx2;
  if (name == "avx512") return SimdLevel::Avx512;
  throw std::invalid_argument("unknown SIMD level '" + name + "' (expected scalar, neon, avx2 or avx512)");
}

}  // namespace frameseek
