"""The Storage contract (frameseek.storage.base.Storage), one suite run against every backend: the
embedded store (SQLite + native HNSW + vector log) and the scale-out store (PostgreSQL + Milvus
Lite, real processes started by the tests: tests/server/backends.py). Same ingests, same answers;
approximate searches are compared by recall against an exact search over the same vectors."""

from __future__ import annotations

import uuid

import numpy as np
import pytest

from frameseek import _native
from frameseek.ids import NO_ID, split_sample_ids
from frameseek.storage import (
    ITEM_KIND,
    TUNED_EF,
    AlreadyExists,
    EmbeddedStorage,
    FailedPrecondition,
    InvalidArgument,
    JobRecord,
    JobState,
    ModalityData,
    NewVideo,
    NotFound,
    VideoQuery,
    VideoRecord,
)

from .helpers import needs_index

pytestmark = needs_index
DIM = 16
INDEX = {"m": 16, "ef_construction": 200, "ef_search": 128}
FACES = {"faces": {"dimension": 8, "metric": "l2"}, "audio": {}}


class Backend:
    """Opens the store under test, again and again on the same data (a restart)."""

    def __init__(self, kind: str, request, tmp_path):
        self.kind, self.opened = kind, []
        if kind == "embedded":
            self.make = lambda: EmbeddedStorage(str(tmp_path / "data"))
        else:
            from frameseek.storage.scaleout import ScaleOutStorage

            url = request.getfixturevalue("postgres_cluster").database()
            uri = request.getfixturevalue("milvus_lite").uri
            prefix = f"t{uuid.uuid4().hex[:10]}_"
            self.make = lambda server_id="server-a": ScaleOutStorage(
                url, uri, server_id=server_id, milvus_prefix=prefix
            )

    def open(self, *args):
        st = self.make(*args)
        st.open()
        self.opened.append(st)
        return st

    def close_all(self):
        for st in self.opened:
            st.close()


@pytest.fixture(params=["embedded", "milvus"])
def backend(request, tmp_path):
    b = Backend(request.param, request, tmp_path)
    yield b
    b.close_all()


def _record(sha: str, labels: dict | None = None) -> VideoRecord:
    return VideoRecord(0, 0, "video", 10.0, 64, 48, 0, 1000, sha, labels=labels or {})


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def _library(rng, videos=30, samples=12):
    """Clustered unit vectors (one centre per video, samples around it), as frame embeddings are."""
    centres = rng.standard_normal((videos, DIM))
    return [_unit(c + 0.35 * rng.standard_normal((samples, DIM))) for c in centres]


def _ingest(st, cid, library, twins=False):
    ids = []
    for i, v in enumerate(library):
        t = _unit(v + 0.05) if twins else None
        ids.append(st.add_video(cid, _record(f"sha{i}"), np.arange(len(v)) * 0.5, v, twins=t).id)
    return ids


def _exact(stored: np.ndarray, stored_ids: np.ndarray, q: np.ndarray, k: int, metric: str) -> np.ndarray:
    if metric == "ip":
        d = 1 - q @ stored.T
    else:
        d = ((q[:, None, :] - stored[None]) ** 2).sum(-1)
    return stored_ids[np.argsort(d, axis=1)[:, :k]]


def test_the_default_layer0_links_is_what_the_backend_builds(backend):
    # The service resolves a collection's index.layer0_links 0 to the backend's own default; every
    # backend accepts its default (the embedded graph's native rule, Milvus's fixed 2 * m) and keeps it.
    st = backend.open()
    m = INDEX["m"]
    want = {"embedded": _native.hnsw_default_layer0_links(m), "milvus": 2 * m}[backend.kind]
    assert st.default_layer0_links(m) == want
    c = st.create_collection(
        "c", model="m", dimension=DIM, metric="ip", sampling={}, index=dict(INDEX, layer0_links=want)
    )
    assert st.get_collection("c").index["layer0_links"] == c.index["layer0_links"] == want


@pytest.mark.parametrize("metric", ["ip", "l2"])
def test_knn_recall_against_exact_and_native_distances(backend, metric):
    st = backend.open()
    c = st.create_collection("c", model="m", dimension=DIM, metric=metric, sampling={}, index=INDEX)
    rng = np.random.default_rng(1)
    lib = _library(rng)
    vids = _ingest(st, c.id, lib)
    stored = np.concatenate(lib)
    stored_ids = np.concatenate(
        [(np.uint64(v) << np.uint64(20)) + np.arange(len(x), dtype=np.uint64) for v, x in zip(vids, lib, strict=True)]
    )
    q = _unit(np.concatenate([x[:2] for x in lib[:10]]) + 0.1 * rng.standard_normal((20, DIM)))
    k = 10
    ids, dist = st.search(c.id, q, k)
    truth = _exact(stored, stored_ids, q, k, metric)
    recall = np.mean([len(set(ids[i]) & set(truth[i])) / k for i in range(len(q))])
    assert recall >= 0.95, recall
    # the native index's distance conventions: 1 - inner product of unit vectors, or squared L2
    row = {int(i): n for n, i in enumerate(stored_ids)}
    for i in range(len(q)):
        for j in range(k):
            v = stored[row[int(ids[i, j])]]
            want = 1 - q[i] @ v if metric == "ip" else ((q[i] - v) ** 2).sum()
            assert dist[i, j] == pytest.approx(want, abs=1e-4)
    assert np.all(np.diff(dist, axis=1) >= -1e-6)  # best first
    assert st.vectors_of(c.id) == sum(len(x) for x in lib)


def test_the_one_search_answers_the_same_on_both_backends(request, tmp_path):
    """The native SearchDirectory (frame kNN -> votes per video -> timestamps) over each store's kNN:
    the embedded live index and Milvus (a KnnSource) give the same videos and timestamps."""
    rng = np.random.default_rng(2)
    lib = _library(rng, videos=25)
    queries = _unit(np.stack([x[3] for x in lib[:12]]) + 0.05 * rng.standard_normal((12, DIM)))
    answers = {}
    for kind in ("embedded", "milvus"):
        b = Backend(kind, request, tmp_path / kind)
        try:
            st = b.open()
            c = st.create_collection("c", model="m", dimension=DIM, metric="ip", sampling={}, index=INDEX)
            _ingest(st, c.id, lib, twins=True)  # twins: hits on vectors n..2n-1 map to sample i % n
            directory = _native.SearchDirectory()
            for rec, index in st.live_collections():
                directory.put_collection(rec.name, rec.id, rec.model, rec.is_default, index)
            for rec, ts in st.video_entries():
                directory.put_video(rec.id, rec.collection_id, ts)
            st.add_observer(_Mirror(directory))
            answers[kind] = [
                [(v, round(s, 3), [t for t, _ in m]) for v, s, m in directory.nearest_videos(c.id, q, 5, 3)]
                for q in queries
            ]
        finally:
            b.close_all()
    for emb, mil in zip(answers["embedded"], answers["milvus"], strict=True):
        assert [v for v, _, _ in emb][:3] == [v for v, _, _ in mil][:3]
        assert emb[0] == mil[0]  # best video, its score and its matched timestamps


class _Mirror:
    """A StorageObserver keeping a SearchDirectory in step (what frameseek.service.search does)."""

    def __init__(self, directory):
        self.d = directory

    def collection_added(self, rec, index):
        self.d.put_collection(rec.name, rec.id, rec.model, rec.is_default, index)

    def collection_removed(self, cid):
        self.d.remove_collection(cid)

    def video_added(self, rec, ts):
        self.d.put_video(rec.id, rec.collection_id, ts)

    def video_removed(self, vid):
        self.d.remove_video(vid)


def test_delete_is_gone_everywhere_and_idempotent(backend):
    st = backend.open()
    c = st.create_collection("c", model="m", dimension=DIM, metric="ip", sampling={}, index=INDEX)
    lib = _library(np.random.default_rng(3), videos=8)
    vids = _ingest(st, c.id, lib)
    victim = vids[4]
    st.delete_video(victim)
    ids, _ = st.search(c.id, lib[4][:3], 20)
    assert victim not in set(split_sample_ids(ids[ids != NO_ID])[0].tolist())
    with pytest.raises(NotFound):
        st.get_video(victim)
    with pytest.raises(NotFound):
        st.video_vectors(victim)
    with pytest.raises(NotFound):
        st.delete_video(victim)
    listed, total = st.list_videos(VideoQuery(collection_id=c.id), None, 100)
    assert victim not in [v.id for v in listed] and total == 7
    assert st.vectors_of(c.id) == sum(len(x) for i, x in enumerate(lib) if i != 4)
    assert st.collection_counts(c.id)[0] == 7


def test_vectors_and_twins_read_back(backend):
    st = backend.open()
    c = st.create_collection("c", model="m", dimension=DIM, metric="l2", sampling={}, index=INDEX)
    rng = np.random.default_rng(4)
    v = rng.standard_normal((5, DIM)).astype(np.float32)
    t = rng.standard_normal((5, DIM)).astype(np.float32)
    with_twins = st.add_video(c.id, _record("a"), np.arange(5.0), v, twins=t)
    plain = st.add_video(c.id, _record("b"), np.arange(5.0), v)
    np.testing.assert_allclose(st.video_vectors(with_twins.id), v, rtol=1e-6)
    np.testing.assert_allclose(st.video_twins(with_twins.id), t, rtol=1e-6)
    assert st.video_twins(plain.id) is None
    rec, ts = st.video_entry(with_twins.id)
    assert rec.sample_count == 5 and ts.tolist() == [0, 1, 2, 3, 4]
    assert st.vectors_of(c.id) == 15


def test_labels_filters_and_groups(backend):
    st = backend.open()
    c = st.create_collection("c", model="m", dimension=DIM, metric="ip", sampling={}, index=INDEX)
    lib = _library(np.random.default_rng(5), videos=6)
    vids = [
        st.add_video(c.id, _record(f"s{i}", {"team": "red" if i % 2 else "blue"}), np.arange(12.0), x).id
        for i, x in enumerate(lib)
    ]
    red = st.video_ids(VideoQuery(collection_id=c.id, labels={"team": "red"}))
    assert sorted(red.tolist()) == [vids[i] for i in (1, 3, 5)]
    ids, _ = st.search(c.id, lib[0][:2], 10, groups=red)
    assert set(split_sample_ids(ids[ids != NO_ID])[0].tolist()) <= set(red.tolist())
    groups, gids, _ = st.search_groups(c.id, lib[0][:1], 4)
    found = groups[0][groups[0] != NO_ID].tolist()
    assert len(found) == len(set(found)) == 4 and found[0] == vids[0]
    assert (gids[0][: len(found)] >> np.uint64(20)).tolist() == found
    listed, total = st.list_videos(VideoQuery(collection_id=c.id, labels={"team": "blue"}), None, 2)
    assert total == 3 and [v.id for v in listed] == [vids[4], vids[2]]  # newest first, paged
    assert st.find_video_by_hash(c.id, "s3").id == vids[3]


def test_videos_by_external_key_in_one_lookup(backend):
    """video_ids_by_key: the active videos under each key of a batch, within one collection; keys
    without any (and the empty key) are absent, a deleted video is gone."""
    import dataclasses

    st = backend.open()
    c = st.create_collection("c", model="m", dimension=DIM, metric="ip", sampling={}, index=INDEX)
    other = st.create_collection("o", model="m", dimension=DIM, metric="ip", sampling={}, index=INDEX)
    lib = _library(np.random.default_rng(6), videos=5)

    def add(cid, sha, key, x):
        return st.add_video(cid, dataclasses.replace(_record(sha), external_key=key), np.arange(12.0), x).id

    a, b, b2 = add(c.id, "a", "ka", lib[0]), add(c.id, "b", "kb", lib[1]), add(c.id, "b2", "kb", lib[2])
    add(other.id, "x", "ka", lib[3])
    gone = add(c.id, "g", "kg", lib[4])
    st.delete_video(gone)
    assert st.video_ids_by_key(c.id, ["ka", "kb", "kg", "none", ""]) == {"ka": [a], "kb": [b, b2]}
    assert st.video_ids_by_key(c.id, []) == {}


def test_lookups_by_content_hash_find_media_not_items(backend):
    """find_video_by_hash and list_videos' content_sha256 answer with media (ingest's duplicate
    check); an item (ITEM_KIND) with the same hash is never returned."""
    import dataclasses

    st = backend.open()
    c = st.create_collection("c", model="m", dimension=DIM, metric="ip", sampling={}, index=INDEX)
    lib = _library(np.random.default_rng(8), videos=2)
    item = st.add_video(c.id, dataclasses.replace(_record("same"), kind=ITEM_KIND), np.arange(12.0), lib[0]).id
    assert st.find_video_by_hash(c.id, "same") is None
    assert st.list_videos(VideoQuery(collection_id=c.id, content_sha256="same"), None, 10)[0] == []
    media = st.add_video(c.id, _record("same"), np.arange(12.0), lib[1]).id
    assert st.find_video_by_hash(c.id, "same").id == media
    assert [v.id for v in st.list_videos(VideoQuery(collection_id=c.id, content_sha256="same"), None, 10)[0]] == [media]
    assert st.get_video(item).content_sha256 == "same"  # the item keeps its hash


def test_collections(backend):
    st = backend.open()
    c = st.create_collection("c", model="m", dimension=DIM, metric="ip", sampling={"fps": 2}, index=INDEX)
    with pytest.raises(AlreadyExists):
        st.create_collection("c", model="m", dimension=DIM, metric="ip", sampling={}, index=INDEX)
    st.create_collection("b", model="m", dimension=4, metric="l2", sampling={}, index={})
    assert [r.name for r in st.list_collections("", 10)] == ["b", "c"]
    assert st.get_collection("c").sampling == {"fps": 2} and st.collection_by_id(c.id).name == "c"
    _ingest(st, c.id, _library(np.random.default_rng(6), videos=2))
    with pytest.raises(FailedPrecondition):
        st.delete_collection("c", force=False)
    st.delete_collection("c", force=True)
    with pytest.raises(NotFound):
        st.get_collection("c")
    again = st.create_collection("c", model="m", dimension=DIM, metric="ip", sampling={}, index=INDEX)
    assert st.collection_counts(again.id) == (0, 0, 0.0) and st.vectors_of(again.id) == 0


def test_bad_input_is_refused_and_stores_nothing(backend):
    st = backend.open()
    c = st.create_collection("c", model="m", dimension=DIM, metric="ip", sampling={}, index=INDEX)
    good = np.ones((3, DIM), np.float32)
    with pytest.raises(InvalidArgument):
        st.add_video(c.id, _record("x"), np.arange(3.0), np.ones((3, DIM + 1), np.float32))
    with pytest.raises(InvalidArgument):
        st.add_video(c.id, _record("x"), np.arange(3.0), np.where(np.eye(3, DIM) > 0, np.nan, good))
    with pytest.raises(InvalidArgument):
        st.add_video(c.id, _record("x"), np.arange(2.0), good)
    assert st.collection_counts(c.id) == (0, 0, 0.0) and st.vectors_of(c.id) == 0


def test_jobs_and_idempotency_keys(backend):
    st = backend.open()
    job = st.create_job(JobRecord(id="j1", collection_id=1, state=JobState.QUEUED, request_id="r1"))
    with pytest.raises(AlreadyExists):
        st.create_job(JobRecord(id="j2", collection_id=1, state=JobState.QUEUED, request_id="r1"))
    job.state, job.samples_done = JobState.RUNNING, 7
    st.update_job(job)
    assert st.get_job("j1").samples_done == 7 and st.job_for_request("r1").id == "j1"
    assert [j.id for j in st.unfinished_jobs()] == ["j1"]
    job.state = JobState.SUCCEEDED
    st.update_job(job)
    assert st.unfinished_jobs() == [] and st.job_for_request("nope") is None
    with pytest.raises(NotFound):
        st.get_job("j9")


def test_acknowledged_survives_a_restart(backend):
    st = backend.open()
    c = st.create_collection("c", model="m", dimension=DIM, metric="ip", sampling={}, index=INDEX)
    lib = _library(np.random.default_rng(7), videos=5)
    vids = _ingest(st, c.id, lib)
    before = st.search(c.id, lib[2][:2], 5)
    st.close()
    backend.opened.remove(st)
    st = backend.open()
    after = st.search(c.id, lib[2][:2], 5)
    np.testing.assert_array_equal(before[0], after[0])
    assert [v.id for v in st.list_videos(VideoQuery(collection_id=c.id), None, 10)[0]] == vids[::-1]


def test_the_tuned_breadth_is_kept_with_the_collection(backend):
    st = backend.open()
    c = st.create_collection("c", model="m", dimension=DIM, metric="ip", sampling={}, index=INDEX)
    tuned = {"ef": 300, "floor": INDEX["ef_search"], "target": 0.95}
    st.save_tuned_ef(c.id, tuned)
    st.close()
    backend.opened.remove(st)
    st = backend.open()
    assert st.get_collection("c").index == {**INDEX, TUNED_EF: tuned}  # the settings as created, plus it
    with pytest.raises(NotFound):
        st.save_tuned_ef(c.id + 1000, tuned)


def test_modality_extras(backend):
    st = backend.open()
    c = st.create_collection(
        "people", model="m", dimension=DIM, metric="ip", sampling={}, index=INDEX, modalities=FACES
    )
    rng = np.random.default_rng(8)
    faces = [rng.standard_normal((3, 8)).astype(np.float32) for _ in range(4)]
    vids = []
    for i, f in enumerate(faces):
        extras = {
            "faces": ModalityData(times=np.arange(3) * 0.5, vectors=f, payload=b"boxes%d" % i),
            "audio": ModalityData(times=np.zeros(1), payload=b"fp%d" % i),
        }
        vids.append(
            st.add_video(c.id, _record(f"x{i}"), np.arange(4.0), np.ones((4, DIM), np.float32), extras=extras).id
        )
    got = st.video_extra(vids[2], "faces")
    np.testing.assert_allclose(got.vectors, faces[2], rtol=1e-6)
    assert got.payload == b"boxes2" and got.times.tolist() == [0, 0.5, 1.0]
    assert st.video_extra(vids[1], "audio").payload == b"fp1"
    ids, dist = st.search_extra(c.id, "faces", faces[3][1:2], 1)
    video, item = split_sample_ids(ids[0])
    assert (int(video[0]), int(item[0])) == (vids[3], 1) and dist[0, 0] == pytest.approx(0, abs=1e-5)
    with pytest.raises(FailedPrecondition):
        st.search_extra(c.id, "audio", faces[0][:1], 1)
    with pytest.raises(InvalidArgument):
        st.add_video(
            c.id,
            _record("y"),
            np.arange(2.0),
            np.ones((2, DIM), np.float32),
            extras={"gait": ModalityData(np.zeros(1))},
        )
    st.delete_video(vids[3])
    ids, _ = st.search_extra(c.id, "faces", faces[3][1:2], 3)
    assert vids[3] not in set(split_sample_ids(ids[ids != NO_ID])[0].tolist())
    with pytest.raises(NotFound):
        st.video_extra(vids[3], "faces")


def _with_faces(st, cid, rng, sha: str, n_faces: int):
    """A video whose faces modality has `n_faces` items (0: a video without a face)."""
    faces = ModalityData(
        times=np.arange(n_faces) * 0.5,
        vectors=rng.standard_normal((n_faces, 8)).astype(np.float32) if n_faces else None,
    )
    return st.add_video(
        cid, _record(sha), np.arange(2.0), _unit(rng.standard_normal((2, DIM))), extras={"faces": faces}
    )


def test_people_tables(backend):
    """Storage.people (storage.people.PeopleTables): persons with stable ids and names, which
    track of which video each is, what is still unassigned; kept across a restart, and seen by
    a second server of the same deployment (the scale-out store); tracks go with their video."""
    st = backend.open()
    c = st.create_collection("c", model="m", dimension=DIM, metric="ip", sampling={}, index=INDEX, modalities=FACES)
    other = st.create_collection("o", model="m", dimension=DIM, metric="ip", sampling={}, index=INDEX, modalities=FACES)
    rng = np.random.default_rng(11)
    v1, v2 = (_with_faces(st, c.id, rng, f"p{i}", 3).id for i in range(2))
    _with_faces(st, c.id, rng, "none", 0)  # no faces: never waits for persons
    people = st.people
    assert people.unassigned_videos(c.id, "faces") == [v1, v2]
    got = people.assign_tracks(c.id, v1, [([0, 2], None), ([1], None)])
    a, b = got[0], got[1]
    assert got == {0: a, 1: b, 2: a} and a != b
    assert people.assign_tracks(c.id, v1, [([0, 1, 2], None)]) == got  # idempotent: nothing new
    in_v2 = people.assign_tracks(c.id, v2, [([0], b), ([1, 2], None)])
    d = in_v2[1]
    assert in_v2 == {0: b, 1: d, 2: d} and d not in (a, b)  # joins a known person, and a new one
    assert people.unassigned_videos(c.id, "faces") == []
    assert people.track_people([v1, v2])[(v2, 0)] == b and people.track_people([]) == {}

    listed = people.people(c.id)
    assert [p.id for p in listed] == [a, b, d]  # by id: allocated in order
    assert [p.tracks for p in listed] == [((v1, 0), (v1, 2)), ((v1, 1), (v2, 0)), ((v2, 1), (v2, 2))]
    assert [p.id for p in people.people(c.id, after=a, limit=1)] == [b]  # a page
    assert [p.id for p in people.people(c.id, video_id=v2)] == [b, d]
    assert people.people(other.id) == [] and people.person(other.id, a) is None

    assert people.set_person_name(c.id, b, "Ada") and not people.set_person_name(other.id, b, "x")
    assert not people.set_person_name(c.id, 1 << 40, "nobody")
    assert people.person(c.id, b).display_name == "Ada" and people.person_names([a, b]) == {a: "", b: "Ada"}

    st.close()  # a restart, and (scale-out) a second server of the same deployment
    backend.opened.remove(st)
    st = backend.open() if backend.kind == "embedded" else backend.open("server-b")
    people = st.people
    assert people.person(c.id, b).tracks == ((v1, 1), (v2, 0)) and people.person_names([b]) == {b: "Ada"}
    st.delete_video(v1)
    assert people.person(c.id, a) is None  # every track of it went with the video
    assert people.person(c.id, b).tracks == ((v2, 0),)
    assert people.track_people([v1]) == {}
    st.delete_collection("c", force=True)  # a collection with persons can be deleted
    assert people.people(c.id) == [] and people.people(other.id) == []


def test_a_page_of_people_reads_only_its_persons(backend, monkeypatch):
    """ListPeople pages through a collection's persons: a page (and one person) reads the rows of
    its own persons from the catalog, not those of every later person."""
    st = backend.open()
    c = st.create_collection("c", model="m", dimension=DIM, metric="ip", sampling={}, index=INDEX, modalities=FACES)
    rng = np.random.default_rng(12)
    v = _with_faces(st, c.id, rng, "crowd", 40).id
    got = st.people.assign_tracks(c.id, v, [([t], None) for t in range(40)])
    ids = sorted(set(got.values()))
    read: list[int] = []
    query = st.people._query

    def counted(sql, args=()):
        rows = query(sql, args)
        read.append(len(rows))
        return rows

    monkeypatch.setattr(st.people, "_query", counted)
    page = st.people.people(c.id, after=ids[4], limit=3)
    assert [p.id for p in page] == ids[5:8] and [p.tracks for p in page] == [((v, got_t),) for got_t in (5, 6, 7)]
    assert sum(read) == 3
    read.clear()
    assert st.people.person(c.id, ids[10]).tracks == ((v, 10),) and sum(read) == 1


def _faces_batch(rng, n, tag):
    return [
        NewVideo(
            _record(f"{tag}{i}"),
            np.arange(4.0),
            _unit(rng.standard_normal((4, DIM))),
            extras={"faces": ModalityData(times=np.arange(2.0), vectors=_unit(rng.standard_normal((2, 8))))},
        )
        for i in range(n)
    ]


def _listed(st, cid) -> list[int]:
    return sorted(v.id for v in st.list_videos(VideoQuery(collection_id=cid), None, 100)[0])


def test_a_batch_commits_together_all_or_none(backend):
    """add_videos (UpsertItems' commits): every member searchable with its modality data in
    order; an invalid member refuses the batch; a batch that fails at its commit point leaves
    none of it, also after a restart (the store sweeps what the failed batch left)."""
    st = backend.open()
    c = st.create_collection("c", model="m", dimension=DIM, metric="ip", sampling={}, index=INDEX, modalities=FACES)
    rng = np.random.default_rng(9)
    batch = _faces_batch(rng, 6, "b")
    got = st.add_videos(c.id, batch)
    assert [v.content_sha256 for v in got] == [f"b{i}" for i in range(6)] and len({v.id for v in got}) == 6
    for v, new in zip(got, batch):
        ids, _ = st.search(c.id, new.vectors[1:2], 1)
        assert int(split_sample_ids(ids[0])[0][0]) == v.id
        np.testing.assert_allclose(st.video_extra(v.id, "faces").vectors, new.extras["faces"].vectors, rtol=1e-6)
    assert st.vectors_of(c.id) == 6 * 4 and st.add_videos(c.id, []) == []

    bad = _faces_batch(rng, 3, "x") + [NewVideo(_record("bad"), np.arange(2.0), np.ones((2, DIM + 1), np.float32))]
    with pytest.raises(InvalidArgument):
        st.add_videos(c.id, bad)

    lost = _faces_batch(rng, 4, "lost")
    commit = st.catalog.activate_many  # both stores' commit point of a batch

    def fail(video_ids):
        raise RuntimeError("failed at the commit point")

    st.catalog.activate_many = fail
    with pytest.raises(RuntimeError):
        st.add_videos(c.id, lost)
    st.catalog.activate_many = commit
    kept = sorted(v.id for v in got)
    assert _listed(st, c.id) == kept and st.vectors_of(c.id) == 6 * 4
    st.close()
    backend.opened.remove(st)
    st = backend.open()
    assert _listed(st, c.id) == kept and st.collection_counts(c.id)[0] == 6
    for new in lost:
        ids, _ = st.search(c.id, new.vectors[:1], 3)
        assert set(split_sample_ids(ids[ids != NO_ID])[0].tolist()) <= set(kept)
        fids, _ = st.search_extra(c.id, "faces", new.extras["faces"].vectors[:1], 3)
        assert set(split_sample_ids(fids[fids != NO_ID])[0].tolist()) <= set(kept)


def test_storage_bytes_counts_what_is_stored(backend):
    st = backend.open()
    c = st.create_collection("c", model="m", dimension=DIM, metric="ip", sampling={}, index=INDEX)
    before = st.storage_bytes()
    lib = _library(np.random.default_rng(10), videos=20)
    _ingest(st, c.id, lib)
    assert st.storage_bytes() - before >= sum(x.nbytes for x in lib)
