"""Append-only vector log: the durable copy of every vector added since the last index snapshot.

Segment files `vectors-{seq:08d}.log` start with a header (magic with the format version, dim).
Version 2 (written now) frames each record so that a reader can find the next record after a
damaged one:

    u32 SYNC | u32 payload_length | u32 crc32(payload_length bytes + payload) | payload
    payload = u8 type (1 = ADD) | u64 video_id | u32 n | 32 bytes content digest
              | float32[n * dim] vectors (little-endian)

The content digest (`content_digest` of the catalog row's content_sha256) lets replay check that a
record belongs to the catalog row with its id (a catalog that lost committed rows may hand the id
to another video). Version 1 segments (no SYNC, no hash)
are still read.

`append()` returns only after write + fsync, so a record that was appended survives kill -9 and
power loss. An append that fails (ENOSPC, EIO, ...) is rolled back before it raises: the segment is
truncated to where the record began and fsynced, or, when that fails too, the segment is sealed and
the next append starts a new one. So nothing acknowledged later ever follows a partial record.

`scan_segment()` reads records; at a record that does not check out it searches forward for the
next SYNC that starts a whole record whose CRC checks out. Bytes skipped that way are *damage* (an
acknowledged record may be lost: reported, see `Damage`); bad bytes with no valid record after them
in the newest segment are a *torn tail* (a crash mid-append: never acknowledged) and `replay()`
truncates them. A damaged segment header is damage too when valid records follow it (a header
with another dimension and no records after it is a configuration error: LogCorrupt).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
import struct
import zlib
from collections.abc import Iterator

import numpy as np

MAGIC_V1 = b"FSVLOG\x00\x01"
MAGIC = b"FSVLOG\x00\x02"
_HEADER = struct.Struct("<8sI")  # magic, dim
SYNC = b"\xf5\x5e\xec\x0d"
_REC_V1 = struct.Struct("<II")  # length, crc(payload)
_REC = struct.Struct("<4sII")  # sync, length, crc(length + payload)
_ADD_V1 = struct.Struct("<BQI")  # type, video id, n
_ADD = struct.Struct("<BQI32s")  # type, video id, n, content digest
_U32 = struct.Struct("<I")
TYPE_ADD = 1
_SEG_RE = re.compile(r"^vectors-(\d{8})\.log$")


class LogCorrupt(Exception):
    pass


def content_digest(content_key: str) -> bytes:
    """What a record stores to name its video's content (the catalog's content_sha256 column)."""
    return hashlib.sha256(content_key.encode()).digest()


@dataclasses.dataclass
class LogRecord:
    type: int
    video_id: int
    vectors: np.ndarray  # float32 [n, dim]
    segment: int
    offset: int
    content_digest: bytes | None = None  # None in version 1 records


@dataclasses.dataclass(frozen=True)
class Damage:
    """Bytes of a segment that hold no valid record (any acknowledged record there is lost)."""

    segment: int
    offset: int
    length: int
    video_id: int | None  # the damaged record's video, when its header still reads plausibly


@dataclasses.dataclass
class SegmentScan:
    records: list[LogRecord]
    good: int  # offset after the last valid record
    torn: bool  # bad bytes follow `good` with no valid record after them
    damage: list[Damage]  # bad bytes followed by valid records (never a torn tail)
    version: int = 2
    tail_video: int | None = None  # the video a torn tail's header names, if it reads


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


def _record_v2(data: bytes, pos: int, dim: int) -> tuple[int, int, int, bytes] | None:
    """(end, video id, n, sha) of a whole valid v2 record at pos, else None."""
    if pos + _REC.size > len(data):
        return None
    sync, length, crc = _REC.unpack_from(data, pos)
    end = pos + _REC.size + length
    if sync != SYNC or length < _ADD.size or end > len(data):
        return None
    payload = memoryview(data)[pos + _REC.size : end]
    if zlib.crc32(payload, zlib.crc32(data[pos + 4 : pos + 8])) != crc:
        return None
    typ, vid, n, sha = _ADD.unpack_from(payload, 0)
    if typ != TYPE_ADD or length != _ADD.size + 4 * n * dim:
        return None
    return end, vid, n, sha


def _guess_video(data: bytes, pos: int) -> int | None:
    """The video id a damaged record's header names, if its type byte still reads as an ADD."""
    if pos + _REC.size + _ADD.size > len(data):
        return None
    typ, vid, _n, _sha = _ADD.unpack_from(data, pos + _REC.size)
    return vid if typ == TYPE_ADD and 0 < vid < 1 << 44 else None


def scan_segment(path: str, dim: int, start: int = 0) -> SegmentScan:
    """Read a segment from the header or from `start` (a record boundary returned by an earlier
    scan: read-only tailing by search replicas, where a "torn" tail may be an append in progress)."""
    seq = int(_SEG_RE.match(os.path.basename(path)).group(1))
    with open(path, "rb") as f:
        head = f.read(_HEADER.size)
        f.seek(start)
        data = f.read()
    if len(head) < _HEADER.size:
        return SegmentScan([], 0, len(head) > 0, [])  # torn header: the segment was being created
    magic, fdim = _HEADER.unpack_from(head, 0)
    if start >= _HEADER.size:  # tailing after a record boundary an earlier scan returned
        if magic == MAGIC_V1:
            return _scan_v1(data, start, 0, dim, seq, path)
        return scan_segment_records(data, start, 0, dim, seq)
    data = head + data[_HEADER.size - start :] if start else data
    if magic == MAGIC_V1 and fdim == dim:
        return _scan_v1(data, 0, _HEADER.size, dim, seq, path)
    if magic == MAGIC and fdim == dim:
        return scan_segment_records(data, 0, _HEADER.size, dim, seq)
    if len(data) == _HEADER.size and magic not in (MAGIC, MAGIC_V1):  # a damaged header, nothing else
        return SegmentScan([], 0, True, [])
    # a damaged header, if version 2 records of this dimension follow it; else not our log
    scan = scan_segment_records(data, 0, _HEADER.size, dim, seq)
    if scan.records:
        scan.damage.insert(0, Damage(seq, 0, _HEADER.size, None))
        return scan
    if magic not in (MAGIC, MAGIC_V1):
        raise LogCorrupt(f"{path}: not a frameseek vector log")
    raise LogCorrupt(f"{path}: dimension {fdim}, expected {dim}")


def scan_segment_records(data: bytes, base: int, pos: int, dim: int, seq: int) -> SegmentScan:
    """Version 2 records of `data` (the segment's bytes from offset `base`) from `pos` on."""
    records: list[LogRecord] = []
    damage: list[Damage] = []
    while pos < len(data):
        rec = _record_v2(data, pos, dim)
        if rec is None:
            nxt = data.find(SYNC, pos + 1)
            while nxt != -1 and _record_v2(data, nxt, dim) is None:
                nxt = data.find(SYNC, nxt + 1)
            if nxt == -1:
                return SegmentScan(records, base + pos, True, damage, tail_video=_guess_video(data, pos))
            damage.append(Damage(seq, base + pos, nxt - pos, _guess_video(data, pos)))
            pos = nxt
            continue
        end, vid, n, sha = rec
        vecs = np.frombuffer(data, dtype="<f4", count=n * dim, offset=pos + _REC.size + _ADD.size).reshape(n, dim)
        records.append(LogRecord(TYPE_ADD, vid, vecs, seq, base + pos, sha))
        pos = end
    return SegmentScan(records, base + pos, False, damage)


def _scan_v1(data: bytes, base: int, pos: int, dim: int, seq: int, path: str) -> SegmentScan:
    """Version 1 records have no sync marker: the first bad record ends the readable part."""
    records = []
    while pos < len(data):
        if pos + _REC_V1.size > len(data):
            return SegmentScan(records, base + pos, True, [], 1)
        length, crc = _REC_V1.unpack_from(data, pos)
        start, end = pos + _REC_V1.size, pos + _REC_V1.size + length
        if end > len(data) or length < _ADD_V1.size:
            return SegmentScan(records, base + pos, True, [], 1)
        payload = memoryview(data)[start:end]
        if zlib.crc32(payload) != crc:
            return SegmentScan(records, base + pos, True, [], 1)
        typ, vid, n = _ADD_V1.unpack_from(payload, 0)
        if typ != TYPE_ADD or length != _ADD_V1.size + 4 * n * dim:
            raise LogCorrupt(f"{path}@{base + pos}: bad record type {typ} / length {length}")
        vecs = np.frombuffer(payload, dtype="<f4", count=n * dim, offset=_ADD_V1.size).reshape(n, dim)
        records.append(LogRecord(typ, vid, vecs, seq, base + pos))
        pos = end
    return SegmentScan(records, base + pos, False, [], 1)


class VectorLog:
    """Appender over the newest segment of a directory. Not thread-safe: the engine serialises
    appends under its per-collection write lock."""

    def __init__(self, directory: str, dim: int):
        self.directory, self.dim = directory, dim
        os.makedirs(directory, exist_ok=True)
        self._fd: int | None = None
        self._end = 0  # offset after the last durable record of the open segment
        self._sealed = False  # the open segment could not be rolled back: append to a new one
        self.seq = -1
        self.damage: list[Damage] = []  # found by the last replay

    def replay(self, from_seq: int) -> Iterator[LogRecord]:
        """Yield every valid record of segments >= from_seq. Damage is skipped and collected in
        `self.damage`; a torn tail is truncated when it is the newest segment's (anywhere else
        it is damage too). Leaves the log open for appends."""
        segs = [s for s in list_segments(self.directory) if s >= from_seq]
        self.damage = []
        last_sealed = False
        for i, seq in enumerate(segs):
            path = segment_path(self.directory, seq)
            scan = scan_segment(path, self.dim)
            self.damage += scan.damage
            # appends never go after a version 1 or a damaged header: they start a new segment
            last_sealed = scan.version == 1 or any(d.offset == 0 for d in scan.damage)
            if scan.torn:
                size = os.path.getsize(path)
                if i != len(segs) - 1:
                    self.damage.append(Damage(seq, scan.good, size - scan.good, scan.tail_video))
                else:
                    with open(path, "r+b") as f:  # drop the torn, never-acknowledged tail
                        f.truncate(scan.good)
                        f.flush()
                        os.fsync(f.fileno())
            yield from scan.records
        last = segs[-1] if segs else from_seq
        self._open(last + 1 if segs and last_sealed else last)

    def _open(self, seq: int) -> None:
        self.close()
        path = segment_path(self.directory, seq)
        new = not os.path.exists(path) or os.path.getsize(path) < _HEADER.size
        fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            if new:
                os.ftruncate(fd, 0)
                self._write_all(fd, _HEADER.pack(MAGIC, self.dim), 0)
                os.fsync(fd)
                _fsync_dir(self.directory)
            self._end = os.lseek(fd, 0, os.SEEK_END)
        except BaseException:
            os.close(fd)
            raise
        self._fd, self.seq, self._sealed = fd, seq, False

    @staticmethod
    def _write_all(fd: int, data: bytes, offset: int) -> None:
        view = memoryview(data)
        while view:
            n = os.pwrite(fd, view, offset)
            view, offset = view[n:], offset + n

    def append(self, video_id: int, vectors: np.ndarray, content_key: str) -> None:
        """Write one ADD record and fsync it. Returns when the record is durable; on an OSError the
        log is as it was before the call (see the module docstring) and the error propagates."""
        self.append_many([(video_id, vectors, content_key)])

    def append_many(self, records: list[tuple[int, np.ndarray, str]]) -> None:
        """Write several ADD records (video id, vectors, content key) with one write and one fsync:
        all durable when this returns; on an OSError none are (the log is rolled back)."""
        parts = []
        append, crc32, u32 = parts.append, zlib.crc32, _U32.pack
        for video_id, vectors, content_key in records:
            vecs = np.ascontiguousarray(vectors, dtype="<f4")
            if vecs.ndim != 2 or vecs.shape[1] != self.dim:
                raise ValueError(f"vectors must be [n, {self.dim}]")
            head = _ADD.pack(TYPE_ADD, video_id, vecs.shape[0], content_digest(content_key))
            body = memoryview(vecs).cast("B")  # the rows themselves: copied once, by the join below
            length = u32(len(head) + body.nbytes)
            # the record: SYNC, length, CRC of length + payload, payload (= head + the rows)
            append(SYNC)
            append(length)
            append(u32(crc32(body, crc32(head, crc32(length)))))
            append(head)
            append(body)
        if not parts:
            return
        if self._sealed:
            self._open(self.seq + 1)
        data = b"".join(parts)
        start = self._end
        try:
            self._write_all(self._fd, data, start)
            os.fsync(self._fd)
        except OSError:
            self._roll_back(start)
            raise
        self._end = start + len(data)

    def _roll_back(self, offset: int) -> None:
        try:
            os.ftruncate(self._fd, offset)
            os.fsync(self._fd)
        except OSError:  # the partial record stays; seal the segment so nothing is appended after it
            self._sealed = True

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
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
