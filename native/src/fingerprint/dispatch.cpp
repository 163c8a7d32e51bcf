// Runtime CPU dispatch for the popcount kernels. The AVX-512 path needs VPOPCNTDQ on top of
// AVX-512F (Ice Lake, Zen 4 and later); a CPU with AVX-512F alone gets AVX2 here while its distance
// kernels run AVX-512. FRAMESEEK_SIMD caps the level as for the distance kernels (dispatch.cpp
// already rejects a level the CPU lacks; here the best popcount level at or below it is taken).
#include <cstdlib>
#include <stdexcept>
#include <string>

#include "frameseek/fingerprint.hpp"

namespace frameseek::fingerprint {
namespace {

bool cpu_supports(SimdLevel level) {
  switch (level) {
    case SimdLevel::Scalar:
      return true;
#if defined(FRAMESEEK_HAVE_X86)
    case SimdLevel::Avx2:
      return __builtin_cpu_supports("avx2");
    case SimdLevel::Avx512:
      return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vpopcntdq");
#endif
#if defined(FRAMESEEK_HAVE_NEON)
    case SimdLevel::Neon:
      return true;  // baseline on aarch64
#endif
    default:
      return false;
  }
}

const PopcountKernels* table_for(SimdLevel level) {
  switch (level) {
    case SimdLevel::Scalar:
      return &detail::scalar_popcount_kernels();
#if defined(FRAMESEEK_HAVE_X86)
    case SimdLevel::Avx2:
      return &detail::avx2_popcount_kernels();
    case SimdLevel::Avx512:
      return &detail::avx512_popcount_kernels();
#endif
#if defined(FRAMESEEK_HAVE_NEON)
    case SimdLevel::Neon:
      return &detail::neon_popcount_kernels();
#endif
    default:
      return nullptr;
  }
}

const PopcountKernels& select() {
  auto levels = popcount_supported_levels();
  SimdLevel cap = levels.back();
  if (const char* forced = std::getenv("FRAMESEEK_SIMD"); forced && *forced) {
    SimdLevel want = parse_simd_level(forced);
    if (want < cap) cap = want;
  }
  SimdLevel best = SimdLevel::Scalar;
  for (SimdLevel l : levels)
    if (l <= cap) best = l;
  return *table_for(best);
}

}  // namespace

std::vector<SimdLevel> popcount_supported_levels() {
  std::vector<SimdLevel> out;
  for (SimdLevel l : {SimdLevel::Scalar, SimdLevel::Neon, SimdLevel::Avx2, SimdLevel::Avx512})
    if (table_for(l) && cpu_supports(l)) out.push_back(l);
  return out;
}

const PopcountKernels& popcount_kernels() {
  static const PopcountKernels& k = select();
  return k;
}

const PopcountKernels& popcount_kernels_for(SimdLevel level) {
  const PopcountKernels* t = table_for(level);
  if (!t || !cpu_supports(level))
    throw std::runtime_error("popcount SIMD level " + simd_level_name(level) + " is not available");
  return *t;
}

}  // namespace frameseek::fingerprint
