// The gRPC front end: a C++ gRPC server on the public port that answers SearchByVector with the
// core search (SearchDirectory; request and response bytes: search_request.hpp) and passes every
// other call (and every SearchByVector the fast path declines) through, byte for byte, to the
// Python grpc.aio service on a private Unix socket.
//
// Why: a grpc.aio call costs ~0.35 ms of CPU in transport alone and the Python service another
// ~0.3-0.4 ms, against ~0.2-0.4 ms for the search itself (benchmarks/load/README.md). Here the
// transport is gRPC's C++ core on all cores and the search never takes the GIL.
//
// The pass-through is generic (any method, any streaming shape): messages flow one at a time in
// each direction (flow control is end to end), the caller's metadata and deadline go to the
// service, its initial/trailing metadata and status (google.rpc.Status details included) come
// back, and a cancelled caller cancels the service's call.
//
// Security: the public port may use TLS (and require client certificates); the hop to the service
// stays a plaintext Unix socket in an owner-only directory. With a token table set (set_auth), a
// call the front end would answer itself is answered only when its bearer token's role is enough
// for the method; otherwise it is passed through, and the Python service, which checks every call
// against the same table (frameseek/auth.py), refuses it with the rich error status.
#pragma once
#include <array>
#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "search_request.hpp"

#include <grpcpp/generic/async_generic_service.h>
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/server.h>

namespace frameseek {

struct FrontEndStats {
  std::uint64_t fast = 0;       // SearchByVector calls answered natively
  std::uint64_t forwarded = 0;  // calls passed to the Python service
  double fast_seconds = 0.0;    // time spent in native SearchByVector (parse, search, encode)
  std::uint64_t health = 0;     // grpc.health.v1.Health/Check calls answered natively
};

class FrontEnd {
 public:
  // address: "host:port" (port 0 picks one); backend: the Python service's target
  // ("unix:/path"); int_args: gRPC channel arguments for the public server (message limits,
  // keepalive, so_reuseport, ...), named as in gRPC core.
  FrontEnd(std::string address, std::string backend, std::vector<std::pair<std::string, int>> int_args,
           std::shared_ptr<SearchDirectory> directory, std::shared_ptr<front_end::VideoMessages> messages,
           std::string fast_method);
  ~FrontEnd();

  // TLS on the public port (PEM strings); a non-empty client_ca_pem requires and verifies client
  // certificates signed by it. Call before start().
  void use_tls(std::string cert_pem, std::string key_pem, std::string client_ca_pem);
  // Tokens (SHA-256 digest, 32 bytes -> role rank) and method -> least rank (0 = open) of the
  // methods answered natively; replaces the previous table at once (a reload). Until called,
  // every call is answered without a token check.
  void set_auth(const std::vector<std::pair<std::string, int>>& tokens,
                const std::unordered_map<std::string, int>& method_ranks);
  int start();  // binds and serves; returns the bound port; throws std::runtime_error
  // Stop accepting, let calls in flight finish for grace_s, then cancel what is left.
  void shutdown(double grace_s);
  FrontEndStats stats() const;
  // grpc.health.v1 status of `service` ("" = the server) as the Python health servicer has it
  // (ServingStatus numbers); Health/Check is then answered here. Watch is passed through.
  void set_health(const std::string& service, int status);

  struct Counters {
    std::atomic<std::uint64_t> fast{0}, forwarded{0}, fast_ns{0}, health{0}, health_ns{0};
  };
  // A unary method answered natively: fn returns false to pass the call through instead.
  struct Answer {
    std::function<bool(const std::uint8_t*, std::size_t, std::string*)> fn;
    std::atomic<std::uint64_t>* calls = nullptr;
    std::atomic<std::uint64_t>* ns = nullptr;
  };

 private:
  class Service;
  std::string address_, backend_target_, fast_method_;
  std::vector<std::pair<std::string, int>> int_args_;
  std::shared_ptr<SearchDirectory> directory_;
  std::shared_ptr<front_end::VideoMessages> messages_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<grpc::GenericStub> stub_;
  std::unique_ptr<Service> service_;
  std::unique_ptr<grpc::Server> server_;
  bool answer_health(const std::uint8_t* req, std::size_t n, std::string* out) const;

  struct AuthTable {
    std::vector<std::pair<std::array<std::uint8_t, 32>, int>> tokens;
    std::unordered_map<std::string, int> methods;
  };
  // May this call be answered here? (false: pass it through, the service decides and explains)
  bool authorized(const grpc::GenericCallbackServerContext& ctx) const;
  std::shared_ptr<const AuthTable> auth_;  // null = no token check; read/written with std::atomic_load/store
  std::string tls_cert_, tls_key_, tls_client_ca_;

  Counters counters_;
  Answer search_, health_check_;
  mutable std::mutex health_mu_;
  std::unordered_map<std::string, int> health_;
};

}  // namespace frameseek
