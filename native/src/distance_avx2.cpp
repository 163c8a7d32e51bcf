// avx2 kernels (compiled with avx2 flags; only called after dispatch checked the CPU).
// PLACEHOLDER until the kernels land: forwards to the scalar table so the build links.
#include "frameseek/distance.hpp"

namespace frameseek::detail {
const Kernels& avx2_kernels() {
  static const Kernels k = [] {
    Kernels t = scalar_kernels();
    t.level = SimdLevel::Avx2;
    return t;
  }();
  return k;
}
}  // namespace frameseek::detail
