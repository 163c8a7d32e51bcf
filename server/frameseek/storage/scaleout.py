"""Storage for many stateless frameseek servers: the catalog in PostgreSQL (postgres.py), vectors
in Milvus (milvus.py). Nothing a search or write depends on lives only in one server's memory.

Commit protocol of an ingest (any server):
  1. PostgreSQL: insert the video row 'pending' (sample timestamps, labels, this server's name and
     a lease of pending_lease_s);
  2. Milvus: insert the video's vectors (acknowledged = durable in Milvus' log; consistency Strong
     makes them visible to every later search on any server);
  3. PostgreSQL: mark the row 'active' if it is still 'pending' <- the commit point; only now is
     the ingest acknowledged.
A crash (of the server, Milvus or PostgreSQL) before 3 leaves a pending row and maybe vectors:
searches never return them (below), and a sweep removes them: at start a server sweeps its own
pending rows (its ingests died with it) and every row whose lease ran out (another server's), the
vectors first, then the rows; it repeats on the periodic snapshot timer. A sweep first marks the
rows 'deleting', so an ingest that outlived its lease cannot commit after (activate is conditional).

Delete: the row is marked 'deleting' (commit point), the vectors are deleted in Milvus, the row is
dropped; a failure after the commit point leaves a 'deleting' row that the next sweep finishes
(deletes in Milvus are idempotent).

What searches see: every kNN result (Milvus) is checked against the catalog's active set in the
same call (one indexed PostgreSQL query per search), so a pending, swept or deleted video is never
returned, whichever server committed what. Per-process state is only a read-through cache of
immutable facts: each active video's record and sample timestamps, published to the
observers (the native SearchDirectory that maps hits to videos and timestamps) the first time a
search meets the video; a video found no longer active is unpublished. No cache can go stale in a
way a caller sees: liveness is never cached.
"""

from __future__ import annotations

import collections
import dataclasses
import threading
from collections.abc import Sequence

import numpy as np
import structlog

from ..ids import NO_ID, SAMPLE_BITS
from .base import (
    TUNED_EF,
    Aborted,
    CollectionRecord,
    FailedPrecondition,
    InvalidArgument,
    JobRecord,
    ModalityData,
    NewVideo,
    NotFound,
    Unavailable,
    VideoQuery,
    VideoRecord,
    check_modalities,
    checked_videos,
)
from .milvus import MilvusVectors
from .postgres import PostgresCatalog

log = structlog.get_logger("frameseek.storage.scaleout")

_BITS = np.uint64(SAMPLE_BITS)
# Milvus's HNSW (knowhere's hnswlib) gives layer 0 2 * M link slots and takes no other count.
MILVUS_LAYER0_LINKS_PER_M = 2


class _MilvusKnn:
    """A collection's Milvus kNN as the native SearchDirectory's KnnSource (_native.pyi:
    SearchDirectory.put_collection): the one vector search runs unchanged on its results."""

    def __init__(self, storage: ScaleOutStorage, rec: CollectionRecord):
        self.storage, self.collection_id = storage, rec.id
        self.dim, self.metric = rec.dimension, rec.metric

    def search(self, query, k, ef, groups):
        ids, dist = self.storage.search(self.collection_id, np.asarray(query).reshape(1, -1), k, ef=ef, groups=groups)
        return ids[0], dist[0]

    def search_groups(self, query, k, ef, groups):
        gids, ids, dist = self.storage.search_groups(
            self.collection_id, np.asarray(query).reshape(1, -1), k, ef=ef, groups=groups
        )
        return gids[0], ids[0], dist[0]


class ScaleOutStorage:
    """See the module docstring. Thread-safe; every method blocks on PostgreSQL and/or Milvus and
    raises Unavailable when one cannot be reached."""

    def __init__(
        self,
        catalog_url: str,
        milvus_uri: str,
        *,
        server_id: str,
        pending_lease_s: float = 900.0,
        timeout_s: float = 10.0,
        milvus_prefix: str = "frameseek_",
    ):
        self.catalog = PostgresCatalog(catalog_url, timeout_s=timeout_s)
        self.vectors = MilvusVectors(milvus_uri, timeout_s=timeout_s, prefix=milvus_prefix)
        self.people = self.catalog  # the people tables (Storage.people) live in the catalog
        self.server_id, self.pending_lease_s = server_id, pending_lease_s
        self._observers: list = []
        self._lock = threading.Lock()
        # what searches met so far: immutable (record, sample times), ~0.5 KB per video like the
        # embedded store's map; an entry goes when a search finds its video no longer active
        self._videos: dict[int, tuple[VideoRecord, np.ndarray]] = {}
        self._collections: dict[int, CollectionRecord] = {}  # published to the observers
        self._ensured: set[int] = set()  # collections whose Milvus collection this process made sure of
        self.recovery_report: list[dict] = []

    # -- observers ------------------------------------------------------------------------------
    def add_observer(self, observer) -> None:
        self._observers.append(observer)

    def _notify(self, event: str, *args) -> None:
        for o in self._observers:
            getattr(o, event)(*args)

    def live_collections(self) -> list[tuple[CollectionRecord, object]]:
        return [(rec, _MilvusKnn(self, rec)) for rec in self._known_collections()]

    def video_entries(self) -> list[tuple[VideoRecord, np.ndarray]]:
        """The videos cached so far (searches publish the others as they meet them)."""
        with self._lock:
            return list(self._videos.values())

    # -- lifecycle ------------------------------------------------------------------------------
    def open(self) -> list[dict]:
        self.catalog.open()
        for rec in self.catalog.all_collections():
            self._ensure(rec)
        report = {"collection": "", "swept": self.sweep(restarted=True), "problems": []}
        self.recovery_report = [report]
        log.info("storage_open", backend="milvus+postgresql", server=self.server_id, **report)
        return self.recovery_report

    def sweep(self, restarted: bool = False) -> dict:
        """Finish what crashed or failed writes left: pending rows past their lease (and, when
        this server has just `restarted`, its own pending rows: their ingests died with it) and
        'deleting' rows (vectors first, then rows), and Milvus collections whose frameseek
        collection is gone."""
        claimed = self.catalog.claim_unsettled(self.server_id if restarted else None)
        by_collection: dict[int, list[int]] = collections.defaultdict(list)
        for vid, cid in claimed:
            by_collection[cid].append(vid)
        existing = self.vectors.existing()
        for cid, vids in by_collection.items():
            for name in existing.get(cid, ()):
                self.vectors.delete_videos(name, vids)
            self.catalog.drop_rows(vids)
        live = {rec.id for rec in self.catalog.all_collections()}
        orphans = sorted(set(existing) - live)
        for cid in orphans:
            for name in existing[cid]:
                self.vectors.drop(name)
        if claimed or orphans:
            log.warning("swept_unsettled_writes", videos=[v for v, _ in claimed][:50], milvus_collections=orphans)
        return {"videos": len(claimed), "milvus_collections": len(orphans)}

    def snapshot(self, force: bool = True) -> None:
        """Nothing to snapshot (Milvus and PostgreSQL persist what they acknowledge): the periodic
        timer sweeps unsettled writes and asks Milvus to seal its in-memory rows into indexed
        segments (a search over unsealed rows is a scan)."""
        if force:
            try:
                self.sweep()
                for rec in self._known_collections():
                    for name in self._names(rec):
                        self.vectors.flush(name)
            except (Unavailable, NotFound) as exc:
                log.warning("sweep_failed", error=str(exc))

    def check(self) -> None:
        """Raise Unavailable unless both PostgreSQL and Milvus answer (the health check)."""
        self.catalog.ping()
        self.vectors.ping()

    def recovery_problems(self) -> list[str]:
        return []

    def storage_bytes(self) -> int:
        """The catalog database's size (PostgreSQL's pg_database_size) plus the rows Milvus reports
        holding for this deployment's collections (MilvusVectors.stored_bytes: a lower bound, as
        Milvus reports no on-disk size)."""
        total = self.catalog.database_bytes()
        for rec in self.catalog.all_collections():
            total += self.vectors.stored_bytes(self.vectors.name(rec.id), rec.dimension)
            for modality, spec in rec.modalities.items():
                if "dimension" in spec:
                    total += self.vectors.stored_bytes(self.vectors.name(rec.id, modality), int(spec["dimension"]))
        return total

    def close(self, snapshot: bool = True) -> None:
        self.vectors.close()
        self.catalog.close()

    # -- collections ----------------------------------------------------------------------------
    def _ensure(self, rec: CollectionRecord) -> None:
        """Its Milvus collections: frames, and one per modality with vectors (same HNSW settings)."""
        if rec.id not in self._ensured:
            self.vectors.ensure(self.vectors.name(rec.id), rec.dimension, rec.metric, rec.index)
            for modality, spec in rec.modalities.items():
                if "dimension" in spec:
                    self.vectors.ensure(
                        self.vectors.name(rec.id, modality), int(spec["dimension"]), spec["metric"], rec.index
                    )
            self._ensured.add(rec.id)

    def _names(self, rec: CollectionRecord) -> list[str]:
        """Every Milvus collection of a frameseek collection."""
        extra = [self.vectors.name(rec.id, m) for m, spec in rec.modalities.items() if "dimension" in spec]
        return [self.vectors.name(rec.id), *extra]

    def _known_collections(self) -> list[CollectionRecord]:
        with self._lock:
            return list(self._collections.values())

    def _publish(self, rec: CollectionRecord) -> CollectionRecord:
        """A collection this process has not seen yet (created here or on another server) goes to
        the observers before it is returned."""
        with self._lock:
            new = rec.id not in self._collections
            self._collections[rec.id] = rec
        if new:
            self._notify("collection_added", rec, _MilvusKnn(self, rec))
        return rec

    def _unpublish(self, collection_id: int) -> None:
        with self._lock:
            known = self._collections.pop(collection_id, None) is not None
            self._ensured.discard(collection_id)
        if known:
            self._notify("collection_removed", collection_id)

    def default_layer0_links(self, m: int) -> int:
        return MILVUS_LAYER0_LINKS_PER_M * m

    def create_collection(self, name: str, **kw) -> CollectionRecord:
        check_modalities(kw.get("modalities") or {})
        index = kw.get("index") or {}
        if index.get("layer0_links") and index["layer0_links"] != self.default_layer0_links(index["m"]):
            raise InvalidArgument(
                f"index.layer0_links: Milvus's HNSW gives every vector {MILVUS_LAYER0_LINKS_PER_M} * m links on its "
                "bottom layer; leave it 0 on the scale-out backend"
            )
        rec = self.catalog.create_collection(name, **kw)
        self._ensure(rec)  # if Milvus fails here, the first write or search makes it
        return self._publish(rec)

    def get_collection(self, name: str) -> CollectionRecord:
        return self._publish(self.catalog.get_collection(name))

    def save_tuned_ef(self, collection_id: int, tuned: dict) -> None:
        self.catalog.set_index_setting(collection_id, TUNED_EF, tuned)

    def collection_by_id(self, collection_id: int) -> CollectionRecord:
        try:
            return self._publish(self.catalog.collection_by_id(collection_id))
        except NotFound:
            self._unpublish(collection_id)  # deleted by another server
            raise

    def list_collections(self, after: str, limit: int) -> list[CollectionRecord]:
        return [self._publish(r) for r in self.catalog.list_collections(after, limit)]

    def delete_collection(self, name: str, force: bool) -> None:
        rec = self.catalog.get_collection(name)
        ids = self.catalog.delete_collection(rec.id, force)  # the commit point
        self._unpublish(rec.id)
        with self._lock:
            for v in ids:
                self._videos.pop(v, None)
        try:
            for milvus_name in self._names(rec):
                self.vectors.drop(milvus_name)
        except Unavailable as exc:  # committed: the next sweep drops the orphans
            log.warning("milvus_drop_deferred", collection=name, error=str(exc))

    def collection_counts(self, collection_id: int) -> tuple[int, int, float]:
        return self.catalog.collection_counts(collection_id)

    # -- videos ---------------------------------------------------------------------------------
    def add_video(
        self, collection_id: int, video: VideoRecord, timestamps, vectors, twins=None, *, extras=None
    ) -> VideoRecord:
        return self.add_videos(collection_id, [NewVideo(video, timestamps, vectors, twins, extras)])[0]

    def add_videos(self, collection_id: int, videos: Sequence[NewVideo]) -> list[VideoRecord]:
        """Several videos in one commit (Storage.add_videos), by the module's protocol: their
        pending rows in one PostgreSQL transaction, their vectors in one Milvus insert per index,
        one activating transaction; all or none. A crash before that leaves pending rows of this
        server with one lease, which the sweep removes like a half-done single ingest."""
        rec = self.collection_by_id(collection_id)
        checked = checked_videos(rec, videos)
        if not checked:
            return []
        self._ensure(rec)
        vids = self.catalog.insert_pending_many(
            rec.id, [(v, ts, len(vec), x) for v, ts, vec, x in checked], self.server_id, self.pending_lease_s
        )  # 1
        try:  # 2
            self.vectors.insert_many(
                self.vectors.name(rec.id), [(vid, vec, ts) for vid, (_, ts, vec, _) in zip(vids, checked)]
            )
            for modality in rec.modalities:
                batch = [
                    (vid, x[modality].vectors, x[modality].times)
                    for vid, (_, _, _, x) in zip(vids, checked)
                    if modality in x and x[modality].vectors is not None and len(x[modality])
                ]
                if batch:
                    self.vectors.insert_many(self.vectors.name(rec.id, modality), batch)
        except BaseException:
            self._undo_pending(rec, vids)
            raise
        try:
            active = self.catalog.activate_many(vids)  # 3: the commit point
        except Aborted:  # swept meanwhile: our vectors may have landed after the sweep deleted its own
            self._undo_pending(rec, vids)
            raise
        # Unavailable here is ambiguous (the commit may have happened): nothing is undone; a retry
        # finds the videos by their content hash, pending rows are swept
        for video, (_, timestamps, _, _) in zip(active, checked):
            self._remember(video, timestamps)
        return active

    def _undo_pending(self, rec: CollectionRecord, vids: list[int]) -> None:
        try:
            for name in self._names(rec):
                self.vectors.delete_videos(name, vids)
            self.catalog.forget_pending(vids)
        except Unavailable:  # the sweep finishes it (its lease runs out, or this server restarts)
            log.warning("pending_ingest_left_for_sweep", videos=vids[:50])

    def _remember(self, rec: VideoRecord, timestamps: np.ndarray) -> None:
        with self._lock:
            self._videos[rec.id] = (rec, timestamps)
        self._notify("video_added", rec, timestamps)

    def _forget(self, video_id: int) -> None:
        with self._lock:
            known = self._videos.pop(video_id, None) is not None
        if known:
            self._notify("video_removed", video_id)

    def find_video_by_hash(self, collection_id: int, sha256: str) -> VideoRecord | None:
        return self.catalog.find_by_hash(collection_id, sha256)

    def get_video(self, video_id: int) -> VideoRecord:
        """From the catalog (a video deleted through another server is gone here too)."""
        return self.catalog.get_video(video_id, ("active", "damaged"))

    def video_entry(self, video_id: int) -> tuple[VideoRecord, np.ndarray]:
        """(record, sample timestamps): the search paths' mapping of a hit whose liveness the
        search itself just checked; read through the cache."""
        with self._lock:
            hit = self._videos.get(video_id)
        if hit is not None:
            return hit
        found = self.catalog.video_entries([video_id])
        if not found:
            raise NotFound(f"video {video_id} not found", "VIDEO_NOT_FOUND")
        self._remember(*found[0])
        return found[0]

    def video_timestamps(self, video_id: int) -> np.ndarray:
        return self.video_entry(video_id)[1]

    def video_records(self, limit: int) -> list[VideoRecord]:
        return [v for v, _ in self.catalog.active_video_entries(limit)]

    def list_videos(self, query: VideoQuery, before_id: int | None, limit: int) -> tuple[list[VideoRecord], int]:
        return self.catalog.list_videos(query, before_id, limit)

    def video_ids(self, query: VideoQuery) -> np.ndarray:
        return self.catalog.video_ids(query)

    def video_ids_by_key(self, collection_id: int, keys: Sequence[str]) -> dict[str, list[int]]:
        return self.catalog.video_ids_by_key(collection_id, keys)

    def delete_video(self, video_id: int) -> None:
        v = self.catalog.mark_deleting(video_id)  # the commit point: no search returns it from here
        self._forget(video_id)
        try:
            for name in self._names(self.collection_by_id(v.collection_id)):
                self.vectors.delete_videos(name, [video_id])
            self.catalog.drop_rows([video_id])
        except (Unavailable, NotFound) as exc:  # committed: the next sweep finishes it
            log.warning("delete_finish_deferred", video=video_id, error=str(exc))

    # -- vectors --------------------------------------------------------------------------------
    def _live_only(self, ids: np.ndarray, dist: np.ndarray, groups: np.ndarray | None = None):
        """Drop the hits of videos that are not active now (pending, being deleted, deleted
        through any server), keeping each row's order; publish active videos met for the first
        time and unpublish cached ones found gone."""
        valid = ids != NO_ID
        vids = np.unique(ids[valid] >> _BITS)
        if vids.size == 0:
            return (ids, dist) if groups is None else (groups, ids, dist)
        active = self.catalog.active_of([int(v) for v in vids])
        with self._lock:
            unseen = [int(v) for v in vids if int(v) in active and int(v) not in self._videos]
            gone = [int(v) for v in vids if int(v) not in active and int(v) in self._videos]
        if unseen:
            for rec, ts in self.catalog.video_entries(unseen):
                self._remember(rec, ts)
        for v in gone:
            self._forget(v)
        keep = valid & np.isin(ids >> _BITS, np.fromiter(active, dtype=np.uint64, count=len(active)))
        out_ids = np.full_like(ids, NO_ID)
        out_dist = np.full_like(dist, np.inf)
        out_groups = None if groups is None else np.full_like(groups, NO_ID)
        for r in range(ids.shape[0]):
            cols = np.flatnonzero(keep[r])
            out_ids[r, : len(cols)] = ids[r, cols]
            out_dist[r, : len(cols)] = dist[r, cols]
            if groups is not None:
                out_groups[r, : len(cols)] = groups[r, cols]
        return (out_ids, out_dist) if groups is None else (out_groups, out_ids, out_dist)

    def _kNN(self, collection_id: int, modality: str, queries, k: int, ef: int | None, groups, by_video: bool):
        """kNN in the collection's Milvus collection of `modality` ("" = frames), live videos only:
        (ids, dist), or with by_video (videos, ids, dist) like search_groups."""
        with self._lock:
            rec = self._collections.get(collection_id)
        rec = rec or self.collection_by_id(collection_id)
        metric = rec.metric
        if modality:
            spec = rec.modalities.get(modality, {})
            if "dimension" not in spec:
                raise FailedPrecondition(
                    f"collection {rec.name!r} has no {modality} index (modalities are set when a collection is "
                    "created)",
                    "MODALITY_NOT_ENABLED",
                )
            metric = spec["metric"]
        self._ensure(rec)
        ef = ef or int(rec.index.get("ef_search") or 0)
        name = self.vectors.name(rec.id, modality)
        try:
            ids, dist = self.vectors.search(name, metric, queries, k, ef, groups, by_video)
        except NotFound:  # deleted through another server
            self._unpublish(collection_id)
            raise
        if not by_video:
            return self._live_only(ids, dist)
        return self._live_only(ids, dist, np.where(ids != NO_ID, ids >> _BITS, NO_ID).astype(np.uint64))

    def search(self, collection_id, queries, k, *, ef=None, groups=None):
        return self._kNN(collection_id, "", queries, k, ef, groups, False)

    def search_groups(self, collection_id, queries, k, *, ef=None, groups=None):
        return self._kNN(collection_id, "", queries, k, ef, groups, True)

    def search_extra(self, collection_id, modality, queries, k, *, ef=None, groups=None, per_video=False):
        return self._kNN(collection_id, modality, queries, k, ef, groups, per_video)

    def video_extra(self, video_id: int, modality: str) -> ModalityData | None:
        data = self.catalog.video_extra(video_id, modality)
        if data is None or not len(data):
            return data
        rec = self.collection_by_id(self.video_entry(video_id)[0].collection_id)
        if "dimension" not in rec.modalities.get(modality, {}):
            return data
        stored = self.vectors.vectors(self.vectors.name(rec.id, modality), video_id, len(data))
        if len(stored) < len(data):  # deleted meanwhile
            raise NotFound(f"video {video_id} not found", "VIDEO_NOT_FOUND")
        return dataclasses.replace(data, vectors=stored)

    def vectors_of(self, collection_id: int) -> int:
        return self.catalog.vector_count(collection_id)

    def unlinked_vectors(self, collection_id: int) -> int:
        return 0  # Milvus indexes on its own schedule and reports nothing pending here

    def _stored(self, video_id: int) -> tuple[np.ndarray, int]:
        v, ts = self.video_entry(video_id)
        stored = self.vectors.vectors(self.vectors.name(v.collection_id), video_id, 2 * len(ts))
        if len(stored) < len(ts):  # deleted meanwhile
            raise NotFound(f"video {video_id} not found", "VIDEO_NOT_FOUND")
        return stored, len(ts)

    def video_vectors(self, video_id: int) -> np.ndarray:
        stored, n = self._stored(video_id)
        return stored[:n]

    def video_twins(self, video_id: int) -> np.ndarray | None:
        stored, n = self._stored(video_id)
        return stored[n : 2 * n] if len(stored) >= 2 * n else None

    # -- jobs -----------------------------------------------------------------------------------
    def create_job(self, job: JobRecord) -> JobRecord:
        return self.catalog.create_job(job, self.server_id)

    def update_job(self, job: JobRecord) -> None:
        self.catalog.update_job(job)

    def get_job(self, job_id: str) -> JobRecord:
        return self.catalog.get_job(job_id)

    def job_for_request(self, request_id: str) -> JobRecord | None:
        return self.catalog.job_for_request(request_id)

    def unfinished_jobs(self) -> list[JobRecord]:
        """This server's: its spooled uploads are on its own disk."""
        return self.catalog.unfinished_jobs(self.server_id)
