"""Embedded storage engine: atomic add/delete, snapshots, recovery, and kill -9 durability."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from frameseek.ids import NO_ID, split_sample_ids
from frameseek.storage import EmbeddedStorage, InvalidArgument, NotFound, VideoQuery, VideoRecord

from .helpers import needs_index

pytestmark = needs_index
DIM = 16


def _unit(rng, n):
    v = rng.standard_normal((n, DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _rec(sha: str, labels=None) -> VideoRecord:
    return VideoRecord(
        id=0,
        collection_id=0,
        kind="video",
        duration=10.0,
        width=64,
        height=48,
        sample_count=0,
        size_bytes=1,
        content_sha256=sha,
        labels=labels or {},
    )


def _open(path, **kw) -> EmbeddedStorage:
    st = EmbeddedStorage(str(path), **kw)
    st.open()
    return st


def _coll(st):
    return st.create_collection(
        "default",
        model="m",
        dimension=DIM,
        metric="ip",
        sampling={"fps": 1.0},
        index={"m": 16, "ef_construction": 100, "ef_search": 64},
    )


def _groups_in_index(st, cid, vectors_by_video):
    """For each video, search its own first vector: the top hit must be that sample."""
    found = {}
    for vid, vecs in vectors_by_video.items():
        ids, _ = st.search(cid, vecs[:1], 1)
        found[vid] = int(split_sample_ids(ids[0])[0][0]) == vid
    return found


def test_counts_survive_restart(tmp_path):
    rng = np.random.default_rng(0)
    st = _open(tmp_path)
    c = _coll(st)
    for i in range(5):
        st.add_video(c.id, _rec(f"h{i}", {"i": str(i)}), np.arange(8, dtype=float) * 0.5, _unit(rng, 8))
    st.close()
    st = _open(tmp_path)
    assert st.collection_counts(c.id) == (5, 40, 50.0)
    assert st.vectors_of(c.id) == 40
    st.close()


def test_search_finds_sample_and_timestamp_and_delete_is_immediate(tmp_path):
    rng = np.random.default_rng(1)
    st = _open(tmp_path)
    c = _coll(st)
    data = {}
    for i in range(6):
        vecs = _unit(rng, 10)
        v = st.add_video(c.id, _rec(f"h{i}"), np.arange(10) * 2.0, vecs)
        data[v.id] = vecs
    target = list(data)[3]
    ids, dist = st.search(c.id, data[target][7:8], 3)
    vids, idx = split_sample_ids(ids[0])
    assert vids[0] == target and idx[0] == 7 and dist[0][0] == pytest.approx(0.0, abs=1e-5)
    assert st.video_timestamps(target)[idx[0]] == 14.0
    groups, best, _ = st.search_groups(c.id, data[target][7:8], 3)
    assert int(groups[0][0]) == target
    # group filter
    other = list(data)[0]
    g, _, _ = st.search_groups(c.id, data[target][7:8], 2, groups=np.array([other], dtype=np.uint64))
    assert int(g[0][0]) == other
    st.delete_video(target)
    ids, _ = st.search(c.id, data[target][7:8], 60)
    assert target not in set(split_sample_ids(ids[0][ids[0] != NO_ID])[0].tolist())
    with pytest.raises(NotFound):
        st.get_video(target)
    st.close()
    # after restart (snapshot taken at close) the delete holds and the rest is there
    st = _open(tmp_path)
    assert _groups_in_index(st, c.id, {k: v for k, v in data.items() if k != target}) == {
        k: True for k in data if k != target
    }
    assert st.vectors_of(c.id) == 50
    st.close()


def test_video_vectors_read_back_from_the_index_across_restart_and_delete(tmp_path):
    """video_vectors (the dense re-alignment's input) returns exactly the vectors added, in sample
    order, from the live index -- after a restart too -- and NotFound once the video is deleted."""
    rng = np.random.default_rng(4)
    st = _open(tmp_path)
    c = _coll(st)
    data = {}
    for i in range(3):
        vecs = _unit(rng, 7 + i)
        data[st.add_video(c.id, _rec(f"h{i}"), np.arange(7 + i) * 0.5, vecs).id] = vecs
    for vid, vecs in data.items():
        got = st.video_vectors(vid)
        assert got.dtype == np.float32 and np.array_equal(got, vecs)
    st.close()
    st = _open(tmp_path)
    for vid, vecs in data.items():
        assert np.array_equal(st.video_vectors(vid), vecs)
    gone = list(data)[1]
    st.delete_video(gone)
    with pytest.raises(NotFound):
        st.video_vectors(gone)
    st.close()


def test_coarse_twins_are_indexed_after_the_samples_and_live_and_die_with_their_video(tmp_path):
    """add_video(twins=...): a second vector per sample, indexed as the video's vectors n..2n-1
    (a hit on vector i is sample i % n); counted in vectors_of, not in the samples; replayed
    from the log after a crash, kept by a snapshot, removed with the video; video_vectors stays
    the samples' own vectors. Bad twins are refused before anything is written."""
    rng = np.random.default_rng(8)
    st = _open(tmp_path)
    c = _coll(st)
    vecs, twins = _unit(rng, 6), _unit(rng, 6)
    vid = st.add_video(c.id, _rec("tw"), np.arange(6) * 0.5, vecs, twins=twins).id
    plain = st.add_video(c.id, _rec("plain"), np.arange(4) * 0.5, _unit(rng, 4)).id
    assert st.collection_counts(c.id)[1] == 10 and st.vectors_of(c.id) == 16

    def hit(q):
        ids, dist = st.search(c.id, q[None, :], 1)
        v, i = split_sample_ids(ids[0])
        return int(v[0]), int(i[0]), float(dist[0][0])

    assert hit(twins[4]) == (vid, 10, pytest.approx(0.0, abs=1e-5))  # twin of sample 4 of 6
    assert hit(vecs[4])[:2] == (vid, 4)
    assert np.array_equal(st.video_vectors(vid), vecs)
    assert np.array_equal(st.video_twins(vid), twins) and st.video_twins(plain) is None
    for bad, reason in ((twins[:5], "DIMENSION_MISMATCH"), (np.full_like(twins, np.nan), "NON_FINITE_VECTOR")):
        with pytest.raises(InvalidArgument) as ei:
            st.add_video(c.id, _rec("bad"), np.arange(6) * 0.5, vecs, twins=bad)
        assert ei.value.reason == reason
    assert st.vectors_of(c.id) == 16 and st.find_video_by_hash(c.id, "bad") is None
    # crash (no snapshot): the log replays the twins
    st.catalog._db.close()
    for x in st._colls.values():
        x.log.close()
    st = _open(tmp_path)
    assert st.vectors_of(c.id) == 16 and hit(twins[2])[:2] == (vid, 8)
    st.close()  # snapshot at close
    st = _open(tmp_path)
    assert st.vectors_of(c.id) == 16 and hit(twins[2])[:2] == (vid, 8)
    st.delete_video(vid)
    assert st.vectors_of(c.id) == 4 and hit(twins[2])[0] == plain
    st.close()
    st = _open(tmp_path)
    assert st.vectors_of(c.id) == 4
    st.close()


def test_recovery_without_snapshot_replays_log_and_drops_pending(tmp_path):
    rng = np.random.default_rng(2)
    st = _open(tmp_path)
    c = _coll(st)
    data = {}
    for i in range(4):
        vecs = _unit(rng, 5)
        data[st.add_video(c.id, _rec(f"h{i}"), np.arange(5.0), vecs).id] = vecs
    deleted = list(data)[1]
    st.delete_video(deleted)
    # a crash between log append and catalog commit: pending row + logged record, never acknowledged
    ci = st._colls[c.id]
    pend = st.catalog.insert_pending(c.id, _rec("pending"), np.arange(3.0))
    ci.log.append(pend, _unit(rng, 3), "pending")
    st.catalog._db.close()  # no close(): no snapshot, like kill -9
    ci.log.close()
    st = _open(tmp_path)
    assert st.vectors_of(c.id) == 15
    assert st.find_video_by_hash(c.id, "pending") is None
    live = {k: v for k, v in data.items() if k != deleted}
    assert all(_groups_in_index(st, c.id, live).values())
    # a snapshot, then more adds, then a crash: snapshot + log tail
    st.snapshot()
    vecs = _unit(rng, 4)
    late = st.add_video(c.id, _rec("late"), np.arange(4.0), vecs).id
    st.delete_video(list(live)[0])
    st.catalog._db.close()
    for x in st._colls.values():
        x.log.close()
    st = _open(tmp_path)
    assert st.vectors_of(c.id) == 14
    assert _groups_in_index(st, c.id, {late: vecs}) == {late: True}
    st.close()


def test_labels_and_hash_lookup(tmp_path):
    rng = np.random.default_rng(3)
    st = _open(tmp_path)
    c = _coll(st)
    a = st.add_video(c.id, _rec("aa", {"team": "x"}), np.arange(2.0), _unit(rng, 2))
    st.add_video(c.id, _rec("bb", {"team": "y"}), np.arange(2.0), _unit(rng, 2))
    assert st.video_ids(VideoQuery(collection_id=c.id, labels={"team": "x"})).tolist() == [a.id]
    assert st.find_video_by_hash(c.id, "aa").id == a.id
    with pytest.raises(Exception, match="non-finite"):
        st.add_video(c.id, _rec("nan"), np.arange(2.0), np.full((2, DIM), np.nan, np.float32))
    with pytest.raises(Exception, match="vectors must be"):
        st.add_video(c.id, _rec("dim"), np.arange(2.0), np.zeros((2, DIM + 1), np.float32))
    assert st.find_video_by_hash(c.id, "nan") is None
    st.close()


WRITER = textwrap.dedent("""
    import sys, json, numpy as np
    from frameseek.storage import EmbeddedStorage, VideoRecord
    st = EmbeddedStorage(sys.argv[1], snapshot_every=int(sys.argv[2]))
    st.open()
    try:
        c = st.get_collection("default")
    except Exception:
        c = st.create_collection("default", model="m", dimension=16, metric="ip", sampling={}, index={})
    rng = np.random.default_rng(int(sys.argv[3]))
    i = 0
    while True:
        n = int(rng.integers(1, 50))
        v = rng.standard_normal((n, 16)).astype(np.float32)
        v /= np.linalg.norm(v, axis=1, keepdims=True)
        rec = VideoRecord(id=0, collection_id=c.id, kind="video", duration=float(n), width=1, height=1,
                          sample_count=n, size_bytes=1, content_sha256=f"{sys.argv[3]}-{i}")
        out = st.add_video(c.id, rec, np.arange(n, dtype=float), v)
        # acknowledged: print the id, the count and the first vector
        print("ACK " + json.dumps([out.id, n, v[0].tolist()]), flush=True)
        i += 1
""")


def test_kill9_during_writes_keeps_every_acknowledged_video(tmp_path):
    """A writer process is killed with SIGKILL at random points (including during snapshots);
    after reopening, every acknowledged video is present with all its vectors and nothing else is."""
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    data = tmp_path / "data"
    acked: dict[int, tuple[int, list]] = {}
    for round_ in range(4):
        proc = subprocess.Popen(
            [sys.executable, str(script), str(data), "300", str(round_)], stdout=subprocess.PIPE, text=True
        )
        lines = 0
        for line in proc.stdout:  # kill after a round-dependent number of acknowledgements
            if not line.startswith("ACK "):
                continue  # log lines
            vid, n, first = json.loads(line[4:])
            acked[vid] = (n, first)
            lines += 1
            if lines >= 15 + 10 * round_:
                proc.send_signal(signal.SIGKILL)
                break
        for line in proc.stdout:  # acknowledgements already in the pipe count too
            if not line.startswith("ACK "):
                continue
            vid, n, first = json.loads(line[4:])
            acked[vid] = (n, first)
        proc.wait()
        proc.stdout.close()
        st = _open(data)
        c = st.get_collection("default")
        active = {v: n for v, (n, _sha) in st.catalog.active_video_hashes(c.id).items()}
        assert set(acked) <= set(active), "an acknowledged video was lost"
        # nothing half-indexed: the index holds exactly the active videos' samples
        assert st.vectors_of(c.id) == sum(active.values())
        for vid, (n, first) in acked.items():
            assert active[vid] == n
            ids, _ = st.search(c.id, np.asarray([first], np.float32), 1)
            assert split_sample_ids(ids[0])[0][0] == vid and split_sample_ids(ids[0])[1][0] == 0
        st.catalog.close()
        for x in st._colls.values():
            x.log.close()
    assert len(acked) >= 4 * 15
