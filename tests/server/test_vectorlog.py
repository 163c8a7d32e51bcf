"""Vector log: round trip, torn tails from a crash mid-append, corruption detection."""
import os
import pathlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from frameseek.storage.vectorlog import LogCorrupt, VectorLog, list_segments, segment_path

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
        log.append(vid, v)
    log.rotate()
    written.append((3, _vecs(rng, 5)))
    log.append(*written[-1])
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
        log.append(vid, _vecs(rng, vid))
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
    log2.append(99, _vecs(rng, 2))
    log2.close()
    assert [r.video_id for r in _read(d)] == got + [99]


def test_flipped_byte_in_tail_record_drops_it(tmp_path):
    rng = np.random.default_rng(2)
    log = VectorLog(str(tmp_path), DIM)
    list(log.replay(0))
    log.append(1, _vecs(rng, 2))
    log.append(2, _vecs(rng, 2))
    log.close()
    path = segment_path(str(tmp_path), 0)
    data = bytearray(pathlib.Path(path).read_bytes())
    data[-3] ^= 0xFF
    pathlib.Path(path).write_bytes(bytes(data))
    assert [r.video_id for r in _read(tmp_path)] == [1]


def test_damage_in_a_sealed_segment_raises(tmp_path):
    rng = np.random.default_rng(3)
    log = VectorLog(str(tmp_path), DIM)
    list(log.replay(0))
    log.append(1, _vecs(rng, 2))
    log.rotate()
    log.append(2, _vecs(rng, 2))
    log.close()
    path = segment_path(str(tmp_path), 0)
    data = bytearray(pathlib.Path(path).read_bytes())
    data[-1] ^= 0xFF
    pathlib.Path(path).write_bytes(bytes(data))
    with pytest.raises(LogCorrupt, match="sealed segment"):
        _read(tmp_path)


def test_dimension_mismatch(tmp_path):
    log = VectorLog(str(tmp_path), DIM)
    list(log.replay(0))
    with pytest.raises(ValueError):
        log.append(1, np.zeros((2, DIM + 1), np.float32))
    log.close()
    with pytest.raises(LogCorrupt, match="dimension"):
        _read(tmp_path, DIM * 2)
