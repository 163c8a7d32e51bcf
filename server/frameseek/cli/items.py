"""`frameseek search-audio` and `upsert`: soundtracks and your own vectors (items)."""

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
    _fail,
    _ts,
    connected,
    out,
)


@connected
def search_audio(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="an audio file or a video")],
    k: TopK = 10,
    min_score: Annotated[float, typer.Option(help="0 = server's calibrated threshold, <0 = all matches")] = 0.0,
    collection: Collection = "",
    *,
    conn: Connection,  # --server, --token, --tls-*: see connected
    as_json: Json = False,
) -> None:
    """Find the indexed videos whose soundtrack contains this audio, with where and how long."""
    with conn.session(as_json) as fs:
        resp = fs.search_by_audio(file, collection=collection, k=k, min_score=min_score, timeout=None)
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


@connected
def upsert(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help=".npy or .parquet")],
    collection: Collection = "",
    key_column: Annotated[str, typer.Option(help="parquet column with the external keys")] = "external_key",
    batch_size: Annotated[int, typer.Option(min=1, max=10000, help="items per streamed message")] = 1000,
    *,
    conn: Connection,  # --server, --token, --tls-*: see connected
    as_json: Json = False,
) -> None:
    """Insert or replace items (your own vectors) of a collection created with a vector dimension;
    an item with the same external key is replaced."""
    import time

    rows, n = _items_from_file(file, key_column)
    t0 = time.perf_counter()
    try:
        with conn.client() as fs:
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
