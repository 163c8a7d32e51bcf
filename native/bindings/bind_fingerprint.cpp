// Audio fingerprint matching (frameseek/fingerprint.hpp): popcount kernels per SIMD level (test
// hooks), MatchParams, verify_offset and FingerprintIndex.
#include <pybind11/numpy.h>
#include <pybind11/stl.h>

#include "bind_common.hpp"
#include "bindings.hpp"
#include "frameseek/fingerprint.hpp"

namespace py = pybind11;
using namespace pybind11::literals;

namespace frameseek::bindings {

namespace {

using fingerprint::FingerprintIndex;
using fingerprint::Match;
using fingerprint::MatchParams;

py::dict match_dict(const Match& x) {
  return py::dict("video"_a = x.video, "query_start"_a = x.query_start, "ref_start"_a = x.ref_start,
                  "length"_a = x.length, "ber"_a = x.ber, "votes"_a = x.votes);
}

std::pair<carray<std::uint32_t>, carray<std::uint32_t>> same_length(py::handle a, py::handle b) {
  auto x = as_uint_vector<std::uint32_t>(a, "a");
  auto y = as_uint_vector<std::uint32_t>(b, "b", x.size());
  return {x, y};
}

}  // namespace

void bind_fingerprint(py::module_& m) {
  m.def(
      "popcount_simd_level", [] { return simd_level_name(fingerprint::popcount_kernels().level); },
      "The SIMD level of the popcount kernels in use (AVX-512 needs VPOPCNTDQ as well).");
  m.def("supported_popcount_levels", [] { return level_names(fingerprint::popcount_supported_levels()); });
  m.def(
      "_xor_popcount_for_level",
      [](const std::string& level, py::handle a, py::handle b) {
        const auto& k = fingerprint::popcount_kernels_for(parse_simd_level(level));
        auto [x, y] = same_length(a, b);
        py::array_t<std::uint32_t> out(x.size());
        k.xor_popcount(x.data(), y.data(), x.size(), out.mutable_data());
        return out;
      },
      "level"_a, "a"_a, "b"_a);
  m.def(
      "_hamming_for_level",
      [](const std::string& level, py::handle a, py::handle b) {
        const auto& k = fingerprint::popcount_kernels_for(parse_simd_level(level));
        auto [x, y] = same_length(a, b);
        return k.hamming(x.data(), y.data(), x.size());
      },
      "level"_a, "a"_a, "b"_a);
  m.def(
      "_hamming_rows_for_level",
      [](const std::string& level, py::handle q, py::handle rows) {
        const auto& k = fingerprint::popcount_kernels_for(parse_simd_level(level));
        const auto qa = py::array_t<std::uint32_t, py::array::c_style | py::array::forcecast>::ensure(q);
        const auto ra = py::array_t<std::uint32_t, py::array::c_style | py::array::forcecast>::ensure(rows);
        if (!qa || !ra || qa.ndim() != 1 || ra.ndim() != 2 || ra.shape(1) != qa.shape(0))
          throw py::value_error("rows must be 2-d with as many words per row as q has");
        const std::size_t n = static_cast<std::size_t>(ra.shape(0)), words = static_cast<std::size_t>(qa.shape(0));
        std::vector<std::uint32_t> blocks(fingerprint::block_words(n, words), 0xa5a5a5a5u);  // padding: any bits
        for (std::size_t r = 0; r < n; ++r) fingerprint::set_block_row(blocks.data(), r, ra.data() + r * words, words);
        py::array_t<std::uint32_t> out(ra.shape(0));
        k.hamming_blocks(qa.data(), blocks.data(), n, words, out.mutable_data());
        return out;
      },
      "level"_a, "q"_a, "rows"_a,
      "Test hook: hamming_blocks of one level over row-major rows (laid out in blocks here).");

  py::class_<MatchParams>(m, "FingerprintMatchParams",
                          "How FingerprintIndex.search votes, verifies and places matches (defaults: the core's).")
      .def(py::init<>())
      .def_readwrite("max_results", &MatchParams::max_results)
      .def_readwrite("min_votes", &MatchParams::min_votes)
      .def_readwrite("max_candidates", &MatchParams::max_candidates)
      .def_readwrite("max_offsets_per_video", &MatchParams::max_offsets_per_video)
      .def_readwrite("window", &MatchParams::window)
      .def_readwrite("max_window_ber", &MatchParams::max_window_ber)
      .def_readwrite("min_length", &MatchParams::min_length)
      .def_readwrite("max_postings", &MatchParams::max_postings);

  m.def(
      "verify_fingerprint_offset",
      [](py::handle query, py::handle ref, std::int64_t offset, const MatchParams& params) -> py::object {
        auto q = as_uint_vector<std::uint32_t>(query, "query");
        auto r = as_uint_vector<std::uint32_t>(ref, "ref");
        Match x = fingerprint::verify_offset(q.data(), q.size(), r.data(), r.size(), offset, params);
        if (x.length == 0) return py::none();
        return match_dict(x);
      },
      "query"_a, "ref"_a, "offset"_a, "params"_a = MatchParams{},
      "The query placed against one reference at offset (ref position = query position + offset), or None.");

  py::class_<FingerprintIndex>(m, "FingerprintIndex")
      .def(py::init<>())
      .def(
          "add",
          [](FingerprintIndex& self, std::uint64_t video, py::handle fp) {
            auto v = as_uint_vector<std::uint32_t>(fp, "fingerprint");
            py::gil_scoped_release release;
            self.add(video, v.data(), v.size());
          },
          "video"_a, "fingerprint"_a)
      .def("remove", &FingerprintIndex::remove, "video"_a, kNoGil)
      .def("__contains__",
           [](const FingerprintIndex& self, py::handle id) {
             auto v = as_lookup_id(id);
             return v && self.contains(*v);
           })
      .def("__len__", &FingerprintIndex::size)
      .def_property_readonly("items", &FingerprintIndex::items)
      .def(
          "search",
          [](const FingerprintIndex& self, py::handle query, const MatchParams& params) {
            auto q = as_uint_vector<std::uint32_t>(query, "query");
            std::vector<Match> found;
            {
              py::gil_scoped_release release;
              found = self.search(q.data(), q.size(), params);
            }
            py::list out;
            for (const Match& x : found) out.append(match_dict(x));
            return out;
          },
          "query"_a, "params"_a = MatchParams{});
}

}  // namespace frameseek::bindings
