"""The embedded storage engine: SQLite catalog + one native HNSW index per collection, each with an
append-only vector log and periodic atomic snapshots.

Commit protocol of an ingest (per collection, serialised by the collection's write lock):
  1. catalog: insert the video row as 'pending' (with its sample timestamps and labels);
  2. vector log: append the video's vectors and fsync;
  3. catalog: mark the row 'active'  <- the commit point; after this the ingest is acknowledged;
  4. index: add the vectors to the collection's fresh segment (searchable from here on); the
     linker moves them into the HNSW graph later (collection_index.py, linker.py).
A crash before 3 leaves a pending row (removed at startup) and maybe a logged record (ignored at
replay because its video is not active): nothing is visible. A crash after 3 is repaired by replay.

Delete: catalog row removed (commit point), then the vectors are removed from the live index.
Replay never re-adds vectors of videos that are not active, and vectors of deleted videos that a
snapshot still holds are removed at startup, so the index always equals the catalog's active set.

Snapshots: under the write lock (and the link lock) the log rotates to a new segment and the graph
is saved (native save writes a temp file and renames). `snapshot.json` is then replaced atomically
to point at it together with the list of videos it holds and the first segment still holding a
record of an unlinked video; older segments and snapshots are deleted.
Startup = load the snapshot named by snapshot.json + replay log segments from that segment on.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import sqlite3
import threading
from collections.abc import Mapping, Sequence

import numpy as np
import structlog

from .. import metrics
from ..ids import sample_ids
from .base import (
    TUNED_EF,
    CollectionRecord,
    FailedPrecondition,
    JobRecord,
    ModalityData,
    NewVideo,
    NotFound,
    ResourceExhausted,
    VideoQuery,
    VideoRecord,
    check_modalities,
    checked_videos,
    is_disk_full,
)
from .catalog import Catalog, CatalogDamaged, is_damage
from .collection_index import _CollectionIndex, _native
from .linker import Linker

log = structlog.get_logger("frameseek.storage")


class EmbeddedStorage:
    """Storage on one machine, no external services. See the module docstring for the protocol."""

    def __init__(
        self,
        data_dir: str,
        *,
        snapshot_every: int = 200_000,
        catalog_path: str | None = None,
        check_rows_at_open: bool = True,
    ):
        """`check_rows_at_open`: verify the catalog rows' checksums inside open() (False: the caller
        runs check_rows() later - the server does once it serves; see check_rows)."""
        self.data_dir = os.path.abspath(data_dir)
        os.makedirs(os.path.join(self.data_dir, "collections"), exist_ok=True)
        self.catalog = Catalog(catalog_path or os.path.join(self.data_dir, "catalog.sqlite3"))
        self.people = self.catalog  # the people tables (Storage.people) live in the catalog
        self.snapshot_every = snapshot_every
        self._colls: dict[int, _CollectionIndex] = {}
        self._colls_lock = threading.Lock()
        # Every active video's record and sample timestamps, loaded at open and kept in step with
        # add/delete: the search path maps a hit (video id, sample index) to (video, timestamp)
        # with one dict lookup and never queries SQLite (~0.5 KB per video). open() reads the
        # catalog's rows into `_rows` only; a row becomes its entry in `_videos` when first asked
        # for (~7 us: the labels' JSON, the record), so that a start does not build every record
        # before SERVING. `_map_lock` orders that move against removals (a delete racing a move
        # must not leave a removed video's entry behind); lookups that hit `_videos` take no lock.
        self._videos: dict[int, tuple[VideoRecord, np.ndarray]] = {}
        self._rows: dict[int, tuple] = {}
        self._map_lock = threading.Lock()
        self.recovery_report: list[dict] = []
        self.check_rows_at_open = check_rows_at_open
        self.rows_checked = threading.Event()  # set once check_rows() has run on this open
        self._rows_lock = threading.Lock()
        self._observers: list = []
        self._linker = Linker(self._link_targets, self._snapshot_due)

    # -- observers ------------------------------------------------------------------------------
    def add_observer(self, observer) -> None:
        """`observer` mirrors what searches can see (the native front end's directory): it is called
        synchronously at each commit, before the call that committed returns, with
        collection_added(record, index), collection_removed(collection_id),
        video_added(record, timestamps) (or, where the observer has it, videos_added([(record,
        timestamps), ...]) once per commit of several) and video_removed(video_id). Removals are reported right
        after the catalog commit, so a deleted video is gone from every search path at once."""
        self._observers.append(observer)

    def _notify(self, event: str, *args) -> None:
        for o in self._observers:
            getattr(o, event)(*args)

    def _notify_added(self, entries: list[tuple[VideoRecord, np.ndarray]]) -> None:
        """The videos of one commit: one videos_added(entries) call to an observer that has the
        batch form, else video_added per video."""
        for o in self._observers:
            batch = getattr(o, "videos_added", None)
            if batch is not None:
                batch(entries)
            else:
                for entry in entries:
                    o.video_added(*entry)

    def live_collections(self) -> list[tuple[CollectionRecord, object]]:
        """Every open collection's (record, live HnswIndex): what an observer added after open()
        starts from (add_observer first, then this, so that no commit is missed)."""
        with self._colls_lock:
            return [(ci.rec, ci.live) for ci in self._colls.values()]

    def native_index(self, collection_id: int):
        """The collection's LiveIndex (graph + fresh segment; for the native front end's search path)."""
        return self._ci(collection_id).live

    def indexed_videos(self, collection_id: int) -> dict[int, int]:
        """video id -> vectors of it that the collection's frame index holds (its samples, plus
        their coarse twins where it has them), for every video the index holds: a copy."""
        ci = self._ci(collection_id)
        with ci.lock:
            return dict(ci.videos)

    def video_entries(self) -> list[tuple[VideoRecord, np.ndarray]]:
        """Every active video's (record, sample timestamps), from memory (builds the records that
        were not yet asked for, a few hundred at a time under the map's lock)."""
        while self._rows:
            with self._map_lock:
                for vid, row in [self._rows.popitem() for _ in range(min(256, len(self._rows)))]:
                    self._videos[vid] = self.catalog.entry_of_row(row)
        return list(self._videos.values())

    def video_sample_table(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(video ids uint64, collection ids uint32, offsets int64 [n + 1], sample timestamps
        float64) of every active video, video i's timestamps at offsets[i]:offsets[i + 1]: what the
        search directory is filled with at start (SearchDirectory.put_videos), without building
        the records."""
        with self._map_lock:
            rows, entries = list(self._rows.values()), list(self._videos.values())
        ids = [r[0] for r in rows] + [v.id for v, _ in entries]
        collections = [r[1] for r in rows] + [v.collection_id for v, _ in entries]
        blobs = [r[-1] for r in rows] + [np.ascontiguousarray(ts, dtype="<f8").tobytes() for _, ts in entries]
        offsets = np.zeros(len(ids) + 1, dtype=np.int64)
        np.cumsum([len(b) // 8 for b in blobs], out=offsets[1:])
        return (
            np.array(ids, dtype=np.uint64),
            np.array(collections, dtype=np.uint32),
            offsets,
            np.frombuffer(b"".join(blobs), dtype="<f8"),
        )

    def _forget_entry(self, video_id: int) -> None:
        """Take a video out of the map (its record built or not)."""
        with self._map_lock:
            self._videos.pop(video_id, None)
            self._rows.pop(video_id, None)

    def _entry(self, video_id: int) -> tuple[VideoRecord, np.ndarray] | None:
        """The map's entry of an active video (its record built on first use), None if not there."""
        hit = self._videos.get(video_id)
        if hit is None and video_id in self._rows:
            with self._map_lock:
                row = self._rows.pop(video_id, None)
                if row is not None:
                    self._videos[video_id] = self.catalog.entry_of_row(row)
                hit = self._videos.get(video_id)
        return hit

    # -- lifecycle ------------------------------------------------------------------------------
    def open(self) -> list[dict]:
        """Recover every collection (blocking; the server reports UNAVAILABLE meanwhile). Videos
        whose vectors are not intact are marked damaged; ids found in the log or a snapshot but
        unknown to the catalog (it lost committed rows) are never handed out again. A damaged
        catalog raises CatalogDamaged (its message says how to repair it)."""
        try:
            return self._open()
        except (sqlite3.DatabaseError, UnicodeDecodeError) as exc:  # e.g. a row whose text no longer decodes
            if not is_damage(exc):
                raise
            raise CatalogDamaged(self.catalog.path, str(exc)) from exc

    def _open(self) -> list[dict]:
        self.catalog.check_integrity()
        dropped = self.catalog.drop_pending()
        if dropped:
            log.warning("dropped_unacknowledged_videos", videos=dropped)
        self.rows_checked.clear()
        report: list[dict] = []
        for rec in self.catalog.all_collections():
            ci = _CollectionIndex(rec, self._coll_dir(rec.id))
            ci.open_extras()
            reports = [ci.recover(self.catalog.active_video_hashes(rec.id))]
            reports += [x.recover(self.catalog.active_extra_hashes(rec.id, name)) for name, x in ci.extras.items()]
            missing = sorted({v for r in reports for v in r["missing_videos"]})
            if missing:
                self.catalog.mark_damaged(missing)
                for x in ci.all_indexes():  # a damaged video is searched in none of them
                    for v in missing:
                        x.forget(v)
            report += reports
            self._colls[rec.id] = ci
        seen = max((r.get("highest_video_id", 0) for r in report), default=0)
        if seen > self.catalog.video_id_high_water():
            msg = (
                f"the catalog lost committed rows: the vector log or a snapshot holds video ids up to {seen}, "
                f"the catalog has handed out ids only up to {self.catalog.video_id_high_water()}"
            )
            log.error("catalog_lost_rows", highest_logged=seen, high_water=self.catalog.video_id_high_water())
            metrics.STORAGE_DAMAGE.labels("catalog_lost_rows").inc()
            self.catalog.raise_video_id_high_water(seen)
            report.append({"collection": "", "problems": [msg]})
        self._load_video_map()
        self.recovery_report = report
        log.info("storage_open", data_dir=self.data_dir, collections=report)
        self._start_linker()
        if self.check_rows_at_open:
            self.check_rows()
        return self.recovery_report

    def _start_linker(self) -> None:
        self._linker.start()
        self._linker.wake()  # the log tail replayed into the fresh segments

    def _link_targets(self) -> list[_CollectionIndex]:
        with self._colls_lock:
            return [x for ci in self._colls.values() for x in ci.all_indexes()]

    def _snapshot_due(self, x: _CollectionIndex) -> None:
        """The periodic snapshot (on the linker's thread), once `snapshot_every` vectors were linked
        since the last one. A failed snapshot loses nothing: the log still holds every vector."""
        if x.since_snapshot < self.snapshot_every:
            return
        try:
            with x.link_lock, x.lock:
                if not x.closed:
                    x._snapshot_locked()
        except Exception:
            log.exception("snapshot_failed", collection=x.name)

    def link_all(self) -> int:
        """Link every collection's backlog into its graph now, on this thread (beside the linker,
        step by step); returns how many vectors this call linked."""
        linked = 0
        for x in self._link_targets():
            while n := x.link_step():
                linked += n
        return linked

    def unlinked_vectors(self, collection_id: int) -> int:
        """Vectors of the collection acknowledged but not yet linked into its graph (all modalities)."""
        return sum(x.unlinked_count() for x in self._ci(collection_id).all_indexes())

    def check_rows(self) -> list[str]:
        """Verify every catalog row against its checksum (Catalog.rows_failing_checksum, one pass
        over the catalog: ~10 us per row). Videos whose rows fail are marked damaged (listed, never
        searched) and taken out of every search path as a delete would (their logged vectors stay,
        as for any damaged video); what was found joins recovery_problems(), the log
        (catalog_rows_damaged) and the storage_damage metric. Returns those problems.

        Once per open(): inside it by default; a storage made with check_rows_at_open=False leaves
        it to its owner - the server runs it in a low-priority thread right after it reports
        SERVING, so that a large catalog does not hold up the start. Until then a video whose row
        was altered on disk can still be found by a search (it is then taken out as above).

        The same pass checks the float32 vectors each loaded snapshot maps instead of reading
        (_CollectionIndex.check_mapped_vectors), reported the same way."""
        with self._rows_lock:
            if self.rows_checked.is_set():
                return []
            bad, unknown = self.catalog.rows_failing_checksum()
            problems = []
            if bad or unknown:
                self._take_out_damaged(bad + unknown)
                if bad:
                    problems.append(
                        f"catalog rows of videos {bad[:20]} fail their checksums ({len(bad)} marked damaged)"
                    )
                if unknown:
                    problems.append(
                        f"catalog rows of videos {unknown[:20]} have an unknown state ({len(unknown)} marked damaged)"
                    )
                log.error("catalog_rows_damaged", videos=(bad + unknown)[:20], count=len(bad) + len(unknown))
                metrics.STORAGE_DAMAGE.labels("catalog_row").inc(len(bad) + len(unknown))
                self.recovery_report = [*self.recovery_report, {"collection": "", "problems": problems}]
            with self._colls_lock:
                indexes = [x for ci in self._colls.values() for x in ci.all_indexes()]
            for x in indexes:
                if found := x.check_mapped_vectors():
                    self.recovery_report = [*self.recovery_report, {"collection": x.name, "problems": found}]
                    problems += [f"{x.name}: {p}" for p in found]
            self.rows_checked.set()
            return problems

    def _take_out_damaged(self, video_ids: list[int]) -> None:
        """Mark videos damaged; those active in a collection leave its indexes, the video map and
        every observer under the collection's write lock, in a delete's order (commit, then the
        map, then the observers: see video_entry)."""
        by_collection: dict[int, list[int]] = {}
        for vid in video_ids:
            hit = self._entry(vid)
            if hit is not None:
                by_collection.setdefault(hit[0].collection_id, []).append(vid)
        self.catalog.mark_damaged([v for v in video_ids if self._entry(v) is None])
        for cid, vids in by_collection.items():
            ci = self._colls.get(cid)
            if ci is None:  # its collection was deleted meanwhile
                continue
            with ci.lock:
                self.catalog.mark_damaged(vids)
                for vid in vids:
                    if self._entry(vid) is None:  # deleted meanwhile
                        continue
                    self._forget_entry(vid)
                    self._notify("video_removed", vid)
                    for x in ci.all_indexes():
                        x.forget(vid)

    def recovery_problems(self) -> list[str]:
        """What the last recovery found damaged or inconsistent (empty when all was intact)."""
        return [f"{r['collection'] or 'catalog'}: {p}" for r in self.recovery_report for p in r.get("problems", ())]

    def _coll_dir(self, cid: int) -> str:
        return os.path.join(self.data_dir, "collections", str(cid))

    def _ci(self, collection_id: int) -> _CollectionIndex:
        try:
            return self._colls[collection_id]
        except KeyError:
            raise NotFound(f"collection #{collection_id} not found", "COLLECTION_NOT_FOUND") from None

    def snapshot(self, force: bool = True) -> None:
        for ci in [x for c in list(self._colls.values()) for x in c.all_indexes()]:
            if force or ci.since_snapshot >= self.snapshot_every:
                # only a graph that changed is saved again: commits since the last snapshot are in the
                # fresh segment and the log, which its replay_from keeps
                if ci.since_snapshot or not os.path.exists(os.path.join(ci.dir, "snapshot.json")):
                    ci.snapshot()

    def close(self, snapshot: bool = True) -> None:
        self._linker.stop()  # after its step in progress; the backlog stays in the log
        if snapshot:
            self.snapshot(force=True)
        for ci in self._colls.values():
            for x in ci.all_indexes():
                x.close()
        self.catalog.close()

    def storage_bytes(self) -> int:
        total = 0
        for root, _, files in os.walk(self.data_dir):
            for f in files:
                try:
                    total += os.path.getsize(os.path.join(root, f))
                except OSError:
                    pass
        return total

    # -- collections ----------------------------------------------------------------------------
    def default_layer0_links(self, m: int) -> int:
        return _native().hnsw_default_layer0_links(m)

    def create_collection(self, name: str, **kw) -> CollectionRecord:
        check_modalities(kw.get("modalities") or {})
        rec = self.catalog.create_collection(name, **kw)
        ci = _CollectionIndex(rec, self._coll_dir(rec.id))
        ci.open_extras()
        for x in ci.all_indexes():
            x.recover({})
        with self._colls_lock:
            self._colls[rec.id] = ci
        self._notify("collection_added", rec, ci.live)
        return rec

    def get_collection(self, name: str) -> CollectionRecord:
        return self.catalog.get_collection(name)

    def collection_by_id(self, collection_id: int) -> CollectionRecord:
        return self.catalog.collection_by_id(collection_id)

    def save_tuned_ef(self, collection_id: int, tuned: dict) -> None:
        self.catalog.set_index_setting(collection_id, TUNED_EF, tuned)

    def list_collections(self, after: str, limit: int) -> list[CollectionRecord]:
        return self.catalog.list_collections(after, limit)

    def delete_collection(self, name: str, force: bool) -> None:
        rec = self.catalog.get_collection(name)
        ci = self._ci(rec.id)
        with ci.link_lock, ci.lock:
            ids = self.catalog.delete_collection(rec.id, force)
            for v in ids:  # out of the map before the observers hear of it (see delete_video)
                self._forget_entry(v)
            self._notify("collection_removed", rec.id)
            with self._colls_lock:
                self._colls.pop(rec.id, None)
            for x in ci.all_indexes():
                x.closed = True
                x.log.close()
            import shutil

            shutil.rmtree(ci.dir, ignore_errors=True)

    def collection_counts(self, collection_id: int) -> tuple[int, int, float]:
        return self.catalog.collection_counts(collection_id)

    # -- videos ---------------------------------------------------------------------------------
    def add_video(
        self,
        collection_id: int,
        video: VideoRecord,
        timestamps: np.ndarray,
        vectors: np.ndarray,
        twins: np.ndarray | None = None,
        *,
        extras: Mapping[str, ModalityData] | None = None,
    ) -> VideoRecord:
        return self.add_videos(collection_id, [NewVideo(video, timestamps, vectors, twins, extras)])[0]

    def add_videos(self, collection_id: int, videos: Sequence[NewVideo]) -> list[VideoRecord]:
        """Several videos in one commit (Storage.add_videos): one catalog transaction for their pending
        rows, one vector-log write + fsync per index, one activating transaction; all or none."""
        ci = self._ci(collection_id)
        checked = checked_videos(ci.rec, videos)
        if not checked:
            return []
        with ci.lock:
            pending = self.catalog.insert_pending_many(collection_id, [(v, ts, x) for v, ts, _, x in checked])  # 1
            vids = pending.ids
            try:  # 2 (fsync'ed; rolled back on error)
                ci.log.append_many([(vid, vec, v.content_sha256) for vid, (v, _, vec, _) in zip(vids, checked)])
                for name, x in ci.extras.items():
                    x.log.append_many(
                        [
                            (vid, ex[name].vectors, v.content_sha256)
                            for vid, (v, _, _, ex) in zip(vids, checked)
                            if name in ex and ex[name].vectors is not None and len(ex[name])
                        ]
                    )
            except OSError as exc:
                for vid in vids:
                    self._forget_pending(vid)
                if is_disk_full(exc):
                    raise ResourceExhausted(f"the server's disk is full (vector log write failed: {exc})") from exc
                raise
            try:
                create_time = self.catalog.activate_many(vids)  # 3 commit point
            except Exception:  # not committed: the logged records stay unattached (their rows are not active)
                for vid in vids:
                    self._forget_pending(vid)
                raise
            ci._commit_many([(vid, vectors, ci.log.seq) for vid, (_, _, vectors, _) in zip(vids, checked)])  # 4
            for name, x in ci.extras.items():
                x._commit_many(
                    [
                        (vid, ex[name].vectors, x.log.seq)
                        for vid, (_, _, _, ex) in zip(vids, checked)
                        if name in ex and ex[name].vectors is not None and len(ex[name])
                    ]
                )
            # the committed records as the rows hold them (a read-back cost a one-vector item more
            # than its row)
            entries = list(zip(pending.records(create_time), [timestamps for _, timestamps, _, _ in checked]))
            self._videos.update(zip(vids, entries))
            self._notify_added(entries)
        self._linker.wake()
        return [record for record, _ in entries]

    def _forget_pending(self, video_id: int) -> None:
        try:
            self.catalog.delete_video_row(video_id)
        except Exception:  # e.g. still no space: the row stays pending and is dropped at the next start
            log.warning("pending_row_kept", video=video_id)

    def find_video_by_hash(self, collection_id: int, sha256: str) -> VideoRecord | None:
        return self.catalog.find_by_hash(collection_id, sha256)

    def _load_video_map(self) -> None:
        with self._map_lock:
            self._videos, self._rows = {}, {r[0]: r for r in self.catalog.active_video_rows()}

    def video_entry(self, video_id: int) -> tuple[VideoRecord, np.ndarray]:
        """(record, sample timestamps) of an active video, from memory; NotFound when it is not
        active. A miss falls back to the catalog (only a replica that has not yet caught up with a
        commit can miss; the entry is kept then)."""
        hit = self._entry(video_id)
        if hit is None:
            hit = (self.catalog.get_video(video_id), self.catalog.video_timestamps(video_id))
            self._videos[video_id] = hit
        return hit

    def get_video(self, video_id: int) -> VideoRecord:
        """An active video, or a damaged one (state "damaged": listed, never searched)."""
        hit = self._entry(video_id)
        return hit[0] if hit is not None else self.catalog.get_video(video_id, "'active', 'damaged'")

    def video_records(self, limit: int) -> list[VideoRecord]:
        """Up to `limit` active videos' records, from memory (to warm caches at start)."""
        return [v for v, _ in itertools.islice(self.video_entries(), limit)]

    def video_timestamps(self, video_id: int) -> np.ndarray:
        return self.video_entry(video_id)[1]

    def list_videos(self, query: VideoQuery, before_id: int | None, limit: int) -> tuple[list[VideoRecord], int]:
        return self.catalog.list_videos(query, before_id, limit)

    def video_ids(self, query: VideoQuery) -> np.ndarray:
        return self.catalog.video_ids(query)

    def video_ids_by_key(self, collection_id: int, keys: Sequence[str]) -> dict[str, list[int]]:
        return self.catalog.video_ids_by_key(collection_id, keys)

    def delete_video(self, video_id: int) -> None:
        v = self.catalog.get_video(video_id, "'active', 'damaged'")
        ci = self._ci(v.collection_id)
        with ci.lock:
            self.catalog.delete_video(video_id)  # commit point
            # out of the map before the observers hear of it: an observer that fills itself after
            # SERVING asks video_entry() after each put whether the video is still there
            self._forget_entry(video_id)
            self._notify("video_removed", video_id)
            linking = [x for x in ci.all_indexes() if x.forget(video_id)]
        for x in linking:  # gone from every search before this returns: wait for that link step
            with x.link_lock:
                pass

    # -- vectors --------------------------------------------------------------------------------
    def _filter(self, groups):
        if groups is None:
            return None
        return _native().Filter(groups=np.ascontiguousarray(groups, dtype=np.uint64))

    def search(self, collection_id, queries, k, *, ef=None, groups=None):
        ci = self._ci(collection_id)
        return ci.live.search(queries, k, ef=ef, filter=self._filter(groups))

    def search_groups(self, collection_id, queries, k, *, ef=None, groups=None):
        ci = self._ci(collection_id)
        return ci.live.search_groups(queries, k, ef=ef, filter=self._filter(groups))

    def _extra_index(self, collection_id: int, modality: str) -> _CollectionIndex:
        ci = self._ci(collection_id)
        x = ci.extras.get(modality)
        if x is None:
            raise FailedPrecondition(
                f"collection {ci.rec.name!r} has no {modality} index (modalities are set when a collection is created)",
                "MODALITY_NOT_ENABLED",
            )
        return x

    def search_extra(self, collection_id, modality, queries, k, *, ef=None, groups=None, per_video=False):
        x = self._extra_index(collection_id, modality)
        search = x.live.search_groups if per_video else x.live.search
        return search(queries, k, ef=ef, filter=self._filter(groups))

    def video_extra(self, video_id: int, modality: str) -> ModalityData | None:
        data = self.catalog.video_extra(video_id, modality)
        if data is None or not len(data):
            return data
        v, _ = self.video_entry(video_id)
        x = self._ci(v.collection_id).extras.get(modality)
        if x is None:
            return data
        try:
            vectors = x.live.get_vectors(sample_ids(video_id, len(data)))
        except ValueError as exc:  # deleted between the lookup and the read
            raise NotFound(f"video {video_id} not found", "VIDEO_NOT_FOUND") from exc
        return dataclasses.replace(data, vectors=vectors)

    def vectors_of(self, collection_id: int) -> int:
        return self._ci(collection_id).vector_count()

    def video_vectors(self, video_id: int) -> np.ndarray:
        """Read back from the live index (HnswIndex.get_vectors: the stored copies, no second
        store): one row per sample, in sample order. NotFound when the video is not active."""
        return self._read_vectors(video_id, twins=False)

    def video_twins(self, video_id: int) -> np.ndarray | None:
        return self._read_vectors(video_id, twins=True)

    def _read_vectors(self, video_id: int, twins: bool) -> np.ndarray | None:
        """A video's sample vectors (its index vectors 0..n-1) or their coarse twins (n..2n-1;
        None when it was indexed without them)."""
        v, ts = self.video_entry(video_id)
        ci = self._ci(v.collection_id)
        n = len(ts)
        if twins and ci.videos.get(video_id, 0) < 2 * n:  # indexed without twins
            return None
        try:
            return ci.live.get_vectors(sample_ids(video_id, n, first=n if twins else 0))
        except ValueError as exc:  # deleted (or not yet indexed) between the lookup and the read
            raise NotFound(f"video {video_id} not found", "VIDEO_NOT_FOUND") from exc

    # -- jobs -----------------------------------------------------------------------------------
    def create_job(self, job: JobRecord) -> JobRecord:
        return self.catalog.create_job(job)

    def update_job(self, job: JobRecord) -> None:
        self.catalog.update_job(job)

    def get_job(self, job_id: str) -> JobRecord:
        return self.catalog.get_job(job_id)

    def job_for_request(self, request_id: str) -> JobRecord | None:
        return self.catalog.job_for_request(request_id)

    def unfinished_jobs(self) -> list[JobRecord]:
        return self.catalog.unfinished_jobs()
