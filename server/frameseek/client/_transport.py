"""What every call of the client shares: the error type, the channel's TLS and bearer token, and
reading media and building the pieces of requests."""

from __future__ import annotations

import hashlib
import io
import os
from typing import BinaryIO

import grpc

from ..config import DEFAULT_ADDRESS
from ..v1 import frameseek_pb2 as pb

CHUNK = 1 << 20
MediaInput = str | os.PathLike | bytes | BinaryIO
_POLICIES = {
    None: pb.DUPLICATE_POLICY_UNSPECIFIED,
    "allow": pb.DUPLICATE_POLICY_ALLOW,
    "report": pb.DUPLICATE_POLICY_REPORT,
    "reject": pb.DUPLICATE_POLICY_REJECT,
}


class FrameSeekError(Exception):
    """An RPC failed. `code` is a grpc.StatusCode, `reason` the ErrorInfo reason ('' if none)."""

    def __init__(self, code: grpc.StatusCode, message: str, reason: str = "", metadata: dict | None = None):
        super().__init__(f"{code.name}: {message}" + (f" [{reason}]" if reason else ""))
        self.code, self.message, self.reason, self.metadata = code, message, reason, metadata or {}

    @classmethod
    def from_rpc(cls, err: grpc.RpcError) -> FrameSeekError:
        reason, md = "", {}
        try:
            from google.rpc import error_details_pb2
            from grpc_status import rpc_status

            st = rpc_status.from_call(err)
            for d in st.details if st else ():
                info = error_details_pb2.ErrorInfo()
                if d.Unpack(info):
                    reason, md = info.reason, dict(info.metadata)
        except Exception:  # a non-frameseek server or a transport error: no details
            pass
        return cls(err.code(), err.details() or "", reason, md)


def default_address() -> str:
    return os.environ.get("FRAMESEEK_SERVER") or DEFAULT_ADDRESS


def _read(path: str | os.PathLike | None) -> bytes | None:
    if not path:
        return None
    with open(path, "rb") as f:
        return f.read()


def tls_credentials(
    ca: str | os.PathLike | None = None, cert: str | os.PathLike | None = None, key: str | os.PathLike | None = None
) -> grpc.ChannelCredentials:
    """TLS trusting `ca` (None = the system's roots), with a client certificate when cert/key are given."""
    if bool(cert) != bool(key):
        raise ValueError("a client certificate needs both tls_cert and tls_key")
    return grpc.ssl_channel_credentials(
        root_certificates=_read(ca), private_key=_read(key), certificate_chain=_read(cert)
    )


class _BearerToken(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
    grpc.StreamStreamClientInterceptor,
):
    """Adds `authorization: Bearer <token>` to every call (also over plaintext to a loopback server,
    where gRPC's call credentials would refuse to send it)."""

    def __init__(self, token: str):
        self.header = ("authorization", f"Bearer {token}")

    def _details(self, d):
        return _Details(d, [*(d.metadata or ()), self.header])

    def intercept_unary_unary(self, continuation, details, request):
        return continuation(self._details(details), request)

    intercept_unary_stream = intercept_unary_unary

    def intercept_stream_unary(self, continuation, details, request_iterator):
        return continuation(self._details(details), request_iterator)

    intercept_stream_stream = intercept_stream_unary


class _Details(grpc.ClientCallDetails):
    def __init__(self, d, metadata):
        self.method, self.timeout, self.credentials = d.method, d.timeout, d.credentials
        self.wait_for_ready, self.compression, self.metadata = d.wait_for_ready, d.compression, metadata


def collection_name(c: str) -> str:
    """'name' or 'collections/name' -> 'collections/name' ('' stays '' = the server's default)."""
    return c if not c or c.startswith("collections/") else f"collections/{c}"


def file_sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def _open(media: MediaInput) -> tuple[BinaryIO, bool, str]:
    if isinstance(media, (bytes, bytearray, memoryview)):
        return io.BytesIO(bytes(media)), True, ""
    if isinstance(media, (str, os.PathLike)):
        return open(media, "rb"), True, os.path.basename(os.fspath(media))
    return media, False, getattr(media, "name", "") or ""


def _read_all(media: MediaInput) -> tuple[bytes, str]:
    """The whole input (for the unary image RPCs) and its file name, closing what _open opened."""
    f, owned, name = _open(media)
    try:
        return f.read(), name
    finally:
        if owned:
            f.close()


def _filter(labels=None, videos=None, exclude_videos=None) -> pb.SearchFilter:
    return pb.SearchFilter(labels=labels or {}, videos=list(videos or []), exclude_videos=list(exclude_videos or []))
