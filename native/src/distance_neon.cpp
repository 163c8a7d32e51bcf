// NEON kernels for aarch64 (NEON is baseline there).
// PLACEHOLDER until the kernels land: forwards to the scalar table.
#include "frameseek/distance.hpp"

namespace frameseek::detail {
const Kernels& neon_kernels() {
  static const Kernels k = [] {
    Kernels t = scalar_kernels();
    t.level = SimdLevel::Neon;
    return t;
  }();
  return k;
}
}  // namespace frameseek::detail
