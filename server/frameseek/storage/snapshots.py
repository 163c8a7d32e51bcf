"""Index snapshots of a collection: write + verify, load with a fallback, clean up.

A snapshot is `snapshot-{seq}.hnsw` (the native index; its own CRC-32 trailer) and
`snapshot-{seq}.videos.npy` (video id -> vector count, int64 [n, 2]; its sha256 is recorded),
named by `snapshot.json`, which is replaced atomically:

    {"segment": seq, "index": ..., "videos": ..., "videos_sha256": ..., "vectors": ..., "time": ...,
     "replay_from": the first log segment to replay (<= seq), "previous": {the same fields of the
     snapshot before it} | null}

The snapshot holds the HNSW graph's videos; videos committed but not yet linked into it (the
fresh segment, collection_index.py) have their records in segments from `replay_from` on.

A new snapshot is published only after both files were re-read from disk and checked. The previous
snapshot and the log segments from its sequence number on are kept until a newer one is published,
so that a snapshot damaged later (a checksum mismatch at load) falls back to the previous one + the
log instead of refusing to start. Files of a snapshot killed mid-write (`*.tmp`) are removed at start.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import struct
import time
import zlib

import numpy as np

from .vectorlog import _fsync_dir

META = "snapshot.json"
_CHUNK = 1 << 22
_FIRST_SPLIT_CRC_VERSION = 5  # hnsw_snapshot.cpp's kFirstVersionWithMappedVectors


class SnapshotDamaged(Exception):
    pass


def _write_atomic(path: str, data: bytes) -> None:
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(os.path.dirname(path))


def _sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def index_file_intact(path: str) -> bool:
    """Check a native index file's CRC-32 trailers without loading it (the format, see
    native/src/hnsw_snapshot.cpp: 8-byte magic | u32 version | body | u32 CRC-32 (IEEE, as zlib's)
    of the body; from version 5 the body's float32 section [offset, offset + bytes) has its own
    CRC, in a trailer u64 offset | u64 bytes | u32 CRC just before the last one, which skips it)."""
    size = os.path.getsize(path)
    if size < 12:
        return False
    with open(path, "rb") as f:
        f.seek(8)
        version = struct.unpack("<I", f.read(4))[0]
        if version < _FIRST_SPLIT_CRC_VERSION:
            return _crc_of(f, 8, size - 12) == struct.unpack("<I", _read_at(f, size - 4, 4))[0]
        if size < 36:
            return False
        offset, length, vectors_crc, crc = struct.unpack("<QQII", _read_at(f, size - 24, 24))
        if offset < 12 or length > size - 24 - offset:
            return False
        rest = _crc_of(f, offset + length, size - 4 - offset - length, _crc_of(f, 8, offset - 8))
        return _crc_of(f, offset, length) == vectors_crc and rest == crc


def _read_at(f, offset: int, n: int) -> bytes:
    f.seek(offset)
    return f.read(n)


def _crc_of(f, offset: int, n: int, crc: int = 0) -> int:
    """CRC-32 of n bytes at offset, continuing `crc` (-1: the file ends first)."""
    f.seek(offset)
    while n > 0:
        chunk = f.read(min(_CHUNK, n))
        if not chunk:
            return -1
        crc, n = zlib.crc32(chunk, crc), n - len(chunk)
    return crc


def write(directory: str, seq: int, index, videos: dict[int, int]) -> dict:
    """Save index + video table for log segment `seq`, fsynced and verified; returns its meta
    (not yet published: see `publish`). Raises SnapshotDamaged when a re-read does not check out."""
    name = f"snapshot-{seq:08d}"
    index_path = os.path.join(directory, name + ".hnsw")
    index.save(index_path)  # native: temp file, fsync, rename
    buf = io.BytesIO()
    np.save(buf, np.array(sorted(videos.items()), dtype=np.int64).reshape(-1, 2))
    data = buf.getvalue()
    videos_path = os.path.join(directory, name + ".videos.npy")
    _write_atomic(videos_path, data)
    sha = hashlib.sha256(data).hexdigest()
    if not index_file_intact(index_path) or _sha256_file(videos_path) != sha:
        raise SnapshotDamaged(f"{name}: the snapshot read back from disk does not match what was written")
    return {
        "segment": seq,
        "index": name + ".hnsw",
        "videos": name + ".videos.npy",
        "videos_sha256": sha,
        "vectors": len(index),
        "time": time.time(),
    }


def publish(directory: str, meta: dict, previous: dict | None) -> None:
    """Point snapshot.json at `meta`, keeping `previous` as its fallback."""
    prev = {k: v for k, v in previous.items() if k != "previous"} if previous else None
    _write_atomic(os.path.join(directory, META), json.dumps({**meta, "previous": prev}).encode())


def candidates(directory: str) -> tuple[list[dict], list[str]]:
    """The snapshots to try at start, best first: the one snapshot.json names, then its previous.
    When snapshot.json itself is unreadable, every snapshot found on disk, newest first (their
    index files still carry their CRC). Returns (metas, problems found)."""
    path = os.path.join(directory, META)
    if not os.path.exists(path):
        return [], []
    try:
        with open(path) as f:
            meta = json.load(f)
        metas = [m for m in (meta, meta.get("previous")) if m]
        for m in metas:
            int(m["segment"]), str(m["index"]), str(m["videos"])
        return metas, []
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        found = sorted(
            (
                int(f[9:17])
                for f in os.listdir(directory)
                if f.startswith("snapshot-") and f.endswith(".hnsw") and f[9:17].isdigit()
            ),
            reverse=True,
        )
        metas = [
            {"segment": seq, "index": f"snapshot-{seq:08d}.hnsw", "videos": f"snapshot-{seq:08d}.videos.npy"}
            for seq in found
        ]
        return metas, [f"{META} unreadable ({type(exc).__name__}: {exc}); tried the snapshot files on disk"]


def replay_start(meta: dict) -> int:
    """The first log segment that recovery replays on top of this snapshot: `replay_from`;
    0 (the whole log) for a snapshot found on disk without its meta, since then it is unknown."""
    if "replay_from" in meta:
        return int(meta["replay_from"])
    return int(meta["segment"]) if "videos_sha256" in meta else 0


def load_one(directory: str, meta: dict, load_index):
    """(index, {video id: vector count}) of one snapshot; SnapshotDamaged on any mismatch."""
    videos_path = os.path.join(directory, meta["videos"])
    try:
        if meta.get("videos_sha256") and _sha256_file(videos_path) != meta["videos_sha256"]:
            raise SnapshotDamaged(f"{meta['videos']}: checksum mismatch")
        arr = np.load(videos_path)
        index = load_index(os.path.join(directory, meta["index"]))
    except SnapshotDamaged:
        raise
    except Exception as exc:  # missing file, native CRC mismatch, unreadable npy
        raise SnapshotDamaged(f"snapshot-{int(meta['segment']):08d}: {type(exc).__name__}: {exc}") from exc
    return index, dict(arr.tolist())  # rows [video id, count] as ints in one C pass, not per numpy scalar


def remove_leftovers(directory: str, keep: list[dict]) -> list[str]:
    """Delete `*.tmp` files (a write killed midway) and snapshot files no kept meta names."""
    names = {m[k] for m in keep for k in ("index", "videos")}
    removed = []
    for f in os.listdir(directory):
        if f.endswith(".tmp") or (f.startswith("snapshot-") and f not in names):
            os.remove(os.path.join(directory, f))
            removed.append(f)
    return removed
