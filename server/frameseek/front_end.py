"""The native gRPC front end (`Settings.front_end = "native"`, the default).

A C++ gRPC server (native/src/front_end/) listens on the public address. It answers
SearchByVector itself, with the service's own search (`service.search.directory`, the
native `SearchDirectory`, kept in step with the storage) and without the GIL; every other call
(and any SearchByVector it declines: label filters, unknown collections, invalid input, not
loaded yet) passes through, message by message, with metadata,
deadline, cancellation and the rich error status, to the grpc.aio server, which then listens only
on a private Unix socket. The Python service stays the one place that validates and decides.

Why: through grpc.aio a SearchByVector costs ~1.1 ms of CPU (transport ~0.35, Python ~0.35, kNN
~0.3-0.4), which caps a 2-core machine near 1,400 calls/s; in C++ the transport is a few tens of
microseconds and uses every core (benchmarks/load/README.md has the numbers).

What the front end adds to the search (EmbeddedStorage.add_observer): each active video's
serialised `Video` message (`_native.VideoMessages`), the bytes of its hits. Removals are pushed
synchronously at commit time, as the directory's are, so a deleted video is gone from the fast
path before the RPC that did it returns. Adds are too for small commits (an ingest: one video);
the messages of a big commit (an UpsertItems batch: up to 10,000 items) are encoded by a filler
thread at low priority once commits pause (`FILL_QUIET_S`): encoding cost a one-vector item ~7 us
of the GIL, a sixth of its commit, for messages that searches may never return. Either way an
acknowledged video is searchable at once: a hit whose message is not there yet is passed through
and answered, the same, by the Python service.

Security (frameseek.api.auth): the public port takes the server's TLS settings; the token table is
handed to the C++ side as data (`set_auth`), at start and on every reload, and a fast-path call
without a good enough token is passed through for the Python service to refuse. The private
socket lives in an owner-only (0700) directory under the system temp directory, locked with
flock while the server lives: a server killed with -9 leaves its directory behind, and the next
server to start removes every such directory whose lock nobody holds.
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import os
import shutil
import socket
import tempfile
import threading
import time

import structlog

from . import _native
from .api.auth import native_table
from .service import FrameSeekService, low_priority
from .storage import CollectionRecord, NotFound, VideoRecord

log = structlog.get_logger("frameseek.front_end")

SOCKET_DIR_PREFIX = "frameseek-fe-"
_LOCK = "lock"

FAST_METHOD = "/frameseek.v1.FrameSeek/SearchByVector"

#: a commit of at most this many videos has their messages encoded at once; a bigger one leaves
#: them to the filler thread (module docstring)
SYNC_MESSAGES = 16
#: the filler starts once no big commit has come for this long (a bulk load is not slowed by it)
FILL_QUIET_S = 0.2


def available() -> bool:
    """Was the native module built with gRPC C++ (`make setup` installs libgrpc++-dev)?"""
    return bool(getattr(_native, "HAVE_FRONT_END", False))


class NativeFrontEnd:
    """Owns the C++ server, the directory and the private socket of the Python service."""

    def __init__(self, service: FrameSeekService, video_bytes, tls=None, tokens=None) -> None:
        """`video_bytes(record) -> bytes`: the serialised Video of a record (the servicer's
        Translator, so both paths return identical messages). `tls`: auth.TlsFiles for the public
        port; `tokens`: the auth.TokenEntry table (None = no token check)."""
        self.service, self.video_bytes = service, video_bytes
        self.tls, self._tokens = tls, tokens
        self.directory = service.search.directory
        self.messages = _native.VideoMessages()
        remove_stale_socket_dirs()
        self._dir, self._lock_fd = _socket_dir()
        self.backend_address = "unix:" + os.path.join(self._dir, "service.sock")
        self._server = None
        self._attached = False
        self._health: dict[str, int] = {}
        # records of big commits whose messages the filler has yet to encode (videos_added)
        self._unencoded: list[VideoRecord] = []
        self._unencoded_lock = threading.Lock()
        self._last_big_commit = 0.0
        self._wake_filler = threading.Event()
        self._stopping = False
        self._filler: threading.Thread | None = None

    def start(self, address: str, channel_args: list[tuple[str, int]]) -> int:
        """Listen on `address` (the Python service must already serve `backend_address`; calls
        before `attach()` all go to it). Returns the bound port; RuntimeError if it cannot bind."""
        server = _native.FrontEnd(
            address, self.backend_address, channel_args, self.directory, self.messages, FAST_METHOD
        )
        for name, status in self._health.items():
            server.set_health(name, status)
        if self.tls is not None:
            server.use_tls(self.tls.cert, self.tls.key, self.tls.client_ca or b"")
        if self._tokens is not None:
            server.set_auth(*native_table(self._tokens))
        port = server.start()
        self._server = server
        return port

    def set_tokens(self, tokens) -> None:
        """A reloaded token table: the fast path checks against it from the next call on."""
        self._tokens = tokens
        if self._server is not None:
            self._server.set_auth(*native_table(tokens))

    def set_health(self, service: str, status: int) -> None:
        """Mirror of the grpc.health.v1 servicer's status (Health/Check is answered natively;
        Watch streams are passed through to the servicer)."""
        self._health[service] = int(status)
        if self._server is not None:
            self._server.set_health(service, int(status))

    def attach(self) -> dict:
        """Once the storage is loaded: follow the storage's commits and turn the fast path on.
        The messages of the videos stored before this start are encoded afterwards, by
        `fill_messages` (the server runs it once it serves): until a hit's message is there its
        search is passed through to the Python service, which answers it the same. Returns counts
        for the log."""
        storage = self.service.storage
        if getattr(storage, "read_only", False):
            log.warning("front_end_fast_path_off", reason="storage without a local index")
            return {"fast_path": False}
        storage.add_observer(self)  # first, so nothing committed from now on is missed
        self.messages.ready = True
        self._attached = True
        self._filler = threading.Thread(target=self._fill_unencoded, name="video-messages", daemon=True)
        self._filler.start()
        return {"fast_path": True, "collections": self.directory.collection_count}

    def fill_messages(self, stop=lambda: False) -> int:
        """Encode and hand over the message of every video stored before attach() (~20 us each);
        returns how many."""
        if not self._attached:
            return 0
        return self._put_messages((rec for rec, _ in self.service.storage.video_entries()), stop)

    def _put_messages(self, records, stop) -> int:
        """Encode and hand over the messages of `records`, yielding the GIL between small batches;
        returns how many. A video deleted while its message was encoded is taken out again:
        deletes leave the storage's map before its observers hear of them
        (EmbeddedStorage.delete_video), so the check after each put sees every delete whose
        removal the put may have overtaken."""
        storage = self.service.storage
        put, encode = self.messages.put, self.video_bytes
        n = 0
        for rec in records:
            if stop():
                break
            put(rec.id, rec.collection_id, encode(rec))
            try:
                storage.video_entry(rec.id)
            except NotFound:
                self.messages.remove(rec.id)
            n += 1
            if n % 64 == 0:
                time.sleep(0)  # let the event loop and the searches passed through take the GIL
        return n

    def _fill_unencoded(self) -> None:
        """The filler thread: the messages of big commits, at low priority, once commits pause."""
        low_priority()
        stop = lambda: self._stopping  # noqa: E731
        while not self._stopping:
            self._wake_filler.wait()
            while not self._stopping and time.monotonic() - self._last_big_commit < FILL_QUIET_S:
                time.sleep(FILL_QUIET_S)
            self._wake_filler.clear()
            with self._unencoded_lock:
                records, self._unencoded = self._unencoded, []
            try:
                self._put_messages(records, stop)
            except Exception:  # their searches stay passed through; later commits are still filled
                log.exception("video_messages_fill_failed", videos=len(records))

    def answer(self, request: bytes) -> bytes | None:
        """What the fast path answers a serialised SearchByVectorRequest (None: passed through)."""
        return _native.answer_search_by_vector(self.directory, self.messages, request)

    # -- storage observer (the collections are the search's: service.search follows them) -------
    def collection_added(self, rec: CollectionRecord, index) -> None:
        pass

    def collection_removed(self, collection_id: int) -> None:
        self.messages.remove_collection(collection_id)

    def video_added(self, rec: VideoRecord, timestamps) -> None:
        self.videos_added([(rec, timestamps)])

    def videos_added(self, entries) -> None:
        """The videos of one commit (the storage observer's batch form): their messages now, or by
        the filler for a big commit (module docstring)."""
        if len(entries) <= SYNC_MESSAGES:
            put, encode = self.messages.put, self.video_bytes
            for rec, _ in entries:
                put(rec.id, rec.collection_id, encode(rec))
            return
        with self._unencoded_lock:
            self._unencoded.extend(rec for rec, _ in entries)
        self._last_big_commit = time.monotonic()
        self._wake_filler.set()

    def video_removed(self, video_id: int) -> None:
        self.messages.remove(video_id)

    # ---------------------------------------------------------------------------------------------
    def stats(self) -> dict:
        return self._server.stats() if self._server is not None else {"fast": 0, "forwarded": 0, "fast_seconds": 0.0}

    def stop_fast_path(self) -> None:
        self.messages.ready = False

    def shutdown(self, grace_s: float) -> None:
        """Blocking: stop accepting, drain calls (passed-through ones included) for grace_s."""
        self.messages.ready = False
        self._stopping = True
        self._wake_filler.set()
        if self._server is not None:
            self._server.shutdown(grace_s)
        shutil.rmtree(self._dir, ignore_errors=True)
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1


def _socket_dir() -> tuple[str, int]:
    """A new owner-only directory for the private socket, and the fd of its lock (held - flock -
    for as long as this process lives; the kernel lets go of it however the process ends). The
    lock file is locked under a temporary name and then renamed into place, so a sweeping server
    never sees `lock` unlocked while its owner is still starting."""
    path = tempfile.mkdtemp(prefix=SOCKET_DIR_PREFIX)  # mode 0700: only this user reaches the service
    tmp = os.path.join(path, _LOCK + ".new")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    os.rename(tmp, os.path.join(path, _LOCK))
    return path, fd


def remove_stale_socket_dirs() -> list[str]:
    """Remove this user's socket directories whose server is gone (lock file not locked).
    Returns the paths removed."""
    removed = []
    for path in glob.glob(os.path.join(tempfile.gettempdir(), SOCKET_DIR_PREFIX + "*")):
        lock = os.path.join(path, _LOCK)
        try:
            if os.lstat(path).st_uid != os.getuid():
                continue
            fd = os.open(lock, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
        except OSError:  # not ours, not a server's, or its owner is between mkdtemp and the rename
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            continue  # a live server holds it
        finally:
            os.close(fd)
        with contextlib.suppress(OSError):
            shutil.rmtree(path)
            removed.append(path)
    removed += _remove_legacy_socket_dirs()
    if removed:
        log.info("stale_socket_dirs_removed", count=len(removed))
    return removed


def _remove_legacy_socket_dirs() -> list[str]:
    """Directories of servers before the lock (`frameseek-XXXXXXXX` holding only `service.sock`):
    stale when nothing listens on the socket any more."""
    removed = []
    for path in glob.glob(os.path.join(tempfile.gettempdir(), "frameseek-" + "[a-z0-9_]" * 8)):
        sock = os.path.join(path, "service.sock")
        try:
            if os.lstat(path).st_uid != os.getuid() or os.listdir(path) != ["service.sock"]:
                continue
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.connect(sock)
            continue  # a live (older) server
        except ConnectionRefusedError:
            pass
        except OSError:
            continue
        with contextlib.suppress(OSError):
            shutil.rmtree(path)
            removed.append(path)
    return removed
