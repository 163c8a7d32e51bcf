"""Per-video data of other modalities (storage.ModalityData): committed with the video, recovered from
snapshots and the log, deleted with it, and searched in the collection's own index for it."""

from __future__ import annotations

import pathlib
import sqlite3

import numpy as np
import pytest

from frameseek.ids import split_sample_ids
from frameseek.storage import EmbeddedStorage, FailedPrecondition, InvalidArgument, ModalityData, NotFound, catalog
from frameseek.storage.replica import ReplicaStorage
from frameseek.storage.vectorlog import list_segments, segment_path

from .helpers import needs_index
from .test_storage_recovery import DIM, _open, _rec, _unit

pytestmark = needs_index
FACE_DIM = 8
MODALITIES = {"faces": {"dimension": FACE_DIM, "metric": "l2"}, "audio": {}}


def _crash(st: EmbeddedStorage) -> None:
    """Stop without a snapshot, like kill -9."""
    for ci in st._colls.values():
        for x in ci.all_indexes():
            x.log.close()
    st.catalog._db.close()


def _faces(rng, n):
    return rng.standard_normal((n, FACE_DIM)).astype(np.float32)


def _new(tmp_path, modalities=MODALITIES):
    st = _open(tmp_path)
    c = st.create_collection(
        "people", model="m", dimension=DIM, metric="ip", sampling={}, index={}, modalities=modalities
    )
    return st, c.id


def _add(st, cid, rng, sha, n_faces=3, audio=b"\x01\x02\x03\x04"):
    faces = _faces(rng, n_faces)
    extras = {
        "faces": ModalityData(times=np.arange(n_faces) * 0.5, vectors=faces, payload=b"boxes-" + sha.encode()),
        "audio": ModalityData(times=np.zeros(1), payload=audio),
    }
    v = st.add_video(cid, _rec(sha), np.arange(4.0), _unit(rng, 4), extras=extras)
    return v.id, faces


def _nearest_face(st, cid, q):
    ids, dist = st.search_extra(cid, "faces", q[None, :], 1)
    video, item = split_sample_ids(ids[0])
    return int(video[0]), int(item[0]), float(dist[0, 0])


def test_extras_commit_with_the_video_and_are_searched_in_their_own_index(tmp_path):
    rng = np.random.default_rng(1)
    st, cid = _new(tmp_path)
    assert st.collection_by_id(cid).modalities == MODALITIES
    a, fa = _add(st, cid, rng, "a")
    b, fb = _add(st, cid, rng, "b", n_faces=5)
    assert _nearest_face(st, cid, fb[4])[:2] == (b, 4)
    assert _nearest_face(st, cid, fa[1])[:2] == (a, 1)
    videos, ids, _ = st.search_extra(cid, "faces", fa[:1], 2, per_video=True)
    assert [int(v) for v in videos[0]][0] == a and sorted(int(v) for v in videos[0]) == sorted([a, b])
    assert [int(split_sample_ids(ids[0])[1][0])] == [0]
    got = st.video_extra(b, "faces")
    np.testing.assert_array_equal(got.times, np.arange(5) * 0.5)
    np.testing.assert_array_equal(got.vectors, fb)
    assert got.payload == b"boxes-b"
    audio = st.video_extra(a, "audio")
    assert audio.payload == b"\x01\x02\x03\x04" and audio.vectors is None
    # the frame index is untouched by the face vectors
    assert st.vectors_of(cid) == 8
    st.close()


@pytest.mark.parametrize("how", ["snapshot", "log replay"])
def test_extras_survive_a_restart(tmp_path, how):
    rng = np.random.default_rng(2)
    st, cid = _new(tmp_path)
    a, fa = _add(st, cid, rng, "a")
    b, fb = _add(st, cid, rng, "b")
    if how == "snapshot":
        st.close()
    else:
        _crash(st)
    st = _open(tmp_path)
    assert not st.recovery_problems()
    assert _nearest_face(st, cid, fa[2])[:2] == (a, 2)
    assert _nearest_face(st, cid, fb[0])[:2] == (b, 0)
    np.testing.assert_array_equal(st.video_extra(a, "faces").vectors, fa)
    assert st.video_extra(b, "audio").payload == b"\x01\x02\x03\x04"
    st.close()


def test_a_modality_index_walks_what_its_spec_says_and_keeps_it_across_restarts(tmp_path):
    """A faces collection's index walks its float32 vectors (`FACE_INDEX_WALK`: no int8 copy, the
    memory a 128-d vector can spare); the frame index keeps the native default. After a graceful
    stop (snapshot) and after a crash (log replay into a new graph) the same holds, and a snapshot
    from before the setting (written with the int8 walk) is brought to it at load."""
    from frameseek.modality.faces import FACE_INDEX_WALK

    rng = np.random.default_rng(4)
    spec = {"faces": {"dimension": FACE_DIM, "metric": "l2", "walk_precision": FACE_INDEX_WALK}, "audio": {}}
    st, cid = _new(tmp_path, spec)
    a, fa = _add(st, cid, rng, "a")

    def walks(st):
        st.link_all()  # the vectors in the graphs, not only in the fresh segments
        ci = st._colls[cid]
        return ci.extras["faces"].index.walk_precision, ci.index.walk_precision

    assert FACE_INDEX_WALK == "float32"
    assert walks(st) == ("float32", "int8")
    st.close()
    st = _open(tmp_path)
    assert walks(st) == ("float32", "int8") and _nearest_face(st, cid, fa[1])[:2] == (a, 1)
    _crash(st)
    st = _open(tmp_path)
    assert walks(st) == ("float32", "int8") and _nearest_face(st, cid, fa[2])[:2] == (a, 2)
    # a snapshot written before the setting: its graph walked int8
    st._colls[cid].extras["faces"].index.walk_precision = "int8"
    b, fb = _add(st, cid, rng, "b")
    st.link_all()
    st.close()
    st = _open(tmp_path)
    assert walks(st) == ("float32", "int8") and _nearest_face(st, cid, fb[0])[:2] == (b, 0)
    st.close()


def test_delete_removes_a_videos_extras_everywhere(tmp_path):
    rng = np.random.default_rng(3)
    st, cid = _new(tmp_path)
    a, fa = _add(st, cid, rng, "a")
    b, _ = _add(st, cid, rng, "b")
    st.delete_video(a)
    assert _nearest_face(st, cid, fa[0])[0] == b
    with pytest.raises(NotFound):
        st.video_extra(a, "faces")
    assert st.catalog._query("SELECT count(*) FROM video_extras WHERE video_id=?", (a,)) == [(0,)]
    _crash(st)  # the delete holds across a restart (the log still has a's record)
    st = _open(tmp_path)
    assert _nearest_face(st, cid, fa[0])[0] == b
    st.close()


def test_an_ingest_that_never_committed_leaves_no_extras(tmp_path):
    """A crash between the pending row and the commit point: the pending row with its extras is
    dropped at start and the face vectors logged for it are never attached."""
    rng = np.random.default_rng(4)
    st, cid = _new(tmp_path)
    a, _ = _add(st, cid, rng, "a")
    activate = st.catalog.activate_many  # the commit point of add_video / add_videos
    st.catalog.activate_many = lambda vids: (_ for _ in ()).throw(KeyboardInterrupt("killed before the commit"))
    with pytest.raises(KeyboardInterrupt):
        _add(st, cid, rng, "never")
    st.catalog.activate_many = activate
    _crash(st)
    st = _open(tmp_path)
    assert st.catalog._query("SELECT DISTINCT video_id FROM video_extras") == [(a,)]
    assert st._ci(cid).extras["faces"].vector_count() == 3
    st.close()


def test_damaged_face_vectors_mark_their_video_damaged_in_every_index(tmp_path):
    rng = np.random.default_rng(5)
    st, cid = _new(tmp_path)
    a, fa = _add(st, cid, rng, "a")
    b, fb = _add(st, cid, rng, "b")
    x = st._ci(cid).extras["faces"]
    _crash(st)
    seg = pathlib.Path(segment_path(x.dir, list_segments(x.dir)[-1]))
    data = bytearray(seg.read_bytes())
    data[-40] ^= 0xFF  # inside b's record (the last one)
    seg.write_bytes(bytes(data))
    st = _open(tmp_path)
    assert any("faces" in p for p in st.recovery_problems())
    assert st.get_video(b).state == "damaged"
    assert _nearest_face(st, cid, fb[0])[0] == a  # b is searched in neither index
    ids, _ = st.search(cid, _unit(rng, 1), 10)
    assert b not in {int(v) for v in split_sample_ids(ids[0])[0]}
    st.close()


def test_bad_extras_are_refused_and_nothing_is_stored(tmp_path):
    rng = np.random.default_rng(6)
    st, cid = _new(tmp_path)
    cases = {
        "unknown modality": {"voices": ModalityData(times=np.zeros(1))},
        "wrong dimension": {"faces": ModalityData(times=np.zeros(2), vectors=_unit(rng, 2))},
        "missing vectors": {"faces": ModalityData(times=np.zeros(2))},
        "vectors for a modality without an index": {
            "audio": ModalityData(times=np.zeros(1), vectors=_faces(rng, 1)),
        },
        "one time per vector": {"faces": ModalityData(times=np.zeros(3), vectors=_faces(rng, 2))},
        "non-finite vectors": {"faces": ModalityData(times=np.zeros(1), vectors=np.full((1, FACE_DIM), np.nan))},
    }
    for what, extras in cases.items():
        with pytest.raises(InvalidArgument):
            st.add_video(cid, _rec(what), np.arange(2.0), _unit(rng, 2), extras=extras)
    assert st.collection_counts(cid)[0] == 0
    assert st.catalog._query("SELECT count(*) FROM video_extras") == [(0,)]
    # a video with no faces at all is fine: no vectors, no index entry
    v = st.add_video(
        cid, _rec("no faces"), np.arange(2.0), _unit(rng, 2), extras={"faces": ModalityData(times=np.zeros(0))}
    )
    assert len(st.video_extra(v.id, "faces")) == 0
    st.close()


def test_a_collection_without_the_modality_says_so(tmp_path):
    st = _open(tmp_path)
    c = st.create_collection("frames", model="m", dimension=DIM, metric="ip", sampling={}, index={})
    assert c.modalities == {}
    with pytest.raises(FailedPrecondition) as err:
        st.search_extra(c.id, "faces", np.zeros((1, FACE_DIM), np.float32), 1)
    assert err.value.reason == "MODALITY_NOT_ENABLED"
    with pytest.raises(InvalidArgument):
        st.create_collection(
            "bad", model="m", dimension=DIM, metric="ip", sampling={}, index={}, modalities={"faces": {"dimension": 0}}
        )
    st.close()


def test_delete_collection_removes_its_modality_indexes(tmp_path):
    rng = np.random.default_rng(7)
    st, cid = _new(tmp_path)
    _add(st, cid, rng, "a")
    st.delete_collection("people", force=True)
    assert not (tmp_path / "collections" / str(cid)).exists()
    assert st.catalog._query("SELECT count(*) FROM video_extras") == [(0,)]
    st.close()


def test_a_replica_forwards_modality_index_calls_and_reads_payloads(tmp_path):
    rng = np.random.default_rng(8)
    st, cid = _new(tmp_path)
    a, _ = _add(st, cid, rng, "a")
    st.snapshot()
    rep = ReplicaStorage(str(tmp_path))
    rep.open()
    assert rep.video_extra(a, "audio").payload == b"\x01\x02\x03\x04"
    with pytest.raises(RuntimeError, match="primary"):
        rep.search_extra(cid, "faces", _faces(rng, 1), 1)
    with pytest.raises(RuntimeError, match="primary"):
        rep.video_extra(a, "faces")
    rep.close()
    st.close()


def _rewound(tmp_path, version: int, script: str, seed: int):
    """A store holding one video in collection "old", its catalog rewound to schema `version` by the
    SQL `script` run on the closed catalog, then reopened (migrated): (store, collection, video)."""
    rng = np.random.default_rng(seed)
    st = _open(tmp_path)
    c = st.create_collection("old", model="m", dimension=DIM, metric="ip", sampling={}, index={})
    v = st.add_video(c.id, _rec("old"), np.arange(2.0), _unit(rng, 2))
    st.close()
    db = sqlite3.connect(str(tmp_path / "catalog.sqlite3"))
    db.executescript(f"BEGIN; {script} UPDATE meta SET value='{version}' WHERE key='schema_version'; COMMIT;")
    db.close()
    return _open(tmp_path), c, v


def _schema_version(st: EmbeddedStorage) -> int:
    return int(st.catalog._query("SELECT value FROM meta WHERE key='schema_version'")[0][0])


def test_version_2_catalog_is_migrated_to_frames_only_collections(tmp_path):
    st, c, v = _rewound(tmp_path, 2, "DROP TABLE video_extras; ALTER TABLE collections DROP COLUMN modalities;", seed=9)
    assert st.get_collection("old").modalities == {}
    assert st.get_video(v.id).state == "active"
    assert st.video_extra(v.id, "faces") is None
    assert _schema_version(st) == catalog.SCHEMA_VERSION
    st.close()


def test_version_4_catalog_gains_the_people_tables(tmp_path):
    st, c, v = _rewound(tmp_path, 4, "DROP TABLE person_tracks; DROP TABLE people;", seed=10)
    assert _schema_version(st) == catalog.SCHEMA_VERSION
    assert st.people.assign_tracks(c.id, v.id, [([0, 1], None)]) == {0: 1, 1: 1}
    assert st.people.assign_tracks(c.id, v.id, [([0], None)]) == {0: 1, 1: 1}  # idempotent
    st.close()
    st = _open(tmp_path)  # stored: the person and its tracks survive a restart, ids unchanged
    assert st.people.track_people([v.id]) == {(v.id, 0): 1, (v.id, 1): 1}
    assert st.people.set_person_name(c.id, 1, "A") and [p.display_name for p in st.people.people(c.id)] == ["A"]
    st.delete_video(v.id)
    assert st.people.people(c.id) == []  # its tracks went with the video
    st.close()


def test_a_newer_catalog_is_refused(tmp_path):
    st = _open(tmp_path)
    st.close()
    db = sqlite3.connect(str(tmp_path / "catalog.sqlite3"))
    db.execute("UPDATE meta SET value='99' WHERE key='schema_version'")
    db.commit()
    db.close()
    with pytest.raises(RuntimeError, match="schema 99"):
        EmbeddedStorage(str(tmp_path))


def test_version_5_catalog_drops_items_from_the_hash_index(tmp_path):
    """Schema 6: videos_by_hash rebuilt without items; lookups by hash still find the old media."""
    st, c, v = _rewound(
        tmp_path,
        5,
        "DROP INDEX videos_by_hash; CREATE INDEX videos_by_hash ON videos(collection_id, content_sha256);",
        seed=11,
    )
    assert _schema_version(st) == catalog.SCHEMA_VERSION
    (sql,) = st.catalog._query("SELECT sql FROM sqlite_master WHERE name='videos_by_hash'")[0]
    assert sql.endswith("WHERE kind != 'item'")
    assert st.find_video_by_hash(c.id, v.content_sha256).id == v.id
    st.close()
