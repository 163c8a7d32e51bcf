"""`frameseek collections`, `create-collection`, `videos`, `delete` and `stats`: the library and its collections."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table

from ._common import (
    Collection,
    Connection,
    Json,
    _dict,
    _labels,
    _ts,
    connected,
    out,
)


@connected
def collections(
    *,
    conn: Connection,  # --server, --token, --tls-*: see connected
    as_json: Json = False,
) -> None:
    """List collections."""
    with conn.session(as_json) as fs:
        cs = list(fs.list_collections())
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


@connected
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
    *,
    conn: Connection,  # --server, --token, --tls-*: see connected
    as_json: Json = False,
) -> None:
    """Create a collection (its settings are fixed from then on)."""
    with conn.session(as_json) as fs:
        c = fs.create_collection(
            collection_id,
            fps=fps,
            metric=metric,
            description=description,
            audio=audio,
            faces=faces,
            vector_dimension=vector_dimension,
        )
    if as_json:
        print(json.dumps(_dict(c)))
        return
    what = "own vectors" if c.own_vectors else c.model
    out.print(f"created {c.name} ({what}, {c.dimension}-d{', faces' if c.faces else ''}{', audio' if c.audio else ''})")


@connected
def videos(
    collection: Collection = "",
    label: Annotated[list[str] | None, typer.Option("--label", "-l")] = None,
    limit: Annotated[int, typer.Option(min=1, help="most videos to list")] = 100,
    *,
    conn: Connection,  # --server, --token, --tls-*: see connected
    as_json: Json = False,
) -> None:
    """List indexed videos, newest first."""
    with conn.session(as_json) as fs:
        vids = []
        for v in fs.list_videos(collection, labels=_labels(label), page_size=min(limit, 1000)):
            vids.append(v)
            if len(vids) >= limit:
                break
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


@connected
def delete(
    names: Annotated[list[str], typer.Argument(help="video names (collections/{c}/videos/{id})")],
    *,
    conn: Connection,  # --server, --token, --tls-*: see connected
    as_json: Json = False,
) -> None:
    """Delete videos; they are gone from every search at once."""
    with conn.session(as_json) as fs:
        for n in names:
            fs.delete_video(n)
            if not as_json:
                out.print(f"deleted {n}", markup=False)
    if as_json:
        print(json.dumps({"deleted": names}))


@connected
def stats(
    *,
    conn: Connection,  # --server, --token, --tls-*: see connected
    as_json: Json = False,
) -> None:
    """Server and index statistics."""
    with conn.session(as_json) as fs:
        s = fs.stats()
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
