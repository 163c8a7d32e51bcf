// SIMD level reporting, the kernel test hook, and the types every index shares (Filter, NO_ID).
#include <pybind11/numpy.h>
#include <pybind11/stl.h>

#include "bind_common.hpp"
#include "bindings.hpp"
#include "frameseek/distance.hpp"
#include "frameseek/filter.hpp"
#include "frameseek/flat_index.hpp"
#include "frameseek/half.hpp"

namespace py = pybind11;
using namespace pybind11::literals;

namespace frameseek::bindings {

namespace {

std::optional<ValueSet> to_set(py::handle obj, const char* name) {
  if (obj.is_none()) return std::nullopt;
  auto arr = as_uint_vector<std::uint64_t>(obj, name);
  const std::uint64_t* p = arr.data();
  return ValueSet(p, p + arr.size());
}

// Test hook: every entry of one SIMD level's table, called directly (no FRAMESEEK_SIMD needed),
// so one process can check all paths the CPU has against a float64 reference.
py::array_t<float> distances_for_level(const std::string& level, const std::string& metric, py::handle queries,
                                       py::handle vectors, const std::string& entry) {
  const Kernels& k = kernels_for(parse_simd_level(level));
  const Metric m = parse_metric(metric);
  if (!py::isinstance<py::array>(vectors))
    throw py::type_error("vectors must be a numpy.ndarray of float32 or float16");
  auto varr = py::reinterpret_borrow<py::array>(vectors);
  const auto dim = static_cast<std::size_t>(varr.shape(varr.ndim() - 1));
  auto q = as_f32_matrix(queries, dim, "queries", true, false);
  const std::size_t nq = q.shape(0);
  const float* qp = q.data();
  const bool l2 = m == Metric::L2;
  if (entry != "pair" && entry != "many" && entry != "block")
    throw std::invalid_argument("entry must be 'pair', 'many' or 'block'");
  if (varr.dtype().is(py::dtype("float16"))) {
    // fp16 storage entries: pair and block (the single-query case is block with nq = 1)
    if (varr.ndim() != 2 || !(varr.flags() & py::array::c_style))
      throw py::value_error("vectors must be a C-contiguous 2-D array");
    const std::size_t n = varr.shape(0);
    const auto* xp = static_cast<const std::uint16_t*>(varr.data());
    py::array_t<float> out({nq, n});
    float* op = out.mutable_data();
    py::gil_scoped_release release;
    if (entry == "pair") {
      auto f = l2 ? k.l2sq_f16 : k.dot_f16;
      for (std::size_t i = 0; i < nq; ++i)
        for (std::size_t j = 0; j < n; ++j) op[i * n + j] = f(qp + i * dim, xp + j * dim, dim);
    } else if (entry == "many") {
      for (std::size_t i = 0; i < nq; ++i)
        (l2 ? k.l2sq_block_f16 : k.dot_block_f16)(qp + i * dim, 1, xp, n, dim, op + i * n, n);
    } else {
      (l2 ? k.l2sq_block_f16 : k.dot_block_f16)(qp, nq, xp, n, dim, op, n);
    }
    return out;
  }
  auto x = as_f32_matrix(vectors, dim, "vectors", true, false);
  const std::size_t n = x.shape(0);
  py::array_t<float> out({nq, n});
  const float* xp = x.data();
  float* op = out.mutable_data();
  {
    py::gil_scoped_release release;
    if (entry == "pair") {
      auto f = l2 ? k.l2sq : k.dot;
      for (std::size_t i = 0; i < nq; ++i)
        for (std::size_t j = 0; j < n; ++j) op[i * n + j] = f(qp + i * dim, xp + j * dim, dim);
    } else if (entry == "many") {
      auto f = l2 ? k.l2sq_many : k.dot_many;
      for (std::size_t i = 0; i < nq; ++i) f(qp + i * dim, xp, n, dim, op + i * n);
    } else {
      (l2 ? k.l2sq_block : k.dot_block)(qp, nq, xp, n, dim, op, n);
    }
  }
  return out;
}

}  // namespace

void bind_distance(py::module_& m) {
  m.def(
      "simd_level", [] { return simd_level_name(simd_level()); },
      "SIMD path the kernels use in this process (scalar, neon, avx2 or avx512). "
      "FRAMESEEK_SIMD caps it; read once at first use.");
  m.def(
      "kernel_simd_levels",
      [] {
        py::dict out;
        out["pair"] = simd_level_name(simd_level());
        out["block"] = simd_level_name(simd_level());
        out["scan_one"] = simd_level_name(stream_simd_level());
        out["scan_one_rule"] = stream_choice().why;
        out["int8_dot"] = kernels().dot_i8_path;
        return out;
      },
      "SIMD path per kernel use: 'pair' (one vector pair: HNSW), 'block' (many queries x "
      "many vectors: batched flat search) and 'scan_one' (one query streamed over all rows: "
      "single-query flat search), with 'scan_one_rule': why scan_one is what it is, and "
      "'int8_dot': the instructions of the int8 walk's distances (avx512 vnni where the CPU has "
      "it). Under avx512 the memory-bound scan_one is avx512 on Intel CPUs and avx2 on others "
      "(see native/include/frameseek/distance.hpp).");
  m.def(
      "_scan_simd_level_for",
      [](const std::string& selected, const std::string& vendor) {
        return simd_level_name(stream_choice_for(parse_simd_level(selected), vendor).level);
      },
      "selected"_a, "cpu_vendor"_a, "The scan_one rule alone (tests).");
  m.def(
      "compiled_simd_levels", [] { return level_names(compiled_levels()); }, "SIMD paths compiled into this binary.");
  m.def(
      "supported_simd_levels", [] { return level_names(supported_levels()); },
      "SIMD paths compiled in and supported by this CPU, lowest first.");
  m.def("_distances_for_level", &distances_for_level, "level"_a, "metric"_a, "queries"_a, "vectors"_a,
        "entry"_a = "block",
        "Test hook: raw kernel output float32[nq, n] (squared L2, or the plain inner product) "
        "from one SIMD level's table, through its 'pair', 'many' or 'block' entry; float16 "
        "vectors go through the fp16-storage entries.");
  m.def(
      "_dot_i8_for_level",
      [](const std::string& level, py::array_t<std::int8_t, py::array::c_style> a,
         py::array_t<std::int8_t, py::array::c_style> b) {
        const Kernels& k = kernels_for(parse_simd_level(level));
        if (a.ndim() != 2 || b.ndim() != 2 || a.shape(1) != b.shape(1))
          throw py::value_error("a and b must be 2-D int8 arrays with the same number of columns");
        const std::size_t na = a.shape(0), nb = b.shape(0), d = a.shape(1);
        py::array_t<std::int32_t> out({na, nb});
        const std::int8_t* ap = a.data();
        const std::int8_t* bp = b.data();
        std::int32_t* op = out.mutable_data();
        py::gil_scoped_release release;
        for (std::size_t i = 0; i < na; ++i)
          for (std::size_t j = 0; j < nb; ++j) op[i * nb + j] = k.dot_i8(ap + i * d, bp + j * d, d);
        return out;
      },
      "level"_a, "a"_a, "b"_a,
      "Test hook: int32[na, nb] inner products of int8 code rows (values in [-127, 127]) from "
      "one SIMD level's dot_i8 (the int8 HNSW walk's kernel).");
  m.def(
      "_float16_roundtrip",
      [](py::array_t<float, py::array::c_style> x) {
        py::array_t<float> out(x.size());
        const float* src = x.data();
        float* dst = out.mutable_data();
        for (py::ssize_t i = 0; i < x.size(); ++i) dst[i] = half_to_float(float_to_half(src[i]));
        return out;
      },
      "x"_a, "Test hook: float32 -> fp16 -> float32 through the C++ conversion FlatIndex uses.");

  m.attr("NO_ID") = py::int_(kNoId);

  py::class_<Filter>(m, "Filter",
                     "Restricts a search to vectors whose id and group are each in the "
                     "given set (sets that are None allow everything; all given sets are ANDed). "
                     "Evaluated in C++; an empty set allows nothing. An id set searched on an HnswIndex stays "
                     "mapped onto that index's slots for the filter's next searches of it while the index's ids "
                     "are unchanged: reuse one Filter across searches.")
      .def(py::init([](py::object ids, py::object groups) {
             Filter f;
             f.ids = to_set(ids, "ids");
             f.groups = to_set(groups, "groups");
             if (f.ids) f.compiled = std::make_shared<CompiledIdsCache>();  // kept across its searches
             return f;
           }),
           "ids"_a = py::none(), "groups"_a = py::none())
      .def("__repr__",
           [](const Filter& f) {
             auto part = [](const char* n, std::size_t sz, bool on) {
               return std::string(n) + "=" + (on ? "<" + std::to_string(sz) + " values>" : "None");
             };
             return "Filter(" + part("ids", f.ids ? f.ids->size() : 0, bool(f.ids)) + ", " +
                    part("groups", f.groups ? f.groups->size() : 0, bool(f.groups)) + ")";
           })
      .def("allows", &Filter::allows, "id"_a, "group"_a, "Whether a vector with this id and group passes the filter.");
}

}  // namespace frameseek::bindings
