"""People: search by face (SearchByFace), and who appears where (ListPeople, GetVideoPeople,
UpdatePerson) over a collection's face index.

A query photo -> its faces (every face, or the one chosen by a box) -> each face's nearest faces
in the collection's "faces" index (storage.search_extra) -> per video, the tracks they belong to
(`modality.faces.FaceModality.appearances`: intervals, best timestamp and box, calibrated score).
Collections created without faces answer FAILED_PRECONDITION (MODALITY_NOT_ENABLED); a photo
without a face INVALID_ARGUMENT (NO_FACE).

Persons: when a video with faces is committed, its tracks are clustered (Chinese whispers over the
graph of track mean descriptors closer than the calibrated match distance,
`embed.faces.cluster_faces`), and each cluster joins the person of the nearest already-assigned
face in the collection's index within that distance, or becomes a new person. Assignments are
stored in the catalog's people tables (`storage.people`): a person's id never changes, later
videos only add tracks to it. A video committed by a server that stopped before assigning it is
assigned when people are next listed.
"""

from __future__ import annotations

import asyncio
import dataclasses
import io
import threading
import time

import numpy as np
import structlog

from ..embed.faces import cluster_faces
from ..errors import exhausted, failed_precondition, invalid, not_found
from ..ids import NO_ID
from ..ids import split_sample_ids as split_item_ids
from ..modality.faces import DEFAULT_MIN_SCORE, FACES_MODALITY, MATCH_DISTANCE, FaceHit, query_faces
from ..pipeline.faces import FaceSet
from ..storage import CollectionRecord, NotFound, StorageError, VideoRecord
from .collections import Collections
from .core import Core, storage_error
from .search import Search
from .types import SearchOptions

log = structlog.get_logger("frameseek.service")

#: Nearest faces retrieved per track when a new video's tracks look for their person.
PERSON_NEIGHBOURS = 16
#: Nearest faces retrieved per query face for each video asked for (k): a person seen on many
#: samples of a video fills several neighbours with that one video.
FACES_PER_VIDEO = 32
MAX_FACE_NEIGHBOURS = 4096


@dataclasses.dataclass
class PersonView:
    """A person as the API shows it: its appearances (video, start, end), and a representative
    face (the detector's most confident one: video, timestamp, box)."""

    id: int
    display_name: str
    video_count: int
    appearances: list[tuple[int, float, float]]
    representative: tuple[int, float, tuple[float, float, float, float]] | None


@dataclasses.dataclass
class QueryFace:
    box: tuple[float, float, float, float]  # pixels of the query photo
    hits: list[tuple[VideoRecord, FaceHit]]


class People:
    def __init__(self, core: Core, collections: Collections, search: Search):
        self.core, self.collections, self.search = core, collections, search
        self._assign_lock = threading.Lock()  # one assignment at a time: each sees the previous ones
        self._caught_up: dict[int, float] = {}  # collection id -> time.monotonic() of its last catch-up

    async def _faces_collection(self, cid: str) -> CollectionRecord:
        rec = await self.collections.get(cid)
        if FACES_MODALITY.collection_flag not in rec.modalities:
            raise failed_precondition(
                f"collection {rec.name!r} was created without faces (create it with faces on)",
                "MODALITY_NOT_ENABLED",
                modality=FACES_MODALITY.name,
            )
        return rec

    async def search_face(
        self, cid: str, image: bytes, opts: SearchOptions, box: tuple[float, float, float, float] | None = None
    ) -> tuple[list[QueryFace], str]:
        """Per face of the photo (or the one at `box`, pixels): the videos where that person
        appears; and the collection's face encoder."""
        rec = await self._faces_collection(cid)
        face_model = str(rec.modalities[FACES_MODALITY.name].get("encoder", ""))
        self.search.validate_options(opts)
        if opts.min_score == -np.inf:
            opts.min_score = DEFAULT_MIN_SCORE
        if not image:
            raise invalid("image is empty (zero bytes)", "EMPTY_MEDIA")
        media = self.core.settings.media
        if len(image) > media.max_image_bytes:
            raise exhausted(f"image larger than {media.max_image_bytes} bytes", "MEDIA_TOO_LARGE")
        if box is not None and not (box[2] > box[0] >= 0 and box[3] > box[1] >= 0):
            raise invalid("face box must have x1 > x0 >= 0 and y1 > y0 >= 0 (pixels)", field="face")
        loop = asyncio.get_running_loop()
        boxes, vectors = await loop.run_in_executor(self.core.query_pool, self._query_faces, image, box)
        if not boxes:
            raise invalid("no face found in the photo", "NO_FACE")
        groups, exclude = await self.search.groups_filter(rec, opts)
        if groups is not None and groups.size == 0:
            return [QueryFace(b, []) for b in boxes], face_model
        found = await loop.run_in_executor(
            self.core.search_pool, self._nearest, rec, boxes, vectors, opts, groups, exclude
        )
        return found, face_model

    def _query_faces(self, image: bytes, box) -> tuple[list[tuple[float, float, float, float]], np.ndarray]:
        from PIL import Image, ImageOps, UnidentifiedImageError

        from ..embed.faces import FaceBox

        limits = self.core.settings.media
        try:
            img = Image.open(io.BytesIO(image))
            if img.width * img.height > limits.max_pixels:
                raise exhausted(f"image larger than {limits.max_pixels} pixels", "RESOLUTION_TOO_LARGE")
            rgb = np.asarray(ImageOps.exif_transpose(img).convert("RGB"))
        except (UnidentifiedImageError, OSError, ValueError) as exc:
            raise invalid(f"the photo could not be decoded: {exc}", "CORRUPT_MEDIA") from None
        detector, encoder = self.core.face_models.get()
        chosen = FaceBox(*box) if box is not None else None
        found, vectors = query_faces(detector, encoder, rgb, chosen, self.core.settings.faces.query_short_side)
        return [(b.x0, b.y0, b.x1, b.y1) for b in found], vectors

    def _faces_of(self, video: int) -> FaceSet | None:
        try:
            data = self.core.storage.video_extra(video, FACES_MODALITY.name)
        except NotFound:
            return None
        return None if data is None else FaceSet.from_stored(data.times, data.vectors, data.payload)

    def _nearest(self, rec, boxes, vectors, opts: SearchOptions, groups, exclude: set[int]) -> list[QueryFace]:
        storage = self.core.storage
        k_faces = min(MAX_FACE_NEIGHBOURS, opts.k * FACES_PER_VIDEO)
        try:
            ids, dist = storage.search_extra(
                rec.id, FACES_MODALITY.name, np.asarray(vectors, np.float32), k_faces, ef=opts.ef or None, groups=groups
            )
        except StorageError as exc:
            raise storage_error(exc) from None
        # the index's L2 is squared (hnswlib's space): the model's threshold is on the distance itself
        dist = np.sqrt(np.maximum(np.asarray(dist, np.float64), 0.0))
        period = 1.0 / float(rec.sampling.get("fps") or self.core.settings.sampling.default_fps)
        out = []
        for qi, b in enumerate(boxes):
            hits = FACES_MODALITY.appearances(
                ids[qi : qi + 1],
                dist[qi : qi + 1],
                self._faces_of,
                period,
                opts.min_score,
                opts.k + len(exclude),
                opts.max_matches_per_video,
            )
            self._name_appearances(hits)
            resolved = []
            for h in hits:
                if h.video in exclude:
                    continue
                try:
                    resolved.append((storage.get_video(h.video), h))
                except NotFound:  # deleted meanwhile
                    continue
            out.append(QueryFace(b, resolved[: opts.k]))
        return out

    def _name_appearances(self, hits: list[FaceHit]) -> None:
        people = self.core.storage.people
        owners = people.track_people([h.video for h in hits])
        names = people.person_names(sorted(set(owners.values())))
        for h in hits:
            for a in h.appearances:
                a.person = owners.get((h.video, a.track), 0)
                a.person_name = names.get(a.person, "")

    # -- persons --------------------------------------------------------------------------------
    def assign_video(self, rec: CollectionRecord, video_id: int) -> None:
        """Assign a committed video's face tracks to persons (module docstring). Never raises: a
        video is acknowledged once committed, and a failed assignment is retried by `catch_up`."""
        try:  # one assignment at a time in this process, and per collection across servers
            with self._assign_lock, self.core.storage.people.assigning(rec.id):
                self._assign(rec, video_id)
        except Exception as exc:  # noqa: BLE001 - logged; the next listing retries
            log.warning("person_assignment_failed", video=video_id, error=f"{type(exc).__name__}: {exc}")

    def _assign(self, rec: CollectionRecord, video_id: int) -> None:
        storage = self.core.storage
        fs = self._faces_of(video_id)
        if fs is None or not len(fs):
            return
        tracks = np.unique(fs.tracks)
        means = np.stack([fs.vectors[fs.tracks == t].mean(axis=0) for t in tracks]).astype(np.float32)
        labels = cluster_faces(means, MATCH_DISTANCE)
        # the video's own faces are in the index too: ask past them
        k = min(MAX_FACE_NEIGHBOURS, len(fs) + PERSON_NEIGHBOURS)
        ids, dist = storage.search_extra(rec.id, FACES_MODALITY.name, means, k)
        dist = np.sqrt(np.maximum(np.asarray(dist, np.float64), 0.0))
        vids, items = split_item_ids(ids)
        neighbours = sorted({int(v) for v in vids[ids != NO_ID]} - {video_id})
        owners = storage.people.track_people(neighbours)
        sets = {v: self._faces_of(v) for v in neighbours}
        groups = []
        for label in np.unique(labels):
            members = np.nonzero(labels == label)[0]
            best: tuple[float, int] | None = None  # (distance, person)
            for m in members:
                for col in range(ids.shape[1]):
                    v, item, d = int(vids[m, col]), int(items[m, col]), float(dist[m, col])
                    if ids[m, col] == NO_ID or v == video_id or d >= MATCH_DISTANCE or sets.get(v) is None:
                        continue
                    person = owners.get((v, int(sets[v].tracks[item])))
                    if person is not None and (best is None or d < best[0]):
                        best = (d, person)
            groups.append(([int(tracks[m]) for m in members], best[1] if best else None))
        storage.people.assign_tracks(rec.id, video_id, groups)

    def catch_up(self, rec: CollectionRecord) -> None:
        """Assign the videos with faces that have no persons yet: committed by a server that stopped
        before assigning them, or whose assignment failed. The search for them reads every active
        video of the collection, so a listing runs it at the first call and then at most once per
        `faces.people_catch_up_s` (each server assigns what it commits itself, at once)."""
        now = time.monotonic()
        last = self._caught_up.get(rec.id)
        if last is not None and now - last < self.core.settings.faces.people_catch_up_s:
            return
        self._caught_up[rec.id] = now
        for video_id in self.core.storage.people.unassigned_videos(rec.id, FACES_MODALITY.name):
            self.assign_video(rec, video_id)

    def _views(self, rec: CollectionRecord, records, video_id: int | None) -> list[PersonView]:
        period = 1.0 / float(rec.sampling.get("fps") or self.core.settings.sampling.default_fps)
        sets: dict[int, FaceSet | None] = {}
        out = []
        for p in records:
            apps, rep, rep_score = [], None, -np.inf
            for v, track in p.tracks:
                if video_id is not None and v != video_id:
                    continue
                if v not in sets:
                    sets[v] = self._faces_of(v)
                fs = sets[v]
                if fs is None:
                    continue
                start, end = fs.intervals(track, period)
                apps.append((v, start, end))
                sel = np.nonzero(fs.tracks == track)[0]
                best = int(sel[np.argmax(fs.scores[sel])])
                if fs.scores[best] > rep_score:
                    rep_score = float(fs.scores[best])
                    rep = (v, float(fs.times[best]), tuple(float(x) for x in fs.boxes[best]))
            videos = {v for v, _ in p.tracks}
            out.append(PersonView(p.id, p.display_name, len(videos), sorted(apps), rep))  # type: ignore[arg-type]
        return out

    async def list_people(self, cid: str, after: int, limit: int) -> list[PersonView]:
        rec = await self._faces_collection(cid)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self.core.ingest_pool, self.catch_up, rec)
        records = await self.core.io(self.core.storage.people.people, rec.id, after, limit)
        return await loop.run_in_executor(self.core.search_pool, self._views, rec, records, None)

    async def video_people(self, cid: str, video_id: int) -> list[PersonView]:
        rec = await self._faces_collection(cid)
        video = await self.core.io(self.core.storage.get_video, video_id)
        if video.collection_id != rec.id:
            raise not_found(f"video {video_id} not found in collection {rec.name!r}", "VIDEO_NOT_FOUND")
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self.core.ingest_pool, self.catch_up, rec)
        records = await self.core.io(self.core.storage.people.people, rec.id, 0, 1 << 30, video_id)
        return await loop.run_in_executor(self.core.search_pool, self._views, rec, records, video_id)

    async def update_person(self, cid: str, person_id: int, display_name: str) -> PersonView:
        rec = await self._faces_collection(cid)
        if len(display_name) > 256:
            raise invalid("display_name longer than 256 characters", field="person.display_name")
        people = self.core.storage.people
        if not await self.core.io(people.set_person_name, rec.id, person_id, display_name):
            raise not_found(f"person {person_id} not found in collection {rec.name!r}", "PERSON_NOT_FOUND")
        record = await self.core.io(people.person, rec.id, person_id)
        if record is None:  # every track of it deleted meanwhile
            raise not_found(f"person {person_id} not found in collection {rec.name!r}", "PERSON_NOT_FOUND")
        return (await asyncio.get_running_loop().run_in_executor(None, self._views, rec, [record], None))[0]


__all__ = ["People", "PersonView", "QueryFace"]
