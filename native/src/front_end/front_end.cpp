// gRPC front end: native SearchByVector + generic pass-through to the Python service
// (see front_end.hpp).
#include "front_end.hpp"

#include <grpcpp/generic/async_generic_service.h>
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/security/server_credentials.h>
#include <openssl/crypto.h>
#include <openssl/sha.h>

#include <cctype>
#include <chrono>
#include <mutex>
#include <stdexcept>

#include "wire.hpp"

namespace frameseek {

namespace {

const std::string kHealthCheck = "/grpc.health.v1.Health/Check";

// Headers the transport sets itself on each hop; everything else the caller or the service sent
// travels on (grpc-status-details-bin included: it rides in grpc::Status::error_details()).
// Names the client a passed-through call comes from, for the per-client upload limit
// (api/uploads.client_of): only this front end sets it; a client's own value is dropped.
constexpr char kForwardedPeer[] = "x-frameseek-peer";

bool forwardable(grpc::string_ref key) {
  if (key.empty() || *key.data() == ':') return false;
  const std::string k(key.data(), key.size());
  return k.rfind("grpc-", 0) != 0 && k != "user-agent" && k != "content-type" && k != "te" && k != "authority" &&
         k != "host" && k != kForwardedPeer;
}

// "ipv4:10.1.2.3:5678" -> "ipv4:10.1.2.3": a client's connections share its address, not its port
std::string peer_address(std::string peer) {
  const auto colon = peer.rfind(':');
  if (colon != std::string::npos) peer.resize(colon);
  return peer;
}

std::string str(grpc::string_ref s) { return std::string(s.data(), s.size()); }

// One call from a client. It is the server-side reactor of that call and, once it needs the
// service, owns the client-side call to it (`backend_`). Every state change happens under mu_;
// gRPC operations are started after the decision, outside the lock (a reaction may run on another
// thread as soon as an operation is started).
//
// Holds on the backend call (gRPC's rule: operations started from outside that call's own
// reactions need a hold, or OnDone may run first): one for writes (released once no more
// messages go to the service: the caller half-closed, a write failed, or the service finished)
// and one for reads (released when the service's stream ends or the caller is gone).
class Call final : public grpc::ServerGenericBidiReactor {
 public:
  // answer: the native handler of this method (null: pass through)
  Call(grpc::GenericCallbackServerContext* ctx, grpc::GenericStub* stub, const FrontEnd::Answer* answer,
       FrontEnd::Counters* counters)
      : ctx_(ctx), stub_(stub), answer_(answer), counters_(counters), fast_(answer != nullptr) {
    backend_.call = this;
    if (!fast_) start_backend();
    StartRead(&in_);
  }

  // ---- the caller's side ----
  void OnReadDone(bool ok) override {
    if (fast_) {  // the first (only) message of a unary call with a native handler
      fast_ = false;
      if (ok && try_fast()) return;
      start_backend();
    }
    bool write = false, done_writing = false;
    {
      std::lock_guard lock(mu_);
      if (ok && backend_writable_) {
        write = true;
      } else if (backend_writable_) {
        backend_writable_ = false;
        done_writing = true;
      }
    }
    if (write) {
      backend_.StartWrite(&in_);
    } else if (done_writing) {
      backend_.StartWritesDone();
      backend_.RemoveHold();
    }
  }

  void OnWriteDone(bool ok) override {
    bool read = false, finish = false, release_read = false;
    {
      std::lock_guard lock(mu_);
      caller_writing_ = false;
      if (!backend_started_) return;  // the fast path's reply
      if (ok && !backend_finished_) {
        read = true;
      } else if (!ok && backend_readable_) {  // the caller is gone
        backend_readable_ = false;
        release_read = true;
      }
      finish = backend_done_ && !finished_;
      if (finish) finished_ = true;
    }
    if (!ok) backend_ctx_.TryCancel();
    if (read) backend_.StartRead(&out_);
    if (release_read) backend_.RemoveHold();
    if (finish) finish_from_backend();
  }

  void OnCancel() override {
    std::lock_guard lock(mu_);
    if (backend_started_) backend_ctx_.TryCancel();
  }

  void OnDone() override { unref(); }

 private:
  bool try_fast() {
    const auto t0 = std::chrono::steady_clock::now();
    std::vector<grpc::Slice> slices;
    if (!in_.Dump(&slices).ok()) return false;
    const std::uint8_t* data;
    std::size_t size;
    std::string joined;
    if (slices.size() == 1) {
      data = slices[0].begin();
      size = slices[0].size();
    } else {
      for (const auto& s : slices) joined.append(reinterpret_cast<const char*>(s.begin()), s.size());
      data = reinterpret_cast<const std::uint8_t*>(joined.data());
      size = joined.size();
    }
    std::string response;
    if (!answer_->fn(data, size, &response)) return false;
    grpc::Slice slice(std::move(response));
    reply_ = grpc::ByteBuffer(&slice, 1);
    {
      std::lock_guard lock(mu_);
      finished_ = true;
    }
    answer_->calls->fetch_add(1, std::memory_order_relaxed);
    answer_->ns->fetch_add(
        std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - t0).count(),
        std::memory_order_relaxed);
    StartWriteAndFinish(&reply_, grpc::WriteOptions(), grpc::Status::OK);
    return true;
  }

  void start_backend() {
    counters_->forwarded.fetch_add(1, std::memory_order_relaxed);
    for (const auto& [k, v] : ctx_->client_metadata())
      if (forwardable(k)) backend_ctx_.AddMetadata(str(k), str(v));
    backend_ctx_.AddMetadata(kForwardedPeer, peer_address(ctx_->peer()));
    backend_ctx_.set_deadline(ctx_->deadline());
    {
      std::lock_guard lock(mu_);
      backend_started_ = true;
      refs_ += 1;
    }
    stub_->PrepareBidiStreamingCall(&backend_ctx_, ctx_->method(), grpc::StubOptions(), &backend_);
    backend_.AddMultipleHolds(2);
    backend_.StartRead(&out_);
    backend_.StartCall();
  }

  // ---- the service's side ----
  struct Backend final : grpc::ClientBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer> {
    Call* call = nullptr;
    void OnReadInitialMetadataDone(bool ok) override { call->backend_initial_metadata(ok); }
    void OnReadDone(bool ok) override { call->backend_read(ok); }
    void OnWriteDone(bool ok) override { call->backend_wrote(ok); }
    void OnDone(const grpc::Status& s) override { call->backend_done(s); }
  };

  void backend_initial_metadata(bool ok) {
    if (!ok) return;
    std::lock_guard lock(mu_);
    if (finished_) return;
    for (const auto& [k, v] : backend_ctx_.GetServerInitialMetadata())
      if (forwardable(k)) ctx_->AddInitialMetadata(str(k), str(v));
  }

  void backend_read(bool ok) {
    bool write = false, release_read = false, release_write = false;
    {
      std::lock_guard lock(mu_);
      if (ok && !finished_) {
        write = true;
        caller_writing_ = true;
      } else {
        // the service's stream ended (or the caller is gone): no more reads, and no more writes
        // either, or its OnDone would wait for a caller that may never half-close
        backend_finished_ = true;
        release_read = backend_readable_;
        backend_readable_ = false;
        release_write = backend_writable_;
        backend_writable_ = false;
      }
    }
    if (write) StartWrite(&out_);
    if (release_write) backend_.RemoveHold();
    if (release_read) backend_.RemoveHold();
  }

  void backend_wrote(bool ok) {
    bool read = false, release_write = false;
    {
      std::lock_guard lock(mu_);
      if (ok && !finished_ && backend_writable_) {
        read = true;
      } else if (backend_writable_) {
        backend_writable_ = false;
        release_write = true;
      }
    }
    if (read) StartRead(&in_);
    if (release_write) backend_.RemoveHold();
  }

  void backend_done(const grpc::Status& s) {
    bool finish = false;
    {
      std::lock_guard lock(mu_);
      backend_done_ = true;
      backend_status_ = s;
      finish = !caller_writing_ && !finished_;
      if (finish) finished_ = true;
    }
    if (finish) finish_from_backend();
    unref();
  }

  void finish_from_backend() {
    for (const auto& [k, v] : backend_ctx_.GetServerTrailingMetadata())
      if (forwardable(k)) ctx_->AddTrailingMetadata(str(k), str(v));
    Finish(backend_status_);
  }

  void unref() {
    bool last;
    {
      std::lock_guard lock(mu_);
      last = --refs_ == 0;
    }
    if (last) delete this;
  }

  grpc::GenericCallbackServerContext* ctx_;
  grpc::GenericStub* stub_;
  const FrontEnd::Answer* answer_;
  FrontEnd::Counters* counters_;
  bool fast_;  // only touched by the first OnReadDone, before anything else runs

  Backend backend_;
  grpc::ClientContext backend_ctx_;
  grpc::ByteBuffer in_, out_, reply_;
  grpc::Status backend_status_;

  std::mutex mu_;
  int refs_ = 1;  // this reactor's OnDone, plus the backend call's OnDone once started
  bool backend_started_ = false;
  bool backend_writable_ = true;   // the write hold is still held
  bool backend_readable_ = true;   // the read hold is still held
  bool backend_finished_ = false;  // the service's stream ended
  bool backend_done_ = false;      // its status is in
  bool caller_writing_ = false;
  bool finished_ = false;  // Finish (or StartWriteAndFinish) was called
};

}  // namespace

class FrontEnd::Service final : public grpc::CallbackGenericService {
 public:
  Service(FrontEnd* owner) : owner_(owner) {}
  grpc::ServerGenericBidiReactor* CreateReactor(grpc::GenericCallbackServerContext* ctx) override {
    const FrontEnd::Answer* answer = nullptr;
    if (ctx->method() == owner_->fast_method_)
      answer = &owner_->search_;
    else if (ctx->method() == kHealthCheck)
      answer = &owner_->health_check_;
    if (answer != nullptr && !owner_->authorized(*ctx)) answer = nullptr;
    return new Call(ctx, owner_->stub_.get(), answer, &owner_->counters_);
  }

 private:
  FrontEnd* owner_;
};

FrontEnd::FrontEnd(std::string address, std::string backend, std::vector<std::pair<std::string, int>> int_args,
                   std::shared_ptr<SearchDirectory> directory, std::shared_ptr<front_end::VideoMessages> messages,
                   std::string fast_method)
    : address_(std::move(address)),
      backend_target_(std::move(backend)),
      fast_method_(std::move(fast_method)),
      int_args_(std::move(int_args)),
      directory_(std::move(directory)),
      messages_(std::move(messages)) {
  search_.fn = [dir = directory_.get(), msgs = messages_.get()](const std::uint8_t* req, std::size_t n,
                                                                std::string* out) {
    return front_end::answer_search_by_vector(*dir, *msgs, req, n, out);
  };
  search_.calls = &counters_.fast;
  search_.ns = &counters_.fast_ns;
  health_check_.fn = [this](const std::uint8_t* req, std::size_t n, std::string* out) {
    return answer_health(req, n, out);
  };
  health_check_.calls = &counters_.health;
  health_check_.ns = &counters_.health_ns;
}

// grpc.health.v1.Health/Check: HealthCheckRequest {string service = 1} ->
// HealthCheckResponse {ServingStatus status = 1}, from the statuses the server set. A service
// never set is declined: the Python health servicer answers it (NOT_FOUND, as the protocol says).
bool FrontEnd::answer_health(const std::uint8_t* req, std::size_t n, std::string* out) const {
  wire::Reader r(req, n);
  std::string service;
  std::uint32_t field, type;
  while (r.next(&field, &type)) {
    if (field != 1 || type != wire::kLen) return false;
    const auto s = r.bytes();
    service.assign(reinterpret_cast<const char*>(s.data), s.size);
  }
  if (!r.ok()) return false;
  int status;
  {
    std::lock_guard lock(health_mu_);
    auto it = health_.find(service);
    if (it == health_.end()) return false;
    status = it->second;
  }
  wire::Writer w(out);
  if (status != 0) {
    w.tag(1, wire::kVarint);
    w.varint(static_cast<std::uint64_t>(status));
  }
  return true;
}

void FrontEnd::set_health(const std::string& service, int status) {
  std::lock_guard lock(health_mu_);
  health_[service] = status;
}

FrontEnd::~FrontEnd() { shutdown(0.0); }

void FrontEnd::use_tls(std::string cert_pem, std::string key_pem, std::string client_ca_pem) {
  if (server_) throw std::runtime_error("use_tls after start");
  if (cert_pem.empty() || key_pem.empty()) throw std::invalid_argument("TLS needs a certificate and a key");
  tls_cert_ = std::move(cert_pem);
  tls_key_ = std::move(key_pem);
  tls_client_ca_ = std::move(client_ca_pem);
}

void FrontEnd::set_auth(const std::vector<std::pair<std::string, int>>& tokens,
                        const std::unordered_map<std::string, int>& method_ranks) {
  auto table = std::make_shared<AuthTable>();
  for (const auto& [digest, rank] : tokens) {
    if (digest.size() != SHA256_DIGEST_LENGTH) throw std::invalid_argument("a token digest must be 32 bytes");
    std::array<std::uint8_t, 32> d;
    std::copy(digest.begin(), digest.end(), d.begin());
    table->tokens.emplace_back(d, rank);
  }
  table->methods = method_ranks;
  std::atomic_store(&auth_, std::shared_ptr<const AuthTable>(std::move(table)));
}

// The same rule as frameseek.auth.Authorizer: "authorization: Bearer <token>" (scheme in any
// case, blanks around the token ignored), SHA-256 of the token compared with every digest in
// constant time. A method missing from the table is not answered here.
bool FrontEnd::authorized(const grpc::GenericCallbackServerContext& ctx) const {
  const auto table = std::atomic_load(&auth_);
  if (!table) return true;
  const auto need = table->methods.find(ctx.method());
  if (need == table->methods.end()) return false;
  if (need->second == 0) return true;
  const auto& md = ctx.client_metadata();
  const auto range = md.equal_range("authorization");
  if (range.first == range.second) return false;
  std::string value = str(range.first->second);
  static constexpr char kBearer[] = "bearer ";
  constexpr std::size_t kBearerLen = sizeof(kBearer) - 1;
  if (value.size() < kBearerLen) return false;
  for (std::size_t i = 0; i < kBearerLen; ++i)
    if (std::tolower(static_cast<unsigned char>(value[i])) != kBearer[i]) return false;
  auto blank = [](char c) { return std::isspace(static_cast<unsigned char>(c)) != 0; };
  std::size_t b = kBearerLen, e = value.size();
  while (b < e && blank(value[b])) ++b;
  while (e > b && blank(value[e - 1])) --e;
  std::uint8_t digest[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(value.data() + b), e - b, digest);
  int rank = 0;
  for (const auto& [d, r] : table->tokens)  // every entry: the time does not tell which matched
    if (CRYPTO_memcmp(d.data(), digest, sizeof digest) == 0) rank = r;
  return rank >= need->second;
}

int FrontEnd::start() {
  if (server_) throw std::runtime_error("front end already started");
  grpc::ChannelArguments cargs;
  // the public server enforces the message limits; the hop to the service must not add its own
  cargs.SetMaxReceiveMessageSize(-1);
  cargs.SetMaxSendMessageSize(-1);
  channel_ = grpc::CreateCustomChannel(backend_target_, grpc::InsecureChannelCredentials(), cargs);
  stub_ = std::make_unique<grpc::GenericStub>(channel_);
  service_ = std::make_unique<Service>(this);

  grpc::ServerBuilder builder;
  int port = 0;
  std::shared_ptr<grpc::ServerCredentials> creds = grpc::InsecureServerCredentials();
  if (!tls_cert_.empty()) {
    grpc::SslServerCredentialsOptions opts(tls_client_ca_.empty()
                                               ? GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE
                                               : GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
    opts.pem_root_certs = tls_client_ca_;
    opts.pem_key_cert_pairs.push_back({tls_key_, tls_cert_});
    creds = grpc::SslServerCredentials(opts);
  }
  builder.AddListeningPort(address_, creds, &port);
  for (const auto& [name, value] : int_args_) builder.AddChannelArgument(name, value);
  builder.RegisterCallbackGenericService(service_.get());
  server_ = builder.BuildAndStart();
  if (!server_ || port == 0) {
    server_.reset();
    throw std::runtime_error("could not bind " + address_);
  }
  return port;
}

void FrontEnd::shutdown(double grace_s) {
  if (!server_) return;
  const auto deadline =
      std::chrono::system_clock::now() + std::chrono::microseconds(static_cast<std::int64_t>(grace_s * 1e6));
  server_->Shutdown(deadline);
  server_->Wait();
  server_.reset();
}

FrontEndStats FrontEnd::stats() const {
  FrontEndStats s;
  s.fast = counters_.fast.load(std::memory_order_relaxed);
  s.forwarded = counters_.forwarded.load(std::memory_order_relaxed);
  s.fast_seconds = counters_.fast_ns.load(std::memory_order_relaxed) * 1e-9;
  s.health = counters_.health.load(std::memory_order_relaxed);
  return s;
}

}  // namespace frameseek
