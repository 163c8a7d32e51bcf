#include <pybind11/stl.h>

#include "bindings.hpp"
#include "frameseek/distance.hpp"

namespace py = pybind11;

namespace frameseek::bindings {

void bind_distance(py::module_& m) {
  m.def("simd_level", [] { return simd_level_name(simd_level()); },
        "SIMD path the kernels use in this process (scalar, neon, avx2 or avx512). "
        "FRAMESEEK_SIMD caps it; read once at first use.");
  m.def("compiled_simd_levels", [] {
          std::vector<std::string> out;
          for (auto l : compiled_levels()) out.push_back(simd_level_name(l));
          return out;
        },
        "SIMD paths compiled into this binary.");
  m.def("supported_simd_levels", [] {
          std::vector<std::string> out;
          for (auto l : supported_levels()) out.push_back(simd_level_name(l));
          return out;
        },
        "SIMD paths compiled in and supported by this CPU, lowest first.");
}

}  // namespace frameseek::bindings
