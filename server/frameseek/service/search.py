"""Search: by vector, by image, by video clip (frame votes + temporal alignment).

One vector (SearchByVector, SearchByImage): a frame kNN grouped by video, with a group-by search
as the fallback (`nearest_videos`); SearchByImage embeds its image under one view (one model
pass). A clip (SearchByVideo, and ingest's duplicate check): the modality's match over this
collection's index (`video_matches` -> `frameseek.modality.frames.copy_search`: a kNN per query
frame and view, twin mapping, alignment and scoring in `frameseek.matching`).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence

import numpy as np

from .. import _native, matching
from ..errors import ErrorCode, ServiceError, exhausted, invalid
from ..ids import NO_ID, sample_of, split_sample_ids
from ..modality import Purpose
from ..storage import CollectionRecord, NotFound, StorageError
from .collections import Collections, Videos, check_labels
from .core import Core, storage_error
from .types import CopyMatch, Hit, SearchOptions, Segment, VideoSearchResult

MAX_K = 1000


class Search:
    def __init__(self, core: Core, collections: Collections, videos: Videos):
        self.core, self.collections, self.videos = core, collections, videos
        self.in_flight = 0  # searches running (admission: Settings.max_concurrent_searches)
        self._knn_stats: dict[int, tuple[float, int]] = {}  # see _knn_rarely_enough

    async def _groups_filter(self, rec: CollectionRecord, opts: SearchOptions) -> tuple[np.ndarray | None, set[int]]:
        groups = None
        if opts.labels:
            check_labels(opts.labels)
            groups = await self.videos.ids_matching(rec, opts.labels)
        if opts.videos:
            arr = np.asarray([v for c, v in opts.videos if c == rec.name], dtype=np.uint64)
            groups = arr if groups is None else np.intersect1d(groups, arr)
        # a video of another collection is another video (ids are not unique across collections'
        # names): it excludes nothing here, as it admits nothing in `videos`
        exclude = {v for c, v in opts.exclude_videos if c == rec.name}
        return groups, exclude

    def validate_options(self, opts: SearchOptions) -> None:
        if opts.k < 0 or opts.k > MAX_K:
            raise invalid(f"k must be in 1..{MAX_K}", field="k")
        opts.k = opts.k or 10
        if not 0 <= opts.max_matches_per_video <= 100:
            raise invalid("max_matches_per_video must be in 0..100", field="max_matches_per_video")
        opts.max_matches_per_video = opts.max_matches_per_video or 1
        if not 0 <= opts.ef <= 4096:
            raise invalid("ef must be in 0..4096", field="ef")
        if math.isnan(opts.min_score):
            raise invalid("min_score is NaN", field="min_score")

    def _admit(self) -> None:
        if self.in_flight >= self.core.settings.max_concurrent_searches:
            raise exhausted(f"too many searches in flight (limit {self.core.settings.max_concurrent_searches})",
                            limit=self.core.settings.max_concurrent_searches)

    @staticmethod
    def check_vector(rec: CollectionRecord, values) -> np.ndarray:
        vec = np.asarray(values, dtype=np.float32)
        if vec.shape != (rec.dimension,):
            raise invalid(f"vector has {vec.size} values; collection {rec.name!r} expects {rec.dimension}",
                          "DIMENSION_MISMATCH", expected=rec.dimension, got=vec.size)
        # One float64 dot product is the finiteness check too: squares of finite float32 values
        # cannot overflow float64, so the sum is non-finite exactly when a value is NaN or infinite.
        v64 = vec.astype(np.float64)
        ss = float(v64 @ v64)
        if not math.isfinite(ss):
            raise invalid("vector contains NaN or infinity", "NON_FINITE_VECTOR")
        if rec.metric == "ip":
            norm = math.sqrt(ss)
            if norm == 0:
                raise invalid("vector is all zeros", "INVALID_ARGUMENT", field="vector")
            vec = vec / norm
        return vec.reshape(1, -1)

    async def by_vector(self, cid: str, values, opts: SearchOptions) -> tuple[list[Hit], str]:
        rec = self.collections.get_now(cid) or await self.collections.get(cid)
        self.validate_options(opts)
        q = self.check_vector(rec, values)
        if not (opts.labels or opts.videos or opts.exclude_videos) and self._inline():
            # the hot path (no filters, search on the loop): no coroutine hop at all
            self._admit()
            return self.nearest_videos(rec, q, opts, None, set()), rec.model
        return await self._search_vectors(rec, q, opts), rec.model

    async def by_image(self, cid: str, image: bytes, opts: SearchOptions) -> tuple[list[Hit], str]:
        rec = await self.collections.get(cid)
        self.validate_options(opts)
        self.core.require_embedder(rec)
        if not image:
            raise invalid("image is empty (zero bytes)", "EMPTY_MEDIA")
        if len(image) > self.core.settings.media.max_image_bytes:
            raise exhausted(f"image larger than {self.core.settings.media.max_image_bytes} bytes", "MEDIA_TOO_LARGE")
        self._admit()
        self.in_flight += 1
        try:
            media = await asyncio.get_running_loop().run_in_executor(
                self.core.query_pool, self.core.embed, image, self.core.sampling(rec, Purpose.IMAGE_QUERY))
        finally:
            self.in_flight -= 1
        if len(media) == 0:
            raise invalid("the image has no informative content (blank)", "EMPTY_MEDIA")
        return await self._search_vectors(rec, media.vectors[:1], opts), rec.model  # one view: one model pass

    async def _search_vectors(self, rec: CollectionRecord, q: np.ndarray, opts: SearchOptions) -> list[Hit]:
        groups, exclude = await self._groups_filter(rec, opts) if (opts.labels or opts.videos or
                                                                   opts.exclude_videos) else (None, set())
        if groups is not None and groups.size == 0:
            return []
        self._admit()
        if self._inline():
            return self.nearest_videos(rec, q, opts, groups, exclude)
        self.in_flight += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(
                self.core.search_pool, self.nearest_videos, rec, q, opts, groups, exclude)
        finally:
            self.in_flight -= 1

    def _inline(self) -> bool:
        """Run single-vector searches on the event loop? A single-vector HNSW query takes well under
        a millisecond: a thread hop costs about as much as the search (see Settings.search_inline)."""
        inline = self.core.settings.search_inline
        return inline if inline is not None else self.core.settings.workers > 1

    def _score(self, rec: CollectionRecord, dist: np.ndarray) -> np.ndarray:
        return (1.0 - dist) if rec.metric == "ip" else (1.0 - dist / 2.0)

    def nearest_videos(self, rec, q, opts: SearchOptions, groups, exclude: set[int]) -> list[Hit]:
        """Top videos for one query vector.

        A plain frame kNN (k * matches * 4 frames, at least 32) grouped by video here; this is
        also the path for one timestamp per video, because the native group-by search costs
        3-5x a plain kNN on video data. The grouping is exact: a video absent from the kNN has
        every frame farther than the kNN's last frame, hence farther than any video kept. On video
        data the nearest frames can all belong to a few videos; only when that leaves fewer than
        k videos although the kNN came back full (and its last frame still passes min_score) does a
        group-by search (distinct videos) supply the missing ones. So the common case costs one
        plain kNN and the answer still has k videos. Where the fallback is the rule (a collection of
        long static shots), one-match searches go straight to the group search (_knn_rarely_enough).
        """
        k, m = opts.k + len(exclude), opts.max_matches_per_video
        ef = opts.ef or None
        hits: dict[int, Hit] = {}
        if m == 1 and self._knn_rarely_enough(rec.id):
            # on this collection the kNN almost never yields k videos (long static shots): going
            # straight to the group search saves the wasted kNN
            try:
                _, gids, gdist = self.core.storage.search_groups(rec.id, q, k, ef=ef, groups=groups)
            except StorageError as exc:
                raise storage_error(exc) from None
            self._collect(rec, hits, gids[0], gdist[0], opts, exclude, m)
            return sorted(hits.values(), key=lambda h: -h.score)
        kf = min(max(k * m * 4, 32), 4096)
        try:
            ids, dist = self.core.storage.search(rec.id, q, kf, ef=ef, groups=groups)
        except StorageError as exc:
            raise storage_error(exc) from None
        ids, dist = ids[0], dist[0]
        full = bool((ids != NO_ID).all())
        self._collect(rec, hits, ids, dist, opts, exclude, m)
        # frames beyond the kNN score at most its last frame: if that one fails min_score, so do they
        more = full and float(self._score(rec, dist[-1:])[0]) >= opts.min_score
        if m == 1:
            self._knn_outcome(rec.id, missed=len(hits) < opts.k and more)
        if len(hits) < opts.k and more:
            try:
                _, gids, gdist = self.core.storage.search_groups(rec.id, q, k, ef=ef, groups=groups)
            except StorageError as exc:
                raise storage_error(exc) from None
            self._collect(rec, hits, gids[0], gdist[0], opts, exclude, m)
        out = sorted(hits.values(), key=lambda h: -h.score)
        for h in out:
            h.matches.sort(key=lambda x: -x[1])
        return out

    # How often the kNN-first path needs the group-search fallback, per collection (exponential
    # average over recent one-match-per-video searches). Above KNN_MISS_SKIP the kNN is skipped,
    # except every KNN_PROBE_EVERY-th search, which keeps the estimate current as the data changes.
    KNN_MISS_SKIP, KNN_PROBE_EVERY = 0.8, 32

    def _knn_rarely_enough(self, collection_id: int) -> bool:
        miss, n = self._knn_stats.get(collection_id, (0.0, 0))
        self._knn_stats[collection_id] = (miss, n + 1)
        return miss > self.KNN_MISS_SKIP and n % self.KNN_PROBE_EVERY != 0

    def _knn_outcome(self, collection_id: int, missed: bool) -> None:
        miss, n = self._knn_stats.get(collection_id, (0.0, 0))
        self._knn_stats[collection_id] = (0.9 * miss + 0.1 * float(missed), n)

    def _collect(self, rec, hits: dict, ids, dist, opts: SearchOptions, exclude: set[int], m: int) -> None:
        """Fold (sample id, distance) results, best first, into per-video hits (at most k videos,
        m timestamps each). Sample ids map to (video, timestamp) through the storage's in-memory
        video map, without SQL."""
        keep = (ids != NO_ID) & (self._score(rec, dist) >= opts.min_score)
        ids, scores = ids[keep], self._score(rec, dist[keep])
        vids, idx = split_sample_ids(ids)
        entry, k = self.core.storage.video_entry, opts.k
        if m == 1 and not hits:
            # one timestamp per video: only each video's first (best) frame matters, so keep those,
            # in order, before the Python loop (a kNN has ~4x as many frames as videos wanted)
            _, first = np.unique(vids, return_index=True)
            first.sort()
            vids, idx, scores = vids[first], idx[first], scores[first]
        for vid, i, s in zip(vids.tolist(), idx.tolist(), scores.tolist()):
            h = hits.get(vid)
            if h is None:
                if len(hits) >= k or vid in exclude:
                    continue
                try:
                    video, times = entry(vid)
                except NotFound:  # deleted between the search and now
                    continue
                h = hits[vid] = Hit(video=video, score=s, matches=[(float(times[sample_of(i, len(times))]), s)])
                continue
            if len(h.matches) < m:
                times = self.core.storage.video_timestamps(vid)
                t = float(times[sample_of(i, len(times))])  # a coarse twin stands for its sample
                if all(t0 != t for t0, _ in h.matches):  # the group search may repeat a kNN frame
                    h.matches.append((t, s))
                    h.score = max(h.score, s)

    async def by_video(self, rec: CollectionRecord, path: str, k: int, min_score: float, frame_k: int,
                       labels: dict, videos: list[tuple[str, int]], exclude: list[tuple[str, int]], fps: float,
                       regions: str | None = None) -> VideoSearchResult:
        """The videos that a clip (a file at `path`) copies. `regions`: "off" | "auto" | "on"
        (SamplingSettings.regions); None = the server's `region_search` setting."""
        if math.isnan(min_score):
            raise invalid("min_score is NaN", field="min_score")
        regions = regions or self.core.settings.views.region_search
        if regions not in ("off", "auto", "on"):
            raise invalid("region_search must be OFF, AUTO or ON", field="region_search")
        if not 0 <= k <= MAX_K:
            raise invalid(f"k must be in 1..{MAX_K}", field="k")
        if not 0 <= frame_k <= 1024:
            raise invalid("frame_k must be in 0..1024", field="frame_k")
        if not 0 <= fps <= 30:
            raise invalid("fps must be in 0..30", field="fps")
        self.core.require_embedder(rec)
        opts = SearchOptions(labels=labels, videos=videos, exclude_videos=exclude)
        groups, excl = await self._groups_filter(rec, opts)
        thr = self.core.settings.matching.copy_threshold if min_score == 0 else min_score
        self._admit()
        self.in_flight += 1
        try:
            loop = asyncio.get_running_loop()
            # the server's rate is bounded by query_max_samples; a rate the caller asked for is not
            sampling = self.core.sampling(rec, Purpose.CLIP_QUERY, fps or self.core.settings.sampling.query_fps,
                                          max_samples=None if fps else self.core.settings.sampling.query_max_samples)
            sampling.regions = regions
            media = await loop.run_in_executor(self.core.query_pool, self.core.embed, path, sampling, None, "the clip")
            if len(media) == 0:
                raise invalid("the clip has no informative frames (all blank)", "EMPTY_MEDIA")
            if groups is not None and groups.size == 0:
                matches = []
            else:
                matches = await loop.run_in_executor(
                    self.core.search_pool, self.video_matches, rec, media.timestamps, media.views, k or 10,
                    groups, frame_k or self.core.settings.matching.frame_k, media.sample_fps or sampling.fps, thr)
        finally:
            self.in_flight -= 1
        matches = [m for m in matches if m.score >= thr and m.video.id not in excl]
        return VideoSearchResult(matches=matches, query_duration=float(media.duration),
                                 query_samples=len(media), model=rec.model)

    def video_matches(self, rec: CollectionRecord, times: np.ndarray, views: np.ndarray | Sequence[np.ndarray],
                      k: int, groups: np.ndarray | None, frame_k: int | None = None,
                      query_fps: float | None = None, refine_above: float | None = None) -> list[CopyMatch]:
        """The collection's videos that a clip copies: the modality's match (for frames
        `frameseek.modality.frames.copy_search`: per-view kNN -> twin mapping -> align -> refine,
        the code benchmarks/copydetect runs) over this collection's index. `views`: the query
        frames' vector sets [q, dim], the whole frame first (`EmbeddedMedia.views`). Candidates
        scoring at least `refine_above` (default: the copy threshold, i.e. the ones that get
        reported) are re-placed with dense evidence; this moves segments, never changes scores."""
        if not hasattr(_native, "aggregate"):
            raise ServiceError(ErrorCode.UNIMPLEMENTED, "INTERNAL",
                               "this build has no native frame-vote aggregation (frameseek._native.aggregate)")
        frame_k = frame_k or self.core.settings.matching.frame_k
        if isinstance(views, np.ndarray) and views.ndim == 2:
            views = [views]
        ef = max(frame_k, int(rec.index.get("ef_search", 64)))
        ref_fps = float(rec.sampling.get("fps") or self.core.settings.sampling.default_fps)
        refine_above = self.core.settings.matching.copy_threshold if refine_above is None else refine_above
        storage = self.core.storage
        ms = self.core.modality.match(
            times, views, _CollectionIndex(storage, rec, ef, groups), _StoredReferences(storage),
            matching.MatchSettings(frame_k=frame_k), max_candidates=k,
            query_interval=1.0 / query_fps if query_fps else None, ref_interval=1.0 / ref_fps,
            refine_above=refine_above)
        out = []
        for m in ms:  # best first by the calibrated score (frameseek.matching)
            try:
                video = storage.get_video(m.video)
            except NotFound:  # deleted meanwhile
                continue
            segs = [Segment(g.query_start, g.query_end, g.ref_start, g.ref_end, g.score) for g in m.segments]
            out.append(CopyMatch(video=video, score=m.score, query_coverage=m.query_coverage,
                                 reference_coverage=m.ref_coverage or 0.0, offset=m.offset, speed=m.speed,
                                 segments=segs))
        return out


class _CollectionIndex:
    """One collection's index as `matching.SearchableIndex` (the copy search's kNN)."""

    def __init__(self, storage, rec: CollectionRecord, ef: int, groups: np.ndarray | None):
        self.storage, self.rec, self.ef, self.groups = storage, rec, ef, groups
        self.metric = rec.metric

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        return self.storage.search(self.rec.id, queries, k, ef=self.ef, groups=self.groups)


class _StoredReferences:
    """The storage's videos as `modality.ReferenceStore` (None: deleted meanwhile)."""

    def __init__(self, storage):
        self.storage = storage

    def video(self, video: int) -> tuple[np.ndarray, float] | None:
        try:
            return (self.storage.video_timestamps(video),
                    max(float(self.storage.get_video(video).duration), 1e-3))
        except NotFound:
            return None

    def dense(self, video: int) -> tuple[np.ndarray, np.ndarray | None] | None:
        try:
            return self.storage.video_vectors(video), self.storage.video_twins(video)
        except NotFound:
            return None
