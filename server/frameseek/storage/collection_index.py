"""One collection's part of the embedded storage: its native HNSW index (and its extra modalities'
indexes), its vector log and its snapshots, with the recovery that makes the index equal the
catalog's active rows again (see embedded.py for the commit protocol)."""

from __future__ import annotations

import os
import threading
import time

import numpy as np
import structlog

from .. import metrics
from ..ids import sample_ids
from . import snapshots
from .base import (
    CollectionRecord,
)
from .vectorlog import VectorLog, content_digest

log = structlog.get_logger("frameseek.storage")


def _native():
    from frameseek import _native

    if not hasattr(_native, "HnswIndex"):
        raise RuntimeError("frameseek._native has no HnswIndex: the native index is not built (run `make setup`)")
    return _native


def _vector_counts(sample_count: int) -> tuple[int, int]:
    """How many vectors a video of `sample_count` samples has: without or with coarse twins."""
    return sample_count, 2 * sample_count


def belongs_to(rec, row: tuple[int, str]) -> bool:
    """Whether log record `rec` holds the vectors of the catalog row (sample count, content sha256)
    with its id: a matching count and, in version 2 records, the same content digest."""
    return rec.vectors.shape[0] in _vector_counts(row[0]) and (
        rec.content_digest is None or rec.content_digest == content_digest(row[1])
    )


class _CollectionIndex:
    """Live index + log of one collection's frame vectors, or (`modality`) of the vectors of one of
    its other modalities (CollectionRecord.modalities), kept under the collection's directory in
    `<modality>/` and sharing the collection's write lock: a video commits to all of them at once."""

    def __init__(
        self, rec: CollectionRecord, directory: str, modality: str | None = None, lock: threading.Lock | None = None
    ):
        self.rec, self.modality = rec, modality
        self.dir = os.path.join(directory, modality) if modality else directory
        spec = rec.modalities[modality] if modality else {"dimension": rec.dimension, "metric": rec.metric}
        self.dimension, self.metric = int(spec["dimension"]), str(spec.get("metric", rec.metric))
        self.name = f"{rec.name}/{modality}" if modality else rec.name
        self.lock = lock or threading.Lock()  # serialises writers (add/delete/snapshot); searches do not take it
        self.videos: dict[int, int] = {}  # video id -> sample count, exactly what the index holds
        self.since_snapshot = 0
        self.index = None
        self.log = VectorLog(self.dir, self.dimension)
        self.good_snapshot: dict | None = None  # the newest snapshot known intact (loaded or verified)
        # the collection's other modalities with an index (held by the frame index, empty on those)
        self.extras: dict[str, _CollectionIndex] = {}

    def open_extras(self) -> None:
        self.extras = {
            name: _CollectionIndex(self.rec, self.dir, name, self.lock)
            for name, spec in sorted(self.rec.modalities.items())
            if spec.get("dimension")
        }

    def all_indexes(self) -> list[_CollectionIndex]:
        """This index and its modalities' indexes (what a snapshot or close covers)."""
        return [self, *self.extras.values()]

    def _new_index(self, capacity: int = 1024):
        nat = _native()
        kw = {}
        if self.rec.index.get("m"):
            kw["M"] = int(self.rec.index["m"])
        if self.rec.index.get("ef_construction"):
            kw["ef_construction"] = int(self.rec.index["ef_construction"])
        idx = nat.HnswIndex(self.dimension, self.metric, max_elements=max(capacity, 1024), **kw)
        if self.rec.index.get("ef_search"):
            idx.ef = int(self.rec.index["ef_search"])
        return idx

    def recover(self, active: dict[int, tuple[int, str]]) -> dict:
        """Load snapshot + replay the log tail so the index holds exactly the active videos whose
        vectors are intact. `active`: video id -> (sample count, content sha256) from the catalog;
        a log record is attached only to the row it belongs to (same hash, a matching count).
        The report lists what recovery found wrong; the engine marks `missing` videos damaged."""
        t0 = time.perf_counter()
        keep, problems = snapshots.candidates(self.dir)
        for p in problems:
            log.error("snapshot_meta_damaged", collection=self.name, error=p)
            metrics.STORAGE_DAMAGE.labels("snapshot").inc()
        snapshots.remove_leftovers(self.dir, keep)
        from_seq, snap_videos, self.good_snapshot = 0, {}, None
        for i, m in enumerate(keep):
            try:
                self.index, snap_videos = snapshots.load_one(self.dir, m, _native().HnswIndex.load)
            except snapshots.SnapshotDamaged as exc:
                problems.append(f"snapshot damaged: {exc}")
                log.error(
                    "snapshot_damaged",
                    collection=self.name,
                    error=str(exc),
                    fallback="an older snapshot" if i + 1 < len(keep) else "the log only",
                )
                metrics.STORAGE_DAMAGE.labels("snapshot").inc()
                continue
            from_seq, self.good_snapshot = int(m["segment"]), m
            if self.rec.index.get("ef_search"):
                self.index.ef = int(self.rec.index["ef_search"])
            break
        else:
            self.index = self._new_index()
        t_load = time.perf_counter() - t0
        snapshot_damaged = bool(problems)
        self.videos = dict(snap_videos)
        high = max(snap_videos, default=0)
        # videos deleted after the snapshot was taken (or whose catalog row does not match)
        gone = [v for v, n in snap_videos.items() if v not in active or n not in _vector_counts(active[v][0])]
        for v in gone:
            self.index.remove(sample_ids(v, snap_videos[v]))
            del self.videos[v]
        replayed = skipped = 0
        foreign: list[int] = []
        for rec in self.log.replay(from_seq):
            high = max(high, rec.video_id)
            row = active.get(rec.video_id)
            if row is None or rec.video_id in self.videos:
                skipped += 1  # deleted, never committed, or already in the snapshot
                continue
            n = rec.vectors.shape[0]
            if not belongs_to(rec, row):
                foreign.append(rec.video_id)  # the id names another video: the catalog lost rows
                continue
            self._add(rec.video_id, np.array(rec.vectors, dtype=np.float32))
            replayed += n
        for d in self.log.damage:
            problems.append(
                f"damaged log record: segment {d.segment} offset {d.offset} ({d.length} bytes)"
                + (f", video {d.video_id}" if d.video_id is not None else "")
            )
            log.error(
                "log_record_damaged",
                collection=self.name,
                segment=d.segment,
                offset=d.offset,
                length=d.length,
                video=d.video_id,
            )
            metrics.STORAGE_DAMAGE.labels("log_record").inc()
        if foreign:
            problems.append(f"log records of videos {foreign[:20]} do not match their catalog rows (not attached)")
            log.error("log_records_foreign", collection=self.name, videos=foreign[:20], count=len(foreign))
            metrics.STORAGE_DAMAGE.labels("foreign_record").inc(len(foreign))
        # a damaged snapshot is replaced at the next snapshot (periodic or at stop), even with no new vectors
        self.since_snapshot = replayed + int(snapshot_damaged)
        missing = [v for v in active if v not in self.videos]
        if missing:
            problems.append(f"videos {missing[:20]} have no intact vectors ({len(missing)} marked damaged)")
            log.error("videos_missing_vectors", collection=self.name, videos=missing[:20], count=len(missing))
        return {
            "collection": self.name,
            "vectors": len(self.index),
            "snapshot_load_s": round(t_load, 3),
            "replayed_vectors": replayed,
            "skipped_records": skipped,
            "removed_deleted": len(gone),
            "missing_videos": missing,
            "highest_video_id": high,
            "problems": problems,
            "total_s": round(time.perf_counter() - t0, 3),
        }

    def _add(self, video_id: int, vectors: np.ndarray) -> None:
        self._add_many([(video_id, vectors)])

    def _add_many(self, videos: list[tuple[int, np.ndarray]]) -> None:
        """Several videos' vectors in one index call (the native add inserts them on every core)."""
        if not videos:
            return
        ids = np.concatenate([sample_ids(vid, v.shape[0]) for vid, v in videos])
        groups = np.concatenate([np.full(v.shape[0], vid, dtype=np.uint64) for vid, v in videos])
        vectors = np.ascontiguousarray(np.concatenate([v for _, v in videos]), dtype=np.float32)
        self.index.add(ids, vectors, groups=groups)
        for vid, v in videos:
            self.videos[vid] = v.shape[0]

    def snapshot(self) -> None:
        with self.lock:
            self._snapshot_locked()

    def _snapshot_locked(self) -> None:
        t0 = time.perf_counter()
        seq = self.log.rotate()
        meta = snapshots.write(self.dir, seq, self.index, self.videos)
        previous = self.good_snapshot
        snapshots.publish(self.dir, meta, previous)
        self.good_snapshot = meta
        # the previous snapshot and its log segments stay: the fallback if this one is damaged later
        self.log.drop_before(int(previous["segment"]) if previous else seq)
        snapshots.remove_leftovers(self.dir, [m for m in (meta, previous) if m])
        self.since_snapshot = 0
        log.info("snapshot", collection=self.name, vectors=len(self.index), seconds=round(time.perf_counter() - t0, 3))

    def close(self) -> None:
        self.log.close()
