"""Decoupled insertion (collection_index.py): a commit acknowledges once its vectors are logged and
in the collection's fresh segment; the linker moves them into the HNSW graph later. Searchable
at once, deletes wherever the vectors are, snapshots and log truncation that never lose an
unlinked video, and recovery that replays them into the fresh segment."""

from __future__ import annotations

import json
import os
import pathlib
import sys
import threading
import time

import numpy as np
import pytest

from frameseek.ids import sample_ids, split_sample_ids
from frameseek.service.recall import exact_top_videos
from frameseek.storage import EmbeddedStorage
from frameseek.storage.vectorlog import list_segments

from .helpers import needs_index
from .test_storage_recovery import DIM, _rec, _unit

pytestmark = needs_index


def _open(path, linker: bool = False) -> EmbeddedStorage:
    """Storage whose linker is stopped unless asked for: the tests link with link_step/link_all."""
    st = EmbeddedStorage(str(path))
    st.open()
    if not linker:
        st._linker.stop()
    return st


def _coll(st) -> int:
    return st.create_collection("c", model="m", dimension=DIM, metric="ip", sampling={}, index={"ef_search": 64}).id


def _ingest(st, cid, rng, n_videos, samples=5) -> dict[int, np.ndarray]:
    out = {}
    for i in range(n_videos):
        vecs = _unit(rng, samples)
        out[st.add_video(cid, _rec(f"sha-{len(st.video_entries())}-{i}"), np.arange(float(samples)), vecs).id] = vecs
    return out


def _top_video(st, cid, vec) -> int:
    ids, _ = st.search(cid, vec[None, :], 1)
    return int(split_sample_ids(ids[0])[0][0])


def _crash(st: EmbeddedStorage) -> None:
    """Stop without a snapshot, like kill -9."""
    for ci in st._colls.values():
        ci.log.close()
    st.catalog._db.close()


def test_a_commit_is_searchable_before_the_graph_holds_it(tmp_path):
    st = _open(tmp_path)
    cid = _coll(st)
    rng = np.random.default_rng(0)
    videos = _ingest(st, cid, rng, 6)
    ci = st._ci(cid)
    assert len(ci.index) == 0 and st.unlinked_vectors(cid) == 30 and st.vectors_of(cid) == 30
    for v, vecs in videos.items():
        assert _top_video(st, cid, vecs[2]) == v
        np.testing.assert_array_equal(st.video_vectors(v), vecs)
    groups, _, _ = st.search_groups(cid, next(iter(videos.values()))[:1], 6)
    assert sorted(groups[0].tolist()) == sorted(videos)
    # linked in steps of whole videos, oldest first
    assert ci.link_step(limit=12) == 10 and len(ci.index) == 10 and st.unlinked_vectors(cid) == 20
    assert st.link_all() == 20 and st.unlinked_vectors(cid) == 0 and st.vectors_of(cid) == 30
    assert all(_top_video(st, cid, vecs[4]) == v for v, vecs in videos.items())
    st.close()


def test_the_linker_links_the_backlog_in_the_background(tmp_path):
    st = _open(tmp_path, linker=True)
    cid = _coll(st)
    videos = _ingest(st, cid, np.random.default_rng(1), 4)
    ci = st._ci(cid)
    while st.unlinked_vectors(cid):  # the linker was woken by the commits
        with ci.link_lock:  # wait for the step in progress
            pass
    assert len(ci.index) == 20 and all(_top_video(st, cid, x[0]) == v for v, x in videos.items())
    st.close()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="a nice value per thread is Linux's")
def test_the_linker_runs_nicer_than_commits_and_searches(tmp_path):
    """Graph building yields the CPU to commits and searches (linker.LINKER_NICENESS)."""
    from frameseek.storage.linker import LINKER_NICENESS

    st = _open(tmp_path, linker=True)
    cid = _coll(st)
    _ingest(st, cid, np.random.default_rng(2), 2)
    ci = st._ci(cid)
    while st.unlinked_vectors(cid):  # linked: the thread has set its priority before its first step
        with ci.link_lock:
            pass
    me = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    assert LINKER_NICENESS > 0
    assert os.getpriority(os.PRIO_PROCESS, st._linker.native_id) == min(19, me + LINKER_NICENESS)
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == me  # only the linker's thread
    st.close()


def test_deletes_reach_unlinked_videos_and_videos_being_linked(tmp_path):
    st = _open(tmp_path)
    cid = _coll(st)
    rng = np.random.default_rng(2)
    videos = _ingest(st, cid, rng, 4)
    a, b, c, d = videos
    st.delete_video(a)  # only in the fresh segment
    assert _top_video(st, cid, videos[a][0]) != a
    ci = st._ci(cid)

    deleter = threading.Thread(target=st.delete_video, args=(b,))

    class DeleteDuringInsert:
        """The graph, with video b deleted by another thread while the link step inserts it
        (outside the write lock): that delete must not return while a search can find b in the
        graph, i.e. before the step has taken it out again."""

        def __init__(self, graph):
            self.graph = graph

        def add(self, *args, **kw):
            self.graph.add(*args, **kw)
            deleter.start()
            deadline = time.monotonic() + 60
            while b in ci.unlinked and time.monotonic() < deadline:  # the delete has forgotten b
                time.sleep(0.001)
            deleter.join(0.2)
            assert deleter.is_alive()  # still waiting for this step

        def __getattr__(self, name):
            return getattr(self.graph, name)

    graph = ci.index
    ci.index = DeleteDuringInsert(graph)
    ci._live_graph = ci.index  # keep the LiveIndex over the real graph
    assert ci.link_step() == 10  # c and d; b was taken out of the graph again
    deleter.join()
    ci.index = ci._live_graph = graph
    assert sample_ids(b, 1)[0] not in graph and len(graph) == 10 and st.unlinked_vectors(cid) == 0
    assert _top_video(st, cid, videos[b][0]) != b
    assert {_top_video(st, cid, videos[v][1]) for v in (c, d)} == {c, d}
    st.close()
    st = _open(tmp_path)
    assert st.vectors_of(cid) == 10 and _top_video(st, cid, videos[c][3]) == c
    st.close()


def test_snapshots_keep_the_log_of_unlinked_videos_and_recovery_replays_them(tmp_path):
    st = _open(tmp_path)
    cid = _coll(st)
    rng = np.random.default_rng(3)
    linked = _ingest(st, cid, rng, 3)
    st.link_all()
    waiting = _ingest(st, cid, rng, 2)  # committed before both snapshots, never linked
    st.snapshot()
    more = _ingest(st, cid, rng, 2)
    ci = st._ci(cid)
    ci.link_step(limit=1)  # one of `more`: the graph changed, a second snapshot is written
    st.snapshot()
    d = ci.dir
    meta = json.loads(pathlib.Path(d, "snapshot.json").read_text())
    assert meta["replay_from"] < meta["segment"]
    assert min(list_segments(d)) <= meta["replay_from"]  # truncation kept the unlinked records
    tail = _ingest(st, cid, rng, 1)  # only in the log tail
    _crash(st)
    st = _open(tmp_path)
    report = next(r for r in st.recovery_report if r["collection"] == "c")
    assert report["unlinked_vectors"] == 5 * (len(waiting) + 1 + len(tail))
    everything = {**linked, **waiting, **more, **tail}
    assert st.vectors_of(cid) == 5 * len(everything)
    assert all(_top_video(st, cid, x[3]) == v for v, x in everything.items())
    # once linked, a snapshot covers everything and the log before it can go
    st.link_all()
    st.snapshot()
    meta = json.loads(pathlib.Path(d, "snapshot.json").read_text())
    assert meta["replay_from"] == meta["segment"]
    st.close()
    st = _open(tmp_path)
    assert st.unlinked_vectors(cid) == 0 and all(_top_video(st, cid, x[3]) == v for v, x in everything.items())
    st.close()


def test_the_recall_monitors_exact_search_reads_unlinked_vectors(tmp_path):
    """The monitor scores the collection's videos exactly from the index it is handed (LiveIndex):
    videos still only in the fresh segment are scored too."""
    st = _open(tmp_path)
    cid = _coll(st)
    rng = np.random.default_rng(4)
    videos = _ingest(st, cid, rng, 3)
    st._ci(cid).link_step(limit=1)
    (live,) = [index for rec, index in st.live_collections() if rec.id == cid]
    q = np.stack([x[1] for x in videos.values()])
    ids, scores = exact_top_videos(live, [(v, 5) for v in videos], q, 1)
    assert ids[:, 0].tolist() == list(videos) and np.allclose(scores[:, 0], 1.0, atol=1e-5)
    st.close()


def test_a_snapshot_saves_the_graph_again_only_once_it_changed(tmp_path):
    """Commits since the last snapshot are in the fresh segment and the log (kept from replay_from
    on): saving an unchanged graph again would only cost time, every snapshot interval of a long
    backlog."""
    st = _open(tmp_path)
    cid = _coll(st)
    rng = np.random.default_rng(5)
    _ingest(st, cid, rng, 2)
    st.link_all()
    st.snapshot()
    path = pathlib.Path(st._ci(cid).dir, "snapshot.json")
    first = json.loads(path.read_text())
    waiting = _ingest(st, cid, rng, 2)
    st.snapshot()
    assert json.loads(path.read_text()) == first
    st.link_all()
    st.snapshot()
    assert json.loads(path.read_text())["segment"] > first["segment"]
    _crash(st)
    st = _open(tmp_path)
    assert all(_top_video(st, cid, x[0]) == v for v, x in waiting.items())
    st.close()


def test_a_collections_layer0_links_shape_its_graph_across_snapshots(tmp_path):
    # index.layer0_links (the bottom layer's link slots a vector holds, the memory lever of issue
    # 22): the graph the linker builds has them, and so does the one a restart loads.
    st = _open(tmp_path)
    idx = {"m": 8, "ef_construction": 40, "ef_search": 64, "layer0_links": 12}
    cid = st.create_collection("c", model="m", dimension=DIM, metric="ip", sampling={}, index=idx).id
    other = st.create_collection("d", model="m", dimension=DIM, metric="ip", sampling={}, index={"m": 8}).id
    rng = np.random.default_rng(5)
    videos = _ingest(st, cid, rng, 4)
    _ingest(st, other, rng, 2)
    st.link_all()
    assert st._ci(cid).index.M0 == 12 and len(st._ci(cid).index) == 20
    assert st._ci(other).index.M0 == st.default_layer0_links(8) == 16  # none given: the native default
    st.snapshot()
    st.close()
    st = _open(tmp_path)
    assert st._ci(cid).index.M0 == 12 and st._ci(other).index.M0 == 16
    assert {_top_video(st, cid, vecs[1]) for vecs in videos.values()} == set(videos)
    st.close()
