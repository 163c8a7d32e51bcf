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
from ..storage import ITEM_KIND, CollectionRecord, NewVideo, NotFound, StorageError, VideoRecord
from .collections import Collections, check_labels
from .core import OWN_VECTORS_MODEL, Core, storage_error

log = structlog.get_logger("frameseek.service")

#: a one-vector item's timestamps when none are given (shared by all of them, so read-only)
_AT_ZERO = np.zeros(1)
_AT_ZERO.flags.writeable = False
#: vectors of one item at most
MAX_ITEM_VECTORS = 4096
#: items of one UpsertItems batch at most
MAX_BATCH_ITEMS = 10_000


@dataclasses.dataclass
class ItemBatch:
    """Items as sent, by column: one array holds every item's vectors (a per-item array and object
    cost a one-vector item more than its commit). Item i replaces `video_ids[i]` (when set) or the
    item with `external_keys[i]` (when set)."""

    vectors: np.ndarray  # float32 [total, dim]: item i's are rows ends[i-1]:ends[i]
    ends: np.ndarray  # int64 [items]
    external_keys: list[str]
    labels: list[dict]
    video_ids: list[int | None]
    timestamps: list[np.ndarray | None]  # per item float64 [n], or None: 0, 1, 2 ...

    def __len__(self) -> int:
        return len(self.ends)

    @property
    def starts(self) -> np.ndarray:
        return np.concatenate([[0], self.ends[:-1]]).astype(np.int64) if len(self.ends) else self.ends


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
    def check_batch(rec: CollectionRecord, batch: ItemBatch) -> None:
        """A batch validated as a whole: one array pass per check instead of one per item; an
        error names the first item that fails it."""
        counts = np.diff(batch.ends, prepend=0)
        bad = (counts < 1) | (counts > MAX_ITEM_VECTORS)
        if bad.any():
            first = int(np.flatnonzero(bad)[0])
            raise invalid(f"item {first}: 1..{MAX_ITEM_VECTORS} vectors per item", field="vectors")
        vectors = batch.vectors
        if vectors.ndim != 2 or (len(vectors) and vectors.shape[1] != rec.dimension):
            got = int(vectors.shape[-1]) if vectors.ndim else 0
            raise invalid(
                f"item 0: vectors have {got} values; collection {rec.name!r} expects {rec.dimension}",
                "DIMENSION_MISMATCH",
                expected=rec.dimension,
                got=got,
            )

        def first_item(bad_rows: np.ndarray) -> int:
            return int(np.searchsorted(batch.ends, int(np.flatnonzero(bad_rows)[0]), side="right"))

        sq = np.einsum("ij,ij->i", vectors, vectors, dtype=np.float64)
        if not np.isfinite(sq).all():
            raise invalid(
                f"item {first_item(~np.isfinite(sq))}: a vector contains NaN or infinity", "NON_FINITE_VECTOR"
            )
        if rec.metric == "ip" and (sq == 0).any():
            raise invalid(
                f"item {first_item(sq == 0)}: a vector is all zeros (cosine needs a direction)", field="vectors"
            )
        for i, ts in enumerate(batch.timestamps):
            if ts is not None and (ts.shape != (counts[i],) or not (np.isfinite(ts) & (ts >= 0)).all()):
                raise invalid(f"item {i}: timestamps must be finite, >= 0, one per vector", field="timestamps")
        for i, key in enumerate(batch.external_keys):
            if len(key) > 1024:
                raise invalid(f"item {i}: external_key longer than 1024", field="external_key")
        for labels in batch.labels:
            if labels:
                check_labels(labels)

    def upsert_sync(self, rec: CollectionRecord, batch: ItemBatch) -> list[Upserted]:
        """Commit a batch (blocking; run in the I/O pool) as one storage commit (Storage.add_videos:
        one catalog transaction and one vector-log fsync for the whole batch), then delete what it
        replaced. Within a batch a later item with the same key or name wins."""
        if len(batch) > MAX_BATCH_ITEMS:
            raise invalid(f"at most {MAX_BATCH_ITEMS} items per batch", field="batch")
        self.check_batch(rec, batch)
        keys, video_ids = batch.external_keys, batch.video_ids
        # what each item replaces: an item by name, else by key (no key: nothing)
        targets = [
            ("name", vid) if vid is not None else ("key", key) if key else None for key, vid in zip(keys, video_ids)
        ]
        last = {t: i for i, t in enumerate(targets) if t is not None}
        if len(last) == len(targets):  # each item replaces something else: all are kept
            kept = list(range(len(targets)))
        else:
            kept = [i for i, t in enumerate(targets) if t is None or last[t] == i]
        starts, ends = batch.starts.tolist(), batch.ends.tolist()
        storage = self.core.storage
        try:
            by_key = storage.video_ids_by_key(rec.id, [keys[i] for i in kept if video_ids[i] is None])
            old = [self._existing(rec, keys[i], video_ids[i], by_key) for i in kept]
            new = [
                self._new_video(rec, batch.vectors[starts[i] : ends[i]], keys[i], batch.labels[i], batch.timestamps[i])
                for i in kept
            ]
            videos = storage.add_videos(rec.id, new)
            for vid in {v for ids in old for v in ids}:  # after the new ones are durable (module docstring)
                storage.delete_video(vid)
        except StorageError as exc:
            raise storage_error(exc) from None
        return [Upserted(v, bool(o)) for v, o in zip(videos, old)]

    @staticmethod
    def _new_video(
        rec: CollectionRecord, vectors: np.ndarray, external_key: str, labels: dict, timestamps: np.ndarray | None
    ) -> NewVideo:
        """An item as a video (`vectors`: its rows of the checked batch, float32)."""
        n = len(vectors)
        if timestamps is None:
            timestamps, duration = (_AT_ZERO if n == 1 else np.arange(n, dtype=np.float64)), float(n - 1)
        else:
            duration = float(timestamps.max())
        record = VideoRecord.from_values(
            (
                0,  # id
                rec.id,  # collection_id
                ITEM_KIND,  # kind
                duration,
                0,  # width
                0,  # height
                n,  # sample_count
                vectors.nbytes,  # size_bytes
                hashlib.sha256(vectors).hexdigest(),  # content_sha256
                external_key,
                labels,
                "",  # filename
                OWN_VECTORS_MODEL,  # model
                0.0,  # realtime_factor
                0.0,  # create_time
                "active",  # state
            )
        )
        return NewVideo(record, timestamps, vectors)

    def _existing(
        self, rec: CollectionRecord, external_key: str, video_id: int | None, by_key: dict[str, list[int]]
    ) -> list[int]:
        """The items an item replaces (`by_key`: the batch's Storage.video_ids_by_key)."""
        storage = self.core.storage
        if video_id is not None:
            try:
                v = storage.get_video(video_id)
            except NotFound:
                raise invalid(f"item {video_id} does not exist (to add one, leave name empty)", field="name") from None
            if v.collection_id != rec.id:
                raise invalid(f"item {video_id} belongs to another collection", field="name")
            return [v.id]
        return by_key.get(external_key, []) if external_key else []

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
