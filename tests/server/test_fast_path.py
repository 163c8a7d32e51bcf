"""The search RPCs' fast path: the hand-written SearchResponse encoding (native/src/front_end/
search_request.cpp, used by both front ends) must equal protobuf's, and
the engine's in-memory video map (hit -> video, timestamp without SQL) must stay equal to the
catalog through add, delete, collection delete, restart, and in replicas following a writer."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from frameseek._native import encode_search_response
from frameseek.storage import EmbeddedStorage, NotFound
from frameseek.storage.replica import ReplicaStorage
from frameseek.v1 import frameseek_pb2 as pb

from .helpers import needs_index, video_record

DIM = 8
f32 = st.floats(width=32, allow_nan=False)  # exactly representable in the float field
f64 = st.floats(allow_nan=False)

videos = st.builds(
    lambda name, key, sc, labels, dur: pb.Video(
        name=name, external_key=key, sample_count=sc, labels=labels, duration_seconds=dur
    ),
    st.text(max_size=40),
    st.text(max_size=300),
    st.integers(0, 2**31 - 1),
    st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=3),
    f64,
)
hit_lists = st.lists(st.tuples(videos, f32, st.lists(st.tuples(f64, f32), max_size=4)), max_size=12)


@settings(max_examples=300, deadline=None)
@given(hit_lists, st.text(max_size=200))
def test_encoded_response_equals_protobuf(hits, model):
    expected = pb.SearchResponse(
        model=model,
        hits=[
            pb.VideoHit(video=v, score=s, matches=[pb.FrameMatch(timestamp_seconds=t, score=ms) for t, ms in m])
            for v, s, m in hits
        ],
    )
    got = encode_search_response([(v.SerializeToString(), s, m) for v, s, m in hits], model)
    assert got == expected.SerializeToString()
    assert pb.SearchResponse.FromString(got) == expected


def test_encoder_knows_every_field_of_the_messages_it_writes():
    # encode_search_response writes these fields by number and wire type; a field added to any of
    # these messages in the proto must be added there too (this test then fails until it is).
    known = {
        pb.SearchResponse: {("hits", 1, "message"), ("model", 2, "string")},
        pb.VideoHit: {("video", 1, "message"), ("score", 2, "float"), ("matches", 3, "message")},
        pb.FrameMatch: {("timestamp_seconds", 1, "double"), ("score", 2, "float")},
    }
    names = {1: "double", 2: "float", 9: "string", 11: "message"}
    for msg, fields in known.items():
        got = {(f.name, f.number, names.get(f.type, str(f.type))) for f in msg.DESCRIPTOR.fields}
        assert got == fields, msg.DESCRIPTOR.full_name


def test_encoded_response_rounds_scores_like_protobuf():
    # Python floats (doubles) go into float fields: both round to the nearest float32
    hits = [(b"", 0.1, [(1 / 3, 2 / 3), (-0.0, -0.0)]), (b"\x0a\x01a", -0.0, [])]
    expected = pb.SearchResponse(
        hits=[
            pb.VideoHit(
                video=pb.Video(),
                score=0.1,
                matches=[
                    pb.FrameMatch(timestamp_seconds=1 / 3, score=2 / 3),
                    pb.FrameMatch(timestamp_seconds=-0.0, score=-0.0),
                ],
            ),
            pb.VideoHit(video=pb.Video(name="a"), score=-0.0),
        ]
    )
    assert encode_search_response(hits, "") == expected.SerializeToString()
    back = pb.SearchResponse.FromString(encode_search_response(hits, ""))
    assert math.copysign(1, back.hits[1].score) < 0


# -- the in-memory video map ------------------------------------------------------------------


def _add(s, cid, i, n=3):
    rng = np.random.default_rng(i)
    v = rng.standard_normal((n, DIM)).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    rec = video_record(
        f"{i:064x}", collection_id=cid, duration=10.0, width=8, height=8, sample_count=n, external_key=f"v{i}",
        labels={"i": str(i)},
    )  # fmt: skip
    return s.add_video(cid, rec, np.arange(n, dtype=np.float64) * 2.5 + i, v).id


def _catalog_view(s) -> dict:
    return {v.id: (v, ts.tolist()) for v, ts in s.catalog.active_video_entries()}


def _mapped(s) -> set[int]:
    """The videos in the storage's map: records built, or rows read at open whose record is built
    when first asked for (EmbeddedStorage._entry)."""
    return set(s._videos) | set(s._rows)


def _assert_map_equals_catalog(s) -> None:
    """The map holds exactly the active videos with their records and timestamps, and answers
    without touching SQLite."""
    want = _catalog_view(s)
    assert _mapped(s) == set(want)
    real = s.catalog._query
    s.catalog._query = lambda *a, **k: pytest.fail("the search path queried SQLite")
    try:
        for vid, (rec, ts) in want.items():
            got, got_ts = s.video_entry(vid)
            assert got == rec and got_ts.tolist() == ts
    finally:
        s.catalog._query = real


@needs_index
def test_video_map_follows_add_delete_and_restart(tmp_path):
    s = EmbeddedStorage(str(tmp_path), snapshot_every=10**9)
    s.open()
    c = s.create_collection("c", model="m", dimension=DIM, metric="ip", sampling={}, index={})
    d = s.create_collection("d", model="m", dimension=DIM, metric="ip", sampling={}, index={})
    ids = [_add(s, c.id, i) for i in range(6)] + [_add(s, d.id, i) for i in range(6, 9)]
    _assert_map_equals_catalog(s)
    s.delete_video(ids[1])
    with pytest.raises(NotFound):
        s.video_entry(ids[1])
    s.snapshot()
    s.delete_video(ids[2])  # deleted after the snapshot: gone after the restart too
    ids.append(_add(s, c.id, 20))  # only in the log tail
    s.delete_collection("d", force=True)
    _assert_map_equals_catalog(s)
    s.close()

    s = EmbeddedStorage(str(tmp_path))
    s.open()
    try:
        _assert_map_equals_catalog(s)
        assert _mapped(s) == {ids[0], ids[3], ids[4], ids[5], ids[-1]}
        assert s.video_timestamps(ids[-1]).tolist() == [20.0, 22.5, 25.0]
    finally:
        s.close()


@needs_index
def test_replica_video_map_follows_the_writer(tmp_path):
    w = EmbeddedStorage(str(tmp_path), snapshot_every=10**9)
    w.open()
    c = w.create_collection("c", model="m", dimension=DIM, metric="ip", sampling={}, index={})
    ids = [_add(w, c.id, i) for i in range(4)]
    rep = ReplicaStorage(str(tmp_path))
    rep.open()
    try:
        _assert_map_equals_catalog(rep)
        w.delete_video(ids[0])
        new = _add(w, c.id, 10)
        d = w.create_collection("d", model="m", dimension=DIM, metric="ip", sampling={}, index={})
        in_d = _add(w, d.id, 11)
        assert rep.changed()
        rep.sync()
        _assert_map_equals_catalog(rep)
        assert new in _mapped(rep) and in_d in _mapped(rep) and ids[0] not in _mapped(rep)
        w.snapshot()  # drops the segment the replica read; a new add lands in a fresh one
        later = _add(w, c.id, 12)
        w.delete_collection("d", force=True)
        rep.sync()
        _assert_map_equals_catalog(rep)
        assert later in _mapped(rep) and in_d not in _mapped(rep)
    finally:
        rep.close()
        w.close()


# -- request vector checks (one dot product on the hot path) ----------------------------------


@pytest.mark.parametrize("metric", ["ip", "l2"])
def test_check_vector_rejects_non_finite_and_zero(metric):
    from frameseek.errors import ServiceError
    from frameseek.service.search import Search
    from frameseek.storage import CollectionRecord

    rec = CollectionRecord(id=1, name="c", model="m", dimension=4, metric=metric, sampling={}, index={})
    check = lambda v: Search.check_vector(rec, v)  # noqa: E731
    for bad in ([1, float("nan"), 0, 0], [float("inf"), 0, 0, 0], [float("-inf"), 1, 1, 1]):
        with pytest.raises(ServiceError) as e:
            check(bad)
        assert e.value.reason == "NON_FINITE_VECTOR"
    big = check([3e30, 4e30, 0, 0])  # finite, but its float32 square overflows
    np.testing.assert_array_equal(big, np.array([[3e30, 4e30, 0, 0]], dtype=np.float32))
    if metric == "ip":
        with pytest.raises(ServiceError):
            check([0, 0, 0, 0])


@pytest.mark.parametrize("metric", ["ip", "l2"])
def test_the_search_normalises_cosine_queries_and_takes_l2_ones_as_they_are(tmp_path, metric):
    """One place normalises a cosine query: the native search (the Python service and the front
    end pass it the request's vector as it came). A query whose float32 square overflows still
    finds its video at score 1 (the sum of squares is a double)."""
    from frameseek import _native

    st = EmbeddedStorage(str(tmp_path / "d"))
    st.open()
    d = _native.SearchDirectory()
    st.add_observer(_Mirror(d))
    c = st.create_collection("c", model="m", dimension=4, metric=metric, sampling={}, index={})
    v = np.array([[0.6, 0.8, 0, 0], [0, 0, 1, 0]], dtype=np.float32)
    vid = st.add_video(
        c.id,
        video_record("a" * 64, collection_id=c.id, duration=2.0, width=1, height=1, sample_count=2, external_key="k"),
        np.array([0.0, 1.0]),
        v,
    ).id
    for q in ([3e30, 4e30, 0, 0], [3, 4, 0, 0], [0.6, 0.8, 0, 0]):
        got = d.nearest_videos(c.id, np.asarray(q, dtype=np.float32), k=1, min_score=-100.0)
        if metric == "ip" or q == [0.6, 0.8, 0, 0]:
            assert got[0][0] == vid and got[0][2] == [(0.0, pytest.approx(1.0, abs=1e-6))]
        elif q == [3, 4, 0, 0]:  # l2 takes the vector as it is: 1 - |q - v|^2 / 2 = 1 - 16 / 2
            assert got[0][0] == vid and got[0][1] == pytest.approx(-7.0, abs=1e-5)
        else:  # infinitely far (below any min_score)
            assert got == []
    for bad, reason in (([1, 1, 1], "DIMENSION_MISMATCH"), ([np.nan, 0, 0, 0], "NON_FINITE_VECTOR")):
        with pytest.raises(ValueError, match=reason):
            d.nearest_videos(c.id, np.asarray(bad, dtype=np.float32))
    st.close()


class _Mirror:
    """A storage observer that keeps a SearchDirectory (as frameseek.service.search does)."""

    def __init__(self, d):
        self.d = d

    def collection_added(self, rec, index):
        self.d.put_collection(rec.name, rec.id, rec.model, rec.is_default, index)

    def collection_removed(self, collection_id):
        self.d.remove_collection(collection_id)

    def video_added(self, rec, ts):
        self.d.put_video(rec.id, rec.collection_id, ts)

    def video_removed(self, video_id):
        self.d.remove_video(video_id)
