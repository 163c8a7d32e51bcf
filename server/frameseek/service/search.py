"""Search: by vector, by image, by video clip (frame votes + temporal alignment).

One vector (SearchByVector, SearchByImage): the native search (`nearest_videos`:
`_native.SearchDirectory`, native/src/search_directory.cpp, the same code the native front end
answers SearchByVector with), which this module keeps in step with the storage's commits;
SearchByImage embeds its image under one view (one model pass). A clip (SearchByVideo, and
ingest's duplicate check): the modality's match over this collection's index (`video_matches` ->
`frameseek.modality.frames.copy_search`: a kNN per query frame and view, twin mapping, alignment
and scoring in `frameseek.matching`).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from .. import _native, matching
from ..errors import ErrorCode, ServiceError, exhausted, invalid
from ..modality import Purpose
from ..storage import CollectionRecord, NotFound, StorageError, VideoRecord
from .collections import Collections, Videos, check_labels
from .core import Core, storage_error
from .recall import RecallMonitor
from .types import CopyMatch, Hit, SearchOptions, Segment, VideoSearchResult

#: bounds of the search options, from the one search (native/include/frameseek/search_directory.hpp)
MAX_K, MAX_MATCHES_PER_VIDEO, MAX_EF = _native.MAX_K, _native.MAX_MATCHES_PER_VIDEO, _native.MAX_EF


class Search:
    def __init__(self, core: Core, collections: Collections, videos: Videos):
        self.core, self.collections, self.videos = core, collections, videos
        self.in_flight = 0  # searches running (admission: Settings.max_concurrent_searches)
        # the vector search (native, GIL released) and what it knows of collections and videos,
        # kept in step with the storage's commits (follow_storage); the native front end reads it too
        self.directory = _native.SearchDirectory()
        # audio evidence for SearchByVideo: service/audio.Soundtracks, set by the facade (audio imports
        # this module, so this one only holds it)
        self.soundtracks: Any = None
        # samples the directory's searches, measures their recall and tunes its ef (recall.py)
        self.recall = RecallMonitor(self.directory, core.settings, core.storage)

    async def groups_filter(self, rec: CollectionRecord, opts: SearchOptions) -> tuple[np.ndarray | None, set[int]]:
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
        opts.k = opts.k or _native.DEFAULT_K
        if not 0 <= opts.max_matches_per_video <= MAX_MATCHES_PER_VIDEO:
            raise invalid(f"max_matches_per_video must be in 0..{MAX_MATCHES_PER_VIDEO}", field="max_matches_per_video")
        opts.max_matches_per_video = opts.max_matches_per_video or 1
        if not 0 <= opts.ef <= MAX_EF:
            raise invalid(f"ef must be in 0..{MAX_EF}", field="ef")
        if math.isnan(opts.min_score):
            raise invalid("min_score is NaN", field="min_score")

    def _admit(self) -> None:
        if self.in_flight >= self.core.settings.max_concurrent_searches:
            raise exhausted(
                f"too many searches in flight (limit {self.core.settings.max_concurrent_searches})",
                limit=self.core.settings.max_concurrent_searches,
            )

    @staticmethod
    def check_vector(rec: CollectionRecord, values) -> np.ndarray:
        """The query as float32 [1, dim], or the error that names what is wrong with it, before
        any filter is resolved. The search (native) normalises it for the IP metric."""
        vec = np.asarray(values, dtype=np.float32)
        if vec.shape != (rec.dimension,):
            raise invalid(
                f"vector has {vec.size} values; collection {rec.name!r} expects {rec.dimension}",
                "DIMENSION_MISMATCH",
                expected=rec.dimension,
                got=vec.size,
            )
        # One float64 dot product is the finiteness check too: squares of finite float32 values
        # cannot overflow float64, so the sum is non-finite exactly when a value is NaN or infinite.
        v64 = vec.astype(np.float64)
        ss = float(v64 @ v64)
        if not math.isfinite(ss):
            raise invalid("vector contains NaN or infinity", "NON_FINITE_VECTOR")
        if rec.metric == "ip" and ss == 0:
            raise invalid("vector is all zeros", "INVALID_ARGUMENT", field="vector")
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
                self.core.query_pool, self.core.embed, image, self.core.sampling(rec, Purpose.IMAGE_QUERY)
            )
        finally:
            self.in_flight -= 1
        if len(media) == 0:
            raise invalid("the image has no informative content (blank)", "EMPTY_MEDIA")
        return await self._search_vectors(rec, media.vectors[:1], opts), rec.model  # one view: one model pass

    async def _search_vectors(self, rec: CollectionRecord, q: np.ndarray, opts: SearchOptions) -> list[Hit]:
        groups, exclude = (
            await self.groups_filter(rec, opts)
            if (opts.labels or opts.videos or opts.exclude_videos)
            else (None, set())
        )
        if groups is not None and groups.size == 0:
            return []
        self._admit()
        if self._inline():
            return self.nearest_videos(rec, q, opts, groups, exclude)
        self.in_flight += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(
                self.core.search_pool, self.nearest_videos, rec, q, opts, groups, exclude
            )
        finally:
            self.in_flight -= 1

    def _inline(self) -> bool:
        """Run single-vector searches on the event loop? A single-vector HNSW query takes well under
        a millisecond: a thread hop costs about as much as the search (see Settings.search_inline)."""
        inline = self.core.settings.search_inline
        return inline if inline is not None else self.core.settings.workers > 1

    def nearest_videos(self, rec, q, opts: SearchOptions, groups, exclude: set[int]) -> list[Hit]:
        """Top videos for one query vector: the native search (`_native.SearchDirectory.
        nearest_videos`: a frame kNN grouped by video, a group-by search as the fallback, run
        without the GIL), with hits mapped to video records in memory. `groups`: only these video
        ids (None = all); `exclude`: never these."""
        try:
            found = self.directory.nearest_videos(
                rec.id,
                np.asarray(q, dtype=np.float32).reshape(-1),
                opts.k,
                opts.max_matches_per_video,
                opts.min_score,
                opts.ef,
                groups,
                np.fromiter(exclude, dtype=np.uint64) if exclude else None,
            )
        except KeyError:  # dropped between the lookup and the search
            raise storage_error(NotFound(f"collection {rec.name!r} not found", "COLLECTION_NOT_FOUND")) from None
        except StorageError as exc:  # an external kNN source (vector_store = milvus) failed
            if exc.reason == "COLLECTION_NOT_FOUND":  # deleted through another server
                self.collections.forget(rec.name)
            raise storage_error(exc) from None
        hits = []
        for vid, score, matches in found:
            try:
                video = self.core.storage.video_entry(vid)[0]
            except NotFound:  # deleted between the search and now
                continue
            hits.append(Hit(video=video, score=score, matches=matches))
        return hits

    # -- the directory the native search reads: a storage observer (Storage.add_observer) ---------
    def follow_storage(self) -> None:
        """Once the storage is open: fill the directory and follow its commits."""
        storage = self.core.storage
        storage.add_observer(self)  # first, so that nothing committed from now on is missed
        for rec, index in storage.live_collections():
            self.collection_added(rec, index)
        # one native call for every stored video (a start has ~50k per 1M vectors), not one each;
        # from the storage's rows where it has them (EmbeddedStorage builds no record for this)
        table = getattr(storage, "video_sample_table", None)
        if table is not None:
            self.directory.put_videos(*table())
        else:
            self._put_entries(storage.video_entries())
        self.recall.videos_loaded()
        self.directory.ready = True

    def _put_entries(self, entries: list[tuple[VideoRecord, np.ndarray]]) -> None:
        """(record, timestamps) of videos into the directory, in one native call."""
        offsets = np.zeros(len(entries) + 1, dtype=np.int64)
        np.cumsum([len(ts) for _, ts in entries], out=offsets[1:])
        self.directory.put_videos(
            np.fromiter((v.id for v, _ in entries), dtype=np.uint64, count=len(entries)),
            np.fromiter((v.collection_id for v, _ in entries), dtype=np.uint32, count=len(entries)),
            offsets,
            np.concatenate([ts for _, ts in entries]) if entries else np.zeros(0),
        )

    def collection_added(self, rec: CollectionRecord, index) -> None:
        self.directory.put_collection(rec.name, rec.id, rec.model, rec.is_default, index)
        self.recall.collection_added(rec, index)

    def collection_removed(self, collection_id: int) -> None:
        self.directory.remove_collection(collection_id)
        self.recall.collection_removed(collection_id)

    def video_added(self, rec, timestamps: np.ndarray) -> None:
        self.videos_added([(rec, timestamps)])

    def videos_added(self, entries: list[tuple[VideoRecord, np.ndarray]]) -> None:
        """The videos of one commit (StorageObserver's batch form)."""
        self._put_entries(entries)
        self.recall.videos_added(entries)

    def video_removed(self, video_id: int) -> None:
        self.directory.remove_video(video_id)
        self.recall.video_removed(video_id)

    async def by_video(
        self,
        rec: CollectionRecord,
        path: str,
        k: int,
        min_score: float,
        frame_k: int,
        labels: dict,
        videos: list[tuple[str, int]],
        exclude: list[tuple[str, int]],
        fps: float,
        regions: str | None = None,
    ) -> VideoSearchResult:
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
        groups, excl = await self.groups_filter(rec, opts)
        thr = self.core.settings.matching.copy_threshold if min_score == 0 else min_score
        self._admit()
        self.in_flight += 1
        try:
            loop = asyncio.get_running_loop()
            # the server's rate is bounded by query_max_samples; a rate the caller asked for is not
            sampling = self.core.sampling(
                rec,
                Purpose.CLIP_QUERY,
                fps or self.core.settings.sampling.query_fps,
                max_samples=None if fps else self.core.settings.sampling.query_max_samples,
            )
            sampling.regions = regions
            media = await loop.run_in_executor(self.core.query_pool, self.core.embed, path, sampling, None, "the clip")
            # a clip with a blank picture is still searched by its soundtrack where both sides have audio
            soundtrack = await self.soundtracks.query_soundtrack(rec, path) if self.soundtracks else None
            if len(media) == 0 and soundtrack is None:
                raise invalid("the clip has no informative frames (all blank)", "EMPTY_MEDIA")
            if (groups is not None and groups.size == 0) or len(media) == 0:
                matches = []
            else:
                matches = await loop.run_in_executor(
                    self.core.search_pool,
                    self.video_matches,
                    rec,
                    media.timestamps,
                    media.views,
                    k or 10,
                    groups,
                    frame_k or self.core.settings.matching.frame_k,
                    media.sample_fps or sampling.fps,
                    thr,
                )
            if soundtrack is not None and not (groups is not None and groups.size == 0):
                matches = await self.soundtracks.fuse(rec, soundtrack, matches, k or 10, groups, excl)
        finally:
            self.in_flight -= 1
        matches = [m for m in matches if m.score >= thr and m.video.id not in excl]
        return VideoSearchResult(
            matches=matches, query_duration=float(media.duration), query_samples=len(media), model=rec.model
        )

    def video_matches(
        self,
        rec: CollectionRecord,
        times: np.ndarray,
        views: np.ndarray | Sequence[np.ndarray],
        k: int,
        groups: np.ndarray | None,
        frame_k: int | None = None,
        query_fps: float | None = None,
        refine_above: float | None = None,
    ) -> list[CopyMatch]:
        """The collection's videos that a clip copies: the modality's match (for frames
        `frameseek.modality.frames.copy_search`: per-view kNN -> twin mapping -> align -> refine,
        the code benchmarks/copydetect runs) over this collection's index. `views`: the query
        frames' vector sets [q, dim], the whole frame first (`EmbeddedMedia.views`). Candidates
        scoring at least `refine_above` (default: the copy threshold, i.e. the ones that get
        reported) are re-placed with dense evidence; this moves segments, never changes scores."""
        if not hasattr(_native, "aggregate"):
            raise ServiceError(
                ErrorCode.UNIMPLEMENTED,
                "INTERNAL",
                "this build has no native frame-vote aggregation (frameseek._native.aggregate)",
            )
        frame_k = frame_k or self.core.settings.matching.frame_k
        if isinstance(views, np.ndarray) and views.ndim == 2:
            views = [views]
        # the collection's tuned breadth (recall.py), as for the single-vector searches
        ef = max(frame_k, self.recall.ef_in_use(rec))
        ref_fps = float(rec.sampling.get("fps") or self.core.settings.sampling.default_fps)
        refine_above = self.core.settings.matching.copy_threshold if refine_above is None else refine_above
        storage = self.core.storage
        try:
            ms = self.core.modality.match(
                times,
                views,
                _CollectionIndex(storage, rec, ef, groups),
                _StoredReferences(storage),
                matching.MatchSettings(frame_k=frame_k),
                max_candidates=k,
                query_interval=1.0 / query_fps if query_fps else None,
                ref_interval=1.0 / ref_fps,
                refine_above=refine_above,
            )
        except StorageError as exc:  # e.g. Milvus or PostgreSQL unreachable (vector_store = milvus)
            raise storage_error(exc) from None
        out = []
        for m in ms:  # best first by the calibrated score (frameseek.matching)
            try:
                video = storage.video_entry(m.video)[0]
            except NotFound:  # deleted meanwhile
                continue
            segs = [Segment(g.query_start, g.query_end, g.ref_start, g.ref_end, g.score) for g in m.segments]
            out.append(
                CopyMatch(
                    video=video,
                    score=m.score,
                    query_coverage=m.query_coverage,
                    reference_coverage=m.ref_coverage or 0.0,
                    offset=m.offset,
                    speed=m.speed,
                    segments=segs,
                    frame_score=m.score,
                )
            )
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
            rec, timestamps = self.storage.video_entry(video)
            return timestamps, max(float(rec.duration), 1e-3)
        except NotFound:
            return None

    def dense(self, video: int) -> tuple[np.ndarray, np.ndarray | None] | None:
        try:
            return self.storage.video_vectors(video), self.storage.video_twins(video)
        except NotFound:
            return None
