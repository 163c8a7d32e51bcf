"""Collections and the videos in them: create, resolve, list, delete, counts.

Collections are addressed by their id ('default', 'news-2024', ...; '' = the default collection),
videos by (collection id, video id). Collection records are immutable, so they are cached.
"""

from __future__ import annotations

import re

import numpy as np
import structlog

from .. import _native, metrics
from ..errors import failed_precondition, invalid, not_found, quoted
from ..modality.audio import AUDIO
from ..storage import CollectionRecord, VideoQuery, VideoRecord
from .core import OWN_VECTORS_MODEL, Core

log = structlog.get_logger("frameseek.service")

DEFAULT_COLLECTION = "default"
COLLECTION_ID_RE = re.compile(r"[a-z][a-z0-9-]{0,62}")  # fullmatch ($ would accept a final newline)
LABEL_KEY_RE = re.compile(r"[a-z0-9_.-]{1,63}")
METRICS = ("ip", "l2")  # native metric names: cosine (unit vectors, inner product), L2


def check_labels(labels: dict) -> dict:
    if len(labels) > 64:
        raise invalid("at most 64 labels", field="labels")
    for k, v in labels.items():
        if not LABEL_KEY_RE.fullmatch(k):
            raise invalid(f"label key {quoted(k)} must match [a-z0-9_.-]{{1,63}}", field="labels")
        if len(v.encode()) > 256:
            raise invalid(f"label {k!r}: value longer than 256 bytes", field="labels")
    return dict(labels)


#: the largest dimension of a collection of own vectors
MAX_OWN_DIMENSION = 4096


class Collections:
    def __init__(self, core: Core):
        self.core = core
        self._cache: dict[str, CollectionRecord] = {}
        self._ids: dict[int, str] = {}  # collection number -> id (numbers are never reused)

    def create_sync(
        self,
        cid: str,
        description: str,
        model: str,
        metric: str,
        sampling: dict,
        index: dict,
        is_default: bool = False,
        faces: bool = False,
        audio: bool = False,
        own_dimension: int = 0,
    ) -> CollectionRecord:
        """`own_dimension` > 0: a collection of the client's own vectors (service/items.py): no
        model, that dimension, items upserted rather than media ingested."""
        s = self.core.settings
        if metric not in METRICS:
            raise invalid(f"unknown metric {quoted(metric)}", field="metric")
        if own_dimension:
            if model:
                raise invalid("a collection with own vectors has no model", field="model")
            if not 1 <= own_dimension <= MAX_OWN_DIMENSION:
                raise invalid(f"vector_dimension must be in 1..{MAX_OWN_DIMENSION}", field="vector_dimension")
            if audio or faces:
                what = "audio" if audio else "faces"
                raise invalid(f"a collection with own vectors has no media, so no {what}", field=what)
            model, dim = OWN_VECTORS_MODEL, int(own_dimension)
        else:
            model = model or s.model
            if model != s.model:
                raise invalid(f"unknown model {quoted(model)}; this server runs {s.model!r}", field="model")
            embedder = self.core.embedder
            dim = int(embedder.dim) if embedder is not None else s.embedding_dim
        fps = float(sampling.get("fps") or s.sampling.default_fps)
        if not 0 < fps <= 30:
            raise invalid("sampling.fps must be in (0, 30]", field="sampling.fps")
        dedup = float(sampling.get("dedup_threshold") or 0.0)
        if not 0 <= dedup <= 1:
            raise invalid("sampling.dedup_threshold must be in [0, 1]", field="sampling.dedup_threshold")
        samp = {
            "fps": fps,
            "keep_blank_frames": bool(sampling.get("keep_blank_frames", False)),
            "dedup_threshold": dedup,
            "keyframes_only": bool(sampling.get("keyframes_only", False)),
        }
        idx = {
            "m": int(index.get("m") or s.index.m),
            "ef_construction": int(index.get("ef_construction") or s.index.ef_construction),
            "ef_search": int(index.get("ef_search") or s.index.ef_search),
            "target_recall": float(index.get("target_recall") or s.index.target_recall),
        }
        if not 4 <= idx["m"] <= 128 or not 8 <= idx["ef_construction"] <= 4096 or not 1 <= idx["ef_search"] <= 4096:
            raise invalid(
                "index settings out of range (m 4..128, ef_construction 8..4096, ef_search 1..4096)", field="index"
            )
        idx["layer0_links"] = int(
            index.get("layer0_links") or s.index.layer0_links or self.core.storage.default_layer0_links(idx["m"])
        )
        if not idx["m"] <= idx["layer0_links"] <= _native.HNSW_MAX_LAYER0_LINKS:
            raise invalid(
                f"index.layer0_links must be in [m, {_native.HNSW_MAX_LAYER0_LINKS}] (m = {idx['m']}); "
                f"0 = the server's default",
                field="index.layer0_links",
            )
        modalities = {}
        if faces:
            modalities["faces"] = self.core.face_models.index_spec()
        if audio:  # the audio modality indexes no vectors: its spec is empty (frameseek.modality.audio)
            modalities[AUDIO.name] = {}
        if not 0 < idx["target_recall"] < 1:
            raise invalid(
                "index.target_recall must be in (0, 1); 0 = the server's default", field="index.target_recall"
            )
        return self.core.storage.create_collection(
            cid,
            model=model,
            dimension=dim,
            metric=metric,
            sampling=samp,
            index=idx,
            description=description,
            is_default=is_default,
            modalities=modalities,
        )

    async def create(
        self,
        cid: str,
        description: str = "",
        model: str = "",
        metric: str = "ip",
        sampling: dict | None = None,
        index: dict | None = None,
        faces: bool = False,
        audio: bool = False,
        own_dimension: int = 0,
    ) -> CollectionRecord:
        self.core.check_ready()
        if not COLLECTION_ID_RE.fullmatch(cid or ""):
            raise invalid(f"collection_id {quoted(cid)} must match [a-z][a-z0-9-]{{0,62}}", field="collection_id")
        if len(description) > 4096:
            raise invalid("description longer than 4096 characters", field="description")
        return await self.core.io(
            self.create_sync,
            cid,
            description,
            model,
            metric,
            sampling or {},
            index or {},
            False,
            faces,
            audio,
            own_dimension,
        )

    async def get(self, cid: str) -> CollectionRecord:
        """The record of collection `cid` ('' = the default)."""
        rec = self.get_now(cid)
        if rec is None:
            if self.core.replica:
                await self._fresh()
            cid = cid or DEFAULT_COLLECTION
            rec = self._cache.get(cid)
            if rec is None:
                rec = await self.core.io(self.core.storage.get_collection, cid)
                self._cache[cid] = rec
        return rec

    def get_now(self, cid: str) -> CollectionRecord | None:
        """get() without leaving the event loop: the cached record when the replica is up to date
        (one `PRAGMA data_version`) and the collection was resolved before; None when it needs
        I/O (catch up with the primary, or a catalog lookup)."""
        self.core.check_ready()
        if self.core.replica and self.core.storage.changed():
            return None
        return self._cache.get(cid or DEFAULT_COLLECTION)

    async def _fresh(self) -> None:
        """Replica: catch up with the primary's commits (deletes, new videos and collections) before
        a read. One SQLite pragma when nothing changed; see storage/replica.py."""
        storage = self.core.storage
        if storage.changed():
            await self.core.io(storage.sync)
            live = {rec.id for rec, _ in storage.live_collections()}
            for cid, rec in list(self._cache.items()):
                if rec.id not in live:
                    self._cache.pop(cid, None)

    def forget(self, cid: str) -> None:
        """Drop a cached record the storage no longer knows (a scale-out collection deleted through
        another server): the next get() reads the catalog again."""
        self._cache.pop(cid, None)

    def id_of(self, number: int) -> str:
        """The id ('default', ...) of a collection's catalog number."""
        cid = self._ids.get(number)
        if cid is None:
            cid = self._ids[number] = self.core.storage.collection_by_id(number).name
        return cid

    async def counts(self, rec: CollectionRecord) -> tuple[int, int, float]:
        return await self.core.io(self.core.storage.collection_counts, rec.id)

    async def list(self, after: str, limit: int) -> list[CollectionRecord]:
        """Collections ordered by id, those after `after` ('' = from the start), at most `limit`."""
        self.core.check_ready()
        return await self.core.io(self.core.storage.list_collections, after, limit)

    async def delete(self, cid: str, force: bool) -> None:
        rec = await self.get(cid)
        if rec.is_default:
            raise failed_precondition("the default collection cannot be deleted", "DEFAULT_COLLECTION")
        await self.core.io(self.core.storage.delete_collection, rec.name, force)
        self._cache.pop(rec.name, None)
        try:
            metrics.INDEX_VECTORS.remove(rec.name)
        except KeyError:
            pass


class Videos:
    def __init__(self, core: Core, collections: Collections):
        self.core, self.collections = core, collections

    async def get(self, cid: str, video_id: int) -> VideoRecord:
        self.core.check_ready()
        rec = await self.collections.get(cid)
        v = await self.core.io(self.core.storage.get_video, video_id)
        if v.collection_id != rec.id:
            raise not_found(f"video {video_id} not found in collection {rec.name!r}", "VIDEO_NOT_FOUND")
        return v

    def records(self, limit: int) -> list[VideoRecord]:
        """Active videos (up to `limit`), for the protocol layer to warm its caches at start."""
        return self.core.storage.video_records(limit)

    async def list(
        self,
        cid: str | None,
        before_id: int | None,
        limit: int,
        labels: dict | None = None,
        content_sha256: str = "",
        external_key: str = "",
    ) -> tuple[list[VideoRecord], int]:
        """Videos of collection `cid` (None = every collection), newest first, with ids below
        `before_id`, at most `limit`; and how many match in all."""
        self.core.check_ready()
        number = None if cid is None else (await self.collections.get(cid)).id
        q = VideoQuery(
            collection_id=number,
            labels=labels or None,
            content_sha256=content_sha256.lower(),
            external_key=external_key,
        )
        vids, total = await self.core.io(self.core.storage.list_videos, q, before_id, limit)
        for v in vids:  # warm the id cache off the loop's critical path
            self.collections.id_of(v.collection_id)
        return vids, total

    async def delete(self, cid: str, video_id: int) -> None:
        v = await self.get(cid, video_id)
        await self.core.io(self.core.storage.delete_video, v.id)
        rec = await self.collections.get(cid)
        await self.core.io(self.core.set_index_gauge, rec)  # off the loop: it takes the index lock
        log.info("video_deleted", collection=rec.name, video=video_id)

    async def ids_matching(self, rec: CollectionRecord, labels: dict) -> np.ndarray:
        return await self.core.io(self.core.storage.video_ids, VideoQuery(collection_id=rec.id, labels=labels))
