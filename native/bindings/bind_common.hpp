// Argument checking and numpy conversion shared by the index bindings.
//
// Policy (documented in server/frameseek/_native.pyi):
//  * vectors/queries must already be numpy float32, C-contiguous, native byte order: anything
//    else is refused (TypeError for the wrong type/dtype, ValueError for shape or layout). We do
//    not forcecast: a silent float64 -> float32 copy of a 400 MB matrix is a surprise, and a
//    strided view usually means the caller sliced columns by mistake.
//  * ids/groups may be any 1-D integer array-like (list, numpy array of any integer dtype);
//    they are converted losslessly (negative or out-of-range values -> ValueError, floats/bools ->
//    TypeError). They are small next to the vectors, so the copy does not matter.
//  * NaN/inf in queries -> ValueError (checked here; the core checks added vectors itself).
#pragma once
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <vector>

#include "frameseek/distance.hpp"
#include "frameseek/filter.hpp"

namespace frameseek::bindings {

namespace py = pybind11;

inline std::string py_type_name(py::handle obj) {
  return py::str(py::type::handle_of(obj).attr("__name__")).cast<std::string>();
}

// A [rows, dim] float32 C-contiguous view of obj (no copy). A 1-D array of length dim is taken
// as one row when allow_1d. Non-finite values raise when check_finite.
inline py::array_t<float> as_f32_matrix(py::handle obj, std::size_t dim, const char* name, bool allow_1d,
                                        bool check_finite) {
  if (!py::isinstance<py::array>(obj))
    throw py::type_error(std::string(name) + " must be a numpy.ndarray of float32, got " + py_type_name(obj) +
                         " (use numpy.asarray(x, dtype=numpy.float32))");
  auto arr = py::reinterpret_borrow<py::array>(obj);
  if (!arr.dtype().is(py::dtype::of<float>()))
    throw py::type_error(std::string(name) + " must have dtype float32 (native byte order), got " +
                         py::str(arr.dtype()).cast<std::string>() +
                         " (convert explicitly, e.g. x.astype(numpy.float32))");
  if (!(arr.ndim() == 2 || (allow_1d && arr.ndim() == 1)))
    throw py::value_error(std::string(name) + " must be 2-D [n, dim]" + (allow_1d ? " or 1-D [dim]" : "") + ", got " +
                          std::to_string(arr.ndim()) + "-D");
  const std::size_t cols = static_cast<std::size_t>(arr.shape(arr.ndim() - 1));
  if (cols != dim)
    throw py::value_error(std::string(name) + " has dimension " + std::to_string(cols) + ", the index has " +
                          std::to_string(dim));
  if (!(arr.flags() & py::array::c_style))
    throw py::value_error(std::string(name) + " must be C-contiguous (use numpy.ascontiguousarray(x))");
  py::array_t<float> out = py::reinterpret_borrow<py::array_t<float>>(arr);
  if (arr.ndim() == 1) out = out.reshape({py::ssize_t(1), py::ssize_t(dim)});
  if (check_finite) {
    const float* p = out.data();
    const std::size_t total = static_cast<std::size_t>(out.size());
    for (std::size_t i = 0; i < total; ++i)
      if (!std::isfinite(p[i]))
        throw py::value_error(std::string(name) + " contain NaN or infinity (row " + std::to_string(i / dim) + ")");
  }
  return out;
}

// A 1-D array of unsigned integers of type T converted losslessly from any integer array-like.
// expected_len < 0: any length.
template <class T>
using carray = py::array_t<T, py::array::c_style | py::array::forcecast>;

template <class T>
carray<T> as_uint_vector(py::handle obj, const char* name, py::ssize_t expected_len = -1) {
  py::module_ np = py::module_::import("numpy");
  py::object src = py::reinterpret_borrow<py::object>(obj);
  if (!py::isinstance<py::array>(src)) {
    // Python containers: convert element by element with __index__, because numpy turns a list
    // mixing numpy.uint64 and int into float64 (and would round large ids).
    if (py::isinstance<py::str>(src) || py::isinstance<py::bytes>(src) || !py::isinstance<py::iterable>(src))
      throw py::type_error(std::string(name) + " must be a 1-D sequence or array of integers, got " +
                           py_type_name(src));
    py::list items(src);
    if (expected_len >= 0 && py::ssize_t(items.size()) != expected_len)
      throw py::value_error(std::string(name) + " has length " + std::to_string(items.size()) + ", expected " +
                            std::to_string(expected_len));
    carray<T> out(static_cast<py::ssize_t>(items.size()));
    T* p = out.mutable_data();
    const py::int_ lo(0), hi(std::numeric_limits<T>::max());
    for (std::size_t i = 0; i < items.size(); ++i) {
      py::handle it = items[i];
      if (py::isinstance<py::bool_>(it) || !py::hasattr(it, "__index__"))
        throw py::type_error(std::string(name) + " must be integers, got " + py_type_name(it));
      py::int_ v = py::reinterpret_steal<py::int_>(PyNumber_Index(it.ptr()));
      if (!v) throw py::error_already_set();
      if (v < lo) throw py::value_error(std::string(name) + " must be non-negative");
      if (v > hi) throw py::value_error(std::string(name) + " must be < 2**" + std::to_string(8 * sizeof(T)));
      p[i] = v.cast<T>();
    }
    return out;
  }
  py::array arr = py::reinterpret_borrow<py::array>(src);
  if (arr.ndim() != 1)
    throw py::value_error(std::string(name) + " must be 1-D, got " + std::to_string(arr.ndim()) + "-D");
  if (expected_len >= 0 && arr.shape(0) != expected_len)
    throw py::value_error(std::string(name) + " has length " + std::to_string(arr.shape(0)) + ", expected " +
                          std::to_string(expected_len));
  const char kind = arr.dtype().kind();
  if (arr.size() == 0) return carray<T>(0);  // numpy.array([]) is float64; empty is empty
  if (kind != 'i' && kind != 'u')
    throw py::type_error(std::string(name) + " must be integers, got dtype " +
                         py::str(arr.dtype()).cast<std::string>());
  if (kind == 'i' && py::bool_(np.attr("any")(arr.attr("__lt__")(0))))
    throw py::value_error(std::string(name) + " must be non-negative");
  if (sizeof(T) < 8 &&
      py::int_(arr.attr("max")()).cast<std::uint64_t>() > static_cast<std::uint64_t>(std::numeric_limits<T>::max()))
    throw py::value_error(std::string(name) + " must be < 2**" + std::to_string(8 * sizeof(T)));
  return carray<T>::ensure(arr);
}

// A count that must be >= 1 (k, ef, M, dim, ...).
inline std::size_t positive(py::ssize_t v, const char* name) {
  if (v < 1) throw py::value_error(std::string(name) + " must be >= 1, got " + std::to_string(v));
  return static_cast<std::size_t>(v);
}

// A search's ef argument: None (0: the index's default) or >= 1.
inline std::size_t check_ef(py::handle ef) {
  if (ef.is_none()) return 0;
  return positive(ef.cast<py::ssize_t>(), "ef");
}

inline std::size_t check_threads(py::ssize_t threads) {
  if (threads < 0) throw py::value_error("threads must be >= 0 (0 = all cores)");
  return static_cast<std::size_t>(threads);
}

// The result arrays of one search call (nq x k each; groups only for search_groups). Allocated,
// and their data pointers taken, while the GIL is held: the native search then fills them through
// the pointers with the GIL released.
struct SearchResults {
  py::array_t<std::uint64_t> groups, ids;
  py::array_t<float> dist;
  std::uint64_t* group_ptr = nullptr;
  std::uint64_t* id_ptr = nullptr;
  float* dist_ptr = nullptr;

  SearchResults(std::size_t nq, std::size_t k, bool with_groups) : ids({nq, k}), dist({nq, k}) {
    if (with_groups) {
      groups = py::array_t<std::uint64_t>({nq, k});
      group_ptr = groups.mutable_data();
    }
    id_ptr = ids.mutable_data();
    dist_ptr = dist.mutable_data();
  }
  py::tuple to_tuple() const {
    if (group_ptr) return py::make_tuple(groups, ids, dist);
    return py::make_tuple(ids, dist);
  }
};

// Filter argument: None or a frameseek._native.Filter (pybind11 does the type check).
inline const Filter* as_filter(py::handle obj) {
  if (obj.is_none()) return nullptr;
  if (!py::isinstance<Filter>(obj))
    throw py::type_error("filter must be a frameseek._native.Filter or None, got " + py_type_name(obj));
  return obj.cast<const Filter*>();
}

// The arguments every search binding takes (search and search_groups of FlatIndex, HnswIndex and
// LiveIndex; HnswIndex.walk_distances), checked with the GIL held in one order: queries, k, ef,
// threads, filter. FlatIndex has no ef: it passes None.
struct SearchCall {
  py::array_t<float> rows;  // the queries, [nq, dim] (a view that keeps the caller's array alive)
  std::size_t nq, k, ef, threads;
  const Filter* filter;

  SearchCall(std::size_t dim, py::handle queries, py::ssize_t k_arg, py::handle ef_arg, py::handle filter_arg,
             py::ssize_t threads_arg)
      : rows(as_f32_matrix(queries, dim, "queries", true, true)),
        nq(static_cast<std::size_t>(rows.shape(0))),
        k(positive(k_arg, "k")),
        ef(check_ef(ef_arg)),
        threads(check_threads(threads_arg)),
        filter(as_filter(filter_arg)) {}
  const float* queries() const { return rows.data(); }
};

enum class SearchKind { kIds, kGroups };

// One search binding: checks the arguments, allocates the result arrays, runs
// search(const SearchCall&, SearchResults&) without the GIL and returns (ids, distances), or
// (groups, ids, distances) for kGroups.
template <class Search>
py::tuple run_search(std::size_t dim, py::handle queries, py::ssize_t k, py::handle ef, py::handle filter,
                     py::ssize_t threads, SearchKind kind, Search&& search) {
  const SearchCall call(dim, queries, k, ef, filter, threads);
  SearchResults out(call.nq, call.k, kind == SearchKind::kGroups);
  {
    py::gil_scoped_release release;
    search(call, out);
  }
  return out.to_tuple();
}

// search and search_groups of an index whose searches take (queries, nq, k, ef, filter, results...,
// threads), under one Python signature: HnswIndex and LiveIndex.
template <class Index, class... ClassOptions>
void def_graph_searches(py::class_<Index, ClassOptions...>& cls, const char* search_doc, const char* groups_doc) {
  using namespace pybind11::literals;
  cls.def(
      "search",
      [](const Index& x, py::handle queries, py::ssize_t k, py::handle ef, py::handle filter, py::ssize_t threads) {
        return run_search(x.dim(), queries, k, ef, filter, threads, SearchKind::kIds,
                          [&x](const SearchCall& c, SearchResults& out) {
                            x.search(c.queries(), c.nq, c.k, c.ef, c.filter, out.id_ptr, out.dist_ptr, c.threads);
                          });
      },
      "queries"_a, "k"_a, "ef"_a = py::none(), "filter"_a = py::none(), "threads"_a = 0, search_doc);
  cls.def(
      "search_groups",
      [](const Index& x, py::handle queries, py::ssize_t k, py::handle ef, py::handle filter, py::ssize_t threads) {
        return run_search(x.dim(), queries, k, ef, filter, threads, SearchKind::kGroups,
                          [&x](const SearchCall& c, SearchResults& out) {
                            x.search_groups(c.queries(), c.nq, c.k, c.ef, c.filter, out.group_ptr, out.id_ptr,
                                            out.dist_ptr, c.threads);
                          });
      },
      "queries"_a, "k"_a, "ef"_a = py::none(), "filter"_a = py::none(), "threads"_a = 0, groups_doc);
}

// The arguments of an add: vectors float32[n, dim], then ids and groups (None: the ids) of length n.
struct AddCall {
  py::array_t<float> vectors;
  std::size_t n;
  carray<std::uint64_t> ids, groups;
  const std::uint64_t* group_ptr;  // nullptr when groups is None

  AddCall(std::size_t dim, py::handle ids_arg, py::handle vectors_arg, py::handle groups_arg)
      : vectors(as_f32_matrix(vectors_arg, dim, "vectors", false, false)),
        n(static_cast<std::size_t>(vectors.shape(0))),
        ids(as_uint_vector<std::uint64_t>(ids_arg, "ids", vectors.shape(0))),
        groups(groups_arg.is_none() ? carray<std::uint64_t>()
                                    : as_uint_vector<std::uint64_t>(groups_arg, "groups", vectors.shape(0))),
        group_ptr(groups_arg.is_none() ? nullptr : groups.data()) {}
};

// `id in index`: any integer-like object that could be a stored id (0 .. NO_ID); anything else
// (a float, a string, a negative or too large int) is simply not contained, as for a Python set.
inline std::optional<std::uint64_t> as_lookup_id(py::handle id) {
  if (!py::isinstance<py::int_>(id) && !py::hasattr(id, "__index__")) return std::nullopt;
  py::int_ v = py::reinterpret_steal<py::int_>(PyNumber_Index(id.ptr()));
  if (!v) throw py::error_already_set();
  if (v < py::int_(0) || v > py::int_(kNoId)) return std::nullopt;
  return v.cast<std::uint64_t>();
}

// `id in index` (see as_lookup_id); the lookup waits on the index's lock without the GIL.
template <class Index>
bool contains_id(const Index& x, py::handle id) {
  auto v = as_lookup_id(id);
  if (!v) return false;
  py::gil_scoped_release release;
  return x.contains(*v);
}

// index.get_vectors(ids): float32[n, dim] in the ids' order, copied without the GIL.
template <class Index>
py::array_t<float> stored_vectors(const Index& x, py::handle ids) {
  auto id = as_uint_vector<std::uint64_t>(ids, "ids");
  const auto n = static_cast<std::size_t>(id.size());
  py::array_t<float> out({static_cast<py::ssize_t>(n), static_cast<py::ssize_t>(x.dim())});
  float* dst = out.mutable_data();
  {
    py::gil_scoped_release release;
    x.get_vectors(id.data(), n, dst);
  }
  return out;
}

// SIMD levels by name, in their order (compiled_simd_levels, supported_simd_levels,
// supported_popcount_levels).
inline std::vector<std::string> level_names(const std::vector<SimdLevel>& levels) {
  std::vector<std::string> out;
  for (SimdLevel l : levels) out.push_back(simd_level_name(l));
  return out;
}

// Calls that may wait (on an index lock a writer holds exclusively while it grows the graph or
// re-fills the walk copy; on a server starting or stopping) run without the GIL: a Python thread
// waiting there with it would stall every other thread of the process meanwhile.
inline const py::call_guard<py::gil_scoped_release> kNoGil{};

}  // namespace frameseek::bindings
