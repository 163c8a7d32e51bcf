// frameseek._native.VideoMessages, answer_search_by_vector and FrontEnd (see
// native/src/front_end/). FrontEnd exists only when the build found gRPC C++ (HAVE_FRONT_END tells).
#include <pybind11/stl.h>

#include <tuple>

#include "bind_common.hpp"
#include "bindings.hpp"
#include "search_request.hpp"
#ifdef FRAMESEEK_HAVE_GRPC
#include "front_end.hpp"
#endif

namespace py = pybind11;
using namespace pybind11::literals;

namespace frameseek::bindings {

void bind_front_end(py::module_& m) {
  using front_end::VideoMessages;
  py::class_<VideoMessages, std::shared_ptr<VideoMessages>>(
      m, "VideoMessages",
      "The serialised frameseek.v1.Video of each active video, for the native SearchByVector answers.")
      .def(py::init<>())
      .def(
          "put",
          [](VideoMessages& v, std::uint64_t id, std::uint32_t collection_id, py::bytes message) {
            v.put(id, collection_id, std::string(message));
          },
          "video_id"_a, "collection_id"_a, "message"_a)
      .def("remove", &VideoMessages::remove, "video_id"_a)
      .def("remove_collection", &VideoMessages::remove_collection, "collection_id"_a)
      .def_property("ready", &VideoMessages::ready, &VideoMessages::set_ready)
      .def("__len__", &VideoMessages::size);
  m.def(
      "answer_search_by_vector",
      [](const SearchDirectory& d, const VideoMessages& messages, py::bytes request) -> py::object {
        std::string req = request, out;
        bool ok;
        {
          py::gil_scoped_release release;
          ok = front_end::answer_search_by_vector(d, messages, reinterpret_cast<const std::uint8_t*>(req.data()),
                                                  req.size(), &out);
        }
        if (!ok) return py::none();
        return py::bytes(out);
      },
      "directory"_a, "messages"_a, "request"_a,
      "What the native front end answers a serialised SearchByVectorRequest: a serialised SearchResponse, or "
      "None when the call is passed to the Python service (a label filter, an unknown collection, anything "
      "invalid, the directory not ready).");

  m.def(
      "encode_search_response",
      [](const std::vector<std::tuple<py::bytes, double, std::vector<std::pair<double, double>>>>& hits,
         const std::string& model) {
        std::vector<VideoHit> h(hits.size());
        std::vector<std::string> videos(hits.size());
        std::vector<const std::string*> refs(hits.size());
        for (std::size_t i = 0; i < hits.size(); ++i) {
          const auto& [video, score, matches] = hits[i];
          videos[i] = std::string(video);
          refs[i] = &videos[i];
          h[i].score = static_cast<float>(score);
          for (const auto& [t, s] : matches) h[i].matches.emplace_back(t, static_cast<float>(s));
        }
        std::string out;
        front_end::encode_response(h, refs, model, &out);
        return py::bytes(out);
      },
      "hits"_a, "model"_a,
      "A serialised frameseek.v1.SearchResponse of [(serialised Video, score, [(timestamp, score), ...])]: the "
      "native front end's encoder, which the Python search RPCs use too (scores round to float32 as protobuf's do).");

#ifdef FRAMESEEK_HAVE_GRPC
  m.attr("HAVE_FRONT_END") = true;
  py::class_<FrontEnd>(m, "FrontEnd",
                       "gRPC server on the public port: native SearchByVector from a SearchDirectory, "
                       "every other call passed through to the Python service at `backend`.")
      .def(py::init<std::string, std::string, std::vector<std::pair<std::string, int>>,
                    std::shared_ptr<SearchDirectory>, std::shared_ptr<VideoMessages>, std::string>(),
           "address"_a, "backend"_a, "channel_args"_a, "directory"_a, "messages"_a, "fast_method"_a)
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
