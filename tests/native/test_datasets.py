"""The shared synthetic data generator (benchmarks/datasets.py) has the structure it promises."""

import numpy as np

from benchmarks.datasets import video_like, video_like_queries


def _assert_frames_cluster_by_video(x: np.ndarray, g: np.ndarray) -> None:
    """Consecutive frames of a video are near-identical; frames of different videos are not."""
    same = g[:-1] == g[1:]
    consecutive = np.sum(x[:-1] * x[1:], axis=1)[same]
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, len(x), 500), rng.integers(0, len(x), 500)
    unrelated = np.sum(x[a] * x[b], axis=1)[g[a] != g[b]]
    assert np.median(consecutive) > 0.97 > 0.5 > unrelated.mean()


def test_video_like_shape_groups_and_structure():
    x, g = video_like(1000, 64, frames_per_video=100, seed=3)
    assert x.shape == (1000, 64) and x.dtype == np.float32 and g.dtype == np.uint64
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, rtol=1e-5)
    assert g.tolist() == np.repeat(np.arange(10), 100).tolist()
    _assert_frames_cluster_by_video(x, g)
    x2, g2 = video_like(1000, 64, frames_per_video=100, seed=3)
    assert np.array_equal(x, x2) and np.array_equal(g, g2)
    assert not np.array_equal(x, video_like(1000, 64, frames_per_video=100, seed=4)[0])


def test_partial_last_video_and_queries():
    x, g = video_like(250, 8, frames_per_video=100)
    assert len(x) == 250 and g[-1] == 2 and (g == 2).sum() == 50
    q = video_like_queries(x, 7, noise=0.05)
    assert q.shape == (7, 8) and q.dtype == np.float32 and q.flags.c_contiguous
    assert (q @ x.T).max(axis=1).min() > 0.9  # each query is near some database frame


def test_video_like_stream_chunks_are_reproducible_alone_and_have_the_same_structure():
    from benchmarks.datasets import VideoLikeStream

    s = VideoLikeStream(1050, 64, frames_per_video=100, seed=3)
    chunks = list(s.chunks(3, workers=2))
    assert [first for first, _, _ in chunks] == [0, 300, 600, 900]
    x = np.concatenate([c for _, c, _ in chunks])
    g = np.concatenate([c for _, _, c in chunks])
    assert x.shape == (1050, 64) and x.dtype == np.float32 and g.dtype == np.uint64
    assert g.tolist() == np.repeat(np.arange(11), 100)[:1050].tolist() and (g == 10).sum() == 50
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, rtol=1e-5)
    # any video on its own, and any chunking, gives the same rows (a resumed or streamed pass)
    assert np.array_equal(s.video(7), x[700:800]) and np.array_equal(s.video(10), x[1000:])
    assert np.array_equal(np.concatenate([c for _, c, _ in s.chunks(4)]), x)
    assert not np.array_equal(VideoLikeStream(1050, 64, frames_per_video=100, seed=4).video(7), s.video(7))
    _assert_frames_cluster_by_video(x, g)
