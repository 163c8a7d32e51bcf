"""Fuzz target (atheris, libFuzzer for Python): the vector-log replay on damaged segments.

Input: one flag byte, then the bytes of a segment file (dimension 4). Flag bit 0 clear: that
segment is the newest one; set: it is a sealed segment and an intact newer segment follows. Checks:
  * scan_segment and VectorLog.replay raise nothing but LogCorrupt (damage in the middle of a log is
    skipped and reported in `VectorLog.damage`, each report inside its segment's bytes);
  * every record replay yields is framed correctly in the file it came from (format v2, or v1 in
    a segment whose header says so) and its CRC matches, with the same video id, content digest
    and vectors (a damaged record is never yielded);
  * after a replay (which may cut a torn tail off the newest segment), an append followed by a
    second replay yields the same records plus the appended one: nothing acknowledged is lost.

Written against the public functions (VectorLog, scan_segment, segment_path, LogCorrupt) only;
the one place that reads the record framing itself is `framed_record`, written from the format
in vectorlog.py's docstring rather than with its helpers (shared bugs would cancel out). Run it with
`make fuzz` (long) or tests/server/test_vectorlog_fuzz.py (bounded); libFuzzer flags follow the
script, e.g. `.venv/bin/python native/fuzz/fuzz_vectorlog.py -runs=2000 -seed=1 DIR`.
"""

from __future__ import annotations

import atexit
import inspect
import os
import shutil
import struct
import sys
import tempfile
import zlib

import atheris
import numpy as np

from frameseek.storage import vectorlog
from frameseek.storage.vectorlog import LogCorrupt, VectorLog, scan_segment, segment_path

# coverage for libFuzzer: the log module's own functions and VectorLog's methods (instrument_imports
# misses modules that the editable install's import hook loads)
for _fn in (
    *(f for f in vars(vectorlog).values() if inspect.isfunction(f) and f.__module__ == vectorlog.__name__),
    *(inspect.unwrap(getattr(f, "__func__", f)) for f in vars(VectorLog).values()),
):
    if inspect.isfunction(_fn):
        atheris.instrument_func(_fn)

DIM = 4
WORK = tempfile.mkdtemp(prefix="frameseek-fuzz-vectorlog-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None)


# the segment header of a version 1 log of dimension DIM: its records have no sync marker
V1_HEADER = b"FSVLOG\x00\x01" + struct.pack("<I", DIM)
SYNC = b"\xf5\x5e\xec\x0d"


def framed_record(data: bytes, offset: int) -> tuple[int, bytes | None, np.ndarray] | None:
    """(video id, content digest, vectors) of the ADD record framed at `offset` of a segment's bytes
    when its framing and CRC check out, else None. Version 2 (vectorlog.py's docstring):
    u32 SYNC | u32 length | u32 crc32(length bytes + payload) | payload = u8 type, u64 video,
    u32 n, 32-byte digest, float32[n * DIM]; version 1 (a segment whose header says so):
    u32 length | u32 crc32(payload) | payload = u8 type, u64 video, u32 n, float32[n * DIM]."""
    v1 = data[: len(V1_HEADER)] == V1_HEADER
    if v1:
        head, fixed = struct.Struct("<II"), struct.Struct("<BQI")
    else:
        head, fixed = struct.Struct("<4sII"), struct.Struct("<BQI32s")
    if offset < 0 or offset + head.size > len(data):
        return None
    fields = head.unpack_from(data, offset)
    if not v1 and fields[0] != SYNC:
        return None
    length, crc = fields[-2:]
    payload = data[offset + head.size : offset + head.size + length]
    expected = zlib.crc32(payload) if v1 else zlib.crc32(payload, zlib.crc32(data[offset + 4 : offset + 8]))
    if len(payload) != length or length < fixed.size or expected != crc:
        return None
    typ, video, n, *digest = fixed.unpack_from(payload, 0)
    if typ != 1 or length != fixed.size + n * DIM * 4:
        return None
    vectors = np.frombuffer(payload, "<f4", offset=fixed.size).reshape(n, DIM)
    return video, (digest[0] if digest else None), vectors


def replay_all(directory: str) -> list:
    log = VectorLog(directory, DIM)
    try:
        records = [(r.segment, r.offset, r.video_id, r.content_digest, r.vectors.copy()) for r in log.replay(0)]
        return records, list(log.damage)
    finally:
        log.close()


def same_record(a: tuple, b: tuple) -> bool:
    return a[:4] == b[:4] and np.array_equal(a[4], b[4], equal_nan=True)


def check(records: list, damage: list, files: dict[int, bytes]) -> None:
    for seg, offset, video, digest, vectors in records:
        framed = framed_record(files[seg], offset)
        assert framed is not None, f"replay yielded a record at {seg}@{offset} whose framing or CRC is wrong"
        assert framed[:2] == (video, digest) and np.array_equal(framed[2], vectors, equal_nan=True), (
            f"replay yielded a record at {seg}@{offset} that differs from its bytes"
        )
    for d in damage:
        assert d.segment in files and 0 <= d.offset and 0 < d.length and d.offset + d.length <= len(files[d.segment]), (
            f"damage reported outside its segment: {d}"
        )


def test_one_input(data: bytes) -> None:
    if not data:
        return
    sealed, segment = data[0] & 1, data[1:]
    shutil.rmtree(WORK, ignore_errors=True)
    os.makedirs(WORK)
    files = {1: segment}
    with open(segment_path(WORK, 1), "wb") as f:
        f.write(segment)
    if sealed:  # an intact newer segment with one record
        os.makedirs(os.path.join(WORK, "newer"))
        writer = VectorLog(os.path.join(WORK, "newer"), DIM)
        list(writer.replay(2))
        writer.append(7, np.ones((1, DIM), np.float32), "content-7")
        writer.close()
        shutil.move(segment_path(os.path.join(WORK, "newer"), 2), segment_path(WORK, 2))
        shutil.rmtree(os.path.join(WORK, "newer"))
        with open(segment_path(WORK, 2), "rb") as f:
            files[2] = f.read()

    try:
        scan_segment(segment_path(WORK, 1), DIM)
    except LogCorrupt:
        pass
    try:
        first, damage = replay_all(WORK)
    except LogCorrupt:
        return  # refused: not a log of this dimension
    check(first, damage, files)

    # nothing acknowledged is lost: append after the replay, then replay again
    log = VectorLog(WORK, DIM)
    list(log.replay(0))
    appended = np.full((2, DIM), 0.5, np.float32)
    log.append(99, appended, "content-99")
    log.close()
    second, _ = replay_all(WORK)
    assert len(second) == len(first) + 1, f"{len(first)} records before an append, {len(second)} after"
    for a, b in zip(first, second):
        assert same_record(a, b), "a replayed record changed"
    assert second[-1][2] == 99 and np.array_equal(second[-1][4], appended), "the appended record is not replayed"


def main() -> None:
    atexit.register(shutil.rmtree, WORK, ignore_errors=True)  # libFuzzer ends the process with exit()
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
