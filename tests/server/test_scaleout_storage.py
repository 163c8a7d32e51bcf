"""The scale-out store (PostgreSQL + Milvus) as several servers see it: one library shared by every
store, half-done ingests of crashed servers never visible and swept, versioned migrations, and
honest failure (Unavailable, then recovery) when PostgreSQL or Milvus is killed mid-ingest."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import time
import uuid

import numpy as np
import psycopg
import pytest

from benchmarks.scale.backends import MilvusLite, PostgresCluster
from frameseek.ids import NO_ID, split_sample_ids
from frameseek.storage import Aborted, InvalidArgument, JobRecord, JobState, NotFound, Unavailable, VideoRecord
from frameseek.storage.postgres import PostgresCatalog, migrations
from frameseek.storage.scaleout import ScaleOutStorage

from .helpers import ROOT, needs_index

pytestmark = needs_index
DIM = 8


def _unit(x):
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def _rec(sha):
    return VideoRecord(0, 0, "video", 4.0, 64, 48, 0, 100, sha)


class Deployment:
    """Stores (servers) sharing one PostgreSQL database and one Milvus."""

    def __init__(self, url: str, uri: str):
        self.url, self.uri, self.prefix = url, uri, f"t{uuid.uuid4().hex[:10]}_"
        self.stores: list[ScaleOutStorage] = []

    def server(self, server_id: str, **kw) -> ScaleOutStorage:
        st = ScaleOutStorage(self.url, self.uri, server_id=server_id, milvus_prefix=self.prefix, **kw)
        st.open()
        self.stores.append(st)
        return st

    def close(self):
        for st in self.stores:
            st.close()


@pytest.fixture
def deployment(postgres_cluster, milvus_lite):
    d = Deployment(postgres_cluster.database(), milvus_lite.uri)
    yield d
    d.close()


def _until_reachable(st: ScaleOutStorage) -> None:
    """Until the store has reconnected by itself (the health probe's loop, here without a clock)."""
    while True:
        try:
            st.check()
            return
        except Unavailable:
            time.sleep(0.2)


def _videos_found(st, cid, q, k=20) -> set[int]:
    ids, _ = st.search(cid, q, k)
    return set(split_sample_ids(ids[ids != NO_ID])[0].tolist())


class _Seen:
    """A StorageObserver recording what a server's search directory is told."""

    def __init__(self):
        self.added, self.removed = [], []

    def collection_added(self, rec, index): ...
    def collection_removed(self, cid): ...

    def video_added(self, rec, ts):
        self.added.append(rec.id)

    def video_removed(self, vid):
        self.removed.append(vid)


def test_two_servers_serve_one_library(deployment):
    a, b = deployment.server("a"), deployment.server("b")
    seen_by_b = _Seen()
    b.add_observer(seen_by_b)
    c = a.create_collection("c", model="m", dimension=DIM, metric="ip", sampling={}, index={})
    rng = np.random.default_rng(0)
    v = _unit(rng.standard_normal((4, DIM)))
    vid = a.add_video(c.id, _rec("x"), np.arange(4.0), v).id
    # acknowledged through A: searchable through B at once, and B's directory learns the video
    assert b.get_collection("c").id == c.id
    assert vid in _videos_found(b, c.id, v[:1])
    assert seen_by_b.added == [vid] and b.video_entry(vid)[1].tolist() == [0, 1, 2, 3]
    # deleted through B: gone from A (searches, GetVideo)
    b.delete_video(vid)
    assert seen_by_b.removed == [vid]
    assert vid not in _videos_found(a, c.id, v[:1])
    with pytest.raises(NotFound):
        a.get_video(vid)
    # jobs: visible from every server, resumed only by the one that holds the upload
    a.create_job(JobRecord(id="job-a", collection_id=c.id, state=JobState.RUNNING, request_id="r-a"))
    assert b.get_job("job-a").state is JobState.RUNNING and b.job_for_request("r-a").id == "job-a"
    assert [j.id for j in a.unfinished_jobs()] == ["job-a"] and b.unfinished_jobs() == []


def test_layer0_links_other_than_milvuss_are_refused(deployment):
    # Milvus's HNSW keeps 2 * m bottom-layer links: another count would be stored but never built.
    a = deployment.server("a")
    with pytest.raises(InvalidArgument, match="layer0_links"):
        a.create_collection(
            "c", model="m", dimension=DIM, metric="ip", sampling={}, index={"m": 16, "layer0_links": 16}
        )
    with pytest.raises(NotFound):
        a.get_collection("c")
    c = a.create_collection(
        "c", model="m", dimension=DIM, metric="ip", sampling={}, index={"m": 16, "layer0_links": 32}
    )
    assert c.index["layer0_links"] == 32


def test_a_pending_video_is_never_searched(deployment):
    """Steps 1-2 of an ingest done (row pending, vectors in Milvus), the commit not yet: no
    server returns the video, although Milvus has its vectors."""
    a, b = deployment.server("a"), deployment.server("b")
    c = a.create_collection("c", model="m", dimension=DIM, metric="l2", sampling={}, index={})
    v = _unit(np.random.default_rng(1).standard_normal((3, DIM)))
    vid = a.catalog.insert_pending(c.id, _rec("p"), np.arange(3.0), 3, "a", 3600)
    a.vectors.insert(a.vectors.name(c.id), vid, v, np.arange(3.0), "l2")
    assert len(a.vectors.vectors(a.vectors.name(c.id), vid, 3)) == 3
    for st in (a, b):
        assert _videos_found(st, c.id, v[:1]) == set()
        groups, _, _ = st.search_groups(c.id, v[:1], 5)
        assert (groups == NO_ID).all()
        with pytest.raises(NotFound):
            st.video_entry(vid)


_CRASHING_INGEST = textwrap.dedent(
    """
    import sys, threading
    import numpy as np
    from frameseek.storage import NewVideo, VideoRecord
    from frameseek.storage.scaleout import ScaleOutStorage
    url, uri, prefix, cid = sys.argv[1:5]
    st = ScaleOutStorage(url, uri, server_id="crashed", milvus_prefix=prefix)
    st.open()
    def hang(video_ids):  # between the Milvus insert (2) and the commit (3)
        print("PENDING", *video_ids, flush=True)
        threading.Event().wait()
    st.catalog.activate_many = hang
    v = np.eye(3, 8, dtype=np.float32)
    batch = [NewVideo(VideoRecord(0, 0, "video", 3.0, 8, 8, 0, 10, f"crash{i}"), np.arange(3.0), v) for i in range(3)]
    st.add_videos(int(cid), batch)
    """
)


def test_kill9_mid_batch_ingest_then_the_restarted_server_sweeps_it(deployment):
    a = deployment.server("a")
    c = a.create_collection("c", model="m", dimension=DIM, metric="ip", sampling={}, index={})
    child = subprocess.Popen(
        [sys.executable, "-c", _CRASHING_INGEST, deployment.url, deployment.uri, deployment.prefix, str(c.id)],
        stdout=subprocess.PIPE,
        cwd=ROOT,
    )
    try:
        line = b""
        while not line.startswith(b"PENDING"):  # (its log lines come first)
            line = child.stdout.readline()
            assert line, "the ingest process died before its commit point"
        vids = [int(x) for x in line.split()[1:]]
    finally:
        child.kill()  # kill -9 with its batch between the Milvus insert and the commit
        child.wait()
        child.stdout.close()
    assert len(vids) == 3
    name = a.vectors.name(c.id)
    rows = "SELECT state FROM videos WHERE id = ANY(%s)"
    assert all(len(a.vectors.vectors(name, v, 3)) == 3 for v in vids)  # its vectors are in Milvus ...
    assert _videos_found(a, c.id, np.eye(3, DIM, dtype=np.float32)) == set()  # ... never returned
    deployment.server("b")  # another server starting within the lease leaves it alone
    assert a.catalog._rows(rows, (vids,)) == [("pending",)] * 3
    deployment.server("crashed")  # the crashed server restarts: its half-done batch goes, all of it
    assert a.catalog._rows(rows, (vids,)) == []
    assert all(len(a.vectors.vectors(name, v, 3)) == 0 for v in vids)


def test_an_ingest_past_its_lease_is_swept_and_cannot_commit(deployment):
    a = deployment.server("a", pending_lease_s=3600)
    c = a.create_collection("c", model="m", dimension=DIM, metric="ip", sampling={}, index={})
    vid = a.catalog.insert_pending(c.id, _rec("slow"), np.arange(2.0), 2, "a", lease_s=0)  # already expired
    a.vectors.insert(a.vectors.name(c.id), vid, np.eye(2, DIM, dtype=np.float32), np.arange(2.0), "ip")
    b = deployment.server("b")  # sweeps at start: the lease ran out
    assert len(b.vectors.vectors(b.vectors.name(c.id), vid, 2)) == 0
    with pytest.raises(Aborted) as e:
        a.catalog.activate(vid)
    assert e.value.reason == "INGEST_LEASE_EXPIRED"


def test_migrations_are_versioned_and_applied_once(postgres_cluster):
    url = postgres_cluster.database()
    catalogs = [PostgresCatalog(url) for _ in range(3)]
    threads = [threading.Thread(target=c.open) for c in catalogs]  # servers starting together
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        versions = catalogs[0]._rows("SELECT version, name FROM schema_migrations ORDER BY version")
        assert versions == [(v, n) for v, n, _ in migrations()] and len(versions) >= 2
        catalogs[0]._rows("INSERT INTO schema_migrations (version, name) VALUES (9999, 'future') RETURNING version")
        newer = PostgresCatalog(url)
        with pytest.raises(RuntimeError, match="schema version 9999"):
            newer.open()
        newer.close()
    finally:
        for c in catalogs:
            c.close()


def test_a_catalog_from_before_the_people_tables_is_upgraded(postgres_cluster, monkeypatch):
    """A deployment whose catalog predates 0003 (people): its faces videos, committed then, are
    found waiting for their persons once a server with the people tables starts."""
    from frameseek.storage import ModalityData, postgres

    url = postgres_cluster.database()
    known = migrations()
    monkeypatch.setattr(postgres, "migrations", lambda: [m for m in known if m[0] <= 2])
    old = PostgresCatalog(url)
    old.open()
    c = old.create_collection(
        "f", model="m", dimension=DIM, metric="ip", sampling={}, index={}, modalities={"faces": {}}
    )
    faces = {"faces": ModalityData(times=np.arange(3.0), payload=b"boxes")}
    with_faces = old.insert_pending(c.id, _rec("a"), np.arange(2.0), 2, "s", 60.0, faces)
    without = old.insert_pending(c.id, _rec("b"), np.arange(2.0), 2, "s", 60.0, {"faces": ModalityData(np.zeros(0))})
    old.activate_many([with_faces, without])
    old.close()
    monkeypatch.undo()
    new = PostgresCatalog(url)
    new.open()
    try:
        assert new.schema_version() == max(v for v, _, _ in known) >= 3
        assert new.unassigned_videos(c.id, "faces") == [with_faces]
        assert new.assign_tracks(c.id, with_faces, [([0, 1, 2], None)]).keys() == {0, 1, 2}
        assert new.unassigned_videos(c.id, "faces") == []
    finally:
        new.close()


def test_person_assignments_of_a_collection_exclude_each_other_across_servers(deployment):
    """People.assign_video decides a video's persons from the persons of other videos, then
    writes them: held under `people.assigning(collection)`, a second server's assignment in the
    same collection waits for the first (or both would make a new person of one face), while
    another collection's goes ahead."""
    a, b = deployment.server("a"), deployment.server("b")
    c = a.create_collection("c", model="m", dimension=DIM, metric="ip", sampling={}, index={})
    other = a.create_collection("o", model="m", dimension=DIM, metric="ip", sampling={}, index={})
    entered = threading.Event()

    def assign_on_b():
        with b.people.assigning(c.id):
            entered.set()

    with a.people.assigning(c.id):
        with b.people.assigning(other.id):
            pass  # another collection: not held up
        t = threading.Thread(target=assign_on_b)
        t.start()
        while not a.catalog._rows("SELECT 1 FROM pg_locks WHERE locktype='advisory' AND NOT granted"):
            time.sleep(0.05)  # until B waits for the lock A holds (no clock: PostgreSQL says so)
        assert not entered.is_set()
    t.join()
    assert entered.is_set()


@pytest.fixture
def own_backends(tmp_path):
    """A PostgreSQL cluster and a Milvus Lite of this test's own, to kill."""
    pg = PostgresCluster().start()
    milvus = MilvusLite(str(tmp_path / "milvus"), str(tmp_path / "milvus.log")).start()
    yield pg, milvus
    milvus.stop()
    pg.remove()


def test_postgres_killed_mid_ingest(own_backends):
    pg, milvus = own_backends
    d = Deployment(pg.database(), milvus.uri)
    try:
        a = d.server("a", timeout_s=2)
        c = a.create_collection("c", model="m", dimension=DIM, metric="ip", sampling={}, index={})
        v = _unit(np.random.default_rng(2).standard_normal((3, DIM)))
        kept = a.add_video(c.id, _rec("kept"), np.arange(3.0), v).id
        insert = a.vectors.insert_many

        def insert_then_crash(*args):
            insert(*args)
            pg.kill9()  # PostgreSQL dies between the Milvus insert and the commit

        a.vectors.insert_many = insert_then_crash
        with pytest.raises(Unavailable) as e:
            a.add_video(c.id, _rec("lost"), np.arange(3.0), v + 0.01)
        assert e.value.reason == "BACKEND_UNAVAILABLE"
        with pytest.raises(Unavailable):
            a.search(c.id, v[:1], 5)
        a.vectors.insert_many = insert
        pg.start()
        _until_reachable(a)
        # the same store reconnects by itself; the acknowledged video is there, the other never was
        assert a.get_video(kept).content_sha256 == "kept"
        assert _videos_found(a, c.id, v[:1]) == {kept}
        a.sweep()  # a periodic sweep leaves this server's own pending ingests alone ...
        assert a.catalog._rows("SELECT state FROM videos WHERE state <> 'active'") == [("pending",)]
        a.sweep(restarted=True)  # ... a restarted server sweeps them, vectors first
        assert a.catalog._rows("SELECT id FROM videos WHERE state <> 'active'") == []
        assert a.collection_counts(c.id)[0] == 1 and a.vectors_of(c.id) == 3
    finally:
        d.close()


def test_milvus_killed_mid_ingest(own_backends):
    pg, milvus = own_backends
    d = Deployment(pg.database(), milvus.uri)
    try:
        a = d.server("a", timeout_s=2)
        c = a.create_collection("c", model="m", dimension=DIM, metric="l2", sampling={}, index={})
        v = np.random.default_rng(3).standard_normal((3, DIM)).astype(np.float32)
        kept = a.add_video(c.id, _rec("kept"), np.arange(3.0), v).id
        insert_pending = a.catalog.insert_pending_many

        def pending_then_crash(*args):
            vids = insert_pending(*args)
            milvus.kill9()  # Milvus dies between the pending rows and the vectors
            return vids

        a.catalog.insert_pending_many = pending_then_crash
        with pytest.raises(Unavailable) as e:
            a.add_video(c.id, _rec("lost"), np.arange(3.0), v + 1)
        assert e.value.reason == "BACKEND_UNAVAILABLE"
        a.catalog.insert_pending_many = insert_pending
        milvus.start()  # same data directory and port
        _until_reachable(a)
        assert _videos_found(a, c.id, v[:1]) == {kept}  # acknowledged before the crash: still there
        np.testing.assert_allclose(a.video_vectors(kept), v, rtol=1e-6)
        a.sweep(restarted=True)
        assert a.catalog._rows("SELECT id FROM videos WHERE state <> 'active'") == []
    finally:
        d.close()


def test_unreachable_backends_fail_fast_with_a_reason(postgres_cluster):
    st = ScaleOutStorage(postgres_cluster.url("nonexistent_db"), "http://127.0.0.1:9", server_id="x", timeout_s=1)
    with pytest.raises(Unavailable) as e:
        st.open()
    assert e.value.reason == "BACKEND_UNAVAILABLE" and "nonexistent_db" in str(e.value)
    with pytest.raises(Unavailable) as e:
        st.vectors.ping()
    assert "Milvus at http://127.0.0.1:9" in str(e.value)
    st.close()
    with pytest.raises(psycopg.OperationalError):  # the database really does not exist
        psycopg.connect(postgres_cluster.url("nonexistent_db")).close()
