"""Storage.add_videos: several videos in one commit (UpsertItems' batches). All of a batch is
durable and searchable together, a batch that fails before its commit point leaves none of it
(after a crash too), an invalid member refuses the whole batch, and one batch costs one vector-log
fsync rather than one per video."""

from __future__ import annotations

import os

import numpy as np
import pytest

from frameseek.storage import InvalidArgument, ModalityData, NewVideo, VideoQuery

from .helpers import needs_index
from .test_storage_extras import _crash, _faces, _new
from .test_storage_recovery import DIM, _open, _rec, _unit

pytestmark = [needs_index]


def _batch(rng, n, tag, faces=False):
    out = []
    for i in range(n):
        extras = None
        if faces:
            extras = {
                "faces": ModalityData(times=np.zeros(2), vectors=_faces(rng, 2), payload=b"f"),
                "audio": ModalityData(times=np.zeros(1), payload=b"a"),
            }
        out.append(NewVideo(_rec(f"{tag}{i}"), np.arange(2.0), _unit(rng, 2), extras=extras))
    return out


def test_a_batch_commits_together_and_survives_a_crash(tmp_path):
    rng = np.random.default_rng(1)
    st, cid = _new(tmp_path)
    batch = _batch(rng, 40, "b", faces=True)
    vids = [v.id for v in st.add_videos(cid, batch)]
    assert len(set(vids)) == 40
    for v, new in zip(vids, batch):
        ids, _ = st.search(cid, new.vectors[1:2], 1)
        assert int(ids[0, 0]) >> 20 == v
    _crash(st)
    st = _open(tmp_path)
    assert sorted(int(x) for x in st.video_ids(VideoQuery(collection_id=cid))) == sorted(vids)
    assert all(st.video_extra(v, "faces") is not None for v in vids)
    st.close()


def test_a_batch_that_fails_before_its_commit_leaves_nothing(tmp_path):
    rng = np.random.default_rng(2)
    st, cid = _new(tmp_path)
    kept = st.add_videos(cid, _batch(rng, 3, "k"))
    activate = st.catalog.activate_many
    st.catalog.activate_many = lambda vids: (_ for _ in ()).throw(KeyboardInterrupt("killed before the commit"))
    with pytest.raises(KeyboardInterrupt):
        st.add_videos(cid, _batch(rng, 5, "lost"))
    st.catalog.activate_many = activate
    _crash(st)
    st = _open(tmp_path)
    assert sorted(int(x) for x in st.video_ids(VideoQuery(collection_id=cid))) == sorted(v.id for v in kept)
    assert st.vectors_of(cid) == 3 * 2
    st.close()


def test_an_invalid_member_refuses_the_whole_batch(tmp_path):
    rng = np.random.default_rng(3)
    st, cid = _new(tmp_path)
    batch = _batch(rng, 4, "x")
    batch.append(NewVideo(_rec("bad"), np.arange(2.0), np.ones((2, DIM + 1), dtype=np.float32)))
    with pytest.raises(InvalidArgument):
        st.add_videos(cid, batch)
    assert st.collection_counts(cid)[0] == 0 and st.vectors_of(cid) == 0
    st.close()


def test_one_log_fsync_per_batch(tmp_path, monkeypatch):
    rng = np.random.default_rng(4)
    st, cid = _new(tmp_path, modalities={})
    st.add_videos(cid, _batch(rng, 1, "warm"))
    calls = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (calls.append(fd), real(fd))[1])
    st.add_videos(cid, _batch(rng, 50, "n"))
    log_fd = st._ci(cid).log._fd
    assert calls.count(log_fd) == 1
    st.close()


def test_a_batch_commit_checksums_every_row_as_stored(tmp_path):
    """insert_pending_many reads the batch's rows back in one query for their checksums: every row
    has one, and it matches the row (a missing checksum would go unnoticed by the start's check)."""
    from frameseek.storage.catalog_schema import _CRC_VIDEO_COLS, _row_crc

    st, cid = _new(tmp_path)
    st.add_videos(cid, _batch(np.random.default_rng(9), 7, "crc"))
    rows = st.catalog._query(f"SELECT {_CRC_VIDEO_COLS}, row_crc FROM videos")
    assert len(rows) == 7 and all(r[-1] is not None and r[-1] == _row_crc(r[:-1]) for r in rows)
    st.close()


def test_checksums_written_with_the_rows_match_them_as_stored_for_any_value_types(tmp_path):
    """insert_pending_many computes each row's checksum before the insert, from the values as
    SQLite stores them: numpy scalars, integral floats in INTEGER columns, ints in REAL columns and
    labels all read back to the same checksum, and a restart finds no row damaged (guard: the
    checksums used to be read back from the stored rows)."""
    import dataclasses

    from frameseek.storage.catalog_schema import _CRC_VIDEO_COLS, _row_crc

    st, cid = _new(tmp_path)
    odd = [
        dataclasses.replace(
            _rec("a"), duration=np.float64(2.5), width=640.0, height=np.int64(48), labels={"b": "1", "a": "x"}
        ),
        dataclasses.replace(_rec("b"), duration=3, realtime_factor=np.float32(1.25), external_key="k", filename="f"),
        dataclasses.replace(_rec("c"), width=np.float64(7.5), size_bytes=np.uint32(9)),
    ]
    rng = np.random.default_rng(4)
    committed = st.add_videos(cid, [NewVideo(v, np.arange(2.0), _unit(rng, 2)) for v in odd])
    rows = st.catalog._query(f"SELECT {_CRC_VIDEO_COLS}, row_crc FROM videos")
    assert len(rows) == 3 and all(r[-1] == _row_crc(r[:-1]) for r in rows)
    st.close()
    st = _open(tmp_path)
    assert st.recovery_problems() == []
    stored = st.list_videos(VideoQuery(collection_id=cid), None, 10)[0]
    assert [v.state for v in stored] == ["active"] * 3
    # the records a commit returns (built from the values written, not read back) are the stored ones
    assert sorted(stored, key=lambda v: v.id) == committed
    assert [type(getattr(v, f)) for v in committed for f in ("duration", "width", "height", "size_bytes")] == [
        type(getattr(v, f))
        for v in sorted(stored, key=lambda v: v.id)
        for f in ("duration", "width", "height", "size_bytes")
    ]
    st.close()


def test_a_batch_commit_does_not_read_its_rows_back(tmp_path):
    """The committed records are built from the values written (catalog.PendingRows): a per-commit
    read-back of the rows cost a one-vector item more than its row. Guard: it used to query them."""
    st, cid = _new(tmp_path)

    def no_read_back(*_a, **_k):
        raise AssertionError("a commit read its rows back")

    st.catalog.active_video_entries = no_read_back
    got = st.add_videos(cid, _batch(np.random.default_rng(2), 5, "r"))
    assert [v.state for v in got] == ["active"] * 5 and len({v.create_time for v in got}) == 1
    assert [st.get_video(v.id) for v in got] == got
    st.close()


def test_batch_sample_ids_are_each_videos_sample_ids_in_order():
    from frameseek.ids import batch_sample_ids, sample_id, sample_ids

    rng = np.random.default_rng(3)
    vids = rng.integers(1, 2**40, 50).astype(np.uint64)
    counts = rng.integers(1, 70, 50)
    want = np.concatenate([sample_ids(int(v), int(c)) for v, c in zip(vids, counts)])
    assert np.array_equal(batch_sample_ids(vids, counts), want)
    assert sample_id(int(vids[0]), 3) == int(sample_ids(int(vids[0]), 1, first=3)[0])


def test_observers_hear_a_batch_commit_once(tmp_path):
    """An observer with the batch form gets one videos_added call per commit, in commit order
    (the search directory and the front end: one update per UpsertItems batch); one without it
    still gets video_added per video."""

    class Batched:
        def __init__(self):
            self.calls = []

        def videos_added(self, entries):
            self.calls.append([(v.id, v.content_sha256, len(ts)) for v, ts in entries])

    class Single:
        def __init__(self):
            self.calls = []

        def video_added(self, rec, timestamps):
            self.calls.append(rec.id)

    st, cid = _new(tmp_path)
    batched, single = Batched(), Single()
    st.add_observer(batched)
    st.add_observer(single)
    got = st.add_videos(cid, _batch(np.random.default_rng(5), 4, "o"))
    assert batched.calls == [[(v.id, f"o{i}", 2) for i, v in enumerate(got)]]
    assert single.calls == [v.id for v in got]
    st.close()
