"""Append-only vector log: the durable copy of every vector added since the last index snapshot.

Segment files `vectors-{seq:08d}.log` start with a header (magic, version, dim). Each record is

    u32 payload_length | u32 crc32(payload) | payload
    payload = u8 type (1 = ADD) | u64 video_id | u32 n | float32[n * dim] vectors (little-endian)

`append()` returns only after write + fsync, so a record that was appended survives kill -9 and
power loss. A crash in the middle of an append leaves a torn record at the tail of the newest
segment; `scan()` stops at the first record whose length or CRC does not check out and `open()`
truncates the segment there (nothing after a torn record was ever acknowledged, because appends
are serialised). A bad record anywhere else is real corruption and raises.
"""
from __future__ import annotations

import dataclasses
import os
import re
import struct
import zlib
from collections.abc import Iterator

import numpy as np

MAGIC = b"FSVLOG\x00\x01"
_HEADER = struct.Struct("<8sI")  # magic, dim
_REC = struct.Struct("<II")  # length, crc
_ADD = struct.Struct("<BQI")  # type, video id, n
TYPE_ADD = 1
_SEG_RE = re.compile(r"^vectors-(\d{8})\.log$")


class LogCorrupt(Exception):
    pass


@dataclasses.dataclass
class LogRecord:
    type: int
    video_id: int
    vectors: np.ndarray  # float32 [n, dim]
    segment: int
    offset: int


def segment_path(directory: str, seq: int) -> str:
    return os.path.join(directory, f"vectors-{seq:08d}.log")


def list_segments(directory: str) -> list[int]:
    out = []
    for name in os.listdir(directory):
        m = _SEG_RE.match(name)
        if m:
            out.append(int(m.group(1)))
    return sorted(out)


def _fsync_dir(directory: str) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def scan_segment(path: str, dim: int, start: int = 0) -> tuple[list[LogRecord], int, bool]:
    """Read a segment: (records, offset after the last good record, whether a torn tail follows).
    `start` > 0 resumes after a record boundary returned by an earlier scan (read-only tailing by
    search replicas: a "torn" tail there may just be an append in progress)."""
    seq = int(_SEG_RE.match(os.path.basename(path)).group(1))
    with open(path, "rb") as f:
        if start > 0:
            f.seek(start)
        data = f.read()
    base = start if start > 0 else 0
    if base == 0:
        if len(data) < _HEADER.size:
            return [], 0, len(data) > 0  # torn header: the segment was being created
        magic, fdim = _HEADER.unpack_from(data, 0)
        if magic != MAGIC:
            raise LogCorrupt(f"{path}: not a frameseek vector log")
        if fdim != dim:
            raise LogCorrupt(f"{path}: dimension {fdim}, expected {dim}")
    pos, records = (0 if base else _HEADER.size), []
    while pos < len(data):
        if pos + _REC.size > len(data):
            return records, base + pos, True
        length, crc = _REC.unpack_from(data, pos)
        start, end = pos + _REC.size, pos + _REC.size + length
        if end > len(data) or length < _ADD.size:
            return records, base + pos, True
        payload = memoryview(data)[start:end]
        if zlib.crc32(payload) != crc:
            return records, base + pos, True
        typ, vid, n = _ADD.unpack_from(payload, 0)
        if typ != TYPE_ADD or length != _ADD.size + 4 * n * dim:
            raise LogCorrupt(f"{path}@{base + pos}: bad record type {typ} / length {length}")
        vecs = np.frombuffer(payload, dtype="<f4", count=n * dim, offset=_ADD.size).reshape(n, dim)
        records.append(LogRecord(typ, vid, vecs, seq, base + pos))
        pos = end
    return records, base + pos, False


class VectorLog:
    """Appender over the newest segment of a directory. Not thread-safe: the engine serialises
    appends under its per-collection write lock."""

    def __init__(self, directory: str, dim: int):
        self.directory, self.dim = directory, dim
        os.makedirs(directory, exist_ok=True)
        self._f = None
        self.seq = -1

    def replay(self, from_seq: int) -> Iterator[LogRecord]:
        """Yield every record of segments >= from_seq, truncating a torn tail of the newest segment
        (and raising LogCorrupt for damage anywhere else). Leaves the log open for appends."""
        segs = [s for s in list_segments(self.directory) if s >= from_seq]
        for i, seq in enumerate(segs):
            path = segment_path(self.directory, seq)
            records, good, torn = scan_segment(path, self.dim)
            if torn:
                if i != len(segs) - 1:
                    raise LogCorrupt(f"{path}: damaged record at offset {good} in a sealed segment")
                with open(path, "r+b") as f:  # drop the torn, never-acknowledged tail
                    f.truncate(good)
                    f.flush()
                    os.fsync(f.fileno())
            yield from records
        last = segs[-1] if segs else from_seq
        self._open(last)

    def _open(self, seq: int) -> None:
        if self._f:
            self._f.close()
        path = segment_path(self.directory, seq)
        new = not os.path.exists(path) or os.path.getsize(path) == 0
        self._f = open(path, "ab")
        if new:
            self._f.write(_HEADER.pack(MAGIC, self.dim))
            self._f.flush()
            os.fsync(self._f.fileno())
            _fsync_dir(self.directory)
        self.seq = seq

    def append(self, video_id: int, vectors: np.ndarray) -> None:
        """Write one ADD record and fsync it. Returns when the record is durable."""
        vecs = np.ascontiguousarray(vectors, dtype="<f4")
        if vecs.ndim != 2 or vecs.shape[1] != self.dim:
            raise ValueError(f"vectors must be [n, {self.dim}]")
        payload = _ADD.pack(TYPE_ADD, video_id, vecs.shape[0]) + vecs.tobytes()
        self._f.write(_REC.pack(len(payload), zlib.crc32(payload)) + payload)
        self._f.flush()
        os.fsync(self._f.fileno())

    def rotate(self) -> int:
        """Seal the current segment and start the next one; returns the new sequence number."""
        self._open(self.seq + 1)
        return self.seq

    def drop_before(self, seq: int) -> None:
        """Delete segments older than seq (covered by a snapshot)."""
        for s in list_segments(self.directory):
            if s < seq:
                os.remove(segment_path(self.directory, s))

    def close(self) -> None:
        if self._f:
            self._f.close()
            self._f = None
