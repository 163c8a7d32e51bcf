"""Video copy detection: per-frame kNN results -> vote weights -> temporal alignment -> calibrated score.

Pure functions over numpy and the native core (no gRPC, no catalog), so that the server
(`service.py`: SearchByVideo and duplicate-on-ingest), the copy-detection harness
(`benchmarks/copydetect/`) and the tests run exactly the same code.

The chain, for one query clip sampled at `query_fps` (blank frames already dropped by the media
pipeline, so they never vote):

1. **kNN** (`search_neighbors`): each query frame's `frame_k` nearest reference frames; with the
   mirrored query frames (`SamplingSettings(flip=True)`) their neighbours are appended beside the
   plain ones, giving `[q, 2k]` — the native aggregation counts a reference frame listed twice for
   one query frame once, so a flipped copy and a plain copy score alike. Region crops of the
   query frames (`SamplingSettings(regions="auto")`: a detected picture-in-picture inset,
   `frameseek.regions`) join the row the same way, `[q, views * k]`: a query frame matches at
   most one reference frame per segment, so its views vote like its best view.
2. **Weights** (`vote_weights`): `_native.neighbor_idf_weights` down-weights a query frame whose
   near-duplicate neighbours span many videos (a title card, a logo, a black-ish frame the blank
   filter let through: it "matches everything", like a stop word). An optional reference-side
   weight (`reference_frame_weights`: 1 / number of indexed videos holding a near-duplicate of
   that reference frame) multiplies in when the caller keeps one.
3. **Alignment** (`align`): `_native.aggregate` — Hough vote over (speed, offset), least-squares
   refinement, one-to-one frame assignment, segments cut at gaps.
4. **Score**: the aggregation's score is `sum(matched query time x weight x similarity) / query
   time`. Here similarities are first rescaled to the margin above `min_similarity`
   (`calibrated_sims`), so chance matches near the floor add ~0 and exact copies ~1, and static
   query frames (a held title card) count as one piece of evidence (`redundancy_weights`). `COPY_THRESHOLD` is the default decision threshold, picked once on the harness
   (benchmarks/copydetect, README "Copy detection") and not tuned per transform.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Protocol, Sequence

import numpy as np

from frameseek import _native

NO_ID = np.uint64(2**64 - 1)

#: cosine similarity below which a neighbour never votes. sscd_distilled on the harness
#: (benchmarks/copydetect): an unrelated query frame's best reference frame, over all its views
#: (whole, mirrored, region crops), has median 0.146, 99th percentile 0.241, max 0.243 on the
#: `--quick` calibration set (max 0.259 / 0.265 on the full seed-7 / seed-11 sets); a copied
#: frame's best match has 5th percentile 0.559, median 0.946 (seed 7, all but PiP). The floor
#: is the lowest round value >= 0.05 above every unrelated frame of the calibration set: 0.3
#: (0.4 until region search; on --quick the weakest copy rose from 0.46 to 0.54 with the
#: highest unrelated pair unchanged at 0.083). Heavily degraded copies of low-texture content
#: match at 0.4-0.6, so the floor decides whether they count.
DEFAULT_MIN_SIMILARITY = 0.3
#: default decision threshold on `Match.score` (calibrated on benchmarks/copydetect: the highest
#: unrelated pair there scores well below it; README "Copy detection" has the numbers).
COPY_THRESHOLD = 0.2


@dataclass(frozen=True)
class MatchSettings:
    """Knobs of the copy matcher. Defaults are the harness-calibrated operating point."""

    frame_k: int = 32  # neighbours per query frame (per orientation)
    min_similarity: float = DEFAULT_MIN_SIMILARITY
    idf_margin: float = 0.1  # neighbours within this of a frame's best similarity are its near-duplicates
    idf_free_videos: float = 2.0  # a frame whose near-duplicates span more videos than this is down-weighted
    speed_min: float = 0.5
    speed_max: float = 2.0
    offset_tolerance: float = 1.0
    max_gap: float = 3.0
    min_segment_frames: int = 3
    max_segments: int = 4
    redundancy_threshold: float = 0.99  # see redundancy_weights
    rescale_similarity: bool = True  # score with calibrated_sims (see there)
    threshold: float = COPY_THRESHOLD

    def __post_init__(self) -> None:
        if self.frame_k < 1:
            raise ValueError("frame_k must be >= 1")
        if not -1.0 <= self.min_similarity < 1.0:
            raise ValueError("min_similarity must be in [-1, 1)")
        if not 0.0 <= self.threshold <= 1.0:
            raise ValueError("threshold must be in [0, 1]")


@dataclass
class Segment:
    query_start: float
    query_end: float
    ref_start: float
    ref_end: float
    offset: float  # t_ref = offset + speed * t_query
    speed: float
    score: float
    frames: int


@dataclass
class Match:
    """One candidate copy: reference `video` (the index group) with aligned segments."""

    video: int
    score: float  # calibrated, in [0, 1]; compare with MatchSettings.threshold
    votes: int
    query_coverage: float
    ref_coverage: float | None
    segments: list[Segment] = field(default_factory=list)

    @property
    def main(self) -> Segment | None:
        """The segment with most matched frames (its offset/speed describe the copy)."""
        return max(self.segments, key=lambda s: s.frames) if self.segments else None

    @property
    def offset(self) -> float:
        m = self.main
        return m.offset if m else 0.0

    @property
    def speed(self) -> float:
        m = self.main
        return m.speed if m else 1.0


class SearchableIndex(Protocol):
    metric: str

    def search(self, queries: np.ndarray, k: int, *args: Any, **kw: Any) -> tuple[np.ndarray, np.ndarray]: ...


def similarities(dist: np.ndarray, metric: str) -> np.ndarray:
    """Native distances -> cosine similarity in [-1, 1] (vectors are L2-normalised).
    "ip" reports `1 - dot`; "l2" reports squared distance `2 - 2 dot`."""
    d = np.asarray(dist, dtype=np.float64)
    s = (1.0 - d) if metric == "ip" else (1.0 - d / 2.0)
    return np.clip(np.where(np.isfinite(d), s, -1.0), -1.0, 1.0).astype(np.float32)


def search_neighbors(index: SearchableIndex, vectors: np.ndarray, k: int,
                     flip_vectors: np.ndarray | None = None, region_vectors: Sequence[np.ndarray] = (),
                     **search_kw: Any) -> tuple[np.ndarray, np.ndarray]:
    """kNN of every query frame and, given, of its mirror and of its regions (crops, see
    `frameseek.regions`): `(ids uint64[q, k * sets], sims float32)`, the sets side by side.
    Missing slots keep id NO_ID and similarity -1.

    Several views of one query frame in one row cannot inflate the score: `_native.aggregate`
    counts a reference frame listed twice in a row once (its best similarity), and matches each
    query frame to at most one reference frame per segment, so a row's views together vote like
    its single best view. The views are searched in one batch (one index call)."""
    q = np.ascontiguousarray(vectors, dtype=np.float32)
    views = [q]
    for name, extra in (("flip_vectors", [flip_vectors] if flip_vectors is not None and len(flip_vectors) else []),
                        ("region_vectors", list(region_vectors))):
        for v in extra:
            if len(v) != len(q):
                raise ValueError(f"{name} must have one row per query frame")
            views.append(np.asarray(v, dtype=np.float32))
    stacked = np.ascontiguousarray(np.vstack(views)) if len(views) > 1 else q
    ids, dist = index.search(stacked, k, **search_kw)
    n = len(q)
    if len(views) > 1:  # [views * q, k] -> [q, views * k]
        ids = np.hstack([ids[i * n:(i + 1) * n] for i in range(len(views))])
        dist = np.hstack([dist[i * n:(i + 1) * n] for i in range(len(views))])
    return np.ascontiguousarray(ids, dtype=np.uint64), similarities(dist, index.metric)


def reference_frame_weights(neighbor_groups: np.ndarray, neighbor_sims: np.ndarray, *,
                            min_similarity: float = 0.75, free_videos: int = 1) -> np.ndarray:
    """Reference-side IDF from a self-kNN of the reference frames (row i = frame i's neighbours in
    the index, itself included): `free_videos / max(free_videos, n)` where `n` is the number of
    distinct videos holding a near-duplicate (similarity >= `min_similarity`) of the frame. A
    title card or logo slate shared by many references then votes weakly for each of them.
    Computed once at ingest; the caller gathers it per neighbour for `vote_weights`."""
    n = _distinct_groups_per_row(np.asarray(neighbor_groups, dtype=np.uint64),
                                 np.asarray(neighbor_sims) >= min_similarity)
    return (free_videos / np.maximum(free_videos, n)).astype(np.float32)


def _distinct_groups_per_row(groups: np.ndarray, mask: np.ndarray) -> np.ndarray:
    g = np.where(mask, groups, NO_ID)
    g = np.sort(g, axis=1)
    distinct = (g[:, 1:] != g[:, :-1]) & (g[:, 1:] != NO_ID)
    return distinct.sum(axis=1) + (g[:, 0] != NO_ID)


def vote_weights(ids: np.ndarray, groups: np.ndarray, sims: np.ndarray, settings: MatchSettings = MatchSettings(),
                 ref_weights: np.ndarray | None = None) -> np.ndarray:
    """Per-neighbour vote weights in [0, 1]: query-side IDF (`_native.neighbor_idf_weights`)
    times an optional reference-side weight of the same shape (see `reference_frame_weights`)."""
    w = _native.neighbor_idf_weights(np.ascontiguousarray(ids, dtype=np.uint64),
                                      np.ascontiguousarray(groups, dtype=np.uint64),
                                      np.ascontiguousarray(sims, dtype=np.float32),
                                      min_similarity=settings.min_similarity, margin=settings.idf_margin,
                                      free_videos=settings.idf_free_videos)
    if ref_weights is not None:
        rw = np.asarray(ref_weights, dtype=np.float32)
        if rw.shape != w.shape:
            raise ValueError("ref_weights must have the neighbour matrix's shape")
        w = w * np.clip(rw, 0.0, 1.0)
    return np.ascontiguousarray(w, dtype=np.float32)


def redundancy_weights(vectors: np.ndarray, threshold: float = 0.99, window: int = 64) -> np.ndarray:
    """Query-side "term frequency": `1 / number of frames near-identical to this one` (cosine >=
    `threshold`, itself included) among the frames at most `window` rows away, float32[q].

    A static shot — a title card, a slate, a paused frame — is one piece of evidence however
    long it is held; without this, an unrelated clip that opens with the same 6 s title card as
    an indexed video scores 6 s worth of perfect matches. `align` rescales the score by
    `q / sum(weights)`, so a clip that is *all* one static shot still scores like any copy.
    Static shots are contiguous, so a band of `window` rows suffices: O(q * window * dim) time
    and O(q * dim) memory, fine for hours of frames (a full q x q matrix would not be)."""
    v = np.asarray(vectors, dtype=np.float32)
    if v.ndim != 2:
        raise ValueError("vectors must be [q, dim]")
    q = len(v)
    counts = np.ones(q, np.int64)
    for o in range(1, min(window, q - 1) + 1):
        near = np.einsum("ij,ij->i", v[:-o], v[o:]) >= threshold
        counts[:-o] += near
        counts[o:] += near
    return (1.0 / counts).astype(np.float32)


def calibrated_sims(sims: np.ndarray, min_similarity: float) -> np.ndarray:
    """Similarity -> vote strength in [0, 1]: `(s - min_similarity) / (1 - min_similarity)`.
    The raw aggregation score multiplies by raw cosine, so a pile of unrelated frames at 0.45
    collects almost half the credit of an exact copy; rescaling by the margin above the voting
    floor makes the score ~0 for chance matches and keeps exact copies near 1."""
    s = (np.asarray(sims, dtype=np.float32) - min_similarity) / max(1e-6, 1.0 - min_similarity)
    return np.clip(s, 0.0, 1.0).astype(np.float32)


def align(query_times: np.ndarray, ids: np.ndarray, groups: np.ndarray, ref_times: np.ndarray,
          sims: np.ndarray, weights: np.ndarray | None = None, *, frame_weights: np.ndarray | None = None,
          settings: MatchSettings = MatchSettings(),
          ref_durations: dict[int, float] | None = None, query_interval: float | None = None,
          ref_interval: float | None = None, max_candidates: int = 20, threads: int = 1) -> list[Match]:
    """Temporal alignment of per-frame neighbours (`_native.aggregate`) -> ranked `Match`es.

    `ids/groups/ref_times/sims/weights` are `[q, K]` neighbour matrices (K = k or 2k with flips);
    `ref_times` are the neighbours' reference timestamps in seconds; `frame_weights` (float32[q],
    e.g. `redundancy_weights(query_vectors)`) multiply every neighbour weight of a query frame, and
    the score is renormalised by `q / sum(frame_weights)`. Matches come back best first by `score`."""
    qt = np.ascontiguousarray(query_times, dtype=np.float64)
    ids = np.ascontiguousarray(ids, dtype=np.uint64)
    groups = np.ascontiguousarray(groups, dtype=np.uint64)
    rt = np.ascontiguousarray(ref_times, dtype=np.float64)
    sims = np.ascontiguousarray(sims, dtype=np.float32)
    if weights is None:
        weights = vote_weights(ids, groups, sims, settings)
    norm = 1.0
    if frame_weights is not None:
        fw = np.asarray(frame_weights, dtype=np.float32)
        if fw.shape != (len(qt),):
            raise ValueError("frame_weights must have one entry per query frame")
        weights = np.asarray(weights, dtype=np.float32) * np.clip(fw, 0.0, 1.0)[:, None]
        norm = len(qt) / max(float(fw.sum()), 1e-6)
    # A stretch with no query frame at all (frames dropped by the blank filter: a logo on white,
    # a fade) is no evidence of a cut, so it must not split a segment: widen max_gap to the
    # longest hole in the query's own sampling. Gaps where query frames exist but do not match
    # still cut at settings.max_gap.
    holes = float(np.max(np.diff(np.sort(qt)))) if qt.size > 1 else 0.0
    kw: dict[str, Any] = dict(min_similarity=settings.min_similarity, speed_min=settings.speed_min,
                              speed_max=settings.speed_max, offset_tolerance=settings.offset_tolerance,
                              max_gap=max(settings.max_gap, holes + 1e-3),
                              min_segment_frames=settings.min_segment_frames,
                              max_segments=settings.max_segments, max_candidates=int(max_candidates),
                              threads=threads)
    if ref_durations:
        kw["ref_durations"] = {int(a): float(b) for a, b in ref_durations.items()}
    if query_interval:
        kw["frame_interval"] = float(query_interval)
    if ref_interval:
        kw["ref_frame_interval"] = float(ref_interval)
    if qt.size == 0:
        return []
    vote_sims = calibrated_sims(sims, settings.min_similarity) if settings.rescale_similarity else sims
    if settings.rescale_similarity:
        kw["min_similarity"] = 1e-6  # rescaled: everything below the floor is exactly 0
    raw = _native.aggregate(qt, ids, groups, rt, vote_sims, np.ascontiguousarray(weights, dtype=np.float32), **kw)
    out = []
    for c in raw:
        segs = [Segment(float(s["query_start"]), float(s["query_end"]), float(s["ref_start"]),
                        float(s["ref_end"]), float(s["offset"]), float(s["speed"]), float(s["score"]),
                        int(s["frames"])) for s in c["segments"]]
        rc = c.get("ref_coverage")
        out.append(Match(video=int(c["video"]), score=min(1.0, norm * float(c["score"])), votes=int(c["votes"]),
                         query_coverage=float(c["query_coverage"]),
                         ref_coverage=None if rc is None or (isinstance(rc, float) and math.isnan(rc)) else float(rc),
                         segments=segs))
    out.sort(key=lambda m: -m.score)
    return out
