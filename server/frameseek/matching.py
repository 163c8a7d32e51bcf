"""Video copy detection: per-frame kNN results -> vote weights -> temporal alignment -> calibrated score.

Pure functions over numpy and the native core (no gRPC, no catalog), so that the server
(`service/search.py`: SearchByVideo and duplicate-on-ingest), the copy-detection harness
(`benchmarks/copydetect/`) and the tests run exactly the same code.

The chain, for one query clip sampled at `query_fps` (blank frames already dropped by the media
pipeline, so they never vote):

1. **kNN** (`search_views`): each query frame's `frame_k` nearest reference frames; with the
   mirrored query frames (the `mirror` view, `frameseek.pipeline.views`) their neighbours are appended beside the
   plain ones, giving `[q, 2k]` — the native aggregation counts a reference frame listed twice for
   one query frame once, so a flipped copy and a plain copy score alike. The coarse view
   (the `coarse` views: each frame and its mirror embedded again at 1/2 of the
   model's input size) joins the row too: copies degraded to little signal (80x60, 32 kb/s)
   match their source clearly better at that scale, clean copies at full scale. Region crops of the
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
   query frames (a held title card) count as one piece of evidence (`redundancy_weights`).
   `COPY_THRESHOLD` is the default decision threshold, picked once on the harness
   (benchmarks/copydetect, README "Copy detection") and not tuned per transform.
5. **Re-alignment** (`refine_alignment`, for the matches that get reported): each segment is
   re-placed on the line that best explains the query against *all* frames of that reference
   (its stored vectors) -- cross similarity times agreement of the temporal self-similarity
   structure (`line_evidence`). It moves segments on near-static content (zooms over one photo,
   interchangeable shots) where the k nearest neighbours scatter; scores are left unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from frameseek import _native

from .config import MATCHING
from .ids import NO_ID

#: cosine similarity below which a neighbour never votes. sscd_distilled on the harness
#: (benchmarks/copydetect): an unrelated query frame's best reference frame, over all its views
#: (whole, mirrored, coarse, region crops), has median ~0.15 and max 0.26; a copied frame's best
#: match has 5th percentile 0.56, median 0.95 (seed 7, all but PiP) -- but x264 at CRF 51 brings
#: whole copies down to 0.18-0.32 per frame while their source stays the top-ranked reference.
#: Until 2026-12-03 the floor sat above every unrelated frame (0.3), so that chance matches never
#: vote. They do not need to be kept out that way: a vote adds to a score only on the temporal
#: line of its segment (>= min_segment_frames frames, one offset and speed), and chance
#: neighbours scatter over videos and offsets, while a crushed copy's weak votes all fall on
#: one line. Four-seed harness, --severity (16,196 unrelated pairs), floor 0.3 / 0.2 / 0.15:
#: strongest unrelated pair 0.091 / 0.109 / 0.162 (threshold 0.2), CRF 51 copies' µAP
#: 0.471-0.933 / 0.805-1.000 / 0.877-1.000, nothing else moves beyond localisation noise
#: (benchmarks/README.md "vote floor"). 0.2 keeps the strongest unrelated pair at half the
#: threshold.
DEFAULT_MIN_SIMILARITY = 0.2
#: default decision threshold on `Match.score` (calibrated on benchmarks/copydetect: the highest
#: unrelated pair there scores well below it; README "Copy detection" has the numbers). Declared
#: with the server's settings (config.MatchingConfig.copy_threshold).
COPY_THRESHOLD = MATCHING.copy_threshold


@dataclass(frozen=True)
class MatchSettings:
    """Knobs of the copy matcher. Defaults are the harness-calibrated operating point."""

    frame_k: int = MATCHING.frame_k  # neighbours per query frame (per orientation)
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
    # refine_alignment weighs a line at speed v by exp(-refine_speed_prior * |ln v|): re-uploads
    # mostly run in real time, and on near-static content (one still shot) the dense evidence
    # cannot tell the true line from a slow one -- edits that flatten the query's self-similarity
    # make a slow line look as good. 0.5 costs a 0.8x / 1.25x line 11 % of its evidence and a
    # 0.5x line 29 %. Harness seeds 7 and 11: copies more than 1 s off 7 -> 5 for any value in
    # 0.3-1.0 (two near-static copies at 1.6 and 3.1 s come back); held-out seeds 13 and 17:
    # 4 -> 5 and 0 -> 0, i.e. about neutral there (benchmarks/README.md).
    refine_speed_prior: float = 0.5
    # refine_alignment places a segment against the reference's coarse twins instead of its
    # full-size vectors when the segment's query frames match the twins better by this much (mean
    # of each frame's best similarity). Harness, four seeds --severity: taking the better of the
    # two per frame pair (no margin) blurred placement -- median errors 0.01 -> 0.08 s on clean
    # re-encodes, a sub-clip row 1.00 -> 0.67 within 1 s; 0.05 and 0.1 switched only for crushed
    # and tiny copies, 0.1 without a row worse than never switching (benchmarks/README.md).
    refine_twin_margin: float = 0.1
    # line_evidence's structure term divides what a line leaves unexplained of the query's
    # self-similarities by their spread plus this variance: the spread that embedding noise alone
    # gives a re-encoded copy (self-similarity noise ~0.03). Without it a copy whose compression
    # flattened its structure to noise (a 3/4-size CRF 30 excerpt: self-similarities 0.85-0.87)
    # had that noise ranked as structure, and chance lines won: excerpts the aligner had placed
    # right moved 1.8 s (distinct scenes) and 7.5 s (near-static tree.avi) away
    # (tests/test_matching.py, benchmarks/README.md "structure noise").
    refine_structure_noise: float = 1e-3
    rescale_similarity: bool = True  # score with calibrated_sims (see there)
    threshold: float = COPY_THRESHOLD

    def __post_init__(self) -> None:
        if self.frame_k < 1:
            raise ValueError("frame_k must be >= 1")
        if not -1.0 <= self.min_similarity < 1.0:
            raise ValueError("min_similarity must be in [-1, 1)")
        if not 0.0 <= self.threshold <= 1.0:
            raise ValueError("threshold must be in [0, 1]")
        if not self.refine_speed_prior >= 0.0:
            raise ValueError("refine_speed_prior must be >= 0")
        if not self.refine_structure_noise > 0.0:
            raise ValueError("refine_structure_noise must be > 0")


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


def search_neighbors(
    index: SearchableIndex,
    vectors: np.ndarray,
    k: int,
    flip_vectors: np.ndarray | None = None,
    region_vectors: Sequence[np.ndarray] = (),
    coarse_vectors: Sequence[np.ndarray] = (),
    **search_kw: Any,
) -> tuple[np.ndarray, np.ndarray]:
    """kNN of every query frame and, given, of its mirror, of its coarse views (the frame, and
    its mirror, embedded at a smaller model input: the `coarse` views) and of its
    regions (crops, see `frameseek.regions`): `(ids uint64[q, k * sets], sims float32)`, the sets
    side by side. Missing slots keep id NO_ID and similarity -1.

    Several views of one query frame in one row cannot inflate the score: `_native.aggregate`
    counts a reference frame listed twice in a row once (its best similarity), and matches each
    query frame to at most one reference frame per segment, so a row's views together vote like
    its single best view. The views are searched in one batch (one index call)."""
    views = [vectors]
    for name, extra in (
        ("flip_vectors", [flip_vectors] if flip_vectors is not None and len(flip_vectors) else []),
        ("coarse_vectors", list(coarse_vectors)),
        ("region_vectors", list(region_vectors)),
    ):
        for v in extra:
            if len(v) != len(vectors):
                raise ValueError(f"{name} must have one row per query frame")
            views.append(v)
    return search_views(index, views, k, **search_kw)


def search_views(
    index: SearchableIndex, views: Sequence[np.ndarray], k: int, **search_kw: Any
) -> tuple[np.ndarray, np.ndarray]:
    """kNN of every query frame in every view (`views`: [q, dim] vector sets, rows aligned, the
    whole frame first; `EmbeddedMedia.views`), in one index call: `(ids uint64[q, k * views],
    sims float32)`, each view's k neighbours side by side in the order of `views`. Missing slots
    keep id NO_ID and similarity -1. (See `search_neighbors` for why several views in a row
    cannot inflate a score.)"""
    q = np.ascontiguousarray(views[0], dtype=np.float32)
    sets = [q]
    for v in views[1:]:
        if len(v) != len(q):
            raise ValueError("every view must have one row per query frame")
        sets.append(np.asarray(v, dtype=np.float32))
    stacked = np.ascontiguousarray(np.vstack(sets)) if len(sets) > 1 else q
    ids, dist = index.search(stacked, k, **search_kw)
    n = len(q)
    if len(sets) > 1:  # [views * q, k] -> [q, views * k]
        ids = np.hstack([ids[i * n : (i + 1) * n] for i in range(len(sets))])
        dist = np.hstack([dist[i * n : (i + 1) * n] for i in range(len(sets))])
    return np.ascontiguousarray(ids, dtype=np.uint64), similarities(dist, index.metric)


def reference_frame_weights(
    neighbor_groups: np.ndarray, neighbor_sims: np.ndarray, *, min_similarity: float = 0.75, free_videos: int = 1
) -> np.ndarray:
    """Reference-side IDF from a self-kNN of the reference frames (row i = frame i's neighbours in
    the index, itself included): `free_videos / max(free_videos, n)` where `n` is the number of
    distinct videos holding a near-duplicate (similarity >= `min_similarity`) of the frame. A
    title card or logo slate shared by many references then votes weakly for each of them.
    Computed once at ingest; the caller gathers it per neighbour for `vote_weights`."""
    n = _distinct_groups_per_row(
        np.asarray(neighbor_groups, dtype=np.uint64), np.asarray(neighbor_sims) >= min_similarity
    )
    return (free_videos / np.maximum(free_videos, n)).astype(np.float32)


def _distinct_groups_per_row(groups: np.ndarray, mask: np.ndarray) -> np.ndarray:
    g = np.where(mask, groups, NO_ID)
    g = np.sort(g, axis=1)
    distinct = (g[:, 1:] != g[:, :-1]) & (g[:, 1:] != NO_ID)
    return distinct.sum(axis=1) + (g[:, 0] != NO_ID)


def vote_weights(
    ids: np.ndarray,
    groups: np.ndarray,
    sims: np.ndarray,
    settings: MatchSettings = MatchSettings(),
    ref_weights: np.ndarray | None = None,
) -> np.ndarray:
    """Per-neighbour vote weights in [0, 1]: query-side IDF (`_native.neighbor_idf_weights`)
    times an optional reference-side weight of the same shape (see `reference_frame_weights`)."""
    w = _native.neighbor_idf_weights(
        np.ascontiguousarray(ids, dtype=np.uint64),
        np.ascontiguousarray(groups, dtype=np.uint64),
        np.ascontiguousarray(sims, dtype=np.float32),
        min_similarity=settings.min_similarity,
        margin=settings.idf_margin,
        free_videos=settings.idf_free_videos,
    )
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


def align(
    query_times: np.ndarray,
    ids: np.ndarray,
    groups: np.ndarray,
    ref_times: np.ndarray,
    sims: np.ndarray,
    weights: np.ndarray | None = None,
    *,
    frame_weights: np.ndarray | None = None,
    settings: MatchSettings = MatchSettings(),
    ref_durations: dict[int, float] | None = None,
    query_interval: float | None = None,
    ref_interval: float | None = None,
    max_candidates: int = 20,
    threads: int = 1,
) -> list[Match]:
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
    kw: dict[str, Any] = dict(
        min_similarity=settings.min_similarity,
        speed_min=settings.speed_min,
        speed_max=settings.speed_max,
        offset_tolerance=settings.offset_tolerance,
        max_gap=max(settings.max_gap, holes + 1e-3),
        min_segment_frames=settings.min_segment_frames,
        max_segments=settings.max_segments,
        max_candidates=int(max_candidates),
        threads=threads,
    )
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
        segs = [
            Segment(
                float(s["query_start"]),
                float(s["query_end"]),
                float(s["ref_start"]),
                float(s["ref_end"]),
                float(s["offset"]),
                float(s["speed"]),
                float(s["score"]),
                int(s["frames"]),
            )
            for s in c["segments"]
        ]
        rc = c.get("ref_coverage")
        out.append(
            Match(
                video=int(c["video"]),
                score=min(1.0, norm * float(c["score"])),
                votes=int(c["votes"]),
                query_coverage=float(c["query_coverage"]),
                ref_coverage=None if rc is None or (isinstance(rc, float) and math.isnan(rc)) else float(rc),
                segments=segs,
            )
        )
    out.sort(key=lambda m: -m.score)
    return out


# -- dense re-alignment ---------------------------------------------------------------------------

#: structure frames per segment: the self-similarity term compares n(n-1)/2 pairs for every
#: candidate line, so longer segments are subsampled evenly to this many frames (the cross term
#: always uses every frame).
REFINE_STRUCTURE_FRAMES = 16


def _frac_index(rt: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Fractional position of times `t` among sorted sample times `rt`: (left index, weight of
    the right neighbour), clamped to the ends. Works for uneven sampling (dropped blank frames)."""
    j = np.clip(np.searchsorted(rt, t), 1, len(rt) - 1)
    t0, t1 = rt[j - 1], rt[j]
    a = np.clip((t - t0) / np.maximum(t1 - t0, 1e-9), 0.0, 1.0)
    return j - 1, a


def line_evidence(
    query_times: np.ndarray,
    cross: np.ndarray,
    query_gram: np.ndarray,
    ref_times: np.ndarray,
    ref_gram: np.ndarray,
    offsets: np.ndarray,
    speed: float,
    structure_rows: np.ndarray | None = None,
    structure_noise: float = MatchSettings.refine_structure_noise,
) -> np.ndarray:
    """Dense evidence for the lines `t_ref = offset + speed * t_query` (one per entry of `offsets`).

    `cross` [n, r]: calibrated similarity (`calibrated_sims`) of each query frame to each
    reference frame; `query_gram` [n, n]: cosine similarity between the query frames (its own
    temporal structure); `ref_gram` [r, r]: the same for the reference frames at `ref_times`.
    Reference values between two samples are interpolated linearly (bilinearly for the gram).

    evidence = C * exp(-var(a - b) / var(a)) where
      C = sum over query frames of the cross similarity at the line's reference time: how well
          each frame matches *where the line puts it*, using every reference frame, not just the
          k nearest (on near-static content the k nearest scatter over interchangeable shots);
      a = the query's self-similarities (pairs i < j), b = the reference's self-similarities at
          the line's times: the line must reproduce the query's temporal structure — where its
          cuts are, how fast a zoom or pan changes the picture. A level shift between a and b is
          free (an edit common to every frame — caption band, logo, letterbox, crop — raises or
          lowers all self-similarities alike), so the term is the share of the query's structure
          the line leaves unexplained, measured against that structure's spread plus
          `structure_noise` (a variance: what embedding noise alone spreads a re-encoded copy's
          self-similarities by, `MatchSettings.refine_structure_noise`), so a query with no
          structure beyond noise asks little of the line and the cross term decides.
    `structure_rows` (indices into the query frames) limits the pairs to a subset of frames."""
    qt = np.asarray(query_times, dtype=np.float64)
    tr = np.asarray(offsets, dtype=np.float64)[:, None] + speed * qt[None, :]  # [L, n]
    j, w = _frac_index(ref_times, tr)
    r = cross.shape[1]
    # flat indices: one gather per corner instead of 2-D fancy indexing (the hot loop of the search)
    cf = np.ascontiguousarray(cross).ravel()
    ci = j + (np.arange(len(qt)) * r)[None, :]
    c0 = cf[ci]
    c = (c0 + w * (cf[ci + 1] - c0)).sum(axis=1)
    sr = np.arange(len(qt)) if structure_rows is None else np.asarray(structure_rows)
    if len(sr) < 3:
        return c
    iu, ju = np.triu_indices(len(sr), 1)
    pa, pb = sr[iu], sr[ju]
    a = query_gram[pa, pb]
    gf = np.ascontiguousarray(ref_gram).ravel()
    wi, wj = w[:, pa], w[:, pb]
    g = j[:, pa] * r + j[:, pb]  # corner (ji, jj); +1 = (ji, jj + 1); +r = (ji + 1, jj)
    g00, g01, g10, g11 = gf[g], gf[g + 1], gf[g + r], gf[g + r + 1]
    lo = g00 + wj * (g01 - g00)
    b = lo + wi * (g10 + wj * (g11 - g10) - lo)
    unexplained = np.var(b - a[None, :], axis=1)
    return c * np.exp(-unexplained / (float(np.var(a)) + structure_noise))


def refine_alignment(
    match: Match,
    query_times: np.ndarray,
    query_views: Sequence[np.ndarray],
    ref_times: np.ndarray,
    ref_vectors: np.ndarray,
    settings: MatchSettings = MatchSettings(),
    ref_twins: np.ndarray | None = None,
) -> Match:
    """Re-place each segment of a detected `match` with dense evidence; score and frames unchanged.

    The aligner (`align`) sees only each query frame's k nearest reference frames and votes on
    their positions. On near-static content — a zoom or pan over one still photo, several shots of
    one photo, an almost still camera — those neighbours scatter over interchangeable frames and
    the vote can pick a line in the wrong shot or at a wrong speed. Here, for one detected
    (query, reference) pair, every query frame in the segment (all its views: whole, mirrored,
    region crops) is compared with every frame of the reference near the segment (exact dot
    products on the reference's stored vectors: tens to hundreds of frames), and the lines
    that keep the segment inside the reference are scored by `line_evidence`: every other speed
    of the aligner's grid (`settings.speed_min..speed_max`) at offsets half a reference interval
    apart, then around the best of them (adjacent speeds, offsets a quarter interval apart).
    Every line's evidence is weighed by a prior towards real time (`settings.refine_speed_prior`).
    The segment moves to the best line when its evidence beats the aligner's line; otherwise it
    stays. Only placement changes: `score`, `votes` and coverage are the aligner's, so the
    calibration and the decision threshold are untouched. Cost: ~60 ms for a 58-frame query
    against a 180-frame reference on this shared 2-core machine (benchmarks/copydetect/bench_scale).

    `query_views`: the query's [q, dim] vector sets (plain first; mirrored and region crops as
    passed to `search_neighbors`), rows matching `query_times`. `ref_times`/`ref_vectors`: the
    reference video's sample times (s) and vectors; `ref_twins`: its coarse twins (rows matching
    `ref_vectors`, Storage.add_video), when it has them -- a query view may match a reference frame
    through either vector, and the cross similarity takes the better one. Returns a new `Match`."""
    qt_all = np.asarray(query_times, dtype=np.float64)
    rt_all = np.asarray(ref_times, dtype=np.float64)
    rv_all = np.asarray(ref_vectors, dtype=np.float32)
    views = [np.asarray(v, dtype=np.float32) for v in query_views if v is not None and len(v)]
    if not views or any(v.shape != views[0].shape for v in views) or len(views[0]) != len(qt_all):
        raise ValueError("query_views must be [q, dim] arrays with one row per query time")
    if rv_all.ndim != 2 or len(rv_all) != len(rt_all) or rv_all.shape[1] != views[0].shape[1]:
        raise ValueError("ref_vectors must be [r, dim] with one row per reference time")
    tw_all = None if ref_twins is None else np.asarray(ref_twins, dtype=np.float32)
    if tw_all is not None and tw_all.shape != rv_all.shape:
        raise ValueError("ref_twins must be shaped like ref_vectors")
    if len(rt_all) < 2 or not match.segments:
        return match
    order = np.argsort(rt_all, kind="stable")
    rt_all, rv_all = rt_all[order], rv_all[order]
    tw_all = None if tw_all is None else tw_all[order]
    ref_dt = float(np.median(np.diff(rt_all))) or 1.0
    speeds = np.asarray(_native.aggregate_speed_grid(speed_min=settings.speed_min, speed_max=settings.speed_max))
    segs = []
    for s in match.segments:
        segs.append(_refine_segment(s, qt_all, views, rt_all, rv_all, ref_dt, speeds, settings, tw_all))
    return Match(
        video=match.video,
        score=match.score,
        votes=match.votes,
        query_coverage=match.query_coverage,
        ref_coverage=match.ref_coverage,
        segments=segs,
    )


def _refine_segment(
    s: Segment,
    qt_all: np.ndarray,
    views: list[np.ndarray],
    rt_all: np.ndarray,
    rv_all: np.ndarray,
    ref_dt: float,
    speeds: np.ndarray,
    settings: MatchSettings,
    tw_all: np.ndarray | None = None,
) -> Segment:
    sel = (qt_all >= s.query_start - 1e-6) & (qt_all <= s.query_end + 1e-6)
    if int(sel.sum()) < max(3, settings.min_segment_frames):
        return s
    qt = qt_all[sel]
    span = float(qt.max() - qt.min())
    # Reference window: the aligner's placement widened by the longest stretch the segment can
    # cover at the fastest allowed speed (a line in another shot of the same scene is in reach;
    # an hour-long reference is not scanned end to end).
    lo = min(s.ref_start, s.ref_end) - span * settings.speed_max - settings.offset_tolerance
    hi = max(s.ref_start, s.ref_end) + span * settings.speed_max + settings.offset_tolerance
    w = (rt_all >= lo) & (rt_all <= hi)
    if int(w.sum()) < 2:
        return s
    rt, rv = rt_all[w], rv_all[w].astype(np.float64)
    V = np.stack([v[sel] for v in views]).astype(np.float64)  # [views, n, dim]
    sims = np.einsum("vnd,rd->vnr", V, rv)
    if tw_all is not None:
        # The reference's coarse twins are the better space only where the query is degraded:
        # coarse-to-coarse similarity changes less from frame to frame, so it places a clean copy
        # less sharply. Use them (cross and structure) when the segment's frames match there
        # clearly better than at full size.
        tw = tw_all[w].astype(np.float64)
        sims_tw = np.einsum("vnd,rd->vnr", V, tw)
        if sims_tw.max(axis=(0, 2)).mean() > sims.max(axis=(0, 2)).mean() + settings.refine_twin_margin:
            sims, rv = sims_tw, tw
    # the view that carries the copy (whole frame, mirror or inset crop) gives the query's structure
    best_view = int(np.argmax(sims.max(axis=2).mean(axis=1)))
    Q = V[best_view]
    cross = calibrated_sims(sims.max(axis=0), settings.min_similarity).astype(np.float64)
    qgram, rgram = Q @ Q.T, rv @ rv.T
    n = len(qt)
    rows = (
        np.unique(np.round(np.linspace(0, n - 1, REFINE_STRUCTURE_FRAMES)).astype(int))
        if n > REFINE_STRUCTURE_FRAMES
        else None
    )
    # a line may run half a reference interval past either end (the last sample stands for that long)
    t0, t1 = rt[0] - ref_dt / 2, rt[-1] + ref_dt / 2

    def prior(v: float) -> float:
        return float(np.exp(-settings.refine_speed_prior * abs(np.log(v))))

    def search(speed_idx, step: float, around: float | None = None) -> tuple[float, tuple[float, float] | None]:
        best_val, best_line = -1.0, None
        for i in speed_idx:
            v = float(speeds[i])
            o_lo, o_hi = t0 - v * qt.min(), t1 - v * qt.max()
            if around is not None:
                o_lo, o_hi = max(o_lo, around - ref_dt), min(o_hi, around + ref_dt)
            if o_hi < o_lo:
                continue
            offs = o_lo + step * np.arange(int(np.floor((o_hi - o_lo) / step + 1e-9)) + 1)
            ev = line_evidence(qt, cross, qgram, rt, rgram, offs, v, rows, settings.refine_structure_noise) * prior(v)
            k = int(np.argmax(ev))
            if ev[k] > best_val:
                best_val, best_line = float(ev[k]), (float(offs[k]), i)
        return best_val, best_line

    # coarse to fine: every other speed of the grid at offsets half a reference frame apart (the
    # evidence is interpolated linearly between frames, so it is smooth at that scale), then the
    # best line's neighbourhood -- the adjacent speeds, offsets within one frame a quarter frame
    # apart
    _, coarse = search(range(0, len(speeds), 2), ref_dt / 2)
    if coarse is None:
        return s
    best_val, fine = search(range(max(0, coarse[1] - 1), min(len(speeds), coarse[1] + 2)), ref_dt / 4, coarse[0])
    if fine is None:
        return s
    best_line = (fine[0], float(speeds[fine[1]]))
    here = float(
        line_evidence(
            qt, cross, qgram, rt, rgram, np.array([s.offset]), float(s.speed), rows, settings.refine_structure_noise
        )[0]
        * prior(float(s.speed))
    )
    if not best_val > here * (1 + 1e-9) + 1e-12:  # a tie (within rounding) keeps the aligner's line
        return s
    off, v = best_line
    return Segment(
        query_start=s.query_start,
        query_end=s.query_end,
        ref_start=off + v * s.query_start,
        ref_end=off + v * s.query_end,
        offset=off,
        speed=v,
        score=s.score,
        frames=s.frames,
    )
