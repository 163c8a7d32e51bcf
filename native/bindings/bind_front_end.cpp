// frameseek._native.SearchDirectory and FrontEnd (see search_directory.hpp and front_end.hpp).
// FrontEnd exists only when the build found gRPC C++ (HAVE_FRONT_END tells).
#include <pybind11/numpy.h>
#include <pybind11/stl.h>

#include "bind_common.hpp"
#include "bindings.hpp"
#include "frameseek/hnsw_index.hpp"
#include "frameseek/search_directory.hpp"
#ifdef FRAMESEEK_HAVE_GRPC
#include "frameseek/front_end.hpp"
#endif

namespace py = pybind11;
using namespace pybind11::literals;

namespace frameseek::bindings {

namespace {

// Keeps a Python object (the HnswIndex) alive for as long as a search may use it; the last
// reference may drop on a gRPC thread, which then takes the GIL to release it.
std::shared_ptr<void> keep_alive(py::object obj) {
  return std::shared_ptr<void>(new py::object(std::move(obj)), [](void* p) {
    py::gil_scoped_acquire gil;
    delete static_cast<py::object*>(p);
  });
}

constexpr const char* kDirectoryDoc = R"doc(What the native SearchByVector path knows: collections (name, model, live HnswIndex) and
videos (collection, per-sample timestamps, serialised frameseek.v1.Video), pushed by the server
as they change. search_by_vector() answers a serialised SearchByVectorRequest with a serialised
SearchResponse, or None when the request is not for the fast path (a filter, an unknown
collection, anything invalid, or the directory is not ready): the Python service answers those.)doc";

}  // namespace

void bind_front_end(py::module_& m) {
  py::class_<SearchDirectory, std::shared_ptr<SearchDirectory>>(m, "SearchDirectory", kDirectoryDoc)
      .def(py::init<>())
      .def(
          "put_collection",
          [](SearchDirectory& d, const std::string& name, std::uint32_t id, const std::string& model,
             bool is_default, py::object index) {
            auto c = std::make_shared<DirectoryCollection>();
            c->name = name;
            c->id = id;
            c->model = model;
            c->is_default = is_default;
            c->index = &index.cast<const HnswIndex&>();
            c->owner = keep_alive(index);
            d.put_collection(std::move(c));
          },
          "name"_a, "id"_a, "model"_a, "is_default"_a, "index"_a)
      .def("remove_collection", &SearchDirectory::remove_collection, "id"_a)
      .def(
          "put_video",
          [](SearchDirectory& d, std::uint64_t video_id, std::uint32_t collection_id,
             py::array_t<double, py::array::c_style | py::array::forcecast> timestamps, py::bytes video) {
            if (timestamps.ndim() != 1) throw py::value_error("timestamps must be 1-D");
            auto v = std::make_shared<DirectoryVideo>();
            v->collection_id = collection_id;
            v->timestamps.assign(timestamps.data(), timestamps.data() + timestamps.size());
            v->video = video;
            d.put_video(video_id, std::move(v));
          },
          "video_id"_a, "collection_id"_a, "timestamps"_a, "video"_a)
      .def("remove_video", &SearchDirectory::remove_video, "video_id"_a)
      .def_property("ready", &SearchDirectory::ready, &SearchDirectory::set_ready)
      .def_property_readonly("video_count", &SearchDirectory::videos)
      .def_property_readonly("collection_count", &SearchDirectory::collections)
      .def(
          "search_by_vector",
          [](const SearchDirectory& d, py::bytes request) -> py::object {
            std::string req = request, out;
            bool ok;
            {
              py::gil_scoped_release release;
              ok = d.search_by_vector(reinterpret_cast<const std::uint8_t*>(req.data()), req.size(), &out);
            }
            if (!ok) return py::none();
            return py::bytes(out);
          },
          "request"_a);

#ifdef FRAMESEEK_HAVE_GRPC
  m.attr("HAVE_FRONT_END") = true;
  py::class_<FrontEnd>(m, "FrontEnd",
                       "gRPC server on the public port: native SearchByVector from a SearchDirectory, "
                       "every other call passed through to the Python service at `backend`.")
      .def(py::init<std::string, std::string, std::vector<std::pair<std::string, int>>,
                    std::shared_ptr<SearchDirectory>, std::string>(),
           "address"_a, "backend"_a, "channel_args"_a, "directory"_a, "fast_method"_a)
      .def("use_tls", &FrontEnd::use_tls, "cert_pem"_a, "key_pem"_a, "client_ca_pem"_a = "",
           "TLS on the public port (PEM); a client CA requires and verifies client certificates. Before start().")
      .def(
          "set_auth",
          [](FrontEnd& f, const std::vector<std::pair<py::bytes, int>>& tokens,
             const std::unordered_map<std::string, int>& method_ranks) {
            std::vector<std::pair<std::string, int>> t;
            t.reserve(tokens.size());
            for (const auto& [digest, rank] : tokens) t.emplace_back(std::string(digest), rank);
            f.set_auth(t, method_ranks);
          },
          "tokens"_a, "method_ranks"_a,
          "Token table: [(sha256 digest, role rank)] and {method: least rank (0 = open)} of the natively "
          "answered methods; replaces the previous one. Unauthorized calls are passed through.")
      .def("start", &FrontEnd::start, kNoGil)
      .def("shutdown", &FrontEnd::shutdown, "grace_s"_a, kNoGil)
      .def("set_health", &FrontEnd::set_health, "service"_a, "status"_a,
           "Health/Check of `service` answers `status` (grpc.health.v1 ServingStatus number) natively.")
      .def("stats", [](const FrontEnd& f) {
        const auto s = f.stats();
        return py::dict("fast"_a = s.fast, "forwarded"_a = s.forwarded, "fast_seconds"_a = s.fast_seconds,
                        "health"_a = s.health);
      });
#else
  m.attr("HAVE_FRONT_END") = false;
#endif
}

}  // namespace frameseek::bindings
