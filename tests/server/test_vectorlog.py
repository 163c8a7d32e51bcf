"""Vector log: round trip, torn tails from a crash mid-append, corruption detection."""

import contextlib
import errno
import os
import pathlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from frameseek.storage.vectorlog import LogCorrupt, VectorLog, content_digest, list_segments, segment_path

from .helpers import tmpfs

DIM = 8


def _read(d, dim=DIM, from_seq=0):
    """Replay a log directory and close it again (replay leaves the log open for appends)."""
    log = VectorLog(str(d), dim)
    try:
        return list(log.replay(from_seq))
    finally:
        log.close()


def _vecs(rng, n):
    return rng.standard_normal((n, DIM)).astype(np.float32)


def test_round_trip_and_rotation(tmp_path):
    rng = np.random.default_rng(0)
    log = VectorLog(str(tmp_path), DIM)
    assert list(log.replay(0)) == []
    written = [(1, _vecs(rng, 3)), (2, _vecs(rng, 1))]
    for vid, v in written:
        log.append(vid, v, "k")
    log.rotate()
    written.append((3, _vecs(rng, 5)))
    log.append(*written[-1], "k")
    log.close()
    assert list_segments(str(tmp_path)) == [0, 1]
    got = _read(tmp_path)
    assert [r.video_id for r in got] == [1, 2, 3]
    for r, (_, v) in zip(got, written):
        np.testing.assert_array_equal(r.vectors, v)
    assert [r.video_id for r in _read(tmp_path, from_seq=1)] == [3]


@settings(max_examples=40, deadline=None)
@given(cut=st.integers(min_value=0, max_value=10_000))
def test_torn_tail_is_truncated_to_the_last_whole_record(tmp_path_factory, cut):
    d = str(tmp_path_factory.mktemp("log"))
    rng = np.random.default_rng(1)
    log = VectorLog(d, DIM)
    list(log.replay(0))
    sizes = []
    for vid in range(1, 8):
        log.append(vid, _vecs(rng, vid), "k")
        sizes.append(os.path.getsize(segment_path(d, 0)))
    log.close()
    path = segment_path(d, 0)
    cut = cut % (sizes[-1] + 1)
    with open(path, "r+b") as f:  # a crash mid-append leaves any prefix of the file
        f.truncate(cut)
    log2 = VectorLog(d, DIM)
    got = [r.video_id for r in log2.replay(0)]
    whole = sum(1 for s in sizes if s <= cut)
    assert got == list(range(1, whole + 1))
    # the log is usable afterwards and the new record follows the surviving ones
    log2.append(99, _vecs(rng, 2), "k")
    log2.close()
    assert [r.video_id for r in _read(d)] == got + [99]


def test_flipped_byte_in_tail_record_drops_it(tmp_path):
    rng = np.random.default_rng(2)
    log = VectorLog(str(tmp_path), DIM)
    list(log.replay(0))
    log.append(1, _vecs(rng, 2), "k")
    log.append(2, _vecs(rng, 2), "k")
    log.close()
    path = segment_path(str(tmp_path), 0)
    data = bytearray(pathlib.Path(path).read_bytes())
    data[-3] ^= 0xFF
    pathlib.Path(path).write_bytes(bytes(data))
    assert [r.video_id for r in _read(tmp_path)] == [1]


def test_damage_in_a_sealed_segment_is_reported_and_the_rest_replayed(tmp_path):
    rng = np.random.default_rng(3)
    log = VectorLog(str(tmp_path), DIM)
    list(log.replay(0))
    log.append(1, _vecs(rng, 2), "k")
    log.rotate()
    log.append(2, _vecs(rng, 2), "k")
    log.close()
    path = segment_path(str(tmp_path), 0)
    data = bytearray(pathlib.Path(path).read_bytes())
    data[-1] ^= 0xFF
    pathlib.Path(path).write_bytes(bytes(data))
    log = VectorLog(str(tmp_path), DIM)
    assert [r.video_id for r in log.replay(0)] == [2]
    log.close()
    assert [(d.segment, d.video_id) for d in log.damage] == [(0, 1)]
    assert pathlib.Path(path).read_bytes() == bytes(data)  # a sealed segment is never truncated


def _flip(path, offset):
    data = bytearray(pathlib.Path(path).read_bytes())
    data[offset] ^= 0xFF
    pathlib.Path(path).write_bytes(bytes(data))


@pytest.mark.parametrize("where", ["sync", "length", "payload"])
def test_damaged_record_in_the_middle_of_the_newest_segment_drops_only_that_record(tmp_path, where):
    """Issue 17 item 2: every intact record after a damaged one is replayed, and the damage is
    reported with the video it belonged to (the header still names it when the payload is hit)."""
    rng = np.random.default_rng(4)
    d = str(tmp_path)
    log = VectorLog(d, DIM)
    list(log.replay(0))
    offsets = []
    for vid in range(1, 6):
        offsets.append(os.path.getsize(segment_path(d, 0)))
        log.append(vid, _vecs(rng, 3), f"sha{vid}")
    log.close()
    rec2 = offsets[1]
    _flip(segment_path(d, 0), rec2 + {"sync": 0, "length": 5, "payload": 60}[where])
    size = os.path.getsize(segment_path(d, 0))
    log = VectorLog(d, DIM)
    got = list(log.replay(0))
    assert [r.video_id for r in got] == [1, 3, 4, 5]
    assert [r.content_digest for r in got] == [content_digest(f"sha{v}") for v in (1, 3, 4, 5)]
    assert [(x.segment, x.offset, x.length) for x in log.damage] == [(0, rec2, offsets[2] - rec2)]
    if where == "payload":
        assert log.damage[0].video_id == 2
    assert os.path.getsize(segment_path(d, 0)) == size  # not truncated: it was not a torn tail
    log.append(6, _vecs(rng, 1), "k")  # appends go on after the intact records
    log.close()
    assert [r.video_id for r in _read(d)] == [1, 3, 4, 5, 6]


def test_version_1_segments_are_still_read_and_appends_go_to_a_new_segment(tmp_path):
    import struct
    import zlib

    rng = np.random.default_rng(5)
    old = [(7, _vecs(rng, 2)), (8, _vecs(rng, 1))]
    with open(segment_path(str(tmp_path), 0), "wb") as f:  # the version 1 format, byte for byte
        f.write(struct.pack("<8sI", b"FSVLOG\x00\x01", DIM))
        for vid, v in old:
            payload = struct.pack("<BQI", 1, vid, len(v)) + v.astype("<f4").tobytes()
            f.write(struct.pack("<II", len(payload), zlib.crc32(payload)) + payload)
    log = VectorLog(str(tmp_path), DIM)
    got = list(log.replay(0))
    assert [r.video_id for r in got] == [7, 8]
    np.testing.assert_array_equal(got[0].vectors, old[0][1])
    log.append(9, _vecs(rng, 1), "k")
    log.close()
    assert list_segments(str(tmp_path)) == [0, 1]
    assert [r.video_id for r in _read(tmp_path)] == [7, 8, 9]


@pytest.fixture
def small_fs(tmp_path):
    """A real 1 MiB filesystem (tmpfs), to fill up."""
    with tmpfs(tmp_path / "small", "1m") as mnt:
        yield mnt


def test_a_failed_append_on_a_full_disk_leaves_the_log_as_it_was(small_fs):
    """Issue 17 item 1: ENOSPC mid-record, space freed, more appends: all of them replay."""
    rng = np.random.default_rng(6)
    d = str(small_fs / "log")
    log = VectorLog(d, DIM)
    list(log.replay(0))
    log.append(1, _vecs(rng, 10), "k")
    filler = small_fs / "filler"
    with open(filler, "wb", buffering=0) as f:  # fill the disk up to the last few KB
        with contextlib.suppress(OSError):
            while True:
                f.write(b"\0" * 4096)
    good = os.path.getsize(segment_path(d, 0))
    with pytest.raises(OSError) as err:
        log.append(2, _vecs(rng, 4000), "k")  # 128 KB: cannot fit
    assert err.value.errno == errno.ENOSPC
    assert os.path.getsize(segment_path(d, 0)) == good
    filler.unlink()
    for vid in (3, 4, 5):
        log.append(vid, _vecs(rng, 10), "k")
    log.close()
    assert [r.video_id for r in _read(d)] == [1, 3, 4, 5]


def test_dimension_mismatch(tmp_path):
    log = VectorLog(str(tmp_path), DIM)
    list(log.replay(0))
    with pytest.raises(ValueError):
        log.append(1, np.zeros((2, DIM + 1), np.float32), "k")
    log.close()
    with pytest.raises(LogCorrupt, match="dimension"):
        _read(tmp_path, DIM * 2)


def test_a_damaged_header_is_reported_and_its_records_still_read(tmp_path):
    rng = np.random.default_rng(7)
    d = str(tmp_path)
    log = VectorLog(d, DIM)
    list(log.replay(0))
    for vid in (1, 2):
        log.append(vid, _vecs(rng, 2), "k")
    log.close()
    _flip(segment_path(d, 0), 3)  # inside the magic
    log = VectorLog(d, DIM)
    assert [r.video_id for r in log.replay(0)] == [1, 2]
    assert [(x.offset, x.length) for x in log.damage] == [(0, 12)]
    log.append(3, _vecs(rng, 1), "k")  # not after a damaged header: a new segment
    log.close()
    assert list_segments(d) == [0, 1]
    assert [r.video_id for r in _read(d)] == [1, 2, 3]


@settings(max_examples=60, deadline=None)
@given(
    at=st.integers(min_value=12, max_value=5000),
    n=st.integers(min_value=1, max_value=64),
    seed=st.integers(min_value=0, max_value=2**31),
)
def test_random_damage_loses_only_the_records_it_touches(tmp_path_factory, at, n, seed):
    """Whatever burst of bytes is damaged, replay returns exactly the records it did not touch
    (none invented, none after it lost), except that damage in the last record is a torn tail."""
    d = str(tmp_path_factory.mktemp("log"))
    rng = np.random.default_rng(seed)
    log = VectorLog(d, DIM)
    list(log.replay(0))
    spans, written = [], {}
    for vid in range(1, 9):
        start = os.path.getsize(segment_path(d, 0))
        written[vid] = _vecs(rng, int(rng.integers(1, 6)))
        log.append(vid, written[vid], f"k{vid}")
        spans.append((vid, start, os.path.getsize(segment_path(d, 0))))
    log.close()
    size = spans[-1][2]
    at = 12 + (at - 12) % (size - 12)
    end = min(at + n, size)
    data = bytearray(pathlib.Path(segment_path(d, 0)).read_bytes())
    for i in range(at, end):
        data[i] ^= 0xA5
    pathlib.Path(segment_path(d, 0)).write_bytes(bytes(data))
    got = _read(d)
    touched = {vid for vid, s, e in spans if s < end and at < e}
    assert [r.video_id for r in got] == [vid for vid, _, _ in spans if vid not in touched]
    for r in got:
        np.testing.assert_array_equal(r.vectors, written[r.video_id])
        assert r.content_digest == content_digest(f"k{r.video_id}")
