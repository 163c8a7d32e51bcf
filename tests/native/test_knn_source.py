"""SearchDirectory over an external kNN source (KnnSource: the scale-out store's Milvus): the same
nearest_videos as over a live HnswIndex, the source's errors surfacing as Python exceptions."""

from __future__ import annotations

import numpy as np
import pytest

from frameseek import _native

NO_ID = np.uint64(_native.NO_ID)
BITS = np.uint64(_native.SAMPLE_BITS)


class IndexAsSource:
    """A live HnswIndex behind the KnnSource protocol (what a Milvus collection stands in for)."""

    def __init__(self, index, metric):
        self.index, self.dim, self.metric = index, index.dim, metric
        self.calls = []

    def search(self, query, k, ef, groups):
        self.calls.append(("search", k, None if groups is None else sorted(groups.tolist())))
        f = None if groups is None else _native.Filter(groups=groups)
        ids, dist = self.index.search(query[None, :], k, ef=ef or None, filter=f)
        return ids[0], dist[0]

    def search_groups(self, query, k, ef, groups):
        self.calls.append(("groups", k, None))
        f = None if groups is None else _native.Filter(groups=groups)
        g, ids, dist = self.index.search_groups(query[None, :], k, ef=ef or None, filter=f)
        return g[0], ids[0], dist[0]


def _library(metric):
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((40 * 8, 16)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    videos = np.repeat(np.arange(1, 41, dtype=np.uint64), 8)
    ids = (videos << BITS) + np.tile(np.arange(8, dtype=np.uint64), 40)
    index = _native.HnswIndex(16, metric, max_elements=1024)
    index.add(ids, vectors, groups=videos)
    return index, vectors, videos


def _directory(index):
    d = _native.SearchDirectory()
    d.put_collection("c", 1, "m", True, index)
    for v in range(1, 41):
        d.put_video(v, 1, np.arange(8) * 0.5)
    return d


@pytest.mark.parametrize("metric", ["ip", "l2"])
def test_a_source_answers_like_the_live_index(metric):
    index, vectors, _ = _library(metric)
    source = IndexAsSource(index, metric)
    live, external = _directory(index), _directory(source)
    for q in vectors[::37]:
        for kw in ({}, {"matches": 3}, {"videos": np.array([3, 7, 9], dtype=np.uint64)}, {"k": 25, "min_score": 0.1}):
            assert external.nearest_videos(1, q, **kw) == live.nearest_videos(1, q, **kw)
    assert ("search", 40, None) in source.calls  # the kNN of max(k * matches * 4, 32) frames, k 10
    assert ("search", 40, [3, 7, 9]) in source.calls  # the video filter reaches the source


def test_the_sources_errors_and_bad_answers_surface():
    class Down:
        dim, metric = 4, "ip"

        def search(self, *a):
            raise ConnectionError("vector store unreachable")

        search_groups = search

    class Short(Down):
        def search(self, q, k, ef, groups):
            return np.zeros(k - 1, np.uint64), np.zeros(k - 1, np.float32)

    d = _native.SearchDirectory()
    d.put_collection("down", 1, "m", True, Down())
    d.put_collection("short", 2, "m", False, Short())
    with pytest.raises(ConnectionError, match="unreachable"):
        d.nearest_videos(1, np.ones(4, np.float32))
    with pytest.raises(ValueError, match="k results"):
        d.nearest_videos(2, np.ones(4, np.float32))
    with pytest.raises(ValueError, match="DIMENSION_MISMATCH"):
        d.nearest_videos(1, np.ones(5, np.float32))
    d.remove_collection(1)
    with pytest.raises(KeyError):
        d.nearest_videos(1, np.ones(4, np.float32))
