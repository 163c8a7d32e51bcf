"""Synthetic "video-like" embedding data shared by the native benchmarks and tests.

Uniform random vectors are a poor stand-in for frame embeddings: real libraries are clustered
(videos on similar topics), every video is a handful of scenes, and consecutive frames of a scene
are nearly identical. That structure is exactly what hurts graph indexes (many near-duplicates,
insertion in video order) and what makes exact top-k ties common, so the benchmarks use this
generator instead.

Model (all directions are Gaussian, then L2-normalised):
    topic  ~ unit vector, one of ``n_topics`` shared by many videos
    video  = normalise(topic + 0.7 * noise)
    scene  = normalise(video + 0.6 * noise)           scenes last ~frames_per_video/6 frames
    frame  = normalise(scene + random_walk + 0.02 * noise)   walk step ~0.03 in norm per frame
so (measured, 512-d) consecutive frames have cosine ~0.99 except at scene cuts, frames of one
video ~0.76 on average, and unrelated frames ~0.1 (topics make the library clustered).
"""

from __future__ import annotations

import numpy as np

__all__ = ["VideoLikeStream", "video_like", "video_like_queries"]


def _unit(rng: np.random.Generator, rows: int, dim: int) -> np.ndarray:
    v = rng.standard_normal((rows, dim), dtype=np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    return v


def _normalise(v: np.ndarray) -> np.ndarray:
    v /= np.maximum(np.linalg.norm(v, axis=1, keepdims=True), np.float32(1e-12))
    return v


def _video_frames(rng: np.random.Generator, topics: np.ndarray, m: int, frames_per_video: int) -> np.ndarray:
    """The ``m`` frames of one video (the model in the module docstring), drawn from ``rng``."""
    dim = topics.shape[1]
    scene_len = max(1, frames_per_video // 6)
    video = _normalise(topics[rng.integers(len(topics))][None, :] + 0.7 * _unit(rng, 1, dim))
    # scene boundaries: geometric lengths around scene_len
    starts = [0]
    while True:
        nxt = starts[-1] + int(rng.geometric(1.0 / scene_len))
        if nxt >= m:
            break
        starts.append(nxt)
    bounds = np.array(starts + [m])
    scenes = _normalise(video + 0.6 * _unit(rng, len(starts), dim))
    seg = np.repeat(np.arange(len(starts)), np.diff(bounds))
    walk = rng.standard_normal((m, dim), dtype=np.float32) * np.float32(0.03 / np.sqrt(dim))
    for i in range(1, m):  # the random walk: a running sum (np.cumsum(axis=0) is 5x slower, same sums)
        walk[i] += walk[i - 1]
    walk -= walk[bounds[:-1]][seg]  # restart the random walk at each scene cut
    frames = scenes[seg] + walk + rng.standard_normal((m, dim), dtype=np.float32) * np.float32(0.02 / np.sqrt(dim))
    return _normalise(frames)


def video_like(
    n: int,
    dim: int,
    frames_per_video: int = 300,
    seed: int = 0,
    n_topics: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(vectors float32[n, dim], groups uint64[n])``, rows in video order.

    ``groups[i]`` is the video id of row ``i`` (0, 1, 2, ...); each video has
    ``frames_per_video`` frames except possibly the last. Vectors are L2-normalised, so inner
    product equals cosine. Deterministic for a given (n, dim, frames_per_video, seed, n_topics).
    """
    if n < 0 or dim < 1 or frames_per_video < 1:
        raise ValueError("need n >= 0, dim >= 1, frames_per_video >= 1")
    rng = np.random.default_rng(seed)
    n_videos = -(-n // frames_per_video)
    if n_topics is None:
        n_topics = max(4, n_videos // 16)
    topics = _unit(rng, n_topics, dim)
    out = np.empty((n, dim), dtype=np.float32)
    groups = np.repeat(np.arange(n_videos, dtype=np.uint64), frames_per_video)[:n]
    for v in range(n_videos):
        lo, hi = v * frames_per_video, min(n, (v + 1) * frames_per_video)
        out[lo:hi] = _video_frames(rng, topics, hi - lo, frames_per_video)
    return out, groups


class VideoLikeStream:
    """``video_like``'s model as a library too large to hold: ``n`` rows in video order, produced
    video by video. Video ``v``'s frames come from their own generator (``seed``, ``v``) and the
    topics from ``seed`` alone, so any range of videos is reproducible without the ones before it
    (chunks, held-out queries) and only the chunk in hand is in memory. Not the same numbers as
    ``video_like(n, seed=seed)``, which draws every video from one generator; the same statistics.
    """

    def __init__(self, n: int, dim: int, frames_per_video: int = 300, seed: int = 0, n_topics: int | None = None):
        if n < 1 or dim < 1 or frames_per_video < 1:
            raise ValueError("need n >= 1, dim >= 1, frames_per_video >= 1")
        self.n, self.dim, self.frames_per_video, self.seed = n, dim, frames_per_video, seed
        self.n_videos = -(-n // frames_per_video)
        self.topics = _unit(np.random.default_rng(seed), n_topics or max(4, self.n_videos // 16), dim)

    def video(self, v: int) -> np.ndarray:
        """float32[frames, dim]: the frames of video ``v`` (rows ``v * frames_per_video`` on)."""
        m = min(self.n, (v + 1) * self.frames_per_video) - v * self.frames_per_video
        return _video_frames(np.random.default_rng((self.seed, v)), self.topics, m, self.frames_per_video)

    def chunks(self, videos_per_chunk: int, workers: int = 1):
        """Yield ``(first_row, vectors, groups)`` for consecutive runs of ``videos_per_chunk`` videos;
        ``workers`` threads draw the videos (numpy's generators release the GIL)."""
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max(1, workers)) as pool:
            for v0 in range(0, self.n_videos, videos_per_chunk):
                vs = range(v0, min(self.n_videos, v0 + videos_per_chunk))
                frames = list(pool.map(self.video, vs))
                groups = np.repeat(np.array(vs, dtype=np.uint64), [len(f) for f in frames])
                yield v0 * self.frames_per_video, np.concatenate(frames), groups


def video_like_queries(vectors: np.ndarray, nq: int, noise: float = 0.05, seed: int = 1) -> np.ndarray:
    """``nq`` queries that are perturbed copies of random database rows (a re-encoded frame).

    ``noise`` is the norm of the perturbation relative to the unit vector. Returns float32[nq, d],
    L2-normalised.
    """
    rng = np.random.default_rng(seed)
    rows = rng.integers(0, len(vectors), size=nq)
    d = vectors.shape[1]
    q = vectors[rows] + rng.standard_normal((nq, d), dtype=np.float32) * np.float32(noise / np.sqrt(d))
    return np.ascontiguousarray(_normalise(q), dtype=np.float32)
