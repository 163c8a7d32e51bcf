"""`frameseek search-image` and `search-video`: finding where an image or a clip appears."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from ._common import (
    Collection,
    Connection,
    Json,
    TopK,
    _dict,
    _labels,
    _ts,
    connected,
    out,
)


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


@connected
def search_image(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False)],
    k: TopK = 10,
    matches: Annotated[int, typer.Option(min=1, max=100, help="timestamps per video")] = 3,
    min_score: float = 0.0,
    collection: Collection = "",
    label: Annotated[list[str] | None, typer.Option("--label", "-l")] = None,
    *,
    conn: Connection,  # --server, --token, --tls-*: see connected
    as_json: Json = False,
) -> None:
    """Find the videos (and timestamps) that show an image."""
    with conn.session(as_json) as fs:
        resp = fs.search_by_image(
            file,
            collection=collection,
            k=k,
            min_score=min_score,
            max_matches_per_video=matches,
            labels=_labels(label),
        )
    _print_hits(resp, as_json)


@connected
def search_video(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False)],
    k: TopK = 10,
    min_score: Annotated[float, typer.Option(help="0 = server's calibrated threshold, <0 = all candidates")] = 0.0,
    collection: Collection = "",
    *,
    conn: Connection,  # --server, --token, --tls-*: see connected
    as_json: Json = False,
) -> None:
    """Find the indexed videos that a clip copies, with aligned segments."""
    with conn.session(as_json) as fs:
        resp = fs.search_by_video(file, collection=collection, k=k, min_score=min_score, timeout=None)
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
