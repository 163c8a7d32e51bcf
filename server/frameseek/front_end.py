"""The native gRPC front end (`Settings.front_end = "native"`, the default).

A C++ gRPC server (native/src/front_end.cpp) listens on the public address. It answers
SearchByVector itself, from a `SearchDirectory` of collections and videos kept in step with the
storage, without the GIL; every other call (and any SearchByVector it declines: filters, unknown
collections, invalid input, not loaded yet) passes through, message by message, with metadata,
deadline, cancellation and the rich error status, to the grpc.aio server, which then listens only
on a private Unix socket. The Python service stays the one place that validates and decides.

Why: through grpc.aio a SearchByVector costs ~1.1 ms of CPU (transport ~0.35, Python ~0.35, kNN
~0.3-0.4), which caps a 2-core machine near 1,400 calls/s; in C++ the transport is a few tens of
microseconds and uses every core (benchmarks/load/README.md has the numbers).

What the directory mirrors, and when (EmbeddedStorage.add_observer): each collection's name,
model and live HnswIndex; each active video's sample timestamps and serialised `Video` message.
Adds and removals are pushed synchronously at commit time, so an acknowledged ingest is searchable
and a deleted video is gone from the fast path before the RPC that did it returns.
"""
from __future__ import annotations

import os
import shutil
import tempfile

import numpy as np
import structlog

from . import _native
from .api.names import collection_name
from .service import FrameSeekService
from .storage import CollectionRecord, VideoRecord

log = structlog.get_logger("frameseek.front_end")

FAST_METHOD = "/frameseek.v1.FrameSeek/SearchByVector"


def available() -> bool:
    """Was the native module built with gRPC C++ (`make setup` installs libgrpc++-dev)?"""
    return bool(getattr(_native, "HAVE_FRONT_END", False))


class NativeFrontEnd:
    """Owns the C++ server, the directory and the private socket of the Python service."""

    def __init__(self, service: FrameSeekService, video_bytes) -> None:
        """`video_bytes(record) -> bytes`: the serialised Video of a record (the servicer's
        Translator, so both paths return identical messages)."""
        self.service, self.video_bytes = service, video_bytes
        self.directory = _native.SearchDirectory()
        # a private directory (mode 0700) for the socket: only this user can reach the service
        self._dir = tempfile.mkdtemp(prefix="frameseek-")
        self.backend_address = "unix:" + os.path.join(self._dir, "service.sock")
        self._server = None
        self._attached = False
        self._health: dict[str, int] = {}

    def start(self, address: str, channel_args: list[tuple[str, int]]) -> int:
        """Listen on `address` (the Python service must already serve `backend_address`; calls
        before `attach()` all go to it). Returns the bound port; RuntimeError if it cannot bind."""
        server = _native.FrontEnd(address, self.backend_address, channel_args, self.directory, FAST_METHOD)
        for name, status in self._health.items():
            server.set_health(name, status)
        port = server.start()
        self._server = server
        return port

    def set_health(self, service: str, status: int) -> None:
        """Mirror of the grpc.health.v1 servicer's status (Health/Check is answered natively;
        Watch streams are passed through to the servicer)."""
        self._health[service] = int(status)
        if self._server is not None:
            self._server.set_health(service, int(status))

    def attach(self) -> dict:
        """Once the storage is loaded: fill the directory, follow the storage's commits, and turn
        the fast path on. Returns counts for the log."""
        storage = self.service.storage
        if not hasattr(storage, "add_observer") or getattr(storage, "read_only", False):
            log.warning("front_end_fast_path_off", reason="storage without a local index")
            return {"fast_path": False}
        storage.add_observer(self)  # first, so nothing committed from now on is missed
        colls = storage.live_collections()
        for rec, index in colls:
            self.collection_added(rec, index)
        n = 0
        for rec, ts in storage.video_entries():
            self.video_added(rec, ts)
            n += 1
        self.directory.ready = True
        self._attached = True
        return {"fast_path": True, "collections": len(colls), "videos": n}

    # -- storage observer ------------------------------------------------------------------------
    def collection_added(self, rec: CollectionRecord, index) -> None:
        self.directory.put_collection(collection_name(rec.name), rec.id, rec.model, rec.is_default, index)

    def collection_removed(self, collection_id: int) -> None:
        self.directory.remove_collection(collection_id)

    def video_added(self, rec: VideoRecord, timestamps: np.ndarray) -> None:
        self.directory.put_video(rec.id, rec.collection_id, timestamps, self.video_bytes(rec))

    def video_removed(self, video_id: int) -> None:
        self.directory.remove_video(video_id)

    # ---------------------------------------------------------------------------------------------
    def stats(self) -> dict:
        return self._server.stats() if self._server is not None else {"fast": 0, "forwarded": 0, "fast_seconds": 0.0}

    def stop_fast_path(self) -> None:
        self.directory.ready = False

    def shutdown(self, grace_s: float) -> None:
        """Blocking: stop accepting, drain calls (passed-through ones included) for grace_s."""
        self.directory.ready = False
        if self._server is not None:
            self._server.shutdown(grace_s)
        shutil.rmtree(self._dir, ignore_errors=True)
