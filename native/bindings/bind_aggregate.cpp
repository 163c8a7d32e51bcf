// PLACEHOLDER: bound by the native-core work (issue 2).
#include "bindings.hpp"

namespace frameseek::bindings {
void bind_aggregate(pybind11::module_&) {}
}  // namespace frameseek::bindings
