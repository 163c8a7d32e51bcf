"""Multi-process serving (`frameseek serve --workers N`).

Why: one Python process saturates one core on gRPC overhead (a bare grpc.aio unary call is about
2,500 calls/s per core on the reference machine), so search throughput scales only with processes.

Design:
- N processes listen on the same port with SO_REUSEPORT; the kernel spreads incoming *connections*
  over them (a client's calls on one HTTP/2 connection all go to one process, so load spreads
  across many clients/channels, not within one channel).
- Process 0, the **primary**, is the ordinary server: it owns every write (ingest, delete,
  collections, snapshots, job resumption) and also serves searches. It starts the N-1 **replicas**
  once its own storage is loaded, restarts a replica that dies, and stops them on shutdown.
- A **replica** opens the data dir read-only (storage/replica.py: SQLite WAL reader + snapshot +
  vector log tail) and catches up with the catalog before every read, so an ingest or delete
  acknowledged by any process is visible to the next search on every process.
- RPCs that write (and the ingest-job RPCs, whose live progress is in the primary), arriving at a
  replica, are passed through (message, metadata, deadline, error status details) to the primary
  over a private loopback port; everything else is answered by the replica itself.
- Health is per process: each reports NOT_SERVING until its own index is loaded and while it shuts
  down. The port file is written once every process serves.
- A replica exits when its primary is gone (it cannot accept writes without it).

Each replica holds its own copy of the index in memory: raise --workers up to the number of cores
when searches saturate one core and memory allows (index size x workers).

Why this stays beside the native front end (benchmarks/load/README.md, 2026-12-06): the front end
answers unfiltered and video-filtered SearchByVector in C++ on every core, but passes label-filtered
searches (they need the catalog) and SearchByImage to one Python process, which stops near one
core; two processes served about twice the label-filtered QPS on 2 cores.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys

import grpc
import structlog

from .config import Settings

log = structlog.get_logger("frameseek.workers")

_SVC = "/frameseek.v1.FrameSeek/"
# Methods that change state (or follow an ingest running in the primary): forwarded by replicas.
FORWARDED = {
    _SVC + "CreateCollection": "uu",
    _SVC + "DeleteCollection": "uu",
    _SVC + "IngestVideo": "su",
    _SVC + "IngestImage": "uu",
    _SVC + "GetIngestJob": "uu",
    _SVC + "WatchIngestJob": "us",
    _SVC + "DeleteVideo": "uu",
    # replicas mirror the frame index only (storage/replica.py): the faces index is the primary's
    _SVC + "SearchByFace": "uu",
    _SVC + "ListPeople": "uu",
    _SVC + "GetVideoPeople": "uu",
    _SVC + "UpdatePerson": "uu",
    _SVC + "UpsertItems": "su",
    _SVC + "DeleteItems": "uu",
}
_HOP_HEADERS = {"user-agent", "content-type", "te", "authority"}
READY_FD_ENV = "FS_REPLICA_READY_FD"  # not FRAMESEEK_*: Settings forbids unknown FRAMESEEK_ variables


def _forward_md(ctx) -> list[tuple[str, str | bytes]]:
    """The caller's metadata minus what the transport sets itself (pseudo-headers, grpc-*)."""
    return [
        (k, v)
        for k, v in (ctx.invocation_metadata() or ())
        if not k.startswith((":", "grpc-")) and k not in _HOP_HEADERS
    ]


async def _reraise(ctx, exc: grpc.aio.AioRpcError) -> None:
    md = [(k, v) for k, v in (exc.trailing_metadata() or ()) if k not in ("grpc-status", "grpc-message")]
    await ctx.abort(exc.code(), exc.details() or "", trailing_metadata=tuple(md))


class PrimaryForwarder:
    """Pass-through of the write RPCs to the primary: `install()` replaces those methods on the
    replica's servicer instance (gRPC looks registered methods up before any generic handler, so
    the methods themselves are swapped), keeping metadata, deadline and the error's status details."""

    def __init__(self, primary_address: str, options: list):
        self.address, self.options = primary_address, options
        self._channel: grpc.aio.Channel | None = None
        self._stub = None

    def _s(self):
        if self._stub is None:  # created on first use, inside the server's event loop
            from .v1 import frameseek_pb2_grpc

            self._channel = grpc.aio.insecure_channel(self.address, options=self.options)
            self._stub = frameseek_pb2_grpc.FrameSeekStub(self._channel)
        return self._stub

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()

    def install(self, servicer) -> None:
        for method, kind in FORWARDED.items():
            name = method.rsplit("/", 1)[1]
            setattr(servicer, name, self._handler(name, kind))

    def _handler(self, name: str, kind: str):
        if kind == "us":

            async def us(request, ctx):
                try:
                    async for resp in getattr(self._s(), name)(
                        request, metadata=_forward_md(ctx), timeout=ctx.time_remaining()
                    ):
                        yield resp
                except grpc.aio.AioRpcError as exc:
                    await _reraise(ctx, exc)

            return us

        async def unary_response(request_or_iterator, ctx):  # "uu" and "su" (client stream)
            try:
                return await getattr(self._s(), name)(
                    request_or_iterator, metadata=_forward_md(ctx), timeout=ctx.time_remaining()
                )
            except grpc.aio.AioRpcError as exc:
                await _reraise(ctx, exc)

        return unary_response


class ReplicaSupervisor:
    """Runs in the primary: starts workers-1 replica processes, restarts any that dies, stops them."""

    def __init__(self, settings: Settings, public_port: int, primary_address: str):
        self.settings = settings
        host = settings.address.rsplit(":", 1)[0]
        env = {**os.environ}
        for field, value in settings.model_dump(mode="json").items():
            if value is not None:  # a settings group travels as JSON (FRAMESEEK_MEDIA='{...}')
                env[f"FRAMESEEK_{field.upper()}"] = json.dumps(value) if isinstance(value, dict) else str(value)
        env.update(
            FRAMESEEK_ADDRESS=f"{host}:{public_port}",
            FRAMESEEK_ROLE="replica",
            FRAMESEEK_PRIMARY_ADDRESS=primary_address,
            FRAMESEEK_METRICS_ADDRESS="",
            FRAMESEEK_DATA_DIR=os.path.abspath(settings.data_dir),
        )
        self.env = env
        self.procs: list[subprocess.Popen | None] = [None] * (settings.workers - 1)
        self.stopping = False
        self._monitor: asyncio.Task | None = None
        self._pending: set[asyncio.Task] = set()  # readiness waits of restarted replicas

    def _spawn(self, i: int) -> tuple[subprocess.Popen, int]:
        r, w = os.pipe()
        env = {**self.env, READY_FD_ENV: str(w)}
        p = subprocess.Popen([sys.executable, "-m", "frameseek.cli", "serve"], env=env, pass_fds=(w,))
        os.close(w)
        self.procs[i] = p
        log.info("replica_started", replica=i + 1, pid=p.pid)
        return p, r

    async def _await_ready(self, p: subprocess.Popen, r: int) -> bool:
        """A replica writes one byte to its ready pipe once it serves; EOF = it died first."""
        try:
            data = await asyncio.get_running_loop().run_in_executor(None, os.read, r, 1)
        finally:
            os.close(r)
        return bool(data)

    async def start(self) -> None:
        started = [self._spawn(i) for i in range(len(self.procs))]
        ok = await asyncio.gather(*(self._await_ready(p, r) for p, r in started))
        if not all(ok):
            raise RuntimeError("a search replica failed to start (see its log lines above)")
        log.info("workers_ready", workers=self.settings.workers)
        self._monitor = asyncio.get_running_loop().create_task(self._watch())

    async def _watch(self) -> None:
        while not self.stopping:
            await asyncio.sleep(0.5)
            for i, p in enumerate(self.procs):
                if p is not None and p.poll() is not None and not self.stopping:
                    log.warning("replica_exited", replica=i + 1, pid=p.pid, code=p.returncode)
                    await asyncio.sleep(1.0)  # no tight restart loop if it keeps failing
                    if not self.stopping:
                        new, r = self._spawn(i)  # it reports NOT_SERVING/UNAVAILABLE until loaded
                        t = asyncio.get_running_loop().create_task(self._await_ready(new, r))
                        self._pending.add(t)
                        t.add_done_callback(self._pending.discard)

    def signal_stop(self) -> None:
        self.stopping = True
        if self._monitor:
            self._monitor.cancel()
        for p in self.procs:
            if p is not None and p.poll() is None:
                p.send_signal(signal.SIGTERM)

    async def wait_stopped(self, timeout: float) -> None:
        loop = asyncio.get_running_loop()
        for p in self.procs:
            if p is None:
                continue
            try:
                await loop.run_in_executor(None, p.wait, timeout)
            except subprocess.TimeoutExpired:
                log.warning("replica_killed", pid=p.pid)
                p.kill()
                await loop.run_in_executor(None, p.wait)


def signal_ready() -> None:
    """Replica: tell the primary that this process serves (see ReplicaSupervisor._await_ready)."""
    fd = os.environ.pop(READY_FD_ENV, None)
    if fd is not None:
        try:
            os.write(int(fd), b"1")
        finally:
            os.close(int(fd))


async def watch_parent(stop: asyncio.Event) -> None:
    """Replica: stop when the primary that started it is gone."""
    ppid = os.getppid()
    while not stop.is_set():
        await asyncio.sleep(0.5)
        if os.getppid() != ppid:
            log.warning("primary_gone")
            stop.set()
