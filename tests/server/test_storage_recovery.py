"""Storage recovery from damage (issue 17): a damaged log record in the middle of the newest
segment, damaged snapshots, a catalog that lost committed rows (truncated SQLite WAL), files left
by a snapshot killed mid-write."""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import shutil

import numpy as np
import pytest

from frameseek import metrics
from frameseek.ids import split_sample_ids
from frameseek.storage import EmbeddedStorage, NotFound, VideoQuery, catalog, catalog_schema
from frameseek.storage.catalog import CatalogDamaged
from frameseek.storage.vectorlog import segment_path

from .helpers import needs_index, video_record

pytestmark = needs_index
DIM = 16


def _unit(rng, n):
    v = rng.standard_normal((n, DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


_rec = video_record  # a 5 s video with this content hash (the other storage tests import it)


def _open(path) -> EmbeddedStorage:
    st = EmbeddedStorage(str(path))
    st.open()
    return st


def _crash(st: EmbeddedStorage) -> None:
    """Stop without a snapshot, like kill -9."""
    for ci in st._colls.values():
        ci.log.close()
    st.catalog._db.close()


def _top_video(st, cid, vec) -> int:
    ids, _ = st.search(cid, vec[None, :], 1)
    return int(split_sample_ids(ids[0])[0][0])


def _ingest(st, cid, rng, n_videos, samples=5):
    out = {}
    for i in range(n_videos):
        vecs = _unit(rng, samples)
        sha = f"sha-{cid}-{len(st.video_entries())}-{i}"
        out[st.add_video(cid, _rec(sha), np.arange(float(samples)), vecs).id] = vecs
    return out


def _damage() -> float:
    return sum(s.value for m in metrics.STORAGE_DAMAGE.collect() for s in m.samples if s.name.endswith("_total"))


def _new(tmp_path):
    st = _open(tmp_path)
    c = st.create_collection("default", model="m", dimension=DIM, metric="ip", sampling={}, index={"ef_search": 64})
    return st, c.id


def test_damaged_record_in_the_newest_log_marks_its_video_damaged_and_keeps_the_rest(tmp_path):
    rng = np.random.default_rng(1)
    st, cid = _new(tmp_path)
    videos = _ingest(st, cid, rng, 5)
    ids = list(videos)
    seg = segment_path(st._ci(cid).dir, st._ci(cid).log.seq)
    _crash(st)
    # flip a byte inside the vectors of the second video's record
    data = bytearray(pathlib.Path(seg).read_bytes())
    n_rec = (len(data) - 12) // 5
    data[12 + n_rec + n_rec // 2] ^= 0x55
    pathlib.Path(seg).write_bytes(bytes(data))
    before = _damage()
    st = _open(tmp_path)
    for v in ids[:1] + ids[2:]:  # every intact acknowledged record after the damaged one is replayed
        assert _top_video(st, cid, videos[v][2]) == v
    damaged = st.get_video(ids[1])
    assert damaged.state == "damaged"
    hits = split_sample_ids(st.search(cid, videos[ids[1]][:1], 10)[0][0])[0]
    assert ids[1] not in set(hits.tolist())
    listed, total = st.list_videos(VideoQuery(collection_id=cid), None, 10)
    assert total == 5 and {v.id: v.state for v in listed}[ids[1]] == "damaged"
    assert st.collection_counts(cid)[0] == 4  # not counted as searchable
    assert ids[1] not in set(st.video_ids(VideoQuery(collection_id=cid)).tolist())
    assert st.vectors_of(cid) == 4 * 5  # not half-searchable
    problems = st.recovery_problems()
    assert any("damaged log record" in p and f"video {ids[1]}" in p for p in problems), problems
    assert _damage() > before
    # the damage is not made permanent by a clean stop: the record is still skipped, not truncated
    st.close()
    st = _open(tmp_path)
    assert st.get_video(ids[1]).state == "damaged"
    assert [_top_video(st, cid, videos[v][0]) for v in ids[2:]] == ids[2:]
    st.delete_video(ids[1])  # a damaged video can be deleted (and its bytes ingested again)
    st.close()


def _snapshot_files(st, cid):
    ci = st._ci(cid)
    with open(os.path.join(ci.dir, "snapshot.json")) as f:
        return ci.dir, json.load(f)


def _two_snapshots(tmp_path, rng):
    st, cid = _new(tmp_path)
    videos = _ingest(st, cid, rng, 3)
    st.link_all()  # a snapshot saves the graph: what the linker moved into it since the last one
    st.snapshot()
    videos.update(_ingest(st, cid, rng, 3))
    st.link_all()
    st.snapshot()
    videos.update(_ingest(st, cid, rng, 2))  # in the log tail only
    d, meta = _snapshot_files(st, cid)
    _crash(st)
    return cid, videos, d, meta


def test_damaged_index_snapshot_falls_back_to_the_previous_snapshot_and_its_log(tmp_path):
    rng = np.random.default_rng(2)
    cid, videos, d, meta = _two_snapshots(tmp_path, rng)
    assert meta["previous"] is not None
    path = os.path.join(d, meta["index"])
    data = bytearray(pathlib.Path(path).read_bytes())
    data[len(data) // 2] ^= 0x01
    pathlib.Path(path).write_bytes(bytes(data))
    st = _open(tmp_path)
    assert st.vectors_of(cid) == 8 * 5
    assert all(_top_video(st, cid, vecs[1]) == v for v, vecs in videos.items())
    assert any("snapshot damaged" in p for p in st.recovery_problems())
    # the next snapshot is written and verified, and keeps the intact one as its fallback
    _ingest(st, cid, rng, 1)
    st.snapshot()
    _, meta2 = _snapshot_files(st, cid)
    assert meta2["previous"]["segment"] == meta["previous"]["segment"]
    st.close()
    st = _open(tmp_path)
    assert st.vectors_of(cid) == 9 * 5 and not st.recovery_problems()
    st.close()


def test_damaged_videos_table_of_a_snapshot_falls_back_too(tmp_path):
    rng = np.random.default_rng(3)
    cid, videos, d, meta = _two_snapshots(tmp_path, rng)
    path = os.path.join(d, meta["videos"])
    data = bytearray(pathlib.Path(path).read_bytes())
    data[-3] ^= 0x01  # a video id: np.load would read it without complaint
    pathlib.Path(path).write_bytes(bytes(data))
    st = _open(tmp_path)
    assert st.vectors_of(cid) == 8 * 5
    assert all(_top_video(st, cid, vecs[1]) == v for v, vecs in videos.items())
    assert any("checksum mismatch" in p for p in st.recovery_problems())
    st.close()


def test_unreadable_snapshot_json_uses_the_snapshot_files_on_disk_and_is_rewritten(tmp_path):
    rng = np.random.default_rng(8)
    cid, videos, d, meta = _two_snapshots(tmp_path, rng)
    pathlib.Path(d, "snapshot.json").write_text("{garbage")
    st = _open(tmp_path)
    assert st.vectors_of(cid) == 8 * 5
    assert all(_top_video(st, cid, vecs[1]) == v for v, vecs in videos.items())
    assert any("snapshot.json unreadable" in p for p in st.recovery_problems())
    assert {meta["index"], meta["previous"]["index"]} <= set(os.listdir(d))  # nothing deleted meanwhile
    st.close()  # writes a fresh snapshot although no vector was added
    st = _open(tmp_path)
    assert st.vectors_of(cid) == 8 * 5 and not st.recovery_problems()
    st.close()


def test_snapshot_tmp_files_left_by_a_kill_are_removed_at_start(tmp_path):
    rng = np.random.default_rng(4)
    st, cid = _new(tmp_path)
    _ingest(st, cid, rng, 2)
    st.snapshot()
    d = st._ci(cid).dir
    _crash(st)
    leftovers = ["snapshot-00000009.hnsw.tmp", "snapshot.json.tmp", "snapshot-00000009.videos.npy"]
    for name in leftovers:
        pathlib.Path(d, name).write_bytes(b"x" * 1000)
    st = _open(tmp_path)
    assert not set(leftovers) & set(os.listdir(d))
    assert st.vectors_of(cid) == 10
    st.close()


def test_truncated_catalog_wal_never_attaches_vectors_to_the_wrong_video(tmp_path):
    """Issue 17 item 4: the catalog loses its last commits (its -wal file is cut off) while the
    vector log keeps them. Their ids must not be handed out again, and a log record must never be
    attached to another video's row."""
    rng = np.random.default_rng(5)
    st, cid = _new(tmp_path)
    first = _ingest(st, cid, rng, 2)
    st.catalog._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # these two are in the main file
    main = tmp_path / "catalog.sqlite3"
    shutil.copy(main, tmp_path / "aside")
    lost = _ingest(st, cid, rng, 3, samples=6)  # these only in the WAL
    _crash(st)
    # the probe's truncation: the WAL's committed frames are gone (closing checkpointed them, so
    # put the main file back as it was before them)
    shutil.copy(tmp_path / "aside", main)
    for suffix in ("-wal", "-shm"):
        pathlib.Path(str(main) + suffix).unlink(missing_ok=True)
    st = _open(tmp_path)
    assert set(st.video_ids(VideoQuery(collection_id=cid)).tolist()) == set(first)
    assert any("lost committed rows" in p for p in st.recovery_problems()), st.recovery_problems()
    # new videos get fresh ids: none collides with an id whose vectors are in the log
    new = _ingest(st, cid, rng, 3, samples=4)
    assert not set(new) & set(lost)
    for v, vecs in {**first, **new}.items():
        assert _top_video(st, cid, vecs[0]) == v
        assert st.video_vectors(v).shape == (len(vecs), DIM)
    _crash(st)
    st = _open(tmp_path)
    for v, vecs in {**first, **new}.items():
        assert _top_video(st, cid, vecs[0]) == v
        np.testing.assert_allclose(st.video_vectors(v), vecs, atol=1e-6)
    for vecs in lost.values():  # the lost videos' vectors are not attached to anything
        assert _top_video(st, cid, vecs[0]) not in lost
    st.close()


def test_a_log_record_of_another_video_is_not_attached(tmp_path):
    """A log record whose id names a catalog row with other content (an id reused by a catalog
    that lost rows, before this fix) is skipped and reported; the row is marked damaged."""
    rng = np.random.default_rng(6)
    st, cid = _new(tmp_path)
    videos = _ingest(st, cid, rng, 2)
    ids = list(videos)
    st.catalog._db.execute("UPDATE videos SET content_sha256='other' WHERE id=?", (ids[1],))
    # a consistent row of other content (not a damaged one: its checksum matches)
    row = st.catalog._db.execute(f"SELECT {catalog._CRC_VIDEO_COLS} FROM videos WHERE id=?", (ids[1],)).fetchone()
    st.catalog._db.execute("UPDATE videos SET row_crc=? WHERE id=?", (catalog_schema._row_crc(row), ids[1]))
    _crash(st)
    st = _open(tmp_path)
    assert st.get_video(ids[1]).state == "damaged"
    assert any("do not match their catalog rows" in p for p in st.recovery_problems())
    assert _top_video(st, cid, videos[ids[1]][0]) != ids[1]
    try:
        st.video_vectors(ids[1])
        raise AssertionError("a damaged video has no vectors")
    except NotFound:
        pass
    st.close()


def test_a_search_replica_does_not_attach_a_log_record_of_another_video_either(tmp_path):
    from frameseek.storage.replica import ReplicaStorage

    rng = np.random.default_rng(12)
    st, cid = _new(tmp_path)
    videos = _ingest(st, cid, rng, 2)
    ids = list(videos)
    st.catalog._db.execute("UPDATE videos SET content_sha256='other' WHERE id=?", (ids[1],))
    rep = ReplicaStorage(str(tmp_path))
    rep.open()
    assert _top_video(rep, cid, videos[ids[0]][0]) == ids[0]
    assert rep.vectors_of(cid) == 5  # only the first video's vectors
    rep.close()
    st.close(snapshot=False)


def test_version_1_catalog_is_migrated_keeping_the_id_high_water(tmp_path):
    import sqlite3

    rng = np.random.default_rng(7)
    st, cid = _new(tmp_path)
    videos = _ingest(st, cid, rng, 3)
    st.delete_video(max(videos))
    st.close()
    db = sqlite3.connect(str(tmp_path / "catalog.sqlite3"))
    seq = db.execute("SELECT seq FROM sqlite_sequence WHERE name='videos'").fetchone()[0]
    sql = db.execute("SELECT sql FROM sqlite_master WHERE name='videos'").fetchone()[0]
    db.executescript(
        "PRAGMA foreign_keys=OFF; BEGIN;"
        f"CREATE TABLE v1 {sql[sql.index('(') :].replace(', ' + repr('damaged'), '')};"
        "INSERT INTO v1 SELECT * FROM videos; DROP TABLE videos; ALTER TABLE v1 RENAME TO videos;"
        "UPDATE meta SET value='1' WHERE key='schema_version';"
        f"UPDATE sqlite_sequence SET seq={seq} WHERE name='videos'; COMMIT;"
    )
    assert "'damaged'" not in db.execute("SELECT sql FROM sqlite_master WHERE name='videos'").fetchone()[0]
    db.close()
    st = _open(tmp_path)
    assert st.collection_counts(cid)[0] == 2 and not st.recovery_problems()
    new = st.add_video(cid, _rec("after-migration"), np.arange(2.0), _unit(rng, 2)).id
    assert new > max(videos)
    st.catalog.mark_damaged([new])
    assert st.catalog.get_video(new, "'damaged'").state == "damaged"
    st.close()


@pytest.mark.parametrize("page", [2, 3])
def test_damaged_catalog_is_refused_with_a_repair_path(tmp_path, page):
    """SQLite has no page checksums: a start runs quick_check and refuses a damaged catalog with a
    message that says how to rebuild it (instead of failing later with INTERNAL errors)."""
    rng = np.random.default_rng(9)
    st, cid = _new(tmp_path)
    _ingest(st, cid, rng, 3)
    st.close()
    with open(tmp_path / "catalog.sqlite3", "r+b") as f:
        f.seek(page * 4096)
        f.write(b"\xff" * 16)
    with pytest.raises(CatalogDamaged, match=r"is damaged .*\.recover"):
        _open(tmp_path)


def test_a_file_that_is_not_a_catalog_is_refused_clearly(tmp_path):
    (tmp_path / "catalog.sqlite3").write_bytes(b"not a database at all" * 100)
    with pytest.raises(CatalogDamaged, match="file is not a database"):
        EmbeddedStorage(str(tmp_path))


def test_a_catalog_row_whose_text_no_longer_decodes_is_refused_clearly(tmp_path):
    """quick_check passes (the b-tree is fine), but a flipped byte left invalid UTF-8 in a row."""
    rng = np.random.default_rng(10)
    st, cid = _new(tmp_path)
    _ingest(st, cid, rng, 2)
    st.catalog._db.execute("UPDATE videos SET content_sha256=CAST(X'61FF62' AS TEXT) WHERE id=1")
    _crash(st)
    with pytest.raises(CatalogDamaged, match="Could not decode"):
        _open(tmp_path)


def test_a_catalog_whose_schema_text_no_longer_decodes_is_refused_clearly(tmp_path):
    rng = np.random.default_rng(11)
    st, cid = _new(tmp_path)
    _ingest(st, cid, rng, 1)
    st.catalog._db.execute("UPDATE meta SET value=CAST(X'32FF' AS TEXT) WHERE key='schema_version'")
    _crash(st)
    with pytest.raises(CatalogDamaged, match="(?i)decode"):
        _open(tmp_path)


def _flip_in_catalog(path: pathlib.Path, marker: bytes) -> None:
    """Flip one byte of `marker` where it is stored in the catalog file (a closed, checkpointed catalog)."""
    data = bytearray(path.read_bytes())
    at = data.find(marker)
    assert at >= 0, "the marker is in the file"
    data[at + len(marker) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def _ingest_marked(tmp_path, rng, **fields):
    st, cid = _new(tmp_path)
    videos = _ingest(st, cid, rng, 3)
    marked = st.add_video(cid, dataclasses.replace(_rec("marked"), **fields), np.arange(5.0), _unit(rng, 5)).id
    st.close()
    return cid, videos, marked


@pytest.mark.parametrize(
    "fields, marker",
    [
        ({"filename": "clip-MARKER-2b7e.mp4"}, b"MARKER-2b7e"),
        ({"external_key": "key-MARKER-9f1c"}, b"MARKER-9f1c"),
        ({"labels": {"show": "MARKER-51aa"}}, b'"MARKER-51aa"'),  # the row's JSON copy of the labels
    ],
)
def test_a_flipped_byte_in_a_catalog_row_marks_its_video_damaged(tmp_path, fields, marker):
    """SQLite keeps no checksums: without the row's CRC this flip reads back as another valid
    value and the video would be served with altered fields (bench_corruption's `undetected`)."""
    rng = np.random.default_rng(11)
    cid, videos, marked = _ingest_marked(tmp_path, rng, **fields)
    _flip_in_catalog(tmp_path / "catalog.sqlite3", marker)
    before = _damage()
    st = _open(tmp_path)
    assert any("fail their checksums" in p for p in st.recovery_problems()), st.recovery_problems()
    assert st.get_video(marked).state == "damaged"
    assert _damage() == before + 1
    for vid in videos:  # the others are untouched and searchable
        assert st.get_video(vid).state == "active"
    ids, _ = st.search(cid, st.video_vectors(min(videos))[:1], 1)
    assert int(split_sample_ids(ids[0])[0][0]) == min(videos)
    st.close()


def test_a_labels_table_that_disagrees_with_its_row_marks_the_video_damaged(tmp_path):
    """Filters read the labels table: a flip there would make a filter match the wrong videos."""
    rng = np.random.default_rng(12)
    cid, videos, marked = _ingest_marked(tmp_path, rng, labels={"show": "news"})
    db = __import__("sqlite3").connect(str(tmp_path / "catalog.sqlite3"))
    db.execute("UPDATE labels SET value='newt' WHERE video_id=?", (marked,))
    db.commit()
    db.close()
    st = _open(tmp_path)
    assert st.get_video(marked).state == "damaged"
    assert st.video_ids(VideoQuery(labels={"show": "newt"})).size == 0
    st.close()


class _Removals:
    """A storage observer that records the removals it hears of (what the search directory and
    the native front end do with them: take the video out of their search path)."""

    def __init__(self):
        self.removed: list[int] = []

    def collection_added(self, rec, index):
        pass

    def collection_removed(self, collection_id):
        pass

    def video_added(self, rec, timestamps):
        pass

    def video_removed(self, video_id):
        self.removed.append(video_id)


def test_a_row_check_left_to_after_the_start_takes_a_damaged_video_out_when_it_runs(tmp_path):
    """The server opens its storage without the row pass (it checks once it serves): until then a
    video whose row was altered can be found; check_rows() then marks it damaged, takes it out of
    the index, the video map and every observer, and reports it like a check at open."""
    rng = np.random.default_rng(14)
    cid, videos, marked = _ingest_marked(tmp_path, rng, filename="clip-MARKER-c3d0.mp4")
    _flip_in_catalog(tmp_path / "catalog.sqlite3", b"MARKER-c3d0")
    st = EmbeddedStorage(str(tmp_path), check_rows_at_open=False)
    st.open()
    removals = _Removals()
    st.add_observer(removals)
    vec = st.video_vectors(marked)[:1]
    assert not st.rows_checked.is_set() and not st.recovery_problems()
    assert _top_video(st, cid, vec[0]) == marked  # the window before the check
    before = _damage()
    problems = st.check_rows()
    assert st.rows_checked.is_set()
    assert any("fail their checksums" in p for p in problems)
    assert any("fail their checksums" in p for p in st.recovery_problems())
    assert _damage() == before + 1
    assert st.get_video(marked).state == "damaged" and removals.removed == [marked]
    with pytest.raises(NotFound):
        st.video_entry(marked)
    assert marked not in st.indexed_videos(cid) and st.vectors_of(cid) == 5 * len(videos)
    assert _top_video(st, cid, vec[0]) != marked
    assert st.check_rows() == [] and removals.removed == [marked]  # once per open
    st.close()
    st = _open(tmp_path)  # the next start finds it damaged in the catalog: never attached again
    assert st.get_video(marked).state == "damaged" and st.vectors_of(cid) == 5 * len(videos)
    st.close()


def test_labels_text_that_no_longer_decodes_marks_its_video_damaged(tmp_path):
    """A flipped byte can leave invalid UTF-8 in the labels table, which only the row check reads:
    that one video is marked damaged (its labels no longer match its row), the rest serves."""
    rng = np.random.default_rng(15)
    cid, videos, marked = _ingest_marked(tmp_path, rng, labels={"show": "news"})
    db = __import__("sqlite3").connect(str(tmp_path / "catalog.sqlite3"))
    db.execute("UPDATE labels SET value=CAST(X'6EFF7773' AS TEXT) WHERE video_id=?", (marked,))
    db.commit()
    db.close()
    st = _open(tmp_path)
    assert any("fail their checksums" in p for p in st.recovery_problems()), st.recovery_problems()
    assert st.get_video(marked).state == "damaged"
    assert all(st.get_video(v).state == "active" for v in videos)
    st.close()


def test_the_row_check_reads_one_snapshot_while_commits_go_on(tmp_path):
    """The server checks rows while it serves: a video committed after the check's snapshot was
    taken (its labels after the labels were read) is not mistaken for a damaged one."""
    rng = np.random.default_rng(16)
    st, cid = _new(tmp_path)
    st.close()
    st = EmbeddedStorage(str(tmp_path), check_rows_at_open=False)
    st.open()
    _ingest(st, cid, rng, 2)
    reads = []

    def commit_between_reads(*_):  # SQLite's trace hook: each statement of the check's connection
        reads.append(1)
        if len(reads) == 3:  # BEGIN, the labels read: a commit lands before the rows are read
            st.add_video(cid, dataclasses.replace(_rec("late"), labels={"k": "v"}), np.arange(5.0), _unit(rng, 5))

    connect = __import__("sqlite3").connect

    def traced(*a, **k):
        db = connect(*a, **k)
        db.set_trace_callback(commit_between_reads)
        return db

    import unittest.mock

    with unittest.mock.patch("frameseek.storage.catalog.sqlite3.connect", traced):
        assert st.check_rows() == []
    assert len(reads) > 3 and st.collection_counts(cid)[0] == 3 and not st.recovery_problems()
    st.close()


def test_a_version_3_catalog_gets_row_checksums_at_migration(tmp_path):
    import sqlite3

    rng = np.random.default_rng(13)
    cid, videos, marked = _ingest_marked(tmp_path, rng, filename="clip-MARKER-77aa.mp4")
    db = sqlite3.connect(str(tmp_path / "catalog.sqlite3"))
    db.executescript(
        "BEGIN; ALTER TABLE videos DROP COLUMN row_crc; ALTER TABLE video_extras DROP COLUMN row_crc;"
        "UPDATE meta SET value='3' WHERE key='schema_version'; COMMIT;"
    )
    db.close()
    st = _open(tmp_path)
    assert not st.recovery_problems() and st.get_video(marked).state == "active"
    st.close()
    _flip_in_catalog(tmp_path / "catalog.sqlite3", b"MARKER-77aa")
    st = _open(tmp_path)
    assert st.get_video(marked).state == "damaged"
    st.close()


def test_damaged_float_vectors_of_a_mapped_snapshot_are_reported_by_the_check_after_the_start(tmp_path):
    """A snapshot's float32 vectors are mapped, not read, at load (issue 22): the start does not
    see a flipped byte in them; the check after it (check_rows) does, and reports it like other
    damage. The snapshot's write-time check (index_file_intact) covers them too."""
    from frameseek.storage import snapshots
    from tests.native.snapshot_formats import v5_layout

    rng = np.random.default_rng(16)
    st, cid = _new(tmp_path)
    _ingest(st, cid, rng, 30)
    coll_dir = pathlib.Path(st._ci(cid).dir)
    st.close()  # with a snapshot
    snap = coll_dir / json.loads((coll_dir / "snapshot.json").read_text())["index"]
    assert snapshots.index_file_intact(str(snap))
    data = bytearray(snap.read_bytes())
    v = v5_layout(data)
    assert v["vector_bytes"] >= 4096  # mapped
    data[v["vectors_at"] + v["vector_bytes"] // 2] ^= 0x10
    snap.write_bytes(bytes(data))
    assert not snapshots.index_file_intact(str(snap))
    before = _damage()
    st = EmbeddedStorage(str(tmp_path), check_rows_at_open=False)
    st.open()
    assert not st.recovery_problems() and st.vectors_of(cid) > 0  # served from the snapshot
    problems = st.check_rows()
    assert len(problems) == 1 and "float32 vectors fail their checksum" in problems[0]
    assert any("default: " in p and "float32 vectors" in p for p in st.recovery_problems())
    assert _damage() == before + 1
    st.close()
