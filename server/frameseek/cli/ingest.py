"""`frameseek ingest`: parallel uploads of files and folders, to one server or several."""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn

from ._common import (
    IMAGE_EXT,
    VIDEO_EXT,
    Collection,
    Connection,
    Json,
    _labels,
    _Servers,
    connected,
    err,
    out,
)


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


Servers = Annotated[
    str | None,
    typer.Option(
        "--server",
        "-s",
        envvar="FRAMESEEK_SERVER",
        help="HOST:PORT of the server, or several comma-separated (servers of one scale-out library: "
        "uploads go to the least busy) [default: 127.0.0.1:50051]",
    ),
]


@connected(server=Servers)
def ingest(
    paths: Annotated[list[Path], typer.Argument(help="files or directories (searched recursively)")],
    collection: Collection = "",
    label: Annotated[list[str] | None, typer.Option("--label", "-l", help="KEY=VALUE, repeatable")] = None,
    jobs: Annotated[int, typer.Option("--jobs", "-j", min=1, max=32, help="parallel uploads")] = 4,
    force: Annotated[bool, typer.Option(help="upload even when the same bytes are already indexed")] = False,
    *,
    conn: Connection,  # --server (several), --token, --tls-*: see connected
    as_json: Json = False,
) -> None:
    """Index videos and images; skips files whose bytes are already indexed."""
    from ..client import FrameSeekError, file_sha256

    labels = _labels(label)
    files = _collect(paths)
    results: list[dict] = []
    lock = threading.Lock()
    addresses = [a.strip() for a in (conn.server or "").split(",") if a.strip()] or [None]
    servers = _Servers(addresses, conn.client)
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
