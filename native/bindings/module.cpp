// frameseek._native: thin pybind11 layer over the C++ core in native/src. Argument checking and
// numpy conversion live here; the algorithms do not know about Python.
#include "bindings.hpp"

PYBIND11_MODULE(_native, m) {
  m.doc() = "frameseek native core: SIMD distance kernels, exact and HNSW indexes, frame-vote aggregation";
  frameseek::bindings::bind_distance(m);
  frameseek::bindings::bind_flat(m);
  frameseek::bindings::bind_hnsw(m);
  frameseek::bindings::bind_aggregate(m);
  frameseek::bindings::bind_search(m);
  frameseek::bindings::bind_front_end(m);
  frameseek::bindings::bind_fingerprint(m);
}
