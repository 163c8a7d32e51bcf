"""SearchDirectory.put_videos: many videos in one call (what a start fills the directory with)
answers exactly as the same videos put one by one, and malformed batches are refused."""

from __future__ import annotations

import numpy as np
import pytest

from frameseek import _native

BITS = np.uint64(_native.SAMPLE_BITS)


def _index_and_videos():
    rng = np.random.default_rng(2)
    counts = rng.integers(1, 9, size=30)  # videos of 1-8 samples, each with its own timestamps
    videos = np.arange(1, 31, dtype=np.uint64)
    groups = np.repeat(videos, counts)
    ids = (groups << BITS) + np.concatenate([np.arange(c, dtype=np.uint64) for c in counts])
    vectors = rng.standard_normal((len(ids), 16)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    index = _native.HnswIndex(16, "ip", max_elements=1024)
    index.add(ids, vectors, groups=groups)
    stamps = [np.sort(rng.uniform(0, 100, size=c)) for c in counts]
    return index, vectors, videos, stamps


def test_put_videos_answers_like_put_video_one_by_one():
    index, vectors, videos, stamps = _index_and_videos()
    one, many = _native.SearchDirectory(), _native.SearchDirectory()
    for d in (one, many):
        d.put_collection("c", 7, "m", True, index)
    for v, ts in zip(videos, stamps):
        one.put_video(int(v), 7, ts)
    offsets = np.concatenate([[0], np.cumsum([len(ts) for ts in stamps])])
    many.put_videos(videos, np.full(len(videos), 7, dtype=np.uint32), offsets, np.concatenate(stamps))
    assert many.video_count == one.video_count == len(videos)
    for q in vectors[::5]:
        assert many.nearest_videos(7, q, k=5, matches=3) == one.nearest_videos(7, q, k=5, matches=3)
        assert many.nearest_videos(7, q, k=5, matches=3)  # the timestamps are the videos' own


def test_put_videos_of_nothing_is_fine():
    d = _native.SearchDirectory()
    d.put_videos(np.zeros(0, np.uint64), np.zeros(0, np.uint32), np.zeros(1, np.int64), np.zeros(0))
    assert d.video_count == 0


@pytest.mark.parametrize(
    "collections, offsets, stamps, message",
    [
        ([1], [0, 2, 3], [0.0, 1.0, 2.0], "one collection id per video"),
        ([1, 1], [0, 2], [0.0, 1.0], "one collection id per video"),
        ([1, 1], [1, 2, 3], [0.0, 1.0, 2.0], "from 0 to len"),
        ([1, 1], [0, 2, 4], [0.0, 1.0, 2.0], "from 0 to len"),
        ([1, 1], [0, 3, 2], [0.0, 1.0], "must not decrease"),
    ],
)
def test_malformed_batches_are_refused(collections, offsets, stamps, message):
    d = _native.SearchDirectory()
    with pytest.raises(ValueError, match=message):
        d.put_videos(np.array([1, 2], np.uint64), np.array(collections, np.uint32), np.array(offsets), np.array(stamps))
    assert d.video_count == 0
