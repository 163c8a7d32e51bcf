"""Read-only view of a data directory for search replica processes (`frameseek serve --workers N`).

One primary process owns every write (see embedded.py for the commit protocol). A replica opens the
same directory without ever writing to it:

- catalog: its own SQLite connection (WAL mode, so reads never block the writer and always see the
  latest commit);
- vectors: the newest index snapshot + the vector log from the snapshot's segment on, tailed by
  byte offset.

`sync()` brings the replica up to the catalog, which is the source of truth. It is called before
every read that touches the index or the video cache and costs one `PRAGMA data_version` (a
counter SQLite bumps when *another* connection commits) when nothing changed. When something did,
each collection's active set is fingerprinted by (count, max id) - exact, because video ids are
never reused and always grow - and only a changed collection is reconciled: videos gone from the
catalog are removed from the index at once (a delete acknowledged by the primary is gone from the
next search on every process), and new active videos are read from the log tail. The primary
fsyncs a video's log record *before* it marks the video active, so an active video's vectors are
always in the log or in a newer snapshot; if the segment holding them was already dropped by a
snapshot, the replica reloads that snapshot.
"""

from __future__ import annotations

import threading

import numpy as np
import structlog

from ..ids import sample_ids
from . import snapshots
from .base import CollectionRecord
from .collection_index import _CollectionIndex, _native, belongs_to
from .embedded import EmbeddedStorage
from .vectorlog import _HEADER, list_segments, scan_segment, segment_path

log = structlog.get_logger("frameseek.replica")


class _ReplicaIndex(_CollectionIndex):
    """A collection's index rebuilt from snapshot + log without writing anything."""

    def __init__(self, rec: CollectionRecord, directory: str):
        super().__init__(rec, directory)
        self.seg, self.offset = 0, 0  # where the log tail was read up to
        self.fingerprint: tuple[int, int] = (-1, -1)

    def recover(self, active: dict[int, tuple[int, str]]) -> dict:
        for _ in range(5):  # the primary may replace the snapshot while we read it
            try:
                return self._load(active)
            except FileNotFoundError:
                continue
        return self._load(active)

    def _load(self, active: dict[int, tuple[int, str]]) -> dict:
        metas, _ = snapshots.candidates(self.dir)
        snap_videos: dict[int, int] = {}
        if metas:
            for m in metas:  # the primary keeps the previous one
                try:
                    index, snap_videos = snapshots.load_one(self.dir, m, _native().HnswIndex.load)
                except snapshots.SnapshotDamaged as exc:
                    log.warning("replica_snapshot_unreadable", error=str(exc))  # or replaced meanwhile
                    continue
                self.seg, self.offset = snapshots.replay_start(m), 0
                break
            else:
                raise FileNotFoundError("no loadable snapshot (retried: the primary may be replacing it)")
        else:
            index = self._new_index()
            self.seg, self.offset = 0, 0
        if self.rec.index.get("ef_search"):
            index.ef = int(self.rec.index["ef_search"])
        self.index, self.videos = index, dict(snap_videos)
        for v in [v for v in snap_videos if v not in active]:
            self._remove(v)
        self.catch_up(active)
        return {"collection": self.rec.name, "vectors": len(self.index)}

    def _remove(self, video_id: int) -> None:
        n = self.videos.pop(video_id, 0)
        if n:
            self.index.remove(sample_ids(video_id, n))

    def catch_up(self, active: dict[int, tuple[int, str]]) -> bool:
        """Drop videos no longer active; add active ones from the log tail. False when some active
        video was not found (its segment was dropped by a newer snapshot: reload)."""
        for v in [v for v in self.videos if v not in active]:
            self._remove(v)
        missing = {v for v in active if v not in self.videos}
        if not missing:
            return True
        for seq in [s for s in list_segments(self.dir) if s >= self.seg]:
            start = self.offset if seq == self.seg else 0
            try:
                scan = scan_segment(segment_path(self.dir, seq), self.rec.dimension, start)
            except FileNotFoundError:  # dropped by a snapshot meanwhile
                return False
            for r in scan.records:
                if r.video_id in missing and belongs_to(r, active[r.video_id]):
                    self._add(r.video_id, np.array(r.vectors, dtype=np.float32))
                    missing.discard(r.video_id)
            # a torn tail is an append in progress: resume at the last whole record next time
            if scan.good >= _HEADER.size:
                self.seg, self.offset = seq, scan.good
        return not missing


class ReplicaStorage(EmbeddedStorage):
    """EmbeddedStorage that never writes: every mutating method raises; see the module docstring."""

    read_only = True

    def __init__(self, data_dir: str, catalog_path: str | None = None, **_ignored):
        super().__init__(data_dir, catalog_path=catalog_path)
        self._sync_lock = threading.Lock()
        self._data_version = -1

    def open(self) -> list[dict]:
        report = []
        self._data_version = self._version()  # before reading: a commit after this syncs again
        for rec in self.catalog.all_collections():
            report.append(self._open_collection(rec))
        self._load_video_map()
        self.recovery_report = report
        log.info("replica_open", data_dir=self.data_dir, collections=report)
        return report

    def _open_collection(self, rec: CollectionRecord) -> dict:
        ci = _ReplicaIndex(rec, self._coll_dir(rec.id))
        report = ci.recover(self.catalog.active_video_hashes(rec.id))
        ci.fingerprint = self._fingerprint(rec.id)
        with self._colls_lock:
            self._colls[rec.id] = ci
        return report

    def _version(self) -> int:
        return self.catalog.data_version()

    def _fingerprint(self, collection_id: int) -> tuple[int, int]:
        return self.catalog.active_fingerprint(collection_id)

    def changed(self) -> bool:
        """Cheap: did another process commit to the catalog since the last sync?"""
        return self._version() != self._data_version

    def sync(self) -> None:
        """Make this replica equal to the catalog (see the module docstring)."""
        if not self.changed():
            return
        with self._sync_lock:
            version = self._version()
            if version == self._data_version:
                return
            # read the version first: a commit after this point triggers another sync later
            recs = {r.id: r for r in self.catalog.all_collections()}
            # observers (the service's search directory) see the same changes, as at the primary
            for cid in [c for c in self._colls if c not in recs]:
                with self._colls_lock:
                    gone = self._colls.pop(cid, None)
                self._notify("collection_removed", cid)
                for v in gone.videos if gone is not None else ():
                    self._forget_entry(v)
            for cid, rec in recs.items():
                ci = self._colls.get(cid)
                if ci is None:
                    self._open_collection(rec)
                    ci = self._colls[cid]
                    self._notify("collection_added", rec, ci.index)
                    self._add_entries(self.catalog.active_video_entries(ci.videos))
                    continue
                fp = self._fingerprint(cid)
                if fp == ci.fingerprint:
                    continue
                active = self.catalog.active_video_hashes(cid)
                for v in [v for v in ci.videos if v not in active]:
                    self._notify("video_removed", v)
                    self._forget_entry(v)
                new = [v for v in active if v not in ci.videos]
                if not ci.catch_up(active):
                    log.info("replica_reload", collection=rec.name)
                    self._open_collection(rec)
                    self._notify("collection_added", rec, self._colls[cid].index)
                else:
                    ci.fingerprint = fp
                self._add_entries(self.catalog.active_video_entries(new))
            self._data_version = version

    def _add_entries(self, entries) -> None:
        for v, ts in entries:
            self._videos[v.id] = (v, ts)
            self._notify("video_added", v, ts)

    def snapshot(self, force: bool = True) -> None:  # the primary snapshots
        return None

    def close(self, snapshot: bool = False) -> None:
        self.catalog.close()

    def _read_only(self, *_a, **_k):
        raise RuntimeError("this is a search replica: writes go to the primary process")

    create_collection = delete_collection = add_video = add_videos = delete_video = _read_only
    check_rows = _read_only  # the primary checks the rows; its damage marks reach this replica by sync

    # A replica mirrors the frame index only: the calls that search other modalities' indexes are
    # forwarded to the primary (frameseek.workers.FORWARDED). Their data without vectors (times,
    # payload) is read from the catalog like everything else here.
    _PRIMARY_ONLY = "other modalities' indexes are served by the primary process: forward this call"

    def search_extra(self, *_a, **_k):
        raise RuntimeError(self._PRIMARY_ONLY)

    def video_extra(self, video_id: int, modality: str):
        v, _ = self.video_entry(video_id)
        if self.collection_by_id(v.collection_id).modalities.get(modality, {}).get("dimension"):
            raise RuntimeError(self._PRIMARY_ONLY)
        return self.catalog.video_extra(video_id, modality)

    create_job = update_job = _read_only

    def save_tuned_ef(self, collection_id: int, tuned: dict) -> None:
        return None  # the primary's catalog: a replica keeps its own tuning in memory
