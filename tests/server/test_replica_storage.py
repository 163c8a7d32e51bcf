"""ReplicaStorage (read-only view used by `serve --workers N` replicas) against a real writer
(EmbeddedStorage) on the same data dir: it follows adds through the log tail, deletes at once,
new and deleted collections, snapshots that drop the segment it was reading, and an append in
progress (torn tail); and it never writes."""

from __future__ import annotations

import os

import numpy as np
import pytest

from frameseek.ids import split_sample_ids
from frameseek.storage import EmbeddedStorage, NotFound
from frameseek.storage.replica import ReplicaStorage
from frameseek.storage.vectorlog import list_segments, segment_path

from .helpers import needs_index, video_record

pytestmark = needs_index
DIM = 16


def _add(st, cid, i, rng, n=5):
    v = rng.standard_normal((n, DIM)).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    rec = video_record(
        f"{i:064x}", collection_id=cid, duration=float(n), width=8, height=8, sample_count=n, external_key=f"v{i}"
    )
    return st.add_video(cid, rec, np.arange(n, dtype=np.float64), v).id, v


def test_replica_follows_coarse_twins(tmp_path):
    """A video added with coarse twins (2n vectors in the log) reaches a replica whole: the same
    vector count as the writer, a twin's hit maps to its video, video_twins reads them back."""
    rng = np.random.default_rng(5)
    w = EmbeddedStorage(str(tmp_path), snapshot_every=10**9)
    w.open()
    c = w.create_collection("c", model="m", dimension=DIM, metric="ip", sampling={}, index={"ef_search": 64})
    rep = ReplicaStorage(str(tmp_path))
    rep.open()
    v = rng.standard_normal((6, DIM)).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    tw = rng.standard_normal((6, DIM)).astype(np.float32)
    tw /= np.linalg.norm(tw, axis=1, keepdims=True)
    rec = video_record("f" * 64, collection_id=c.id, duration=6.0, width=8, height=8, sample_count=6, external_key="tw")
    vid = w.add_video(c.id, rec, np.arange(6, dtype=np.float64), v, twins=tw).id
    rep.sync()
    assert rep.vectors_of(c.id) == w.vectors_of(c.id) == 12
    ids, _ = rep.search(c.id, tw[3:4], 1)
    assert split_sample_ids(ids[0])[0][0] == vid and split_sample_ids(ids[0])[1][0] == 9
    assert np.array_equal(rep.video_twins(vid), tw) and np.array_equal(rep.video_vectors(vid), v)
    rep.close()
    w.close()


def _top(rep, cid, q) -> int:
    ids, _ = rep.search(cid, q.reshape(1, -1), 1)
    return int(split_sample_ids(ids[0])[0][0])


def _tree(d) -> dict:
    out = {}
    for root, _, files in os.walk(d):
        for f in files:
            p = os.path.join(root, f)
            if not f.startswith("catalog.sqlite3"):  # SQLite readers may touch -shm
                out[p] = (os.path.getsize(p), os.stat(p).st_mtime_ns)
    return out


def test_replica_follows_the_writer(tmp_path):
    rng = np.random.default_rng(0)
    w = EmbeddedStorage(str(tmp_path), snapshot_every=10**9)
    w.open()
    c = w.create_collection("c", model="m", dimension=DIM, metric="ip", sampling={}, index={"ef_search": 64})
    vids = dict(_add(w, c.id, i, rng) for i in range(5))
    w.snapshot()
    vids.update(_add(w, c.id, i, rng) for i in range(5, 8))  # in the log tail only
    before = _tree(tmp_path)
    rep = ReplicaStorage(str(tmp_path))
    rep.open()
    assert not rep.changed()
    for vid, v in vids.items():
        assert _top(rep, c.id, v[2]) == vid
    rep.sync()
    assert _tree(tmp_path) == before  # opening, searching and syncing wrote nothing
    # add + delete through the writer: visible after one sync
    new, nv = _add(w, c.id, 8, rng)
    gone = next(iter(vids))
    w.delete_video(gone)
    assert rep.changed()
    rep.sync()
    assert not rep.changed()
    assert _top(rep, c.id, nv[1]) == new
    assert _top(rep, c.id, vids[gone][1]) != gone
    assert rep.vectors_of(c.id) == w.vectors_of(c.id)
    # two snapshots drop the segment the replica was tailing (the writer keeps the segments of the
    # previous snapshot on, its fallback); the next add lives in a new segment
    tailed = w._ci(c.id).log.seq
    w.link_all()  # a snapshot keeps the segments of videos not yet linked into the graph
    w.snapshot()
    _add(w, c.id, 7, rng)
    w.link_all()
    w.snapshot()
    new2, nv2 = _add(w, c.id, 9, rng)
    assert list_segments(w._ci(c.id).dir) == [tailed + 1, tailed + 2]
    rep.sync()
    assert _top(rep, c.id, nv2[0]) == new2 and rep.vectors_of(c.id) == w.vectors_of(c.id)
    # a torn record (append in progress) at the tail is skipped, and read once complete
    seg = segment_path(w._ci(c.id).dir, w._ci(c.id).log.seq)
    good = os.path.getsize(seg)
    new3, nv3 = _add(w, c.id, 10, rng)
    with open(seg, "rb") as f:
        whole = f.read()
    with open(seg, "r+b") as f:
        f.truncate(good + 20)
    rep.sync()  # the catalog says active but the record is torn: not found yet -> reload, still torn
    with open(seg, "wb") as f:
        f.write(whole)
    w.delete_video(new2)  # any commit makes the replica look again
    rep.sync()
    assert _top(rep, c.id, nv3[3]) == new3
    assert rep.vectors_of(c.id) == w.vectors_of(c.id)
    # collections created and deleted by the writer
    c2 = w.create_collection("c2", model="m", dimension=DIM, metric="ip", sampling={}, index={})
    v2, vv2 = _add(w, c2.id, 11, rng)
    rep.sync()
    assert _top(rep, c2.id, vv2[0]) == v2
    w.delete_collection("c2", force=True)
    rep.sync()
    with pytest.raises(NotFound):
        rep.search(c2.id, vv2[:1], 1)
    with pytest.raises(RuntimeError):
        rep.delete_video(new)
    rep.close()
    w.close()
