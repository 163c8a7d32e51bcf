"""SQLite catalog: the pending/active commit protocol, lookups, pagination, jobs."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from frameseek.storage import AlreadyExists, FailedPrecondition, JobRecord, JobState, NotFound, VideoQuery, VideoRecord
from frameseek.storage.catalog import Catalog


def _video(cid, sha="aa", labels=None, key=""):
    return VideoRecord(
        id=0,
        collection_id=cid,
        kind="video",
        duration=2.0,
        width=64,
        height=48,
        sample_count=2,
        size_bytes=10,
        content_sha256=sha,
        external_key=key,
        labels=labels or {},
    )


@pytest.fixture
def cat(tmp_path):
    c = Catalog(str(tmp_path / "c.sqlite3"))
    yield c
    c.close()


def _coll(cat, name="default"):
    return cat.create_collection(name, model="m", dimension=4, metric="ip", sampling={"fps": 1.0}, index={})


def test_collections(cat):
    a = _coll(cat, "a")
    _coll(cat, "b")
    with pytest.raises(AlreadyExists):
        _coll(cat, "a")
    assert [c.name for c in cat.list_collections("", 10)] == ["a", "b"]
    assert [c.name for c in cat.list_collections("a", 10)] == ["b"]
    assert cat.get_collection("a") == a
    with pytest.raises(NotFound):
        cat.get_collection("zzz")


def test_pending_video_is_invisible_until_activated(cat, tmp_path):
    cid = _coll(cat).id
    vid = cat.insert_pending(cid, _video(cid, labels={"team": "x"}), np.array([0.0, 1.0]))
    with pytest.raises(NotFound):
        cat.get_video(vid)
    assert cat.find_by_hash(cid, "aa") is None
    assert cat.list_videos(VideoQuery(collection_id=cid), None, 10) == ([], 0)
    assert cat.collection_counts(cid) == (0, 0, 0.0)
    cat.activate(vid)
    assert cat.get_video(vid).labels == {"team": "x"}
    np.testing.assert_array_equal(cat.video_timestamps(vid), [0.0, 1.0])
    assert cat.find_by_hash(cid, "aa").id == vid
    # a crash before activation: the row is dropped on reopen
    vid2 = cat.insert_pending(cid, _video(cid, sha="bb"), np.array([0.0, 1.0]))
    cat.close()
    cat2 = Catalog(str(tmp_path / "c.sqlite3"))
    assert cat2.drop_pending() == [vid2]
    assert cat2.get_video(vid).id == vid
    cat2.close()


def test_filters_and_pagination(cat):
    cid = _coll(cat).id
    ids = []
    for i in range(7):
        v = cat.insert_pending(cid, _video(cid, sha=f"h{i}", labels={"parity": str(i % 2)}, key=f"k{i}"), np.zeros(2))
        cat.activate(v)
        ids.append(v)
    page, total = cat.list_videos(VideoQuery(collection_id=cid), None, 3)
    assert total == 7 and [v.id for v in page] == ids[::-1][:3]
    page2, _ = cat.list_videos(VideoQuery(collection_id=cid), page[-1].id, 3)
    assert [v.id for v in page2] == ids[::-1][3:6]
    odd = cat.video_ids(VideoQuery(collection_id=cid, labels={"parity": "1"}))
    assert sorted(odd.tolist()) == ids[1::2]
    assert cat.list_videos(VideoQuery(external_key="k3"), None, 10)[0][0].id == ids[3]
    assert cat.list_videos(VideoQuery(content_sha256="h4"), None, 10)[0][0].id == ids[4]
    with pytest.raises(FailedPrecondition):
        cat.delete_collection(cid, force=False)
    assert sorted(cat.delete_collection(cid, force=True)) == ids


def test_jobs_and_request_ids(cat):
    cid = _coll(cat).id
    j = cat.create_job(JobRecord(id="j1", collection_id=cid, state=JobState.QUEUED, request_id="r1"))
    with pytest.raises(AlreadyExists):
        cat.create_job(JobRecord(id="j2", collection_id=cid, state=JobState.QUEUED, request_id="r1"))
    assert cat.job_for_request("r1").id == "j1"
    j.state, j.samples_done = JobState.RUNNING, 5
    cat.update_job(j)
    assert [x.id for x in cat.unfinished_jobs()] == ["j1"]
    j.state = JobState.SUCCEEDED
    cat.update_job(j)
    assert cat.get_job("j1").state is JobState.SUCCEEDED and cat.unfinished_jobs() == []


def _plans(cat, call) -> list[str]:
    """The query plans of the statements `call` runs on the catalog's connection."""
    statements = []
    cat._db.set_trace_callback(statements.append)
    try:
        call()
    finally:
        cat._db.set_trace_callback(None)
    selects = [s for s in statements if s.lstrip().upper().startswith("SELECT")]
    return [" ".join(r[3] for r in cat._db.execute("EXPLAIN QUERY PLAN " + s)) for s in selects]


def test_lookups_by_key_and_hash_search_their_indexes(cat):
    """Each lookup searches its own index, whatever the collection holds: left to itself SQLite
    answered the key lookup of every UpsertItems batch by reading all of the collection's rows."""
    c = _coll(cat)
    for i in range(50):
        cat.activate(cat.insert_pending(c.id, _video(c.id, sha=f"h{i}", key=f"k{i}"), np.zeros(2)))
    plans = _plans(cat, lambda: cat.video_ids_by_key(c.id, ["k1", "k2"]))
    plans += _plans(cat, lambda: cat.find_by_hash(c.id, "h3"))
    plans += _plans(cat, lambda: cat.list_videos(VideoQuery(collection_id=c.id, content_sha256="h3"), None, 5))
    assert len(plans) >= 4 and all("USING INDEX videos_by_collection" not in p for p in plans), plans
    assert sum("videos_by_key" in p for p in plans) == 1 and sum("videos_by_hash" in p for p in plans) >= 3, plans


def test_a_record_from_its_values_is_the_record_and_frozen():
    import dataclasses

    v = _video(3, sha="ab", labels={"a": "1"}, key="k")
    values = [getattr(v, f.name) for f in dataclasses.fields(VideoRecord)]
    fast = VideoRecord.from_values(values)
    assert fast == v and repr(fast) == repr(v)
    with pytest.raises(dataclasses.FrozenInstanceError):
        fast.id = 4
    with pytest.raises(ValueError):
        VideoRecord.from_values(values[:-1])  # every field, in order


_ROW_VALUES = st.one_of(
    st.integers(), st.floats(allow_nan=True), st.booleans(), st.text(max_size=8), st.binary(max_size=8), st.none()
)


@given(st.lists(st.tuples(*[_ROW_VALUES] * 6), min_size=1, max_size=4), st.integers(1, 3))
def test_row_checksum_is_the_crc_of_the_values_reprs(rows, copies):
    """The row CRC (schema 4's definition: each value's repr, blobs as bytes, length-prefixed),
    one row at a time and a batch at once, where columns that repeat in every row are encoded
    once: 0, 0.0, -0.0 and False stay apart."""
    import zlib

    from frameseek.storage.catalog_schema import _row_crc, _row_crcs

    def reference(row):
        parts = []
        for value in row:
            data = bytes(value) if isinstance(value, bytes) else repr(value).encode()
            parts += (len(data).to_bytes(4, "little"), data)
        return zlib.crc32(b"".join(parts))

    batch = rows * copies
    assert _row_crcs(batch) == [reference(r) for r in batch] == [_row_crc(r) for r in batch]
    zeros = [(0, 0.0, -0.0, False), (0.0, 0, False, -0.0), (0, 0.0, 0.0, False)]
    assert _row_crcs(zeros) == [reference(r) for r in zeros] and len(set(_row_crcs(zeros))) == 3
