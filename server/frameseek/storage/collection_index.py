"""One collection's part of the embedded storage: its native HNSW index (and its extra modalities'
indexes), its vector log and its snapshots, with the recovery that makes the index equal the
catalog's active rows again (see embedded.py for the commit protocol).

Decoupled insertion. A commit puts its vectors into the collection's *fresh segment* (an exact
native FlatIndex: an append, no graph insert) once the vector log holds them, and acknowledges;
the storage's linker (linker.py) then moves them into the HNSW graph in batches of LINK_BATCH
vectors (`link_step`), off the commit path. Searches read both through one native LiveIndex
(search_directory.hpp), so a committed vector is searchable at once. A snapshot holds the graph's
videos only; its `replay_from` names the log segment of the oldest record still only in the fresh
segment, so recovery replays it (into the fresh segment) and log truncation keeps it."""

from __future__ import annotations

import functools
import os
import threading
import time

import numpy as np
import structlog

from .. import metrics
from ..ids import batch_sample_ids, sample_ids
from . import snapshots
from .base import (
    CollectionRecord,
)
from .vectorlog import VectorLog, content_digest

log = structlog.get_logger("frameseek.storage")

#: vectors the linker moves into the graph per step: bounds how long a snapshot, a close or a
#: collection delete waits for a step in progress (the graph inserts ~1-2k 512-d vectors/s per core)
LINK_BATCH = 4096
#: threads of a link step's graph insert: every core but one, which stays with the commits (the
#: graph inserts would otherwise take every core and slow the ingest they exist to unblock)
LINK_THREADS = max(1, len(os.sched_getaffinity(0)) - 1)


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
        self,
        rec: CollectionRecord,
        directory: str,
        modality: str | None = None,
        lock: threading.Lock | None = None,
        link_lock: threading.Lock | None = None,
    ):
        self.rec, self.modality = rec, modality
        self.dir = os.path.join(directory, modality) if modality else directory
        spec = rec.modalities[modality] if modality else {"dimension": rec.dimension, "metric": rec.metric}
        self.dimension, self.metric = int(spec["dimension"]), str(spec.get("metric", rec.metric))
        # what the index's walks read, when the modality says (faces: float32); None = the native default
        self.walk_precision: str | None = spec.get("walk_precision")
        self.name = f"{rec.name}/{modality}" if modality else rec.name
        self.lock = lock or threading.Lock()  # serialises writers (add/delete/snapshot); searches do not take it
        # held by a link step across its graph insert (which runs without `lock`, so commits go on)
        # and by whatever needs the graph to hold exactly the linked videos: snapshots, close.
        # Order: link_lock, then lock.
        self.link_lock = link_lock or threading.Lock()
        self.linking: set[int] = set()  # the videos of the link step in progress (under lock)
        self.videos: dict[int, int] = {}  # video id -> vector count, exactly what the graph + fresh segment hold
        # videos still only in the fresh segment -> the log segment of their record (commit order)
        self.unlinked: dict[int, int] = {}
        self.since_snapshot = 0  # vectors linked into the graph since the last snapshot
        self.closed = False
        self.index = None  # the HNSW graph
        self.fresh = _native().FlatIndex(self.dimension, self.metric)
        self._live = self._live_graph = None
        self.log = VectorLog(self.dir, self.dimension)
        self.good_snapshot: dict | None = None  # the newest snapshot known intact (loaded or verified)
        # the collection's other modalities with an index (held by the frame index, empty on those)
        self.extras: dict[str, _CollectionIndex] = {}

    def open_extras(self) -> None:
        self.extras = {
            name: _CollectionIndex(self.rec, self.dir, name, self.lock, self.link_lock)
            for name, spec in sorted(self.rec.modalities.items())
            if spec.get("dimension")
        }

    def all_indexes(self) -> list[_CollectionIndex]:
        """This index and its modalities' indexes (what a snapshot or close covers)."""
        return [self, *self.extras.values()]

    @property
    def live(self):
        """The native LiveIndex over the graph and the fresh segment: what every search reads."""
        if self._live is None or self._live_graph is not self.index:  # recovery replaced the graph
            self._live, self._live_graph = _native().LiveIndex(self.index, self.fresh), self.index
        return self._live

    def vector_count(self) -> int:
        """Vectors searchable in this index (each once, also while a link step has them in both parts)."""
        with self.lock:
            return sum(self.videos.values())

    def unlinked_count(self) -> int:
        """Vectors waiting in the fresh segment to be linked into the graph (the linker's backlog)."""
        return len(self.fresh)

    def _new_index(self, capacity: int = 1024):
        nat = _native()
        kw = {}
        if self.rec.index.get("m"):
            kw["M"] = int(self.rec.index["m"])
        if self.rec.index.get("ef_construction"):
            kw["ef_construction"] = int(self.rec.index["ef_construction"])
        # Absent in collections made before the setting: a graph built anew takes today's default (a
        # snapshot keeps the layout it was saved with).
        if self.rec.index.get("layer0_links"):
            kw["M0"] = int(self.rec.index["layer0_links"])
        return self._configure(nat.HnswIndex(self.dimension, self.metric, max_elements=max(capacity, 1024), **kw))

    def _configure(self, idx):
        """The collection's search settings on a new or loaded graph: its ef floor and, where the
        modality sets one, what its walks read (a snapshot from before that setting loads as int8).
        The float32 originals (read only to re-rank results) go to a memory-mapped scratch file in
        the collection's directory, so the graph's int8 codes are what stays in anonymous memory."""
        idx.store_vectors_in(self.dir)
        if self.rec.index.get("ef_search"):
            idx.ef = int(self.rec.index["ef_search"])
        if self.walk_precision and idx.walk_precision != self.walk_precision:
            idx.walk_precision = self.walk_precision
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
                # the originals straight into the mapped vector file (_configure keeps it there)
                load = functools.partial(_native().HnswIndex.load, vectors_dir=self.dir)
                self.index, snap_videos = snapshots.load_one(self.dir, m, load)
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
            from_seq, self.good_snapshot = snapshots.replay_start(m), m
            self._configure(self.index)
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
            self.forget(v)
        replayed = skipped = 0
        foreign: list[int] = []
        pending: list[tuple[int, np.ndarray, int]] = []
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
            # into the fresh segment, like a commit: the linker links it after the start
            pending.append((rec.video_id, np.array(rec.vectors, dtype=np.float32), rec.segment))
            self.videos[rec.video_id] = n  # a second record of the video is skipped
            replayed += n
            if len(pending) >= LINK_BATCH:
                self._commit_many(pending)
                pending = []
        self._commit_many(pending)
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
        self.since_snapshot = int(snapshot_damaged)
        missing = [v for v in active if v not in self.videos]
        if missing:
            problems.append(f"videos {missing[:20]} have no intact vectors ({len(missing)} marked damaged)")
            log.error("videos_missing_vectors", collection=self.name, videos=missing[:20], count=len(missing))
        return {
            "collection": self.name,
            "vectors": len(self.index) + len(self.fresh),
            "unlinked_vectors": len(self.fresh),
            "snapshot_load_s": round(t_load, 3),
            "replayed_vectors": replayed,
            "skipped_records": skipped,
            "removed_deleted": len(gone),
            "missing_videos": missing,
            "highest_video_id": high,
            "problems": problems,
            "total_s": round(time.perf_counter() - t0, 3),
        }

    def check_mapped_vectors(self) -> list[str]:
        """Check the float32 vectors that the loaded snapshot maps instead of reading against their
        CRC (HnswIndex.check_mapped_vectors: one read of them; the load checked the graph, its codes
        and the ids). Damage there makes the re-ranking distances and get_vectors of the damaged
        rows wrong (the walks are right), and a later snapshot would carry it on: it is logged
        (snapshot_vectors_damaged), counted (storage_damage, kind snapshot_vectors) and returned."""
        index = self.index
        problem = index.check_mapped_vectors() if index is not None else ""
        if not problem:
            return []
        log.error("snapshot_vectors_damaged", collection=self.name, error=problem)
        metrics.STORAGE_DAMAGE.labels("snapshot_vectors").inc()
        return [problem]

    def _add(self, video_id: int, vectors: np.ndarray) -> None:
        self._add_many([(video_id, vectors)])

    def _add_many(self, videos: list[tuple[int, np.ndarray]]) -> None:
        """Several videos' vectors straight into the graph in one call (a replica, which links
        nothing in the background)."""
        if not videos:
            return
        ids, vectors, groups = _batch(videos)
        self.index.add(ids, vectors, groups=groups)
        for vid, v in videos:
            self.videos[vid] = v.shape[0]

    def _commit_many(self, videos: list[tuple[int, np.ndarray, int]]) -> None:
        """Committed videos' vectors (video id, vectors, log segment of the record) into the fresh
        segment: searchable when this returns; the linker moves them into the graph later.
        Called under `lock` (or before the linker starts)."""
        if not videos:
            return
        ids, vectors, groups = _batch([(vid, v) for vid, v, _ in videos])
        self.fresh.add(ids, vectors, groups=groups)
        for vid, v, segment in videos:
            self.videos[vid] = v.shape[0]
            self.unlinked[vid] = segment
        metrics.UNLINKED_VECTORS.labels(self.name).set(len(self.fresh))

    def link_step(self, limit: int = LINK_BATCH) -> int:
        """Move the oldest unlinked videos (up to `limit` vectors, at least one video) from the
        fresh segment into the graph; returns how many vectors were linked. The graph insert runs
        without `lock` (commits and deletes go on); a video deleted meanwhile is taken out of the
        graph again before the step ends."""
        with self.link_lock:
            with self.lock:
                if self.closed:
                    return 0
                batch, n = [], 0
                for vid in self.unlinked:
                    count = self.videos[vid]
                    if batch and n + count > limit:
                        break
                    batch.append((vid, count))
                    n += count
                if not batch:
                    return 0
                ids = batch_sample_ids([v for v, _ in batch], [c for _, c in batch])
                vectors = self.fresh.get_vectors(ids)
                self.linking = {v for v, _ in batch}
            groups = np.repeat(np.array([v for v, _ in batch], dtype=np.uint64), [c for _, c in batch])
            try:
                self.index.add(
                    ids, vectors, groups=groups, threads=LINK_THREADS
                )  # an error leaves the batch in the fresh segment
            except BaseException:
                with self.lock:
                    self.linking = set()
                raise
            with self.lock:
                self.linking = set()
                deleted = [(v, c) for v, c in batch if v not in self.unlinked]
                if deleted:
                    self.index.remove(np.concatenate([sample_ids(v, c) for v, c in deleted]))
                for v, _ in batch:
                    self.unlinked.pop(v, None)
                self.fresh.remove(ids)  # after the graph holds them: a search reads the fresh segment first
                linked = n - sum(c for _, c in deleted)
                self.since_snapshot += linked
                metrics.UNLINKED_VECTORS.labels(self.name).set(len(self.fresh))
        return linked

    def forget(self, video_id: int) -> bool:
        """Take a video's vectors out of whichever part holds them (under `lock`). True when a link
        step is inserting them into the graph right now: that step takes them out again before it
        ends, and until then a search can still find them there (wait for `link_lock`)."""
        n = self.videos.pop(video_id, 0)
        if not n:
            return False
        ids = sample_ids(video_id, n)
        if self.unlinked.pop(video_id, None) is not None:
            self.fresh.remove(ids)
            return video_id in self.linking
        self.index.remove(ids)
        return False

    def snapshot(self) -> None:
        with self.link_lock, self.lock:
            self._snapshot_locked()

    def _snapshot_locked(self) -> None:
        """Under link_lock and lock: the graph holds exactly the linked videos."""
        t0 = time.perf_counter()
        seq = self.log.rotate()
        # the records of videos still only in the fresh segment are replayed from the log at start
        replay_from = min(self.unlinked.values(), default=seq)
        linked = {v: n for v, n in self.videos.items() if v not in self.unlinked} if self.unlinked else self.videos
        meta = {**snapshots.write(self.dir, seq, self.index, linked), "replay_from": replay_from}
        previous = self.good_snapshot
        snapshots.publish(self.dir, meta, previous)
        self.good_snapshot = meta
        # the previous snapshot and the log segments it replays stay: the fallback if this one is damaged later
        self.log.drop_before(min(replay_from, snapshots.replay_start(previous)) if previous else replay_from)
        snapshots.remove_leftovers(self.dir, [m for m in (meta, previous) if m])
        self.since_snapshot = 0
        log.info(
            "snapshot",
            collection=self.name,
            vectors=len(self.index),
            unlinked=len(self.unlinked),
            seconds=round(time.perf_counter() - t0, 3),
        )

    def close(self) -> None:
        """Stop linking (the log holds whatever the fresh segment does) and close the log."""
        with self.link_lock, self.lock:
            self.closed = True
            self.log.close()


def _batch(videos: list[tuple[int, np.ndarray]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(sample ids, vectors, groups) of several videos' vectors, for one native add."""
    vids = np.fromiter((vid for vid, _ in videos), dtype=np.uint64, count=len(videos))
    counts = np.fromiter((v.shape[0] for _, v in videos), dtype=np.int64, count=len(videos))
    vectors = np.ascontiguousarray(np.concatenate([v for _, v in videos]), dtype=np.float32)
    return batch_sample_ids(vids, counts), vectors, np.repeat(vids, counts)
