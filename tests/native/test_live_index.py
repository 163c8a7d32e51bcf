"""LiveIndex: a collection's HNSW graph plus its fresh segment (vectors acknowledged but not yet
linked), read as one index: searches merged with the exact scan of the segment, each id once;
and the one vector search (SearchDirectory.nearest_videos) over it."""

from __future__ import annotations

import numpy as np
import pytest

from frameseek import _native

NO_ID = np.uint64(_native.NO_ID)
BITS = np.uint64(_native.SAMPLE_BITS)
DIM = 16


def _unit(rng, n):
    v = rng.standard_normal((n, DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _split_library(metric="ip", videos=40, per_video=8, in_graph=20):
    """Videos 1..in_graph in the graph, the rest in the fresh segment; plus an exact FlatIndex of all."""
    rng = np.random.default_rng(0)
    vectors = _unit(rng, videos * per_video)
    groups = np.repeat(np.arange(1, videos + 1, dtype=np.uint64), per_video)
    ids = (groups << BITS) + np.tile(np.arange(per_video, dtype=np.uint64), videos)
    cut = in_graph * per_video
    graph = _native.HnswIndex(DIM, metric)
    graph.add(ids[:cut], vectors[:cut], groups=groups[:cut])
    fresh = _native.FlatIndex(DIM, metric)
    fresh.add(ids[cut:], vectors[cut:], groups=groups[cut:])
    exact = _native.FlatIndex(DIM, metric)
    exact.add(ids, vectors, groups=groups)
    return _native.LiveIndex(graph, fresh), exact, ids, vectors, groups, rng


@pytest.mark.parametrize("metric", ["ip", "l2"])
def test_search_is_the_exact_search_over_both_parts(metric):
    live, exact, ids, vectors, _, rng = _split_library(metric)
    queries = _unit(rng, 12)
    got_ids, got_dist = live.search(queries, 10, ef=400)
    want_ids, want_dist = exact.search(queries, 10)
    assert (got_ids == want_ids).all()
    np.testing.assert_allclose(got_dist, want_dist, rtol=1e-4, atol=1e-5)
    g, gi, gd = live.search_groups(queries, 7, ef=400)
    wg, wgi, wgd = exact.search_groups(queries, 7)
    assert (g == wg).all() and (gi == wgi).all()
    np.testing.assert_allclose(gd, wgd, rtol=1e-4, atol=1e-5)
    assert len(live) == len(ids) and live.fresh_size == len(ids) // 2


def test_a_vector_in_both_parts_counts_once():
    """While the linker moves a batch, the graph and the segment both hold it: one result each."""
    _, exact, ids, vectors, groups, _ = _split_library()
    # videos 1..21 in the graph, 21..40 in the segment: video 21 was linked, not yet removed
    in_graph, in_fresh = groups <= 21, groups >= 21
    graph, fresh = _native.HnswIndex(DIM, "ip"), _native.FlatIndex(DIM, "ip")
    graph.add(ids[in_graph], vectors[in_graph], groups=groups[in_graph])
    fresh.add(ids[in_fresh], vectors[in_fresh], groups=groups[in_fresh])
    both = _native.LiveIndex(graph, fresh)
    assert len(both) == len(ids) + 8
    q = vectors[groups == 21][:1]
    got, _ = both.search(q, 20, ef=400)
    got = got[0][got[0] != NO_ID]
    assert len(set(got.tolist())) == len(got)
    assert (got == exact.search(q, 20)[0][0]).all()
    g, _, _ = both.search_groups(q, 10, ef=400)
    assert len(set(g[0].tolist())) == 10 and g[0][0] == 21


def test_filters_apply_to_both_parts():
    live, exact, _, _, _, rng = _split_library()
    f = _native.Filter(groups=np.array([3, 30], dtype=np.uint64))
    q = _unit(rng, 4)
    got, _ = live.search(q, 16, ef=400, filter=f)
    want, _ = exact.search(q, 16, filter=f)
    assert (got == want).all()
    assert set((got[got != NO_ID] >> BITS).tolist()) == {3, 30}


def test_get_vectors_and_contains_read_both_parts():
    live, _, ids, vectors, _, _ = _split_library()
    pick = np.array([0, 200, 5, 319, 100])  # graph, segment, graph, segment, graph
    np.testing.assert_array_equal(live.get_vectors(ids[pick]), vectors[pick])
    assert all(int(i) in live for i in ids[pick])
    assert (1 << 40) not in live
    with pytest.raises(ValueError):
        live.get_vectors(np.array([ids[0], 1 << 40], dtype=np.uint64))


def test_flat_get_vectors_and_mismatched_parts():
    fresh = _native.FlatIndex(DIM, "ip", storage="float16")
    v = _unit(np.random.default_rng(1), 3)
    fresh.add(np.arange(3, dtype=np.uint64), v)
    np.testing.assert_allclose(fresh.get_vectors([2, 0]), v[[2, 0]], atol=1e-3)
    with pytest.raises(ValueError):
        fresh.get_vectors([7])
    with pytest.raises(ValueError, match="dimension and metric"):
        _native.LiveIndex(_native.HnswIndex(DIM, "l2"), fresh)


def test_nearest_videos_sees_the_fresh_segment_on_every_path():
    """kNN-first, the group-by fallback and the exact path of a video filter all find videos that
    are only in the fresh segment, scored as the exact search scores them."""
    live, exact, ids, vectors, groups, rng = _split_library()
    d = _native.SearchDirectory()
    d.put_collection("c", 1, "m", True, live)
    for v in range(1, 41):
        d.put_video(v, 1, np.arange(8, dtype=np.float64))
    q = vectors[groups == 33][2]
    hits = d.nearest_videos(1, q, k=5, matches=3)
    assert hits[0][0] == 33 and hits[0][2][0] == (2.0, pytest.approx(1.0, abs=1e-5))
    wg, _, wd = exact.search_groups(q[None, :], 5)
    assert [h[0] for h in hits] == wg[0].tolist()
    only = d.nearest_videos(1, q, k=3, videos=np.array([5, 33], dtype=np.uint64))
    assert [h[0] for h in only] == [33, 5]
    # many one-match searches: the kNN is skipped for the group search on some of them
    for _ in range(40):
        assert d.nearest_videos(1, q, k=40)[0][0] == 33


def test_a_graph_that_was_empty_is_walked_as_soon_as_it_holds_vectors():
    """The walk copes with a graph in its very first insertion (no entry point yet: it finds
    nothing; test_hnsw_index races it), and those vectors are still in the fresh segment, so a
    LiveIndex walks its graph from the start and finds what the graph holds at once."""
    v = _unit(np.random.default_rng(3), 4)
    graph, fresh = _native.HnswIndex(DIM, "ip"), _native.FlatIndex(DIM, "ip")
    fresh.add([1], v[:1])
    live = _native.LiveIndex(graph, fresh)
    assert live.search(v[1:2], 2)[0][0].tolist() == [1, NO_ID]
    graph.add([2], v[1:2])
    assert live.search(v[1:2], 2)[0][0].tolist() == [2, 1]
    assert live.search_groups(v[1:2], 2)[0][0].tolist() == [2, 1]
