"""Soundtracks: the fingerprints of every collection with audio, in memory, and SearchByAudio.

`Soundtracks` is a storage observer (like the search directory): one native `FingerprintIndex`
per collection created with `audio`, filled from the stored `ModalityData` of every active video
when the service starts, and kept in step with each commit (a video added: its fingerprints read
back from the catalog; deleted: removed) before the call that committed returns. So a video is
searchable by its audio as soon as its ingest is acknowledged, and gone when its delete is.

Ingest calls `fingerprint` for a collection with audio; the fingerprints are committed with the
video's vectors (Storage.add_video extras), never on their own.

Fusion in SearchByVideo (`fuse`), when the collection has audio and the query clip has a
soundtrack: the clip's soundtrack is matched like a SearchByAudio query, and each video's copy
score becomes the larger of its frame score and its audio score mapped onto the copy-score scale
(linearly, so that `audio.threshold` lands on `matching.copy_threshold` and 1 on 1). A copy whose
picture was replaced or heavily altered is then found by its soundtrack, and one with new audio
still by its frames; neither modality lowers the other's score. Each match reports both scores
and each modality's segments (`frame_score`, `audio_score`, `segments`, `audio_segments`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import threading
from typing import TYPE_CHECKING

import numpy as np
import structlog

from .. import _native
from ..errors import ServiceError, failed_precondition, from_media_error, invalid, not_found
from ..modality.audio import AUDIO, AudioMatch
from ..storage import CollectionRecord, ModalityData, NotFound, VideoRecord
from .core import Core
from .search import Search
from .types import CopyMatch, SearchOptions, Segment

if TYPE_CHECKING:
    from ..media.audio import Soundtrack

log = structlog.get_logger("frameseek.service")


@dataclasses.dataclass
class AudioHit:
    video: VideoRecord
    match: AudioMatch


@dataclasses.dataclass
class AudioSearchResult:
    matches: list[AudioHit]
    query_duration: float
    query_fingerprints: int


def has_audio(rec: CollectionRecord) -> bool:
    return AUDIO.name in rec.modalities


class Soundtracks:
    def __init__(self, core: Core, search: Search):
        self.core, self.search = core, search
        self._lock = threading.Lock()  # guards the dict; each index has its own reader/writer lock
        self._indexes: dict[int, _native.FingerprintIndex] = {}  # collection id -> index
        self._seconds: dict[int, float] = {}  # video id -> seconds fingerprinted (Video.audio_seconds)

    # -- ingest ---------------------------------------------------------------------------------
    def fingerprint(self, rec: CollectionRecord, path: str, shown_as: str) -> dict[str, ModalityData]:
        """The extras to commit with a video of `rec` stored at `path`: its soundtrack's
        fingerprints, or none (a collection without audio, a video without an audio track)."""
        if not has_audio(rec):
            return {}
        from ..media import MediaError

        try:
            track = AUDIO.extract(path, self.core.settings.media, self.core.cancel)
        except MediaError as exc:
            raise from_media_error(exc, path, shown_as) from None
        if track is None or len(track.values) == 0:
            log.info("no_soundtrack", collection=rec.name, upload=shown_as, has_audio_track=track is not None)
            return {}
        return {AUDIO.name: AUDIO.stored(track)}

    # -- search ---------------------------------------------------------------------------------
    async def by_audio(self, rec: CollectionRecord, path: str, opts: SearchOptions) -> AudioSearchResult:
        """The videos of `rec` whose soundtrack contains the audio of the file at `path`."""
        if not has_audio(rec):
            raise failed_precondition(
                f"collection {rec.name!r} was created without audio; create one with audio to search by audio",
                "MODALITY_NOT_ENABLED",
            )
        if math.isnan(opts.min_score):
            raise invalid("min_score is NaN", field="min_score")
        self.search.validate_options(opts)
        settings = self.core.settings.audio
        min_score = settings.threshold if opts.min_score == 0 else opts.min_score
        groups, exclude = await self.search.groups_filter(rec, opts)
        from ..media import MediaError

        loop = asyncio.get_running_loop()
        try:
            track = await loop.run_in_executor(
                self.core.query_pool, AUDIO.extract, path, self.core.settings.media, self.core.cancel
            )
        except MediaError as exc:
            raise from_media_error(exc, path, "the query") from None
        if track is None:
            raise invalid("the query has no audio track", "NO_AUDIO_STREAM")
        if track.duration < settings.min_query_seconds or len(track.values) == 0:
            raise invalid(
                f"the query has {track.duration:.1f} s of audio; at least {settings.min_query_seconds:g} s are needed",
                "AUDIO_TOO_SHORT",
            )
        index = self.index_of(rec.id)
        # filters are applied to the verified matches: ask for enough to fill k after them
        want = opts.k + len(exclude) if groups is None else opts.k + len(exclude) + 64
        found = await loop.run_in_executor(
            self.core.search_pool, self._match, index, track, want, min_score, settings.min_match_seconds
        )
        allowed = None if groups is None else set(np.asarray(groups).tolist())
        hits = []
        for m in found:
            if m.video in exclude or (allowed is not None and m.video not in allowed):
                continue
            try:
                video = await self.core.io(self.core.storage.get_video, m.video)
            except ServiceError:  # deleted between the search and now
                continue
            hits.append(AudioHit(video=video, match=m))
            if len(hits) >= opts.k:
                break
        return AudioSearchResult(matches=hits, query_duration=track.duration, query_fingerprints=len(track.values))

    # -- SearchByVideo's audio evidence -------------------------------------------------------
    async def query_soundtrack(self, rec: CollectionRecord, path: str) -> Soundtrack | None:
        """The soundtrack of a SearchByVideo clip when the collection has audio, else None (also
        for a clip without audio, or whose audio does not decode: the frames still search)."""
        if not has_audio(rec):
            return None
        from ..media import MediaError

        try:
            track = await asyncio.get_running_loop().run_in_executor(
                self.core.query_pool, AUDIO.extract, path, self.core.settings.media, self.core.cancel
            )
        except MediaError as exc:
            log.info("clip_audio_unusable", collection=rec.name, reason=exc.reason)
            return None
        if track is None or track.duration < self.core.settings.audio.min_query_seconds:
            return None
        return track

    def fused_score(self, audio_score: float) -> float:
        """An audio score on the copy-score scale (module docstring)."""
        ct, at = self.core.settings.matching.copy_threshold, self.core.settings.audio.threshold
        if at >= 1:
            return ct if audio_score >= 1 else 0.0
        return float(min(1.0, max(0.0, ct + (1 - ct) * (audio_score - at) / (1 - at))))

    async def fuse(
        self,
        rec: CollectionRecord,
        track: Soundtrack,
        matches: list[CopyMatch],
        k: int,
        groups: np.ndarray | None,
        exclude: set[int],
    ) -> list[CopyMatch]:
        """`matches` (the frame evidence) joined by the soundtrack's (module docstring), best first."""
        cfg = self.core.settings.audio
        found = await asyncio.get_running_loop().run_in_executor(
            self.core.search_pool,
            self._match,
            self.index_of(rec.id),
            track,
            k + len(exclude) + (64 if groups is not None else 0),
            cfg.threshold,
            cfg.min_match_seconds,
        )
        allowed = None if groups is None else set(np.asarray(groups).tolist())
        by_video = {m.video.id: m for m in matches}
        for a in found:
            if a.video in exclude or (allowed is not None and a.video not in allowed):
                continue
            seg = Segment(
                a.query_start, a.query_start + a.duration, a.reference_start, a.reference_start + a.duration, a.score
            )
            m = by_video.get(a.video)
            if m is None:
                try:
                    video = await self.core.io(self.core.storage.get_video, a.video)
                except ServiceError:  # deleted meanwhile
                    continue
                m = by_video[a.video] = CopyMatch(
                    video=video,
                    score=0.0,
                    query_coverage=min(1.0, a.duration / track.duration) if track.duration else 0.0,
                    reference_coverage=min(1.0, a.duration / video.duration) if video.duration else 0.0,
                    offset=a.offset,
                    speed=1.0,
                    segments=[],
                )
            m.audio_score, m.audio_segments = a.score, [seg]
            m.score = max(m.score, self.fused_score(a.score))
        return sorted(by_video.values(), key=lambda m: -m.score)[:k]

    @staticmethod
    def _match(index, track: Soundtrack, k: int, min_score: float, min_seconds: float) -> list[AudioMatch]:
        return AUDIO.match(index, track, k=k, min_score=min_score, min_match_seconds=min_seconds)

    def index_of(self, collection_id: int) -> _native.FingerprintIndex:
        with self._lock:
            index = self._indexes.get(collection_id)
        if index is None:  # the collection was deleted meanwhile
            raise not_found(f"collection {collection_id} not found", "COLLECTION_NOT_FOUND")
        return index

    def fingerprint_count(self) -> int:
        with self._lock:
            return sum(ix.items for ix in self._indexes.values())

    # -- a storage observer (Storage.add_observer) ----------------------------------------------
    def follow_storage(self) -> None:
        """Once the storage is open: load every stored soundtrack and follow the commits."""
        storage = self.core.storage
        storage.add_observer(self)  # first, so that nothing committed from now on is missed
        for rec, index in storage.live_collections():
            self.collection_added(rec, index)
        with self._lock:
            audio_collections = set(self._indexes)
        if not audio_collections:  # nothing to load: the video records are not built for this
            return
        n = 0
        for v, ts in storage.video_entries():
            if v.collection_id in audio_collections:
                self.video_added(v, ts)
                n += 1
        if audio_collections:
            log.info("soundtracks_loaded", videos=n, fingerprints=self.fingerprint_count())

    def collection_added(self, rec: CollectionRecord, index) -> None:
        if has_audio(rec):
            with self._lock:
                self._indexes.setdefault(rec.id, _native.FingerprintIndex())

    def collection_removed(self, collection_id: int) -> None:
        with self._lock:
            self._indexes.pop(collection_id, None)

    def video_added(self, rec: VideoRecord, timestamps: np.ndarray) -> None:
        with self._lock:
            index = self._indexes.get(rec.collection_id)
        if index is None:
            return
        try:
            data = self.core.storage.video_extra(rec.id, AUDIO.name)
        except NotFound:  # deleted meanwhile
            return
        if data is not None and len(data):
            index.add(rec.id, AUDIO.fingerprint(data))
            with self._lock:
                self._seconds[rec.id] = AUDIO.seconds(data)

    def audio_seconds(self, video_id: int) -> float:
        """Seconds of the video's soundtrack that were fingerprinted (0: none)."""
        return self._seconds.get(video_id, 0.0)

    def video_removed(self, video_id: int) -> None:
        with self._lock:
            self._seconds.pop(video_id, None)
            indexes = list(self._indexes.values())
        for index in indexes:
            if index.remove(video_id):
                return
