"""Runs the console's Starlette app with uvicorn inside the gRPC server's event loop."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket

import structlog
import uvicorn

from ..config import Settings
from ..v1 import frameseek_pb2 as pb
from .app import build_app
from .rpc import Api
from .store import ConsoleMedia

log = structlog.get_logger("frameseek.console")


class _Uvicorn(uvicorn.Server):
    """uvicorn without its own signal handling: `frameseek serve` owns SIGINT/SIGTERM (drain, flush)."""

    def install_signal_handlers(self) -> None:  # uvicorn < 0.29
        pass

    @contextlib.contextmanager
    def capture_signals(self):  # uvicorn >= 0.29
        yield


def split_address(address: str) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"http_address {address!r} must be HOST:PORT")
    return host.strip("[]") or "127.0.0.1", int(port)


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


class Console:
    """Created with the server (before its storage loads, so that no ingest misses the thumbnail
    hooks); `start(grpc_address)` binds the HTTP port once the gRPC server listens."""

    def __init__(self, settings: Settings, service) -> None:
        self.settings = settings
        self.media = ConsoleMedia(settings.data_dir, settings.console_thumbnail_width, settings.console_keep_originals)
        if hasattr(service.storage, "add_observer"):
            service.storage.add_observer(self.media)
            service.ingest.ingest_frames = self.media.ingest_frames
        else:
            log.warning("console_thumbnails_off", reason="the storage backend has no commit observer")
        self.api: Api | None = None
        self._server: _Uvicorn | None = None
        self._task: asyncio.Task | None = None
        self.url = ""

    async def start(self, grpc_address: str) -> str:
        """Serve HTTP on settings.http_address (port 0 = a free one); returns the console's URL."""
        host, port = split_address(self.settings.http_address)
        if not is_loopback(host):
            log.warning(
                "console_public",
                address=self.settings.http_address,
                reason="the web console has no authentication: anyone who reaches it can read and delete the library",
            )
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            sock.close()
            raise RuntimeError(f"could not bind the web console to {self.settings.http_address}: {exc}") from None
        sock.listen(128)
        sock.setblocking(False)
        bound = sock.getsockname()[1]
        self.api = Api(grpc_address, self.settings.max_receive_message_bytes)
        loop = asyncio.get_running_loop()
        self.media.follow_job = lambda job_id, ended: asyncio.run_coroutine_threadsafe(
            self._follow(job_id, ended), loop
        )
        loopback_names = ["127.0.0.1", "localhost", "::1", "[::1]", host]
        app = build_app(
            self.api,
            self.media,
            self.settings.media.max_image_bytes,
            allowed_hosts=loopback_names if is_loopback(host) else None,
        )
        config = uvicorn.Config(
            app, log_config=None, access_log=False, lifespan="off", timeout_keep_alive=30, timeout_graceful_shutdown=2
        )  # open event streams end at shutdown
        self._server = _Uvicorn(config)
        self._task = asyncio.get_running_loop().create_task(self._server.serve(sockets=[sock]))
        while not self._server.started:
            if self._task.done():  # failed before it served
                self._task.result()
                raise RuntimeError("the web console stopped at start-up")
            await asyncio.sleep(0.01)
        self.url = f"http://{'[' + host + ']' if family == socket.AF_INET6 else host}:{bound}/"
        log.info("console", url=self.url)
        return self.url

    async def _follow(self, job_id: str, ended) -> None:
        """Watch an ingest the thumbnails hook saw start; `ended()` once it is over."""
        try:
            async for job in self.api.watch_job(f"ingestJobs/{job_id}"):
                if job.state in (pb.INGEST_JOB_STATE_SUCCEEDED, pb.INGEST_JOB_STATE_FAILED):
                    ended()
                    return
        except Exception as exc:
            # the server is stopping: the ingest may still commit while it drains (its thumbnails
            # then move into place as usual), or resume at the next start, whose sweep drops this
            # folder and hooks the job again
            log.info("console_job_unfollowed", job=job_id, error=str(exc))

    async def stop(self) -> None:
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._task, self.settings.shutdown_grace_s + 5)
        if self.api is not None:
            await self.api.close()
