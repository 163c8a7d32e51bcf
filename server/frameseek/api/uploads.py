"""Uploads: the bytes of IngestVideo and SearchByVideo streams, spooled to `uploads/{uuid}.part`
and hashed on the way, bounded in size, in idleness and per client.

A spool file lives only while its call does: it is removed when the call fails or is cancelled,
or (IngestVideo) handed to the service, which keeps it under its job's name. `remove_stale()`
removes what a killed process left behind, at start.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import hashlib
import os
import uuid

import structlog

from ..errors import ErrorCode, ServiceError, exhausted, invalid, quoted

log = structlog.get_logger("frameseek.uploads")

MAX_CHUNK = 1 << 20
#: metadata key with which a trusted local front end (the native one, over the private Unix
#: socket) names the client it passes a call through for
FORWARDED_PEER = "x-frameseek-peer"


def client_of(context) -> str | None:
    """Who is uploading: the peer's address without its port (a client's connections share it);
    None when unknown (a call passed through the native front end that did not say)."""
    peer = context.peer() or ""
    if peer.startswith("unix:"):
        for k, v in context.invocation_metadata() or ():
            if k == FORWARDED_PEER:
                return str(v)
        return None
    return peer.rsplit(":", 1)[0] if ":" in peer else peer


class Uploads:
    def __init__(self, uploads_dir: str, max_bytes: int, idle_timeout_s: float, per_client: int):
        self.dir, self.max_bytes = uploads_dir, max_bytes
        self.idle_timeout_s, self.per_client = idle_timeout_s, per_client
        self._by_client: dict[str, int] = {}

    def remove_stale(self) -> int:
        """Remove the spool files of calls that no longer exist (a killed process); returns how many."""
        n = 0
        for path in glob.glob(os.path.join(self.dir, "*.part")):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
                n += 1
        if n:
            log.info("stale_uploads_removed", files=n)
        return n

    def new_path(self) -> str:
        os.makedirs(self.dir, exist_ok=True)
        return os.path.join(self.dir, f"{uuid.uuid4().hex}.part")

    @contextlib.contextmanager
    def client_slot(self, client: str | None):
        """One of `per_client` concurrent uploads of `client` (RESOURCE_EXHAUSTED beyond)."""
        if client is None:
            yield
            return
        n = self._by_client.get(client, 0)
        if n >= self.per_client:
            raise exhausted(
                f"{n} uploads from this client in progress (limit {self.per_client}); retry later",
                limit=self.per_client,
                scope="client",
            )
        self._by_client[client] = n + 1
        try:
            yield
        finally:
            left = self._by_client[client] - 1
            if left:
                self._by_client[client] = left
            else:
                del self._by_client[client]

    async def next_message(self, it):
        """The next message of a client stream; DEADLINE_EXCEEDED (UPLOAD_IDLE) when none comes
        for idle_timeout_s; StopAsyncIteration at its end."""
        try:
            return await asyncio.wait_for(it.__anext__(), self.idle_timeout_s)
        except TimeoutError:
            raise ServiceError(
                ErrorCode.DEADLINE_EXCEEDED,
                "UPLOAD_IDLE",
                f"no upload data for {self.idle_timeout_s:g} s",
                limit_seconds=self.idle_timeout_s,
            ) from None

    async def spool(self, first_kind: str, it) -> tuple[str, str, int]:
        """Write the chunk messages after the first one to a new spool file; returns (path,
        sha256, size). The file is removed if anything goes wrong, cancellation included."""
        path = self.new_path()
        h, size = hashlib.sha256(), 0
        try:
            with open(path, "wb") as f:
                while True:
                    try:
                        msg = await self.next_message(it)
                    except StopAsyncIteration:
                        break
                    if msg.WhichOneof("payload") != "chunk":
                        raise invalid(f"only the first message may carry {first_kind}", field=first_kind)
                    n = len(msg.chunk)
                    if n > MAX_CHUNK:
                        raise invalid(f"chunk of {n} bytes exceeds the 1 MiB limit", "CHUNK_TOO_LARGE", limit=MAX_CHUNK)
                    size += n
                    if size > self.max_bytes:
                        raise exhausted(
                            f"upload exceeds the limit of {self.max_bytes} bytes",
                            "MEDIA_TOO_LARGE",
                            limit=self.max_bytes,
                        )
                    h.update(msg.chunk)
                    f.write(msg.chunk)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            raise
        return path, h.hexdigest(), size

    def write(self, data: bytes) -> str:
        """A spool file holding `data` (IngestImage: the bytes came in one message)."""
        path = self.new_path()
        try:
            with open(path, "wb") as f:
                f.write(data)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            raise
        return path


def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def resolve_server_path(root: str | None, path: str) -> str:
    """IngestMetadata.server_path / VideoQuery.server_path: a file under `root`
    (Settings.ingest_path_root), as a real path. Error messages quote the caller's path only."""
    if not root:
        raise ServiceError(
            ErrorCode.PERMISSION_DENIED,
            "PATH_NOT_ALLOWED",
            "server_path is disabled on this server (set ingest_path_root)",
        )
    if "\0" in path:
        raise invalid("server_path contains a NUL character", field="server_path")
    real_root = os.path.realpath(root)
    real = os.path.realpath(os.path.join(real_root, path))
    if os.path.commonpath([real, real_root]) != real_root:
        raise ServiceError(
            ErrorCode.PERMISSION_DENIED,
            "PATH_NOT_ALLOWED",
            f"server_path {quoted(path)} is outside the allowed directory",
        )
    if not os.path.isfile(real):
        raise ServiceError(ErrorCode.NOT_FOUND, "NOT_FOUND", f"server_path {quoted(path)} does not exist")
    return real
