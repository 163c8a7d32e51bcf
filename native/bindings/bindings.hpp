// Each part of the native core binds itself; module.cpp only calls these in order.
#pragma once
#include <pybind11/pybind11.h>

namespace frameseek::bindings {
void bind_distance(pybind11::module_& m);
void bind_flat(pybind11::module_& m);
void bind_hnsw(pybind11::module_& m);
void bind_aggregate(pybind11::module_& m);
void bind_search(pybind11::module_& m);
void bind_front_end(pybind11::module_& m);
void bind_fingerprint(pybind11::module_& m);
}  // namespace frameseek::bindings
