"""The grpc.aio server: FrameSeek servicer + grpc.health.v1 + reflection + Prometheus metrics.

Start-up order: the port is bound and serving at once (health NOT_SERVING, FrameSeek calls answer
UNAVAILABLE/NOT_READY) while the storage recovers in a thread; then health turns SERVING. What is
per stored video and not needed to answer correctly runs after SERVING in low-priority threads:
the catalog rows' checksums (FrameSeekService._check_rows) and the Video messages that searches
return (_warm_messages; until a hit's message is there its search is answered by the Python service).
Shutdown (SIGTERM/SIGINT or `stop()`): health NOT_SERVING, stop accepting, drain in-flight calls
for `shutdown_grace_s`, then flush storage (index snapshot) and exit.
With `workers` > 1 the port is shared with search replica processes (see workers.py).
With the native front end (the default, front_end.py) a C++ gRPC server holds the public port,
answers SearchByVector itself and passes everything else to this grpc.aio server, which then
listens on a private Unix socket only.
Security (auth.py): TLS/mTLS on the public port, bearer tokens checked by an interceptor on every
call (and by the native front end on the calls it answers itself), the token file reloaded on
SIGHUP; a non-loopback address without TLS and client authentication refuses to start unless
`insecure` is set.
"""

from __future__ import annotations

import asyncio
import faulthandler
import gc
import signal
import sys
import threading
import time

import grpc
import structlog
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from .api.auth import (
    AuthInterceptor,
    Authorizer,
    ConfigError,
    exposure_gaps,
    insecure_warning,
    load_tls,
    refusal,
    server_credentials,
)
from .api.servicer import FrameSeekServicer, add_servicer
from .config import Settings
from .service import BACKEND_RETRY_FIRST_S, BACKEND_RETRY_MAX_S, FrameSeekService, low_priority
from .storage import StorageError
from .v1 import frameseek_pb2

#: how often health probes PostgreSQL and Milvus while they answer (vector_store = milvus)
BACKEND_PROBE_S = 2.0

log = structlog.get_logger("frameseek.server")
SERVICE_NAME = frameseek_pb2.DESCRIPTOR.services_by_name["FrameSeek"].full_name


def grpc_options(s: Settings) -> list[tuple[str, int]]:
    return [
        ("grpc.max_receive_message_length", s.max_receive_message_bytes),
        ("grpc.max_send_message_length", s.max_send_message_bytes),
        ("grpc.keepalive_time_ms", int(s.keepalive_time_s * 1000)),
        ("grpc.keepalive_timeout_ms", int(s.keepalive_timeout_s * 1000)),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
        ("grpc.max_connection_idle_ms", int(s.max_connection_idle_s * 1000)),
        # a second server on a busy port must fail, not share it silently - unless this is one of
        # the `workers` processes that share the port on purpose (workers.py)
        ("grpc.so_reuseport", 1 if s.workers > 1 else 0),
    ]


class InsecureBind(ConfigError):
    """A non-loopback address without TLS and client authentication, and no `insecure`."""


def console_refusal(settings: Settings, tls: bool) -> bool:
    """The web console has no login of its own and calls the API over a plaintext channel without a
    token: it may not open a way around TLS or tokens, nor serve a non-loopback address unless
    `insecure` says so (ConfigError, a one-line exit). True when it serves a public address."""
    from .console.server import is_loopback, split_address

    if tls or settings.auth_tokens:
        raise ConfigError(
            "the web console (--http-address) has no login and cannot call a server that "
            "requires TLS or tokens; serve it without --http-address, or run a separate "
            "loopback-only server for the console"
        )
    host, _ = split_address(settings.http_address)
    if not is_loopback(host) and not settings.insecure:
        raise InsecureBind(
            f"refusing to serve the web console on {settings.http_address}: it has no "
            "authentication (anyone who reaches it can read and delete the library); bind it to "
            "127.0.0.1, or pass --insecure to serve it anyway"
        )
    return not is_loopback(host)


class FrameSeekServer:
    def __init__(self, settings: Settings, service: FrameSeekService | None = None):
        """auth.ConfigError (InsecureBind among them) when the security settings do not hold up."""
        self.settings = settings
        self.tls = load_tls(settings.tls_cert, settings.tls_key, settings.tls_client_ca)
        self.authorizer = Authorizer(settings.auth_tokens) if settings.auth_tokens else None
        gaps = exposure_gaps(
            settings.address,
            self.tls,
            self.authorizer is not None or (self.tls is not None and self.tls.client_ca is not None),
        )
        if gaps and not settings.insecure:
            raise InsecureBind(refusal(settings.address, gaps))
        public_console = bool(settings.http_address) and console_refusal(settings, self.tls is not None)
        # from here on `insecure` says whether the override is in effect (GetStats reports it)
        settings.insecure = bool(gaps) or public_console
        if gaps and settings.role == "primary":
            log.warning("insecure", message=insecure_warning(settings.address, gaps))
        self.service = service or FrameSeekService(settings)
        self.health = health.aio.HealthServicer() if hasattr(health, "aio") else health.HealthServicer()
        interceptors = [AuthInterceptor(self.authorizer)] if self.authorizer else []
        self.server = grpc.aio.server(options=grpc_options(settings), interceptors=interceptors)
        self.servicer = servicer = FrameSeekServicer(self.service)
        self.forwarder = None
        if settings.role == "replica":  # writes go to the primary process (workers.py)
            from .workers import PrimaryForwarder

            if not settings.primary_address:
                raise RuntimeError("a replica needs primary_address")
            self.forwarder = PrimaryForwarder(settings.primary_address, grpc_options(settings)[:2])
            self.forwarder.install(servicer)
        add_servicer(servicer, self.server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable_server_reflection(
            (SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME),
            self.server,
        )
        self.front = self._front_end(settings)
        if self.front is not None:
            if not self.server.add_insecure_port(self.front.backend_address):
                raise RuntimeError(f"could not bind {self.front.backend_address}")
            self.port = 0  # bound by start()
        else:
            self.port = (
                self.server.add_secure_port(settings.address, server_credentials(self.tls))
                if self.tls
                else self.server.add_insecure_port(settings.address)
            )
            if self.port == 0:
                raise RuntimeError(f"could not bind {settings.address}")
        self.host = settings.address.rsplit(":", 1)[0]
        self.private_port = 0  # primary with workers > 1: where replicas forward writes
        if settings.workers > 1 and settings.role == "primary":
            self.private_port = self.server.add_insecure_port("127.0.0.1:0")
        self._loader: asyncio.Task | None = None
        self.warmer: threading.Thread | None = None  # after SERVING: _warm_messages
        self._watcher: asyncio.Task | None = None
        self._metrics = None
        self.console = None  # the web console (HTTP), before the storage loads: it hooks ingest and deletes
        if settings.http_address and settings.role == "primary":
            from .console import Console

            self.console = Console(settings, self.service)
        self.load_error: BaseException | None = None

    def _front_end(self, settings: Settings):
        if settings.front_end != "native" or settings.role != "primary":
            return None
        from . import front_end

        if settings.workers > 1:
            log.warning("front_end_python", reason="workers > 1 (the native front end uses every core itself)")
            return None
        if not front_end.available():
            log.warning("front_end_python", reason="the native module was built without gRPC C++ (libgrpc++-dev)")
            return None
        fe = front_end.NativeFrontEnd(
            self.service, self.servicer.tr.video_bytes, self.tls, self.authorizer.entries if self.authorizer else None
        )
        from prometheus_client import REGISTRY

        from .metrics import FrontEndCollector

        if FrameSeekServer._collector is not None:  # one per process: the newest server's
            REGISTRY.unregister(FrameSeekServer._collector)
        FrameSeekServer._collector = FrontEndCollector(fe)
        REGISTRY.register(FrameSeekServer._collector)
        return fe

    _collector = None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def reload_tokens(self) -> bool:
        """SIGHUP: re-read the token file into both front ends; a bad file keeps the old table."""
        if self.authorizer is None:
            log.info("sighup_ignored", reason="no auth_tokens file configured")
            return False
        try:
            entries = self.authorizer.reload()
        except ConfigError as exc:
            log.error("auth_tokens_reload_failed", error=str(exc), kept=len(self.authorizer.entries))
            return False
        if self.front is not None:
            self.front.set_tokens(entries)
        log.info("auth_tokens_reloaded", tokens=len(entries))
        return True

    async def _set_health(self, status) -> None:
        for name in ("", SERVICE_NAME):
            r = self.health.set(name, status)
            if asyncio.iscoroutine(r):
                await r
            if self.front is not None:
                self.front.set_health(name, status)

    async def start(self) -> int:
        """Start serving; the index loads in the background. Returns the bound port."""
        await self._set_health(health_pb2.HealthCheckResponse.NOT_SERVING)
        await self.server.start()
        if self.front is not None:
            try:
                self.port = await asyncio.get_running_loop().run_in_executor(
                    None, self.front.start, self.settings.address, grpc_options(self.settings)
                )
            except RuntimeError:
                await self.server.stop(0)
                self.front.shutdown(0)
                raise RuntimeError(f"could not bind {self.settings.address}") from None
        if self.settings.metrics_address:
            self._start_metrics()
        if self.console is not None:
            host = self.host if self.host not in ("0.0.0.0", "[::]", "") else "127.0.0.1"
            try:
                await self.console.start(f"{host}:{self.port}")
            except BaseException:
                await self.server.stop(0)
                if self.front is not None:
                    self.front.shutdown(0)
                raise
        self._loader = asyncio.get_running_loop().create_task(self._load())
        log.info("listening", address=self.address, data_dir=self.settings.data_dir)
        return self.port

    def _start_metrics(self) -> None:
        from prometheus_client import start_http_server

        host, _, port = self.settings.metrics_address.rpartition(":")
        try:
            self._metrics = start_http_server(int(port), addr=host or "127.0.0.1")
            log.info("metrics", address=self.settings.metrics_address)
        except OSError as exc:  # metrics are not worth refusing to serve for
            log.warning("metrics_unavailable", address=self.settings.metrics_address, error=str(exc))

    async def _load(self) -> None:
        try:
            await self.service.start()
            if self.front is not None:
                info = await asyncio.get_running_loop().run_in_executor(None, self.front.attach)
                log.info("front_end", address=self.address, **info)
        except BaseException as exc:
            self.load_error = exc
            log.exception("startup_failed")
            raise
        await self._set_health(health_pb2.HealthCheckResponse.SERVING)
        self.warmer = threading.Thread(target=self._warm_messages, name="warm-messages", daemon=True)
        self.warmer.start()
        if hasattr(self.service.storage, "check"):
            self._watcher = asyncio.get_running_loop().create_task(self._watch_backends())

    def _warm_messages(self) -> None:
        """After SERVING, at low priority: encode the Video messages of the stored videos (~20 us
        each) that searches return - into the native front end's table (its fast path passes a
        search through to Python until every hit's message is there) or, without it, into the
        servicer's cache (a search encodes what it misses). Before this moved here, a restart
        spent ~1 s per 50k videos on it before SERVING."""
        low_priority()
        t0 = time.perf_counter()
        stop = lambda: self.service.closing  # noqa: E731
        if self.front is not None:
            n = self.front.fill_messages(stop)
        else:
            tr = self.servicer.tr
            n = tr.warm(self.service.videos.records(tr.VIDEO_CACHE), stop)
        log.info("video_messages_warm", videos=n, seconds=round(time.perf_counter() - t0, 3))

    async def _watch_backends(self) -> None:
        """External storage (vector_store = milvus): health follows whether PostgreSQL and Milvus
        answer, probed every BACKEND_PROBE_S while they do and with exponential backoff while they
        do not (calls meanwhile fail UNAVAILABLE / BACKEND_UNAVAILABLE on their own)."""
        loop = asyncio.get_running_loop()
        serving, delay = True, BACKEND_PROBE_S
        while not self.service.closing:
            await asyncio.sleep(delay)
            try:
                await loop.run_in_executor(None, self.service.storage.check)
                ok, error = True, ""
            except StorageError as exc:
                ok, error = False, str(exc)
            if ok != serving and not self.service.closing:
                log.warning("backends_unavailable", error=error) if not ok else log.info("backends_available")
                status = health_pb2.HealthCheckResponse
                await self._set_health(status.SERVING if ok else status.NOT_SERVING)
            serving = ok
            delay = BACKEND_PROBE_S if ok else min(max(delay, BACKEND_RETRY_FIRST_S) * 2, BACKEND_RETRY_MAX_S)

    async def wait_ready(self) -> None:
        await asyncio.shield(self._loader)

    async def stop(self, grace: float | None = None) -> None:
        grace = self.settings.shutdown_grace_s if grace is None else grace
        log.info("stopping", grace_s=grace)
        await self._set_health(health_pb2.HealthCheckResponse.NOT_SERVING)
        self.service.closing = True
        if self.console is not None:
            await self.console.stop()
        if self.front is not None:
            # the front end drains its calls, passed-through ones included, while this loop serves them
            await asyncio.get_running_loop().run_in_executor(None, self.front.shutdown, grace)
            grace = min(grace, 1.0)
        await self.server.stop(grace)
        if self._watcher is not None:
            self._watcher.cancel()
        if self._loader and not self._loader.done():
            try:
                await self._loader
            except BaseException:
                pass
        await self.service.close()
        if self.forwarder is not None:
            await self.forwarder.close()
        if self._metrics:
            srv = self._metrics[0] if isinstance(self._metrics, tuple) else None
            if srv is not None:
                srv.shutdown()
                srv.server_close()
        log.info("stopped")

    async def wait(self) -> None:
        await self.server.wait_for_termination()


async def create_server(settings: Settings) -> tuple[FrameSeekServer, int]:
    """Build and start a server; returns it and the bound port (useful with address host:0)."""
    srv = FrameSeekServer(settings)
    return srv, await srv.start()


#: the cycle collector's youngest generation runs after this many new container objects
#: (CPython's default: 700). A server keeps a record per stored video and makes a few objects per
#: item it commits; at the default, collections cost a one-vector UpsertItems item ~6 us of the
#: GIL (13 %) at 100k items, and 50,000 measured the same as no collector at all.
GC_FIRST_GENERATION = 50_000


def tune_gc() -> None:
    """The serving process's collector settings (GC_FIRST_GENERATION; the older generations keep
    CPython's ratios)."""
    _, second, third = gc.get_threshold()
    gc.set_threshold(GC_FIRST_GENERATION, second, third)


def _freeze_startup_objects(loader: asyncio.Task) -> None:
    """Once the storage is loaded: what start-up made (a record per stored video, the caches)
    lives as long as the server, so the collector stops scanning it (gc.freeze)."""
    if not loader.cancelled() and loader.exception() is None:
        gc.freeze()


async def serve(settings: Settings, port_file: str | None = None) -> None:
    """Run until SIGINT/SIGTERM, then shut down gracefully. `port_file` receives the bound port
    (atomically) once the server listens - for supervisors and tests that bind port 0."""
    import os

    tune_gc()
    # `kill -USR1 <pid>` writes every Python thread's stack to stderr (the log) and the server goes
    # on serving: where a stuck call waits, seen without stopping it (C++ threads are not shown)
    faulthandler.register(signal.SIGUSR1, file=sys.stderr, all_threads=True)
    try:
        srv, port = await create_server(settings)
    except ConfigError as exc:  # security settings (auth.py): a clear message, no traceback
        raise SystemExit(f"frameseek: {exc}") from None

    def write_port_file() -> None:
        if port_file:
            tmp = port_file + ".tmp"
            with open(tmp, "w") as f:
                f.write(str(port))
            os.replace(tmp, port_file)

    multi = settings.workers > 1 and settings.role == "primary"
    if not multi:
        write_port_file()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    supervisor = None

    def reload() -> None:
        srv.reload_tokens()
        for p in supervisor.procs if supervisor is not None else ():  # each replica reloads its own
            if p is not None and p.poll() is None:
                p.send_signal(signal.SIGHUP)

    loop.add_signal_handler(signal.SIGHUP, reload)
    srv._loader.add_done_callback(_freeze_startup_objects)
    waiter = loop.create_task(stop.wait())
    done, _ = await asyncio.wait({waiter, srv._loader}, return_when=asyncio.FIRST_COMPLETED)
    if srv._loader in done and srv._loader.exception() is not None:
        await srv.stop(0)
        raise SystemExit(f"frameseek: start-up failed: {srv._loader.exception()}")
    if srv._loader in done and not stop.is_set():
        if settings.role == "replica":
            from .workers import signal_ready, watch_parent

            signal_ready()
            loop.create_task(watch_parent(stop))
        elif multi:
            from .workers import ReplicaSupervisor

            supervisor = ReplicaSupervisor(settings, port, f"127.0.0.1:{srv.private_port}")
            try:
                await supervisor.start()
            except Exception as exc:
                supervisor.signal_stop()
                await supervisor.wait_stopped(settings.shutdown_grace_s + 30)
                await srv.stop(0)
                raise SystemExit(f"frameseek: start-up failed: {exc}") from None
            write_port_file()  # with workers: once every process serves
    await waiter
    if supervisor is not None:  # replicas drain while the primary does (their writes still forward)
        supervisor.signal_stop()
    await srv.stop()
    if supervisor is not None:
        await supervisor.wait_stopped(settings.shutdown_grace_s + 30)
