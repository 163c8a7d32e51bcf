// frameseek._native.FlatIndex: exact search over dense storage (see flat_index.hpp).
#include <pybind11/numpy.h>

#include "bind_common.hpp"
#include "bindings.hpp"
#include "frameseek/flat_index.hpp"

namespace py = pybind11;
using namespace pybind11::literals;

namespace frameseek::bindings {

void bind_flat(py::module_& m) {
  py::class_<FlatIndex>(m, "FlatIndex",
                        "Exact (brute-force) index over float32 vectors with uint64 ids. Each "
                        "vector carries a group (e.g. its video id; defaults to its id). "
                        "metric 'ip' reports 1 - dot, 'l2' the "
                        "squared Euclidean distance. Concurrent searches are safe; add/remove "
                        "wait for running searches.")
      .def(py::init([](py::ssize_t dim, const std::string& metric, const std::string& storage) {
             if (dim < 1) throw py::value_error("dim must be >= 1");
             return new FlatIndex(static_cast<std::size_t>(dim), parse_metric(metric), parse_storage(storage));
           }),
           "dim"_a, "metric"_a = "ip", "storage"_a = "float32",
           "storage 'float16' keeps vectors as IEEE fp16 (half the memory, ~2x faster scans; "
           "queries and arithmetic stay float32; values must lie within +-65504).")
      .def_property_readonly("storage", [](const FlatIndex& x) { return storage_name(x.storage()); })
      .def_property_readonly("dim", &FlatIndex::dim)
      .def_property_readonly("metric", [](const FlatIndex& x) { return metric_name(x.metric()); })
      // size/contains wait on the index's lock without the GIL (a writer may hold it a while)
      .def("__len__", &FlatIndex::size, kNoGil)
      .def("__contains__", &contains_id<FlatIndex>, "id"_a)
      .def("__repr__",
           [](const FlatIndex& x) {
             std::size_t size;
             {
               py::gil_scoped_release release;
               size = x.size();
             }
             return "FlatIndex(dim=" + std::to_string(x.dim()) + ", metric='" + metric_name(x.metric()) +
                    "', storage='" + storage_name(x.storage()) + "', size=" + std::to_string(size) + ")";
           })
      .def(
          "add",
          [](FlatIndex& x, py::handle ids, py::handle vectors, py::handle groups) {
            const AddCall a(x.dim(), ids, vectors, groups);
            py::gil_scoped_release release;
            x.add(a.n, a.ids.data(), a.vectors.data(), a.group_ptr);
          },
          "ids"_a, "vectors"_a, "groups"_a = py::none(),
          "Add vectors float32[n, dim] under ids uint64[n]. groups default to the ids. A duplicate id (stored or "
          "repeated), NO_ID, or NaN/inf raises ValueError and "
          "nothing is added.")
      .def(
          "remove",
          [](FlatIndex& x, py::handle ids) {
            auto id = as_uint_vector<std::uint64_t>(ids, "ids");
            py::gil_scoped_release release;
            return x.remove(static_cast<std::size_t>(id.size()), id.data());
          },
          "ids"_a, "Remove these ids; returns how many were present (absent ids are ignored).")
      .def("get_vectors", &stored_vectors<FlatIndex>, "ids"_a,
           "The stored vectors of these ids, float32[n, dim] in their order; ValueError on an absent id.")
      .def(
          "search",
          [](const FlatIndex& x, py::handle queries, py::ssize_t k, py::handle filter, py::ssize_t threads) {
            return run_search(x.dim(), queries, k, py::none(), filter, threads, SearchKind::kIds,
                              [&x](const SearchCall& c, SearchResults& out) {
                                x.search(c.queries(), c.nq, c.k, c.filter, c.threads, out.id_ptr, out.dist_ptr);
                              });
          },
          "queries"_a, "k"_a, "filter"_a = py::none(), "threads"_a = 0,
          "Exact top-k: (ids uint64[q, k], distances float32[q, k]) sorted ascending by "
          "distance (ties by id); missing slots are NO_ID / +inf. A 1-D query is one row.")
      .def(
          "search_groups",
          [](const FlatIndex& x, py::handle queries, py::ssize_t k, py::handle filter, py::ssize_t threads) {
            return run_search(x.dim(), queries, k, py::none(), filter, threads, SearchKind::kGroups,
                              [&x](const SearchCall& c, SearchResults& out) {
                                x.search_groups(c.queries(), c.nq, c.k, c.filter, c.threads, out.group_ptr, out.id_ptr,
                                                out.dist_ptr);
                              });
          },
          "queries"_a, "k"_a, "filter"_a = py::none(), "threads"_a = 0,
          "Exact top-k distinct groups: (groups uint64[q, k], best id per group uint64[q, k], "
          "distances float32[q, k]); missing slots are NO_ID / NO_ID / +inf.");
}

}  // namespace frameseek::bindings
