// Runtime CPU dispatch for the popcount kernels. The AVX-512 path needs VPOPCNTDQ on top of
// AVX-512F (Ice Lake, Zen 4 and later); a CPU with AVX-512F alone gets AVX2 here while its distance
// kernels run AVX-512. FRAMESEEK_SIMD caps the level as for the distance kernels (dispatch.cpp
// already rejects a level the CPU lacks; here the best popcount level at or below it is taken).
#include <cstdlib>
#include <stdexcept>
#include <string>

#include "../simd_dispatch.hpp"
#include "frameseek/fingerprint.hpp"

namespace frameseek::fingerprint {
namespace {

// The popcount kernels' levels: AVX2 alone; AVX-512 needs F and VPOPCNTDQ.
const frameseek::detail::KernelFamily<PopcountKernels>& family() {
  static const frameseek::detail::KernelFamily<PopcountKernels> f {
    {SimdLevel::Scalar, &detail::scalar_popcount_kernels, &frameseek::detail::always},
#if defined(FRAMESEEK_HAVE_NEON)
        {SimdLevel::Neon, &detail::neon_popcount_kernels, &frameseek::detail::always},
#endif
#if defined(FRAMESEEK_HAVE_X86)
        {SimdLevel::Avx2, &detail::avx2_popcount_kernels, [] { return bool(__builtin_cpu_supports("avx2")); }},
        {SimdLevel::Avx512, &detail::avx512_popcount_kernels,
         [] { return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vpopcntdq"); }},
#endif
  };
  return f;
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
  return *family().table_for(best);
}

}  // namespace

std::vector<SimdLevel> popcount_supported_levels() { return family().supported_levels(); }

const PopcountKernels& popcount_kernels() {
  static const PopcountKernels& k = select();
  return k;
}

const PopcountKernels& popcount_kernels_for(SimdLevel level) { return family().checked(level, "popcount SIMD level"); }

}  // namespace frameseek::fingerprint
