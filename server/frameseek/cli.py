"""The `frameseek` command line: run the server, and talk to one through frameseek.client.

Human-readable output by default, `--json` for machines. Clients find the server with
`--server HOST:PORT` or FRAMESEEK_SERVER (default 127.0.0.1:50051), and authenticate with
`--token` (FRAMESEEK_TOKEN), `--tls-ca` (FRAMESEEK_TLS_CA) and, for mTLS, `--tls-cert`/`--tls-key`
(FRAMESEEK_CLIENT_CERT/KEY: FRAMESEEK_TLS_CERT/KEY are `serve`'s own certificate and key).
"""

from __future__ import annotations

import json
import sys
import threading
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Annotated

import typer
from google.protobuf.json_format import MessageToDict
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn
from rich.table import Table

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


def _client(
    server: str | None,
    token: str | None = None,
    tls_ca: Path | None = None,
    tls_cert: Path | None = None,
    tls_key: Path | None = None,
):
    from .client import Client

    return Client(server, token=token, tls_ca=tls_ca, tls_cert=tls_cert, tls_key=tls_key)


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

        from .client import FrameSeekError

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
    from .client import FrameSeekError

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


@app.command()
def serve(
    address: Annotated[str | None, typer.Option(help="HOST:PORT to listen on [default: 127.0.0.1:50051]")] = None,
    data_dir: Annotated[str | None, typer.Option(help="data directory [default: ./data]")] = None,
    config: Annotated[Path | None, typer.Option(help="TOML config file (or FRAMESEEK_CONFIG)")] = None,
    metrics_address: Annotated[str | None, typer.Option(help="Prometheus HOST:PORT, '' = off")] = None,
    log_format: Annotated[str | None, typer.Option(help="console | json")] = None,
    port_file: Annotated[str | None, typer.Option(help="write the bound port here once listening")] = None,
    workers: Annotated[
        int | None,
        typer.Option(
            help="serving processes sharing the port: 1 primary (all "
            "writes) + N-1 search replicas; raise up to the core count "
            "when searches saturate one core [default: 1]"
        ),
    ] = None,
    front_end: Annotated[
        str | None,
        typer.Option(
            help="native: a C++ gRPC server answers SearchByVector and "
            "passes the rest to Python; python: grpc.aio only "
            "[default: native]"
        ),
    ] = None,
    tls_cert: Annotated[Path | None, typer.Option(help="serve TLS with this certificate chain (PEM)")] = None,
    tls_key: Annotated[Path | None, typer.Option(help="private key of --tls-cert (PEM)")] = None,
    tls_client_ca: Annotated[
        Path | None, typer.Option(help="require client certificates signed by this CA (mTLS)")
    ] = None,
    auth_tokens: Annotated[
        Path | None,
        typer.Option(
            help="TOML file of token entries (name, role, sha256): every call needs a bearer token (reloaded on SIGHUP)"
        ),
    ] = None,
    insecure: Annotated[
        bool | None,
        typer.Option(
            "--insecure", help="serve a non-loopback address without TLS and client authentication (refused otherwise)"
        ),
    ] = None,
    http_address: Annotated[
        str | None, typer.Option(help="HOST:PORT of the web console, e.g. 127.0.0.1:8080 [default: off]")
    ] = None,
) -> None:
    """Run the server until Ctrl-C / SIGTERM (then drain and flush)."""
    import asyncio

    from .config import load_settings
    from .logs import configure
    from .server import serve as run

    settings = load_settings(
        str(config) if config else None,
        address=address,
        data_dir=data_dir,
        metrics_address=metrics_address,
        log_format=log_format,
        workers=workers,
        front_end=front_end,
        tls_cert=_path(tls_cert),
        tls_key=_path(tls_key),
        tls_client_ca=_path(tls_client_ca),
        auth_tokens=_path(auth_tokens),
        insecure=insecure,
        http_address=http_address,
    )
    configure(settings.log_format, settings.log_level)
    asyncio.run(run(settings, port_file))


def _path(p: Path | None) -> str | None:
    return str(p) if p is not None else None


@app.command("hash-token")
def hash_token(
    name: Annotated[str, typer.Option(help="the entry's name")] = "client",
    role: Annotated[str, typer.Option(help="reader | writer | admin")] = "reader",
) -> None:
    """Print a token entry for --auth-tokens. The token is read from stdin (one line); with no
    stdin (a terminal) a new random token is made and printed to stderr, once."""
    import secrets

    from .api.auth import ROLES
    from .api.auth import hash_token as sha256_hex

    if role not in ROLES:
        raise typer.BadParameter(f"role must be one of {', '.join(ROLES)}", param_hint="--role")
    if sys.stdin.isatty():
        token = secrets.token_urlsafe(32)
        err.print(f"token (give it to the client, it is not stored): {token}", markup=False, highlight=False)
    else:
        token = sys.stdin.readline().strip()
        if not token:
            raise typer.BadParameter("no token on stdin")
    print(f'[[token]]\nname = {json.dumps(name)}\nrole = "{role}"\nsha256 = "{sha256_hex(token)}"')


def _collect(paths: list[Path]) -> list[Path]:
    files: list[Path] = []
    for p in paths:
        if p.is_dir():
            files += sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in VIDEO_EXT | IMAGE_EXT)
        elif p.is_file():
            files.append(p)
        else:
            raise typer.BadParameter(f"{p}: no such file or directory")
    return files


@app.command()
def ingest(
    paths: Annotated[list[Path], typer.Argument(help="files or directories (searched recursively)")],
    collection: Collection = "",
    label: Annotated[list[str] | None, typer.Option("--label", "-l", help="KEY=VALUE, repeatable")] = None,
    jobs: Annotated[int, typer.Option("--jobs", "-j", min=1, max=32, help="parallel uploads")] = 4,
    force: Annotated[bool, typer.Option(help="upload even when the same bytes are already indexed")] = False,
    server: Annotated[
        str | None,
        typer.Option(
            "--server",
            "-s",
            envvar="FRAMESEEK_SERVER",
            help="HOST:PORT of the server, or several comma-separated (servers of one scale-out library: "
            "uploads go to the least busy) [default: 127.0.0.1:50051]",
        ),
    ] = None,
    token: Token = None,
    tls_ca: TlsCa = None,
    tls_cert: TlsCert = None,
    tls_key: TlsKey = None,
    as_json: Json = False,
) -> None:
    """Index videos and images; skips files whose bytes are already indexed."""
    from .client import FrameSeekError, file_sha256

    labels = _labels(label)
    files = _collect(paths)
    results: list[dict] = []
    lock = threading.Lock()
    addresses = [a.strip() for a in (server or "").split(",") if a.strip()] or [None]
    servers = _Servers(addresses, lambda a: _client(a, token, tls_ca, tls_cert, tls_key))
    fs = servers.clients[0]  # the library is one: any server answers the hash look-ups
    try:
        progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=err,
            disable=as_json or not err.is_terminal,
        )
        total = progress.add_task(f"{len(files)} files", total=sum(f.stat().st_size for f in files))

        def one(path: Path) -> dict:
            rec = {"path": str(path)}
            try:
                sha = file_sha256(path)
                existing = None if force else fs.find_by_hash(sha, collection)
                if existing is not None:
                    progress.advance(total, path.stat().st_size)
                    return {**rec, "status": "skipped", "video": existing.name}
                if path.suffix.lower() in IMAGE_EXT:
                    where, r = servers.run(
                        lambda c: c.ingest_image(path, collection=collection, labels=labels, external_key=str(path))
                    )
                    progress.advance(total, path.stat().st_size)
                else:
                    where, r = servers.run(
                        lambda c: c.ingest_video(
                            path,
                            collection=collection,
                            labels=labels,
                            external_key=str(path),
                            progress=lambda n: progress.advance(total, n),
                            timeout=None,
                        )
                    )
                status = "exists" if r.already_exists else "ingested"
                return {
                    **rec,
                    "status": status,
                    "server": where or "",
                    "video": r.video.name,
                    "samples": r.video.sample_count,
                    "duration": r.video.duration_seconds,
                }
            except (FrameSeekError, OSError) as exc:
                return {
                    **rec,
                    "status": "failed",
                    "error": str(exc),
                    "reason": getattr(exc, "reason", type(exc).__name__),
                }

        with progress, ThreadPoolExecutor(jobs) as pool:
            for fut in as_completed([pool.submit(one, f) for f in files]):
                r = fut.result()
                with lock:
                    results.append(r)
                if not as_json:
                    mark = {"ingested": "+", "exists": "=", "skipped": "=", "failed": "!"}[r["status"]]
                    detail = r.get("video", "") if r["status"] != "failed" else r["error"]
                    err.print(f"{mark} {r['path']}  {detail}", markup=False, highlight=False)
    finally:
        servers.close()
    counts = {s: sum(r["status"] == s for r in results) for s in ("ingested", "exists", "skipped", "failed")}
    if as_json:
        print(json.dumps({"summary": counts, "files": sorted(results, key=lambda r: r["path"])}))
    else:
        out.print(
            f"{len(files)} files: {counts['ingested']} ingested, {counts['skipped'] + counts['exists']} "
            f"already indexed, {counts['failed']} failed",
            markup=False,
        )
    if counts["failed"]:
        raise typer.Exit(1)


def _print_hits(resp, as_json: bool) -> None:
    if as_json:
        print(json.dumps(_dict(resp)))
        return
    if not resp.hits:
        out.print("no match")
        return
    t = Table("score", "video", "key", "timestamps")
    for h in resp.hits:
        t.add_row(
            f"{h.score:.3f}",
            h.video.name,
            h.video.external_key,
            ", ".join(f"{_ts(m.timestamp_seconds)} ({m.score:.2f})" for m in h.matches),
        )
    out.print(t)


@app.command("search-image")
def search_image(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False)],
    k: Annotated[int, typer.Option("-k", "--k", min=1, max=1000, help="videos to return")] = 10,
    matches: Annotated[int, typer.Option(min=1, max=100, help="timestamps per video")] = 3,
    min_score: float = 0.0,
    collection: Collection = "",
    label: Annotated[list[str] | None, typer.Option("--label", "-l")] = None,
    server: Server = None,
    token: Token = None,
    tls_ca: TlsCa = None,
    tls_cert: TlsCert = None,
    tls_key: TlsKey = None,
    as_json: Json = False,
) -> None:
    """Find the videos (and timestamps) that show an image."""
    try:
        with _client(server, token, tls_ca, tls_cert, tls_key) as fs:
            resp = fs.search_by_image(
                file,
                collection=collection,
                k=k,
                min_score=min_score,
                max_matches_per_video=matches,
                labels=_labels(label),
            )
    except Exception as exc:
        _fail(exc, as_json)
    _print_hits(resp, as_json)


@app.command("search-face")
def search_face(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="a photo of the person")],
    k: Annotated[int, typer.Option("-k", "--k", min=1, max=1000, help="videos to return per face")] = 10,
    appearances: Annotated[int, typer.Option(min=1, max=100, help="appearances (tracks) per video")] = 5,
    min_score: Annotated[float, typer.Option(help="calibrated score threshold; 0 = the server's (0.5)")] = 0.0,
    face: Annotated[str | None, typer.Option(help="search only the face at X0,Y0,X1,Y1 (pixels)")] = None,
    collection: Collection = "",
    label: Annotated[list[str] | None, typer.Option("--label", "-l")] = None,
    server: Server = None,
    token: Token = None,
    tls_ca: TlsCa = None,
    tls_cert: TlsCert = None,
    tls_key: TlsKey = None,
    as_json: Json = False,
) -> None:
    """Find the videos and photos where the person in a photo appears (faces collections)."""
    box = None
    if face:
        try:
            box = tuple(float(x) for x in face.split(","))
        except ValueError:
            box = ()
        if len(box) != 4:
            raise typer.BadParameter("--face must be X0,Y0,X1,Y1")
    try:
        with _client(server, token, tls_ca, tls_cert, tls_key) as fs:
            resp = fs.search_by_face(
                file,
                collection=collection,
                face=box,
                k=k,
                min_score=min_score,
                max_matches_per_video=appearances,
                labels=_labels(label),
            )
    except Exception as exc:
        _fail(exc, as_json)
    if as_json:
        print(json.dumps(_dict(resp)))
        return
    for r in resp.results:
        q = r.query_face
        out.print(f"face at {q.x0:.0f},{q.y0:.0f},{q.x1:.0f},{q.y1:.0f}:")
        if not r.hits:
            out.print("  no match")
            continue
        t = Table("score", "video", "key", "best", "appearances")
        for h in r.hits:
            t.add_row(
                f"{h.score:.3f}",
                h.video.name,
                h.video.external_key,
                _ts(h.timestamp_seconds),
                ", ".join(f"{_ts(a.start_seconds)}-{_ts(a.end_seconds)}" for a in h.appearances),
            )
        out.print(t)


@app.command()
def people(
    video: Annotated[str | None, typer.Argument(help="a video's name: only the people in it")] = None,
    collection: Collection = "",
    name: Annotated[tuple[str, str] | None, typer.Option(help="PERSON DISPLAY_NAME: name a person, then list")] = None,
    server: Server = None,
    token: Token = None,
    tls_ca: TlsCa = None,
    tls_cert: TlsCert = None,
    tls_key: TlsKey = None,
    as_json: Json = False,
) -> None:
    """List the people of a faces collection, or of one video, with their appearances."""
    try:
        with _client(server, token, tls_ca, tls_cert, tls_key) as fs:
            if name:
                fs.update_person(name[0], name[1])
            found = fs.video_people(video) if video else list(fs.list_people(collection))
    except Exception as exc:
        _fail(exc, as_json)
    if as_json:
        print(json.dumps({"people": [_dict(p) for p in found]}))
        return
    t = Table("person", "name", "videos", "appearances")
    for p in found:
        apps = ", ".join(
            f"{a.video.rsplit('/', 1)[-1]}@{_ts(a.start_seconds)}-{_ts(a.end_seconds)}" for a in p.appearances[:6]
        )
        t.add_row(p.name, p.display_name, str(p.video_count), apps + (" ..." if len(p.appearances) > 6 else ""))
    out.print(t)


@app.command("search-video")
def search_video(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False)],
    k: Annotated[int, typer.Option("-k", "--k", min=1, max=1000, help="videos to return")] = 10,
    min_score: Annotated[float, typer.Option(help="0 = server's calibrated threshold, <0 = all candidates")] = 0.0,
    collection: Collection = "",
    server: Server = None,
    token: Token = None,
    tls_ca: TlsCa = None,
    tls_cert: TlsCert = None,
    tls_key: TlsKey = None,
    as_json: Json = False,
) -> None:
    """Find the indexed videos that a clip copies, with aligned segments."""
    try:
        with _client(server, token, tls_ca, tls_cert, tls_key) as fs:
            resp = fs.search_by_video(file, collection=collection, k=k, min_score=min_score, timeout=None)
    except Exception as exc:
        _fail(exc, as_json)
    if as_json:
        print(json.dumps(_dict(resp)))
        return
    if not resp.matches:
        out.print(f"no copy found ({resp.query_samples} query samples, {resp.query_duration_seconds:.1f} s)")
        return
    t = Table("score", "video", "key", "q.cov", "offset", "speed", "segments (query -> reference)")
    for m in resp.matches:
        segs = "; ".join(
            f"{_ts(s.query_start_seconds)}-{_ts(s.query_end_seconds)} -> "
            f"{_ts(s.reference_start_seconds)}-{_ts(s.reference_end_seconds)}"
            for s in m.segments
        )
        t.add_row(
            f"{m.score:.3f}",
            m.video.name,
            m.video.external_key,
            f"{m.query_coverage:.0%}",
            f"{m.offset_seconds:+.2f}s",
            f"{m.speed:.2f}",
            segs,
        )
    out.print(t)


@app.command()
def videos(
    collection: Collection = "",
    label: Annotated[list[str] | None, typer.Option("--label", "-l")] = None,
    limit: Annotated[int, typer.Option(min=1, help="most videos to list")] = 100,
    server: Server = None,
    token: Token = None,
    tls_ca: TlsCa = None,
    tls_cert: TlsCert = None,
    tls_key: TlsKey = None,
    as_json: Json = False,
) -> None:
    """List indexed videos, newest first."""
    try:
        with _client(server, token, tls_ca, tls_cert, tls_key) as fs:
            vids = []
            for v in fs.list_videos(collection, labels=_labels(label), page_size=min(limit, 1000)):
                vids.append(v)
                if len(vids) >= limit:
                    break
    except Exception as exc:
        _fail(exc, as_json)
    if as_json:
        print(json.dumps({"videos": [_dict(v) for v in vids]}))
        return
    t = Table("video", "key", "kind", "duration", "samples", "size", "labels")
    for v in vids:
        t.add_row(
            v.name,
            v.external_key,
            "image" if v.kind == 2 else "video",
            _ts(v.duration_seconds),
            str(v.sample_count),
            f"{v.size_bytes / 1e6:.1f} MB",
            ",".join(f"{k}={x}" for k, x in sorted(v.labels.items())),
        )
    out.print(t)


@app.command()
def delete(
    names: Annotated[list[str], typer.Argument(help="video names (collections/{c}/videos/{id})")],
    server: Server = None,
    token: Token = None,
    tls_ca: TlsCa = None,
    tls_cert: TlsCert = None,
    tls_key: TlsKey = None,
    as_json: Json = False,
) -> None:
    """Delete videos; they are gone from every search at once."""
    try:
        with _client(server, token, tls_ca, tls_cert, tls_key) as fs:
            for n in names:
                fs.delete_video(n)
                if not as_json:
                    out.print(f"deleted {n}", markup=False)
    except Exception as exc:
        _fail(exc, as_json)
    if as_json:
        print(json.dumps({"deleted": names}))


@app.command()
def stats(
    server: Server = None,
    token: Token = None,
    tls_ca: TlsCa = None,
    tls_cert: TlsCert = None,
    tls_key: TlsKey = None,
    as_json: Json = False,
) -> None:
    """Server and index statistics."""
    try:
        with _client(server, token, tls_ca, tls_cert, tls_key) as fs:
            s = fs.stats()
    except Exception as exc:
        _fail(exc, as_json)
    if as_json:
        print(json.dumps(_dict(s)))
        return
    out.print(
        f"frameseek {s.version}, up {s.uptime_seconds:.0f} s, SIMD {s.simd_level}, "
        f"{s.video_count} videos, {s.sample_count} samples, {s.storage_bytes / 1e6:.1f} MB on disk, "
        f"{s.active_ingests} ingests running",
        markup=False,
    )
    t = Table("collection", "videos", "samples", "hours")
    for c in s.collections:
        t.add_row(c.collection, str(c.video_count), str(c.sample_count), f"{c.total_duration_seconds / 3600:.2f}")
    out.print(t)


def _items_from_file(path: Path, key_column: str):
    """(external_key, vectors, labels) of every row of a .npy ([N, d]: one vector per item; [N, m, d]:
    m per item; keys "<file stem>/<row>") or .parquet file (columns `external_key`, `vector` or
    `vectors`, optional `labels` as a JSON object string; needs pyarrow)."""
    import numpy as np

    if path.suffix == ".npy":
        arr = np.load(path, mmap_mode="r")
        if arr.ndim not in (2, 3):
            raise typer.BadParameter(f"{path}: expected [N, dim] or [N, vectors, dim], got shape {arr.shape}")
        return ((f"{path.stem}/{i}", np.asarray(arr[i], dtype=np.float32), None) for i in range(len(arr))), len(arr)
    if path.suffix == ".parquet":
        try:
            import pyarrow.parquet as pq
        except ImportError:
            raise typer.BadParameter("reading .parquet needs pyarrow (pip install pyarrow)") from None
        table = pq.read_table(path)
        cols = set(table.column_names)
        vcol = "vector" if "vector" in cols else "vectors"
        if vcol not in cols or key_column not in cols:
            raise typer.BadParameter(f"{path}: needs columns {key_column!r} and 'vector' or 'vectors'")

        def rows():
            for batch in table.to_batches(1024):
                d = batch.to_pydict()
                for i, key in enumerate(d[key_column]):
                    labels = json.loads(d["labels"][i]) if "labels" in d and d["labels"][i] else None
                    yield str(key), np.asarray(d[vcol][i], dtype=np.float32), labels

        return rows(), table.num_rows
    raise typer.BadParameter(f"{path}: expected a .npy or .parquet file")


@app.command()
def upsert(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help=".npy or .parquet")],
    collection: Collection = "",
    key_column: Annotated[str, typer.Option(help="parquet column with the external keys")] = "external_key",
    batch_size: Annotated[int, typer.Option(min=1, max=10000, help="items per streamed message")] = 1000,
    server: Server = None,
    token: Token = None,
    tls_ca: TlsCa = None,
    tls_cert: TlsCert = None,
    tls_key: TlsKey = None,
    as_json: Json = False,
) -> None:
    """Insert or replace items (your own vectors) of a collection created with a vector dimension;
    an item with the same external key is replaced."""
    import time

    rows, n = _items_from_file(file, key_column)
    t0 = time.perf_counter()
    try:
        with _client(server, token, tls_ca, tls_cert, tls_key) as fs:
            r = fs.upsert_items(rows, collection=collection, batch_size=batch_size, timeout=None)
    except Exception as exc:
        _fail(exc, as_json)
    secs = time.perf_counter() - t0
    if as_json:
        print(json.dumps(_dict(r) | {"seconds": secs}))
        return
    out.print(
        f"upserted {r.item_count} items ({r.vector_count} vectors, {r.replaced_count} replaced) of {n} rows "
        f"in {secs:.1f} s ({r.vector_count / secs if secs else 0:.0f} vectors/s)"
    )


@app.command("create-collection")
def create_collection(
    collection_id: Annotated[str, typer.Argument(help="[a-z][a-z0-9-]{0,62}")],
    audio: Annotated[bool, typer.Option("--audio", help="also fingerprint every video's soundtrack")] = False,
    faces: Annotated[bool, typer.Option("--faces", help="also index faces (SearchByFace)")] = False,
    vector_dimension: Annotated[
        int, typer.Option("--vector-dimension", min=0, max=4096, help="own vectors of this dimension, no model")
    ] = 0,
    fps: Annotated[float, typer.Option(help="frames sampled per second; 0 = server default")] = 0.0,
    metric: Annotated[str, typer.Option(help="cosine or l2")] = "cosine",
    description: Annotated[str, typer.Option(help="free text")] = "",
    server: Server = None,
    token: Token = None,
    tls_ca: TlsCa = None,
    tls_cert: TlsCert = None,
    tls_key: TlsKey = None,
    as_json: Json = False,
) -> None:
    """Create a collection (its settings are fixed from then on)."""
    try:
        with _client(server, token, tls_ca, tls_cert, tls_key) as fs:
            c = fs.create_collection(
                collection_id,
                fps=fps,
                metric=metric,
                description=description,
                audio=audio,
                faces=faces,
                vector_dimension=vector_dimension,
            )
    except Exception as exc:
        _fail(exc, as_json)
    if as_json:
        print(json.dumps(_dict(c)))
        return
    what = "own vectors" if c.own_vectors else c.model
    out.print(f"created {c.name} ({what}, {c.dimension}-d{', faces' if c.faces else ''}{', audio' if c.audio else ''})")


@app.command("search-audio")
def search_audio(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="an audio file or a video")],
    k: Annotated[int, typer.Option("-k", "--k", min=1, max=1000, help="videos to return")] = 10,
    min_score: Annotated[float, typer.Option(help="0 = server's calibrated threshold, <0 = all matches")] = 0.0,
    collection: Collection = "",
    server: Server = None,
    token: Token = None,
    tls_ca: TlsCa = None,
    tls_cert: TlsCert = None,
    tls_key: TlsKey = None,
    as_json: Json = False,
) -> None:
    """Find the indexed videos whose soundtrack contains this audio, with where and how long."""
    try:
        with _client(server, token, tls_ca, tls_cert, tls_key) as fs:
            resp = fs.search_by_audio(file, collection=collection, k=k, min_score=min_score, timeout=None)
    except Exception as exc:
        _fail(exc, as_json)
    if as_json:
        print(json.dumps(_dict(resp)))
        return
    if not resp.matches:
        out.print(f"no match ({resp.query_duration_seconds:.1f} s of audio)")
        return
    t = Table("score", "video", "key", "query", "reference", "matched", "BER")
    for m in resp.matches:
        t.add_row(
            f"{m.score:.3f}",
            m.video.name,
            m.video.external_key,
            _ts(m.query_start_seconds),
            _ts(m.reference_start_seconds),
            f"{m.duration_seconds:.1f}s",
            f"{m.bit_error_rate:.3f}",
        )
    out.print(t)


@app.command()
def collections(
    server: Server = None,
    token: Token = None,
    tls_ca: TlsCa = None,
    tls_cert: TlsCert = None,
    tls_key: TlsKey = None,
    as_json: Json = False,
) -> None:
    """List collections."""
    try:
        with _client(server, token, tls_ca, tls_cert, tls_key) as fs:
            cs = list(fs.list_collections())
    except Exception as exc:
        _fail(exc, as_json)
    if as_json:
        print(json.dumps({"collections": [_dict(c) for c in cs]}))
        return
    t = Table("collection", "model", "dim", "fps", "videos", "samples")
    for c in cs:
        t.add_row(
            c.name + (" (default)" if c.is_default else ""),
            c.model,
            str(c.dimension),
            f"{c.sampling.fps:g}",
            str(c.video_count),
            str(c.sample_count),
        )
    out.print(t)


try:  # the media stream's `frameseek embed` (frameseek/media_cli.py), when installed
    from .media_cli import register as _register_media
except ImportError:
    _register_media = None
if _register_media is not None:
    _register_media(app)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
