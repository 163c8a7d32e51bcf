"""`frameseek search-face` and `people`: the faces collections."""

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
    _dict,
    _labels,
    _ts,
    connected,
    out,
)


@connected
def search_face(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="a photo of the person")],
    k: Annotated[int, typer.Option("-k", "--k", min=1, max=1000, help="videos to return per face")] = 10,
    appearances: Annotated[int, typer.Option(min=1, max=100, help="appearances (tracks) per video")] = 5,
    min_score: Annotated[float, typer.Option(help="calibrated score threshold; 0 = the server's (0.5)")] = 0.0,
    face: Annotated[str | None, typer.Option(help="search only the face at X0,Y0,X1,Y1 (pixels)")] = None,
    collection: Collection = "",
    label: Annotated[list[str] | None, typer.Option("--label", "-l")] = None,
    *,
    conn: Connection,  # --server, --token, --tls-*: see connected
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
    with conn.session(as_json) as fs:
        resp = fs.search_by_face(
            file,
            collection=collection,
            face=box,
            k=k,
            min_score=min_score,
            max_matches_per_video=appearances,
            labels=_labels(label),
        )
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


@connected
def people(
    video: Annotated[str | None, typer.Argument(help="a video's name: only the people in it")] = None,
    collection: Collection = "",
    name: Annotated[tuple[str, str] | None, typer.Option(help="PERSON DISPLAY_NAME: name a person, then list")] = None,
    *,
    conn: Connection,  # --server, --token, --tls-*: see connected
    as_json: Json = False,
) -> None:
    """List the people of a faces collection, or of one video, with their appearances."""
    with conn.session(as_json) as fs:
        if name:
            fs.update_person(name[0], name[1])
        found = fs.video_people(video) if video else list(fs.list_people(collection))
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
