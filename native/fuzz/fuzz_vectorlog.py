"""Fuzz target (atheris, libFuzzer for Python): the vector-log replay on damaged segments.

Input: one flag byte, then the bytes of a segment file (dimension 4). Flag bit 0 clear: that
segment is the newest one; set: it is a sealed segment and an intact newer segment follows. Checks:
  * scan_segment and VectorLog.replay raise nothing but LogCorrupt;
  * every record replay yields is framed correctly in the file it came from and its CRC matches
    its payload, with the same video id and vectors (a damaged record is never yielded);
  * after a replay (which may cut a torn tail off the newest segment), an append followed by a
    second replay yields the same records plus the appended one: nothing acknowledged is lost.

Written against the public functions (VectorLog, scan_segment, segment_path, LogCorrupt) only;
the one place that reads the record framing itself is `framed_record`. Run it with
`make fuzz` (long) or tests/server/test_vectorlog_fuzz.py (bounded); libFuzzer flags follow the
script, e.g. `.venv/bin/python native/fuzz/fuzz_vectorlog.py -runs=2000 -seed=1 DIR`.
"""
from __future__ import annotations

import atexit
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

# coverage for libFuzzer: the log's own functions (instrument_imports misses modules that the
# editable install's import hook loads)
for _fn in (vectorlog.scan_segment, vectorlog.list_segments, *(
        f for f in vars(VectorLog).values() if callable(f))):
    atheris.instrument_func(_fn)

DIM = 4
WORK = tempfile.mkdtemp(prefix="frameseek-fuzz-vectorlog-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None)


def framed_record(data: bytes, offset: int) -> tuple[int, np.ndarray] | None:
    """(video id, vectors) of the record framed at `offset` when its length and CRC check out: the
    format of vectorlog.py (u32 length | u32 crc32(payload) | u8 type, u64 video, u32 n, floats)."""
    if offset + 8 > len(data):
        return None
    length, crc = struct.unpack_from("<II", data, offset)
    payload = data[offset + 8:offset + 8 + length]
    if len(payload) != length or zlib.crc32(payload) != crc or length < 13:
        return None
    _, video, n = struct.unpack_from("<BQI", payload, 0)
    return video, np.frombuffer(payload, "<f4", offset=13).reshape(n, DIM) if n * DIM * 4 == length - 13 else None


def replay_all(directory: str) -> list:
    log = VectorLog(directory, DIM)
    try:
        return [(r.segment, r.offset, r.video_id, r.vectors.copy()) for r in log.replay(0)]
    finally:
        log.close()


def check(records: list, files: dict[int, bytes]) -> None:
    for seg, offset, video, vectors in records:
        framed = framed_record(files[seg], offset)
        assert framed is not None, f"replay yielded a record at {seg}@{offset} whose framing or CRC is wrong"
        assert framed[0] == video and framed[1] is not None and np.array_equal(framed[1], vectors, equal_nan=True), \
            f"replay yielded a record at {seg}@{offset} that differs from its bytes"


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
        writer.append(7, np.ones((1, DIM), np.float32))
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
        first = replay_all(WORK)
    except LogCorrupt:
        return  # refused as damage: the expected outcome for a damaged sealed segment
    check(first, files)

    # nothing acknowledged is lost: append after the replay, then replay again
    log = VectorLog(WORK, DIM)
    list(log.replay(0))
    appended = np.full((2, DIM), 0.5, np.float32)
    log.append(99, appended)
    log.close()
    second = replay_all(WORK)
    assert len(second) == len(first) + 1, f"{len(first)} records before an append, {len(second)} after"
    for a, b in zip(first, second):
        assert a[:3] == b[:3] and np.array_equal(a[3], b[3], equal_nan=True), "a replayed record changed"
    assert second[-1][2] == 99 and np.array_equal(second[-1][3], appended), "the appended record is not replayed"


def main() -> None:
    atexit.register(shutil.rmtree, WORK, ignore_errors=True)  # libFuzzer ends the process with exit()
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
