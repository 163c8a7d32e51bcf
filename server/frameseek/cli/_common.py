"""What every `frameseek` command shares: the typer app, the consoles, the connection options and
the helpers that print results and errors."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import inspect
import json
import threading
import typing
from pathlib import Path
from typing import Annotated, Any

import typer
from google.protobuf.json_format import MessageToDict
from rich.console import Console

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    help="frameseek: find where images and video clips appear inside a video library.",
)
out = Console()
if not out.is_terminal:  # piped output: never truncate names to an 80-column guess
    out = Console(width=250)
err = Console(stderr=True)

VIDEO_EXT = {
    ".mp4",
    ".m4v",
    ".mov",
    ".avi",
    ".mkv",
    ".webm",
    ".mpg",
    ".mpeg",
    ".ts",
    ".wmv",
    ".flv",
    ".3gp",
    ".ogv",
    ".gif",
}
IMAGE_EXT = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"}

Server = Annotated[
    str | None,
    typer.Option(
        "--server", "-s", envvar="FRAMESEEK_SERVER", help="HOST:PORT of the server [default: 127.0.0.1:50051]"
    ),
]
Json = Annotated[bool, typer.Option("--json", help="print JSON instead of text")]
Collection = Annotated[str, typer.Option("--collection", "-c", help="collection (default: the server's default)")]
TopK = Annotated[int, typer.Option("-k", "--k", min=1, max=1000, help="videos to return")]
Token = Annotated[
    str | None,
    typer.Option(
        "--token", envvar="FRAMESEEK_TOKEN", show_default=False, help="bearer token of a server with --auth-tokens"
    ),
]
TlsCa = Annotated[
    Path | None, typer.Option("--tls-ca", envvar="FRAMESEEK_TLS_CA", help="connect with TLS, trusting this CA (PEM)")
]
TlsCert = Annotated[
    Path | None,
    typer.Option(
        "--tls-cert", envvar="FRAMESEEK_CLIENT_CERT", help="client certificate (PEM) for a server that requires one"
    ),
]
TlsKey = Annotated[Path | None, typer.Option("--tls-key", envvar="FRAMESEEK_CLIENT_KEY", help="its private key")]


@dataclasses.dataclass(frozen=True)
class Connection:
    """How to reach the server: the options `connected` adds to a command."""

    server: str | None = None
    token: str | None = None
    tls_ca: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None

    def client(self, server: str | None = None):
        """A client of `server` (default: --server) with these credentials."""
        from ..client import Client

        return Client(
            server or self.server, token=self.token, tls_ca=self.tls_ca, tls_cert=self.tls_cert, tls_key=self.tls_key
        )

    @contextlib.contextmanager
    def session(self, as_json: bool):
        """A client for a command's calls: an error in them ends the command with its message
        (text, or JSON with --json) and exit status 1."""
        try:
            with self.client() as fs:
                yield fs
        except typer.Exit:
            raise
        except Exception as exc:
            _fail(exc, as_json)


_CONNECTION_OPTIONS = {"server": Server, "token": Token, "tls_ca": TlsCa, "tls_cert": TlsCert, "tls_key": TlsKey}


def connected(command=None, *, server: Any = Server):
    """Gives a command the connection options (--server, --token, --tls-ca, --tls-cert, --tls-key,
    listed before --json) and calls it with them as its `conn: Connection` parameter. `server`: the
    --server option's own annotation (ingest takes several servers)."""

    def wrap(fn):
        options = {**_CONNECTION_OPTIONS, "server": server}
        hints = typing.get_type_hints(fn, include_extras=True)
        own = [
            inspect.Parameter(p.name, inspect.Parameter.KEYWORD_ONLY, default=p.default, annotation=hints[p.name])
            for p in inspect.signature(fn).parameters.values()
            if p.name != "conn"
        ]
        added = [
            inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=a) for n, a in options.items()
        ]
        at = next((i for i, p in enumerate(own) if p.name == "as_json"), len(own))
        params = [*own[:at], *added, *own[at:]]

        @functools.wraps(fn)
        def run(**kw):
            return fn(conn=Connection(**{n: kw.pop(n) for n in options}), **kw)

        # typer reads the options from the signature and the annotations
        run.__signature__ = inspect.Signature(params, return_annotation=None)
        run.__annotations__ = {p.name: p.annotation for p in params}
        return run

    return wrap(command) if command is not None else wrap


class _Servers:
    """`ingest --server a:50051,b:50051`: each upload goes to the server with the fewest uploads in
    flight (ties: the first listed), so a fast server takes more; a server that answers
    UNAVAILABLE (down, restarting, its backends unreachable) hands the file to the next one."""

    def __init__(self, addresses: list[str], connect):
        self.addresses = addresses
        self.clients = [connect(a) for a in addresses]
        self.busy = [0] * len(addresses)
        self.lock = threading.Lock()

    def run(self, call):
        """call(client) on the least busy server, then on the others while they are UNAVAILABLE;
        returns (address, result)."""
        import grpc

        from ..client import FrameSeekError

        tried: set[int] = set()
        while True:
            with self.lock:
                i = min((b, i) for i, b in enumerate(self.busy) if i not in tried)[1]
                self.busy[i] += 1
            try:
                return self.addresses[i], call(self.clients[i])
            except FrameSeekError as exc:
                tried.add(i)
                if exc.code != grpc.StatusCode.UNAVAILABLE or len(tried) == len(self.clients):
                    raise
            finally:
                with self.lock:
                    self.busy[i] -= 1

    def close(self) -> None:
        for c in self.clients:
            c.close()


def _dict(msg) -> dict:
    return MessageToDict(msg, preserving_proto_field_name=True)


def _fail(exc: Exception, as_json: bool) -> None:
    from ..client import FrameSeekError

    if isinstance(exc, FrameSeekError):
        payload = {"error": {"code": exc.code.name, "reason": exc.reason, "message": exc.message}}
        text = f"error: {exc.message} ({exc.code.name}{', ' + exc.reason if exc.reason else ''})"
    else:
        payload = {"error": {"code": "CLIENT", "reason": type(exc).__name__, "message": str(exc)}}
        text = f"error: {exc}"
    if as_json:
        print(json.dumps(payload))
    else:
        err.print(text, markup=False)
    raise typer.Exit(1)


def _labels(items: list[str] | None) -> dict:
    out_: dict[str, str] = {}
    for it in items or []:
        k, sep, v = it.partition("=")
        if not sep:
            raise typer.BadParameter(f"label {it!r} must be KEY=VALUE")
        out_[k] = v
    return out_


def _ts(t: float) -> str:
    m, s = divmod(t, 60)
    h, m = divmod(int(m), 60)
    return f"{h:d}:{m:02d}:{s:06.3f}" if h else f"{m:d}:{s:06.3f}"


def _path(p: Path | None) -> str | None:
    return str(p) if p is not None else None
