// PLACEHOLDER: bound by the native-core work (issue 2).
#include "bindings.hpp"

namespace frameseek::bindings {
void bind_hnsw(pybind11::module_&) {}
}  // namespace frameseek::bindings
