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

__all__ = ["video_like", "video_like_queries"]


def _unit(rng: np.random.Generator, rows: int, dim: int) -> np.ndarray:
    v = rng.standard_normal((rows, dim), dtype=np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    return v


def _normalise(v: np.ndarray) -> np.ndarray:
    v /= np.maximum(np.linalg.norm(v, axis=1, keepdims=True), np.float32(1e-12))
    return v


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
    scene_len = max(1, frames_per_video // 6)
    step = np.float32(0.03 / np.sqrt(dim))
    jitter = np.float32(0.02 / np.sqrt(dim))
    for v in range(n_videos):
        lo, hi = v * frames_per_video, min(n, (v + 1) * frames_per_video)
        m = hi - lo
        video = _normalise(topics[rng.integers(n_topics)][None, :] + 0.7 * _unit(rng, 1, dim))
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
        walk = rng.standard_normal((m, dim), dtype=np.float32) * step
        walk = np.cumsum(walk, axis=0)
        walk -= walk[bounds[:-1]][seg]  # restart the random walk at each scene cut
        frames = scenes[seg] + walk + rng.standard_normal((m, dim), dtype=np.float32) * jitter
        out[lo:hi] = _normalise(frames)
    return out, groups


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
