"""Who may call what: bearer tokens with roles, TLS credentials, and the exposure check at start.

Tokens live in a TOML file (`--auth-tokens`), hashes only:

    [[token]]
    name = "ingest-bot"
    role = "writer"          # reader | writer | admin
    sha256 = "<hex SHA-256 of the token>"   # `frameseek hash-token` prints this line

Clients send `authorization: Bearer <token>`. The presented token is hashed and its digest compared
with every entry in constant time (hmac.compare_digest, no early exit), so neither the file nor
the timing gives a token away.

The role table (`METHOD_ROLES`) is the one place that says which role each RPC needs; the native
front end gets it as data (`native_table`) at start and on every reload, so it checks its fast
path against the same table. Roles are ranked: reader < writer < admin, each with the rights of
those below. grpc.health.v1.Health stays open (load balancers probe it without a token); every
other service (server reflection, anything unknown) needs at least a reader.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import ipaddress
import re
import ssl
import tomllib

import grpc
import structlog
from prometheus_client import Counter

from ..errors import ErrorCode, ServiceError
from .status import abort

log = structlog.get_logger("frameseek.auth")
DENIED = Counter(
    "frameseek_auth_denied_total",
    "calls refused for a missing, unknown or too weak token "
    "(the native front end declines those to the Python service, so all are counted here)",
    ["reason"],
)

ROLES = ("reader", "writer", "admin")  # in rank order: each has the rights of those before it
RANK = {role: i + 1 for i, role in enumerate(ROLES)}  # 0 = open (no token needed)
OPEN = 0

_SVC = "/frameseek.v1.FrameSeek/"
#: frameseek.v1.FrameSeek method -> the least role that may call it
METHOD_ROLES = {
    **{
        _SVC + m: "reader"
        for m in (
            "GetCollection",
            "ListCollections",
            "GetIngestJob",
            "WatchIngestJob",
            "SearchByImage",
            "SearchByFace",
            "ListPeople",
            "GetVideoPeople",
            "SearchByVideo",
            "SearchByVector",
            "SearchByAudio",
            "SearchByFace",
            "GetVideo",
            "ListVideos",
            "GetStats",
        )
    },
    **{
        _SVC + m: "writer"
        for m in ("IngestVideo", "IngestImage", "DeleteVideo", "UpsertItems", "DeleteItems", "UpdatePerson")
    },
    **{_SVC + m: "admin" for m in ("CreateCollection", "DeleteCollection")},
}
OPEN_SERVICES = ("/grpc.health.v1.Health/",)
DEFAULT_ROLE = "reader"  # reflection and any method not listed above


class ConfigError(ValueError):
    """A token file, TLS file or exposure that the server must not start (or reload) with."""


_HEX64 = re.compile(r"[0-9a-f]{64}")
BEARER = "bearer "


def required_rank(method: str) -> int:
    """The rank a call of `method` ("/package.Service/Method") needs; OPEN = none."""
    if method.startswith(OPEN_SERVICES):
        return OPEN
    return RANK[METHOD_ROLES.get(method, DEFAULT_ROLE)]


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclasses.dataclass(frozen=True)
class TokenEntry:
    name: str
    role: str
    digest: bytes  # SHA-256 of the token (32 bytes)


def load_tokens(path: str) -> tuple[TokenEntry, ...]:
    """Parse and check a token file; ConfigError with the file and entry on anything wrong."""
    try:
        with open(path, "rb") as f:
            doc = tomllib.load(f)
    except OSError as exc:
        raise ConfigError(f"auth tokens {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"auth tokens {path}: not valid TOML ({exc})") from None
    unknown = set(doc) - {"token"}
    if unknown:
        raise ConfigError(f"auth tokens {path}: unknown top-level keys {sorted(unknown)} (expected [[token]] tables)")
    entries, names, digests = [], set(), set()
    for i, t in enumerate(doc.get("token", []), 1):
        where = f"auth tokens {path}: token #{i}"
        if not isinstance(t, dict) or set(t) != {"name", "role", "sha256"}:
            raise ConfigError(f"{where}: needs exactly the keys name, role, sha256")
        name, role, sha = t["name"], t["role"], t["sha256"]
        if not isinstance(name, str) or not name:
            raise ConfigError(f"{where}: name must be a non-empty string")
        if role not in RANK:
            raise ConfigError(f"{where} ({name}): role must be one of {', '.join(ROLES)}")
        if not isinstance(sha, str) or not _HEX64.fullmatch(sha.lower()):
            raise ConfigError(
                f"{where} ({name}): sha256 must be 64 hex digits (the hash, never the token; "
                "`frameseek hash-token` prints it)"
            )
        if name in names or sha.lower() in digests:
            raise ConfigError(f"{where} ({name}): duplicate name or hash")
        names.add(name)
        digests.add(sha.lower())
        entries.append(TokenEntry(name, role, bytes.fromhex(sha)))
    if not entries:
        raise ConfigError(f"auth tokens {path}: no [[token]] entries (every call would be refused)")
    return tuple(entries)


def native_table(entries: tuple[TokenEntry, ...]) -> tuple[list[tuple[bytes, int]], dict[str, int]]:
    """What the C++ front end checks with: (digest, rank) per token, and method -> required rank
    for the methods it may answer itself."""
    methods = {m: required_rank(m) for m in METHOD_ROLES}
    methods["/grpc.health.v1.Health/Check"] = required_rank("/grpc.health.v1.Health/Check")
    return [(e.digest, RANK[e.role]) for e in entries], methods


class Authorizer:
    """Checks a call's bearer token against the current table (swapped whole by `reload`)."""

    def __init__(self, path: str):
        self.path = path
        self.entries = load_tokens(path)

    def reload(self) -> tuple[TokenEntry, ...]:
        """Re-read the file; on any error the old table stays (and ConfigError says why)."""
        self.entries = load_tokens(self.path)
        return self.entries

    def identify(self, authorization: str | None) -> TokenEntry | None:
        if not authorization or authorization[: len(BEARER)].lower() != BEARER:
            return None
        digest = hashlib.sha256(authorization[len(BEARER) :].strip().encode()).digest()
        found = None
        for e in self.entries:  # every entry, no early exit: the time does not depend on which matched
            if hmac.compare_digest(e.digest, digest):
                found = e
        return found

    def check(self, method: str, authorization: str | None) -> ServiceError | None:
        """None if the call may go on, else the error to answer it with."""
        need = required_rank(method)
        if need == OPEN:
            return None
        entry = self.identify(authorization)
        if entry is None:
            if not authorization:
                return ServiceError(
                    ErrorCode.UNAUTHENTICATED,
                    "UNAUTHENTICATED",
                    "this server needs a token: send 'authorization: Bearer <token>'",
                )
            return ServiceError(ErrorCode.UNAUTHENTICATED, "UNAUTHENTICATED", "unknown token")
        if RANK[entry.role] < need:
            return ServiceError(
                ErrorCode.PERMISSION_DENIED,
                "PERMISSION_DENIED",
                f"token '{entry.name}' has role {entry.role}; {method.rsplit('/', 1)[1]} needs {ROLES[need - 1]}",
                role=entry.role,
                required_role=ROLES[need - 1],
            )
        return None


class AuthInterceptor(grpc.aio.ServerInterceptor):
    """Refuses calls the Authorizer does not allow, before any handler runs, with the same
    google.rpc.Status + ErrorInfo as every other error."""

    def __init__(self, authorizer: Authorizer):
        self.authorizer = authorizer

    async def intercept_service(self, continuation, details):
        auth = next((v for k, v in details.invocation_metadata or () if k == "authorization"), None)
        err = self.authorizer.check(details.method, auth if isinstance(auth, str) else None)
        handler = await continuation(details)
        if err is None or handler is None:
            return handler
        DENIED.labels(err.reason).inc()

        async def deny(request, context):
            # an audit trail of refusals (the peer is the front end's socket with the native front end)
            log.info("auth_denied", method=details.method, reason=err.reason, peer=context.peer())
            await abort(context, err)

        async def deny_stream(request, context):
            await deny(request, context)
            yield  # pragma: no cover - an async generator that never yields

        kind = (handler.request_streaming, handler.response_streaming)
        make, fn = {
            (False, False): (grpc.unary_unary_rpc_method_handler, deny),
            (True, False): (grpc.stream_unary_rpc_method_handler, deny),
            (False, True): (grpc.unary_stream_rpc_method_handler, deny_stream),
            (True, True): (grpc.stream_stream_rpc_method_handler, deny_stream),
        }[kind]
        return make(
            fn, request_deserializer=handler.request_deserializer, response_serializer=handler.response_serializer
        )


# ---- transport security -------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class TlsFiles:
    cert: bytes
    key: bytes
    client_ca: bytes | None  # set: clients must present a certificate signed by it (mTLS)


def load_tls(cert: str | None, key: str | None, client_ca: str | None) -> TlsFiles | None:
    """The PEM files named by the settings (None = plaintext); ConfigError on a missing half or an unusable file."""
    if not cert and not key:
        if client_ca:
            raise ConfigError("tls_client_ca needs tls_cert and tls_key (mTLS is TLS with client certificates)")
        return None
    if not (cert and key):
        raise ConfigError("TLS needs both tls_cert and tls_key")

    def read(path: str, what: str) -> bytes:
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError as exc:
            raise ConfigError(f"{what} {path}: {exc.strerror}") from None
        if b"-----BEGIN" not in data:
            raise ConfigError(f"{what} {path}: not a PEM file")
        return data

    files = TlsFiles(
        read(cert, "tls_cert"), read(key, "tls_key"), read(client_ca, "tls_client_ca") if client_ca else None
    )
    try:  # a key that does not match the certificate would only show as a failed bind
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(cert, key)
    except ssl.SSLError as exc:
        raise ConfigError(f"tls_cert {cert} / tls_key {key}: unusable ({exc.reason or exc})") from None
    return files


def server_credentials(tls: TlsFiles) -> grpc.ServerCredentials:
    return grpc.ssl_server_credentials(
        [(tls.key, tls.cert)], root_certificates=tls.client_ca, require_client_auth=tls.client_ca is not None
    )


def is_loopback(address: str) -> bool:
    """Does `address` (host:port, [v6]:port or unix:path) only accept connections from this host?"""
    if address.startswith(("unix:", "unix-abstract:")):
        return True
    host = address.rsplit(":", 1)[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name (or empty = every interface): may resolve to anything
        return False


def exposure_gaps(address: str, tls: TlsFiles | None, authenticated: bool) -> list[str]:
    """What serving `address` as configured lacks to be safe on a network ([] = safe): loopback
    is safe; any other address needs TLS plus client authentication (tokens or client certificates)."""
    if is_loopback(address):
        return []
    return [
        what
        for what, ok in (
            ("TLS (--tls-cert/--tls-key)", tls is not None),
            ("client authentication (--auth-tokens or --tls-client-ca)", authenticated),
        )
        if not ok
    ]


def refusal(address: str, gaps: list[str]) -> str:
    return (
        f"refusing to listen on {address}: a non-loopback address without {' and '.join(gaps)} lets anyone "
        "who reaches the port read, ingest and delete the whole library. Add them, bind 127.0.0.1, or pass "
        "--insecure (FRAMESEEK_INSECURE=true) to serve anyway"
    )


def insecure_warning(address: str, gaps: list[str]) -> str:
    return (
        f"INSECURE: serving {address} without {' and '.join(gaps)} (--insecure): anyone who reaches the port "
        "can read, ingest and delete the whole library"
    )
