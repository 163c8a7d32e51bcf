"""Own vectors: collections without a model whose items are the client's vectors (UpsertItems,
DeleteItems; the way audio-embedding and face-vector systems are fed).

An item is a video record of kind "item": its vectors are its samples (at the timestamps given,
else 0, 1, 2 ... s), committed by `Storage.add_videos` (a batch per commit) like any video's. So SearchByVector, label
and video filters, GetVideo/ListVideos, deletes, durability and snapshots are the one existing
implementation; nothing here searches. An upsert that replaces an item commits the new one
before it deletes the old: a crash in between leaves both, never neither.

Back-pressure is the caller's loop (api/servicer.py): a batch commits while the next message is
parsed, and before the one after it is read, so gRPC flow control holds a client that sends faster.
"""

from __future__ import annotations

import dataclasses
import hashlib

import numpy as np
import structlog

from ..errors import failed_precondition, invalid
from ..storage import CollectionRecord, NewVideo, NotFound, StorageError, VideoRecord
from .collections import Collections, check_labels
from .core import OWN_VECTORS_MODEL, Core, storage_error

log = structlog.get_logger("frameseek.service")

#: VideoRecord.kind of an item
ITEM_KIND = "item"
#: vectors of one item at most
MAX_ITEM_VECTORS = 4096
#: items of one UpsertItems batch at most
MAX_BATCH_ITEMS = 10_000


@dataclasses.dataclass
class ItemInput:
    """One item as sent: replace `video_id` (when set) or the item with `external_key` (when set)."""

    vectors: np.ndarray  # float32 [n, dim]
    timestamps: np.ndarray | None = None  # float64 [n], or None: 0, 1, 2 ...
    external_key: str = ""
    labels: dict = dataclasses.field(default_factory=dict)
    video_id: int | None = None


@dataclasses.dataclass
class Upserted:
    video: VideoRecord
    replaced: bool


def is_own(rec: CollectionRecord) -> bool:
    return rec.model == OWN_VECTORS_MODEL


class Items:
    def __init__(self, core: Core, collections: Collections):
        self.core, self.collections = core, collections

    @staticmethod
    def check_own(rec: CollectionRecord) -> None:
        if not is_own(rec):
            raise failed_precondition(
                f"collection {rec.name!r} embeds media with model {rec.model!r}; items go to a collection "
                "created with own_vectors",
                "NOT_OWN_VECTORS",
            )

    @staticmethod
    def check_batch(rec: CollectionRecord, items: list[ItemInput]) -> tuple[np.ndarray, np.ndarray]:
        """A batch validated as a whole: (every item's vectors in order, float32 [total, dim]; each
        item's end row in it). One array pass per check instead of one per item (a per-item check
        cost a one-vector item more than its commit); an error names the first item that fails it."""
        shapes = [it.vectors.shape for it in items]
        for i, shape in enumerate(shapes):
            if len(shape) != 2 or not 1 <= shape[0] <= MAX_ITEM_VECTORS:
                raise invalid(f"item {i}: 1..{MAX_ITEM_VECTORS} vectors per item", field="vectors")
            if shape[1] != rec.dimension:
                raise invalid(
                    f"item {i}: vectors have {shape[1]} values; collection {rec.name!r} expects {rec.dimension}",
                    "DIMENSION_MISMATCH",
                    expected=rec.dimension,
                    got=int(shape[1]),
                )
        ends = np.cumsum([shape[0] for shape in shapes], dtype=np.int64)
        vectors = (
            np.concatenate([it.vectors for it in items], dtype=np.float32)
            if items
            else np.empty((0, rec.dimension), np.float32)
        )

        def first_item(bad_rows: np.ndarray) -> int:
            return int(np.searchsorted(ends, int(np.flatnonzero(bad_rows)[0]), side="right"))

        sq = np.einsum("ij,ij->i", vectors, vectors, dtype=np.float64)
        if not np.isfinite(sq).all():
            raise invalid(
                f"item {first_item(~np.isfinite(sq))}: a vector contains NaN or infinity", "NON_FINITE_VECTOR"
            )
        if rec.metric == "ip" and (sq == 0).any():
            raise invalid(
                f"item {first_item(sq == 0)}: a vector is all zeros (cosine needs a direction)", field="vectors"
            )
        for i, it in enumerate(items):
            if it.timestamps is not None:
                ts = np.asarray(it.timestamps, dtype=np.float64)
                if ts.shape != (shapes[i][0],) or not (np.isfinite(ts) & (ts >= 0)).all():
                    raise invalid(f"item {i}: timestamps must be finite, >= 0, one per vector", field="timestamps")
            if len(it.external_key) > 1024:
                raise invalid(f"item {i}: external_key longer than 1024", field="external_key")
            if it.labels:
                check_labels(it.labels)
        return vectors, ends

    def upsert_sync(self, rec: CollectionRecord, items: list[ItemInput]) -> list[Upserted]:
        """Commit a batch (blocking; run in the I/O pool) as one storage commit (Storage.add_videos:
        one catalog transaction and one vector-log fsync for the whole batch), then delete what it
        replaced. Within a batch a later item with the same key or name wins."""
        if len(items) > MAX_BATCH_ITEMS:
            raise invalid(f"at most {MAX_BATCH_ITEMS} items per batch", field="batch")
        vectors, ends = self.check_batch(rec, items)
        last: dict[tuple[str, object], int] = {}
        for i, it in enumerate(items):
            if it.video_id is not None:
                last[("name", it.video_id)] = i
            elif it.external_key:
                last[("key", it.external_key)] = i
        kept = [
            i
            for i, it in enumerate(items)
            if last.get(("name", it.video_id) if it.video_id is not None else ("key", it.external_key), i) == i
        ]
        starts = np.concatenate([[0], ends[:-1]]) if len(ends) else ends
        storage = self.core.storage
        try:
            by_key = storage.video_ids_by_key(
                rec.id, [items[i].external_key for i in kept if items[i].video_id is None]
            )
            old = [self._existing(rec, items[i], by_key) for i in kept]
            new = [self._new_video(rec, items[i], vectors[starts[i] : ends[i]]) for i in kept]
            videos = storage.add_videos(rec.id, new)
            for vid in {v for ids in old for v in ids}:  # after the new ones are durable (module docstring)
                storage.delete_video(vid)
        except StorageError as exc:
            raise storage_error(exc) from None
        return [Upserted(v, bool(o)) for v, o in zip(videos, old)]

    @staticmethod
    def _new_video(rec: CollectionRecord, it: ItemInput, vectors: np.ndarray) -> NewVideo:
        """The item as a video (`vectors`: its rows of the checked batch, float32)."""
        n = len(vectors)
        ts = (
            np.asarray(it.timestamps, dtype=np.float64) if it.timestamps is not None else np.arange(n, dtype=np.float64)
        )
        record = VideoRecord(
            id=0,
            collection_id=rec.id,
            kind=ITEM_KIND,
            duration=float(ts.max()),
            width=0,
            height=0,
            sample_count=n,
            size_bytes=vectors.nbytes,
            content_sha256=hashlib.sha256(vectors).hexdigest(),
            external_key=it.external_key,
            labels=dict(it.labels),
            model=OWN_VECTORS_MODEL,
        )
        return NewVideo(record, ts, vectors)

    def _existing(self, rec: CollectionRecord, it: ItemInput, by_key: dict[str, list[int]]) -> list[int]:
        """The items `it` replaces (`by_key`: the batch's Storage.video_ids_by_key)."""
        storage = self.core.storage
        if it.video_id is not None:
            try:
                v = storage.get_video(it.video_id)
            except NotFound:
                raise invalid(
                    f"item {it.video_id} does not exist (to add one, leave name empty)", field="name"
                ) from None
            if v.collection_id != rec.id:
                raise invalid(f"item {it.video_id} belongs to another collection", field="name")
            return [v.id]
        return by_key.get(it.external_key, []) if it.external_key else []

    def delete_sync(self, rec: CollectionRecord, video_ids: list[int], keys: list[str]) -> tuple[int, int]:
        """(deleted, not found) over the named items and the items with those external keys."""
        self.check_own(rec)
        storage = self.core.storage
        deleted = missing = 0
        targets: list[int] = []
        for vid in video_ids:
            try:
                v = storage.get_video(vid)
            except NotFound:
                missing += 1
                continue
            if v.collection_id != rec.id:
                missing += 1
                continue
            targets.append(v.id)
        by_key = storage.video_ids_by_key(rec.id, keys)
        for key in keys:
            ids = by_key.get(key, [])
            missing += not ids
            targets.extend(ids)
        for vid in dict.fromkeys(targets):
            try:
                storage.delete_video(vid)
                deleted += 1
            except NotFound:  # deleted meanwhile
                missing += 1
            except StorageError as exc:
                raise storage_error(exc) from None
        return deleted, missing
