"""People: search by face (SearchByFace) over a collection's face index.

A query photo -> its faces (every face, or the one chosen by a box) -> each face's nearest faces
in the collection's "faces" index (storage.search_extra) -> per video, the tracks they belong to
(`modality.faces.FaceModality.appearances`: intervals, best timestamp and box, calibrated score).
Collections created without faces answer FAILED_PRECONDITION (MODALITY_NOT_ENABLED); a photo
without a face INVALID_ARGUMENT (NO_FACE).
"""

from __future__ import annotations

import asyncio
import dataclasses
import io

import numpy as np

from ..errors import exhausted, failed_precondition, invalid
from ..modality.faces import DEFAULT_MIN_SCORE, FACES_MODALITY, FaceHit, query_faces
from ..pipeline.faces import FaceSet
from ..storage import CollectionRecord, NotFound, StorageError, VideoRecord
from .collections import Collections
from .core import Core, storage_error
from .search import Search
from .types import SearchOptions

#: Nearest faces retrieved per query face for each video asked for (k): a person seen on many
#: samples of a video fills several neighbours with that one video.
FACES_PER_VIDEO = 32
MAX_FACE_NEIGHBOURS = 4096


@dataclasses.dataclass
class QueryFace:
    box: tuple[float, float, float, float]  # pixels of the query photo
    hits: list[tuple[VideoRecord, FaceHit]]


class People:
    def __init__(self, core: Core, collections: Collections, search: Search):
        self.core, self.collections, self.search = core, collections, search

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


__all__ = ["People", "QueryFace"]
