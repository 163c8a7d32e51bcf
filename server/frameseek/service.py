"""The service layer: all of frameseek's business logic, independent of gRPC.

The servicer (servicer.py) only translates protocol messages to calls on `FrameSeekService` and
records/errors back. Blocking work never runs on the event loop: decode + embed run in a bounded
ingest pool, native searches (which release the GIL) in a search pool, catalog writes in threads.
"""
from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import math
import os
import re
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Sequence

import grpc
import numpy as np
import structlog

from . import __version__, matching, metrics
from .config import Settings
from .errors import ServiceError, disk_full, exhausted, from_media_error, invalid, not_found, unavailable
from .storage import (MAX_SAMPLES_PER_VIDEO, SAMPLE_BITS, AlreadyExists, CollectionRecord, EmbeddedStorage,
                      FailedPrecondition, InvalidArgument, JobRecord, JobState, NotFound, ResourceExhausted, Storage,
                      StorageError, VideoQuery, VideoRecord, split_sample_ids)
from .watchdog import Watchdog

log = structlog.get_logger("frameseek.service")

NO_ID = np.uint64(2**64 - 1)
COLLECTION_ID_RE = re.compile(r"^[a-z][a-z0-9-]{0,62}$")
LABEL_KEY_RE = re.compile(r"^[a-z0-9_.-]{1,63}$")
DEFAULT_COLLECTION = "default"
MAX_K = 1000
#: SearchByVideo re-places (matching.refine_alignment: tens of ms for a minute-long query) at
#: most this many of the best candidates; a request with a very low min_score and a large k
#: gets the aligner's placement for the rest instead of k re-alignments.
MAX_REFINED_MATCHES = 20
MAX_PAGE = 1000
DEFAULT_PAGE = 50


@dataclasses.dataclass
class Hit:
    video: VideoRecord
    score: float
    matches: list[tuple[float, float]]  # (timestamp s, score)


@dataclasses.dataclass
class Segment:
    query_start: float
    query_end: float
    ref_start: float
    ref_end: float
    score: float


@dataclasses.dataclass
class CopyMatch:
    video: VideoRecord
    score: float
    query_coverage: float
    reference_coverage: float
    offset: float
    speed: float
    segments: list[Segment]


@dataclasses.dataclass
class VideoSearchResult:
    matches: list[CopyMatch]
    query_duration: float
    query_samples: int
    model: str


@dataclasses.dataclass
class IngestResult:
    job: JobRecord
    video: VideoRecord | None
    already_exists: bool = False
    copies: list[CopyMatch] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class IngestRequest:
    """What an ingest carries besides the bytes (mirrors IngestMetadata)."""

    parent: str = ""
    external_key: str = ""
    labels: dict = dataclasses.field(default_factory=dict)
    request_id: str = ""
    filename: str = ""
    server_path: str = ""
    size_bytes: int = 0
    duplicate_policy: str = "ALLOW"  # ALLOW | REPORT | REJECT
    duplicate_threshold: float = 0.0
    return_job: bool = False


@dataclasses.dataclass
class SearchOptions:
    k: int = 10
    min_score: float = -math.inf
    max_matches_per_video: int = 1
    ef: int = 0
    labels: dict = dataclasses.field(default_factory=dict)
    videos: list[str] = dataclasses.field(default_factory=list)
    exclude_videos: list[str] = dataclasses.field(default_factory=list)


def _storage_error(exc: StorageError) -> ServiceError:
    code = {NotFound: grpc.StatusCode.NOT_FOUND, AlreadyExists: grpc.StatusCode.ALREADY_EXISTS,
            FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION, InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
            ResourceExhausted: grpc.StatusCode.RESOURCE_EXHAUSTED}.get(type(exc), grpc.StatusCode.INTERNAL)
    return ServiceError(code, exc.reason, str(exc))


def collection_name(rec: CollectionRecord) -> str:
    return f"collections/{rec.name}"


def parse_collection(name: str) -> str:
    """'collections/{c}' (or '' for the default) -> collection id."""
    if not name:
        return DEFAULT_COLLECTION
    parts = name.split("/")
    if len(parts) != 2 or parts[0] != "collections" or not parts[1]:
        raise invalid(f"malformed collection name {name!r}; expected 'collections/{{collection}}'",
                      field="parent")
    return parts[1]


def parse_video(name: str) -> tuple[str, int]:
    parts = name.split("/")
    if len(parts) != 4 or parts[0] != "collections" or parts[2] != "videos" or not parts[3].isdigit():
        raise invalid(f"malformed video name {name!r}; expected 'collections/{{collection}}/videos/{{id}}'",
                      field="name")
    return parts[1], int(parts[3])


def parse_job(name: str) -> str:
    parts = name.split("/")
    if len(parts) != 2 or parts[0] != "ingestJobs" or not parts[1]:
        raise invalid(f"malformed job name {name!r}; expected 'ingestJobs/{{ingest_job}}'", field="name")
    return parts[1]


def _check_labels(labels: dict) -> dict:
    if len(labels) > 64:
        raise invalid("at most 64 labels", field="labels")
    for k, v in labels.items():
        if not LABEL_KEY_RE.match(k):
            raise invalid(f"label key {k!r} must match [a-z0-9_.-]{{1,63}}", field="labels")
        if len(v.encode()) > 256:
            raise invalid(f"label {k!r}: value longer than 256 bytes", field="labels")
    return dict(labels)


class _JobWatchers:
    """Wakes WatchIngestJob streams when a job changes (jobs are updated from worker threads)."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._events: dict[str, set[asyncio.Event]] = {}

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def subscribe(self, job_id: str) -> asyncio.Event:
        ev = asyncio.Event()
        self._events.setdefault(job_id, set()).add(ev)
        return ev

    def unsubscribe(self, job_id: str, ev: asyncio.Event) -> None:
        s = self._events.get(job_id)
        if s:
            s.discard(ev)
            if not s:
                del self._events[job_id]

    def notify(self, job_id: str) -> None:
        if self._loop is None:
            return

        def _set() -> None:
            for ev in self._events.get(job_id, ()):
                ev.set()

        try:
            self._loop.call_soon_threadsafe(_set)
        except RuntimeError:  # loop closed during shutdown
            pass


class FrameSeekService:
    """Business logic. Create, then `await start()`; calls before the storage is loaded raise
    UNAVAILABLE (reason NOT_READY)."""

    def __init__(self, settings: Settings, storage: Storage | None = None, embedder: Any = None):
        self.settings = settings
        # a search replica (`serve --workers N`) reads the primary's data dir and never writes
        self.replica = settings.role == "replica"
        if storage is None and self.replica:
            from .storage.replica import ReplicaStorage

            storage = ReplicaStorage(settings.data_dir)
        self.storage: Any = storage or EmbeddedStorage(settings.data_dir,
                                                      snapshot_every=settings.snapshot_every_vectors)
        self.embedder = embedder
        self.embedder_error: str = ""
        self.ready = False
        self.closing = False
        self.started_at = time.time()
        self._ingest_pool = ThreadPoolExecutor(settings.ingest_workers, thread_name_prefix="ingest")
        self._query_pool = ThreadPoolExecutor(max(1, settings.ingest_workers), thread_name_prefix="query-embed")
        self._search_pool = ThreadPoolExecutor(settings.search_threads, thread_name_prefix="search")
        self._io_pool = ThreadPoolExecutor(2, thread_name_prefix="catalog")
        self._pending_ingests = 0
        self._searches = 0
        self._coll_cache: dict[str, CollectionRecord] = {}
        self._parsed: dict[str, str] = {}  # resource name -> collection id (parse_collection memo)
        self._knn_stats: dict[int, tuple[float, int]] = {}  # see _knn_rarely_enough
        self._coll_names: dict[int, str] = {}  # collection ids are never reused
        self._watchers = _JobWatchers()
        self._tasks: set[asyncio.Task] = set()
        self._cancel = threading.Event()
        self._native = None
        self._watchdog = Watchdog(settings.stall_report_s) if settings.stall_report_s else None
        self.uploads_dir = os.path.join(os.path.abspath(settings.data_dir), "uploads")

    # -- lifecycle ------------------------------------------------------------------------------
    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._watchers.bind(loop)
        if self._watchdog is not None:
            self._watchdog.start()
            self._spawn(self._heartbeat())
        t0 = time.perf_counter()
        await loop.run_in_executor(self._io_pool, self._load)
        self.ready = True
        metrics.READY.set(1)
        log.info("service_ready", seconds=round(time.perf_counter() - t0, 3),
                 embedder=getattr(self.embedder, "name", None), embedder_error=self.embedder_error or None)
        if self.replica:  # snapshots and unfinished ingests belong to the primary
            return
        self._spawn(self._snapshot_loop())
        for job in await loop.run_in_executor(self._io_pool, self.storage.unfinished_jobs):
            self._resume_job(job)

    def _load(self) -> None:
        os.makedirs(self.uploads_dir, exist_ok=True)
        from frameseek import _native

        self._native = _native
        if self.embedder is None:
            try:
                from .embed import EmbedderSettings, load_embedder

                self.embedder = load_embedder(EmbedderSettings(model=self.settings.model,
                                                               backend=self.settings.embed_backend,
                                                               threads=self.settings.embed_threads))
            except Exception as exc:  # media endpoints answer FAILED_PRECONDITION, vectors still work
                self.embedder_error = f"{type(exc).__name__}: {exc}"
                log.warning("embedder_unavailable", error=self.embedder_error)
        self.storage.open()
        try:
            self.storage.get_collection(DEFAULT_COLLECTION)
        except NotFound:
            if self.replica:  # the primary creates it before it starts replicas
                raise
            self._create_collection_sync(DEFAULT_COLLECTION, "", "", "ip", {}, {}, is_default=True)
        self._update_index_gauges()

    async def close(self) -> None:
        """Stop background work and flush storage (snapshot). In-flight RPCs are drained by the server."""
        self.closing = True
        self._cancel.set()
        if self._watchdog is not None:
            self._watchdog.stop()
        for t in list(self._tasks):
            t.cancel()
        for pool in (self._ingest_pool, self._query_pool, self._search_pool):
            pool.shutdown(wait=True, cancel_futures=True)
        if self.ready:
            await asyncio.get_running_loop().run_in_executor(self._io_pool, self.storage.close)
        self._io_pool.shutdown(wait=True)
        metrics.READY.set(0)

    def _spawn(self, coro) -> asyncio.Task:
        t = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(t)
        t.add_done_callback(self._tasks.discard)
        return t

    async def _heartbeat(self) -> None:
        """The event loop's sign of life for the watchdog (a loop blocked by a call that should
        have gone to a thread shows up as a stall of "event_loop")."""
        while True:
            self._watchdog.beat("event_loop")
            await asyncio.sleep(self._watchdog.period_s)

    def _beat(self, job: JobRecord) -> None:
        if self._watchdog is not None:
            self._watchdog.beat(f"ingest {job.id}")

    async def _snapshot_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.settings.snapshot_interval_s)
            try:
                await loop.run_in_executor(self._io_pool, lambda: self.storage.snapshot(force=False) or
                                           self.storage.snapshot(force=True))
            except Exception:
                log.exception("periodic_snapshot_failed")

    def check_ready(self) -> None:
        if self.closing:
            raise unavailable("server is shutting down", "NOT_READY")
        if not self.ready:
            raise unavailable("server is loading its index; retry shortly", "NOT_READY")

    async def _io(self, fn: Callable, *args):
        try:
            return await asyncio.get_running_loop().run_in_executor(self._io_pool, fn, *args)
        except StorageError as exc:
            raise _storage_error(exc) from None

    def _update_index_gauges(self) -> None:
        for rec in self.storage.list_collections("", MAX_PAGE):
            self._set_index_gauge(rec.id)

    def _set_index_gauge(self, collection_id: int) -> None:
        """The index's own count (a video's vectors are its samples plus their coarse twins, if
        any), not a running sum; a collection deleted meanwhile is skipped."""
        try:
            metrics.INDEX_VECTORS.labels(self._coll_name(collection_id)).set(self.storage.vectors_of(collection_id))
        except Exception:
            pass

    # -- collections ----------------------------------------------------------------------------
    def _create_collection_sync(self, cid: str, description: str, model: str, metric: str, sampling: dict,
                                index: dict, is_default: bool = False) -> CollectionRecord:
        model = model or self.settings.model
        if model != self.settings.model:
            raise invalid(f"unknown model {model!r}; this server runs {self.settings.model!r}", field="model")
        dim = int(self.embedder.dim) if self.embedder is not None else self.settings.embedding_dim
        fps = float(sampling.get("fps") or self.settings.default_fps)
        if not 0 < fps <= 30:
            raise invalid("sampling.fps must be in (0, 30]", field="sampling.fps")
        dedup = float(sampling.get("dedup_threshold") or 0.0)
        if not 0 <= dedup <= 1:
            raise invalid("sampling.dedup_threshold must be in [0, 1]", field="sampling.dedup_threshold")
        samp = {"fps": fps, "keep_blank_frames": bool(sampling.get("keep_blank_frames", False)),
                "dedup_threshold": dedup, "keyframes_only": bool(sampling.get("keyframes_only", False))}
        idx = {"m": int(index.get("m") or self.settings.hnsw_m),
               "ef_construction": int(index.get("ef_construction") or self.settings.hnsw_ef_construction),
               "ef_search": int(index.get("ef_search") or self.settings.default_ef)}
        if not 4 <= idx["m"] <= 128 or not 8 <= idx["ef_construction"] <= 4096 or not 1 <= idx["ef_search"] <= 4096:
            raise invalid("index settings out of range (m 4..128, ef_construction 8..4096, ef_search 1..4096)",
                          field="index")
        return self.storage.create_collection(cid, model=model, dimension=dim, metric=metric, sampling=samp,
                                              index=idx, description=description, is_default=is_default)

    async def create_collection(self, cid: str, description: str = "", model: str = "", metric: str = "ip",
                                sampling: dict | None = None, index: dict | None = None) -> CollectionRecord:
        self.check_ready()
        if not COLLECTION_ID_RE.match(cid or ""):
            raise invalid(f"collection_id {cid!r} must match [a-z][a-z0-9-]{{0,62}}", field="collection_id")
        if len(description) > 4096:
            raise invalid("description longer than 4096 characters", field="description")
        return await self._io(self._create_collection_sync, cid, description, model, metric, sampling or {},
                              index or {})

    async def collection(self, name: str) -> CollectionRecord:
        """Resolve 'collections/{c}' (or '' = default) to its record (cached; collections are immutable)."""
        rec = self._collection_now(name)
        if rec is None:
            if self.replica:
                await self._fresh()
            cid = parse_collection(name)
            rec = self._coll_cache.get(cid)
            if rec is None:
                rec = await self._io(self.storage.get_collection, cid)
                self._coll_cache[cid] = rec
        return rec

    def _collection_now(self, name: str) -> CollectionRecord | None:
        """collection() without leaving the event loop: the cached record when the replica is up to
        date (one `PRAGMA data_version`) and the name was resolved before; None when it needs I/O
        (catch up with the primary, or a catalog lookup). Raises as collection() does."""
        self.check_ready()
        if self.replica and self.storage.changed():
            return None
        if not name:  # the default collection, the common case
            return self._coll_cache.get(DEFAULT_COLLECTION)
        cid = self._parsed.get(name)
        if cid is None:
            cid = parse_collection(name)
            if len(self._parsed) < 10_000:
                self._parsed[name] = cid
        return self._coll_cache.get(cid)

    async def _fresh(self) -> None:
        """Replica: catch up with the primary's commits (deletes, new videos and collections) before
        a read. One SQLite pragma when nothing changed; see storage/replica.py."""
        if self.storage.changed():
            await self._io(self.storage.sync)
            live = self.storage._colls
            for name, rec in list(self._coll_cache.items()):
                if rec.id not in live:
                    self._coll_cache.pop(name, None)

    async def collection_counts(self, rec: CollectionRecord) -> tuple[int, int, float]:
        return await self._io(self.storage.collection_counts, rec.id)

    async def list_collections(self, page_size: int, page_token: str) -> tuple[list[CollectionRecord], str]:
        self.check_ready()
        size = _page_size(page_size)
        after = _decode_token(page_token, "c")
        recs = await self._io(self.storage.list_collections, after, size + 1)
        nxt = _encode_token("c", recs[size - 1].name) if len(recs) > size else ""
        return recs[:size], nxt

    async def delete_collection(self, name: str, force: bool) -> None:
        rec = await self.collection(name)
        if rec.is_default:
            raise ServiceError(grpc.StatusCode.FAILED_PRECONDITION, "DEFAULT_COLLECTION",
                               "the default collection cannot be deleted")
        await self._io(self.storage.delete_collection, rec.name, force)
        self._coll_cache.pop(rec.name, None)
        try:
            metrics.INDEX_VECTORS.remove(rec.name)
        except KeyError:
            pass

    # -- videos ---------------------------------------------------------------------------------
    async def get_video(self, name: str) -> VideoRecord:
        self.check_ready()
        cname, vid = parse_video(name)
        rec = await self.collection(f"collections/{cname}")
        v = await self._io(self.storage.get_video, vid)
        if v.collection_id != rec.id:
            raise not_found(f"video {name} not found", "VIDEO_NOT_FOUND")
        return v

    def video_records(self, limit: int) -> list[VideoRecord]:
        """Active videos (up to `limit`), for the protocol layer to warm its caches at start."""
        return self.storage.video_records(limit)

    def video_name(self, v: VideoRecord) -> str:
        return f"collections/{self._coll_name(v.collection_id)}/videos/{v.id}"

    def _coll_name(self, collection_id: int) -> str:
        name = self._coll_names.get(collection_id)
        if name is None:
            name = self._coll_names[collection_id] = self.storage.collection_by_id(collection_id).name
        return name

    async def list_videos(self, parent: str, page_size: int, page_token: str, labels: dict | None = None,
                          content_sha256: str = "", external_key: str = "") -> tuple[list[VideoRecord], str, int]:
        self.check_ready()
        coll_id = None if parent == "collections/-" else (await self.collection(parent)).id
        size = _page_size(page_size)
        before = _decode_token(page_token, "v")
        q = VideoQuery(collection_id=coll_id, labels=labels or None, content_sha256=content_sha256.lower(),
                       external_key=external_key)
        vids, total = await self._io(self.storage.list_videos, q, int(before) if before else None, size + 1)
        nxt = _encode_token("v", str(vids[size - 1].id)) if len(vids) > size else ""
        for v in vids:  # warm the name cache off the loop's critical path
            self._coll_name(v.collection_id)
        return vids[:size], nxt, total

    async def delete_video(self, name: str) -> None:
        v = await self.get_video(name)
        await self._io(self.storage.delete_video, v.id)
        await self._io(self._set_index_gauge, v.collection_id)  # off the loop: it takes the index lock
        log.info("video_deleted", video=name)

    # -- ingest ---------------------------------------------------------------------------------
    def _admit_ingest(self) -> None:
        if self._pending_ingests >= self.settings.max_pending_ingests:
            raise exhausted(f"{self._pending_ingests} ingests pending (limit {self.settings.max_pending_ingests}); "
                            "retry later", limit=self.settings.max_pending_ingests)

    def new_upload_path(self) -> str:
        return os.path.join(self.uploads_dir, f"{uuid.uuid4().hex}.part")

    def resolve_server_path(self, path: str) -> str:
        root = self.settings.ingest_path_root
        if not root:
            raise ServiceError(grpc.StatusCode.PERMISSION_DENIED, "PATH_NOT_ALLOWED",
                               "server_path is disabled on this server (set ingest_path_root)")
        real_root = os.path.realpath(root)
        real = os.path.realpath(os.path.join(real_root, path))
        if os.path.commonpath([real, real_root]) != real_root:
            raise ServiceError(grpc.StatusCode.PERMISSION_DENIED, "PATH_NOT_ALLOWED",
                               f"server_path {path!r} is outside the allowed directory")
        if not os.path.isfile(real):
            raise not_found(f"server_path {path!r} does not exist", "NOT_FOUND")
        return real

    async def prepare_ingest(self, req: IngestRequest) -> tuple[CollectionRecord, IngestResult | None]:
        """Validate metadata before any bytes are read; answer idempotent retries at once."""
        self.check_ready()
        rec = await self.collection(req.parent)
        _check_labels(req.labels)
        if req.size_bytes < 0 or req.size_bytes > self.settings.max_upload_bytes:
            raise exhausted(f"upload of {req.size_bytes} bytes exceeds the limit of {self.settings.max_upload_bytes}",
                            "MEDIA_TOO_LARGE", limit=self.settings.max_upload_bytes)
        if req.duplicate_policy not in ("ALLOW", "REPORT", "REJECT"):
            raise invalid(f"unknown duplicate_policy {req.duplicate_policy}", field="duplicate_policy")
        if not 0 <= req.duplicate_threshold <= 1:
            raise invalid("duplicate_threshold must be in [0, 1]", field="duplicate_threshold")
        if len(req.request_id) > 128 or len(req.external_key) > 1024:
            raise invalid("request_id (<=128) or external_key (<=1024) too long", field="request_id")
        if req.request_id:
            prev = await self._io(self.storage.job_for_request, req.request_id)
            if prev is not None:
                return rec, await self._result_of(prev, wait=not req.return_job)
        self._admit_ingest()
        return rec, None

    async def _result_of(self, job: JobRecord, wait: bool) -> IngestResult:
        """Result of an existing job (idempotent retry): wait for it unless return_job."""
        while wait and not job.state.terminal:
            ev = self._watchers.subscribe(job.id)
            try:
                await asyncio.wait_for(ev.wait(), timeout=1.0)
            except asyncio.TimeoutError:
                pass
            finally:
                self._watchers.unsubscribe(job.id, ev)
            job = await self._io(self.storage.get_job, job.id)
        if job.state is JobState.FAILED:
            raise ServiceError(_code_by_value(job.error_code), job.error_reason, job.error_message,
                               job=f"ingestJobs/{job.id}")
        video = await self._io(self.storage.get_video, job.video_id) if job.state is JobState.SUCCEEDED else None
        return IngestResult(job=job, video=video, already_exists=job.already_exists)

    async def ingest(self, rec: CollectionRecord, req: IngestRequest, path: str, sha256: str, size: int,
                     is_image: bool = False, owns_file: bool = True) -> IngestResult:
        """Index media stored at `path` (an upload spooled by the servicer, or a server path)."""
        if size == 0:
            _unlink(path if owns_file else None)
            raise invalid("the upload is empty (zero bytes)", "EMPTY_MEDIA")
        try:
            self._require_embedder(rec)
        except ServiceError:
            _unlink(path if owns_file else None)
            raise
        job = JobRecord(id=uuid.uuid4().hex, collection_id=rec.id, state=JobState.QUEUED, request_id=req.request_id)
        existing = await self._io(self.storage.find_video_by_hash, rec.id, sha256)
        if existing is not None:  # the same bytes: the same video, not indexed twice
            job.state, job.video_id, job.already_exists = JobState.SUCCEEDED, existing.id, True
            job.samples_done = job.samples_total = existing.sample_count
            await self._create_job(job)
            _unlink(path if owns_file else None)
            return IngestResult(job=job, video=existing, already_exists=True)
        try:
            await self._create_job(job)
        except ServiceError:  # a concurrent retry with the same request_id won the race
            _unlink(path if owns_file else None)
            prev = await self._io(self.storage.job_for_request, req.request_id)
            return await self._result_of(prev, wait=not req.return_job)
        if owns_file:  # keep the upload under the job's name so a restart can resume it
            spool = os.path.join(self.uploads_dir, f"{job.id}.media")
            os.replace(path, spool)
            try:
                _write_json(os.path.join(self.uploads_dir, f"{job.id}.json"),
                            {"req": dataclasses.asdict(req), "sha256": sha256, "size": size, "is_image": is_image})
            except OSError as exc:  # e.g. the disk is full: the job fails now, nothing is left behind
                _unlink(spool)
                err = disk_full(exc) or ServiceError(grpc.StatusCode.INTERNAL, "INTERNAL", f"spooling failed: {exc}")
                await self._io(self._fail_job, job, err)
                raise err from None
            path = spool
        task = self._spawn(self._run_ingest(rec, req, job, path, sha256, size, is_image, owns_file))
        if req.return_job:
            return IngestResult(job=job, video=None)
        return await asyncio.shield(task)

    async def _create_job(self, job: JobRecord) -> None:
        await self._io(self.storage.create_job, job)

    def _resume_job(self, job: JobRecord) -> None:
        """A job that was queued/running when the server stopped: run it again from its spooled upload."""
        meta_path = os.path.join(self.uploads_dir, f"{job.id}.json")
        media_path = os.path.join(self.uploads_dir, f"{job.id}.media")
        import json

        try:
            with open(meta_path) as f:
                meta = json.load(f)
            if not os.path.exists(media_path):
                raise FileNotFoundError(media_path)
        except (OSError, ValueError):  # gone, or cut short (e.g. the disk filled up while it was written)
            job.state, job.error_code, job.error_reason = JobState.FAILED, grpc.StatusCode.ABORTED.value[0], "INTERRUPTED"
            job.error_message = "the server stopped during this ingest and its upload is gone; upload again"
            self.storage.update_job(job)
            _unlink(media_path)
            _unlink(meta_path)
            return
        done = self.storage.find_video_by_hash(job.collection_id, meta["sha256"])
        if done is not None:  # the crash came after the commit, before the job update: indexed already
            job.state, job.video_id, job.samples_done = JobState.SUCCEEDED, done.id, done.sample_count
            job.samples_total, job.duration, job.media_seconds_done = done.sample_count, done.duration, done.duration
            self.storage.update_job(job)
            _unlink(media_path)
            _unlink(meta_path)
            return
        req = IngestRequest(**meta["req"])
        try:
            rec = self.storage.collection_by_id(job.collection_id)
        except NotFound:
            self._fail_job(job, not_found("collection was deleted", "COLLECTION_NOT_FOUND"))
            return
        self._pending_ingests += 1  # balanced in _run_ingest
        log.info("ingest_resumed", job=job.id)
        self._spawn(self._run_ingest(rec, req, job, media_path, meta["sha256"], meta["size"], meta["is_image"],
                                     True, counted=True))

    def _fail_job(self, job: JobRecord, err: ServiceError) -> None:
        job.state, job.error_code, job.error_reason, job.error_message = (
            JobState.FAILED, err.code.value[0], err.reason, err.message)
        try:
            self.storage.update_job(job)
        except StorageError as exc:  # disk full: the caller still gets `err`; the job is retried at start
            log.warning("job_update_failed", job=job.id, error=str(exc))
        self._watchers.notify(job.id)

    async def _run_ingest(self, rec: CollectionRecord, req: IngestRequest, job: JobRecord, path: str, sha256: str,
                          size: int, is_image: bool, owns_file: bool, counted: bool = False) -> IngestResult:
        if not counted:
            self._pending_ingests += 1
        metrics.ACTIVE_INGESTS.set(self._pending_ingests)
        loop = asyncio.get_running_loop()
        try:
            result = await loop.run_in_executor(
                self._ingest_pool, self._ingest_sync, rec, req, job, path, sha256, size, is_image)
            return result
        except ServiceError as exc:
            await loop.run_in_executor(self._io_pool, self._fail_job, job, exc)
            raise
        except StorageError as exc:  # e.g. disk full while updating the job
            err = _storage_error(exc)
            await loop.run_in_executor(self._io_pool, self._fail_job, job, err)
            raise err from None
        except Exception as exc:
            log.exception("ingest_failed", job=job.id)
            err = ServiceError(grpc.StatusCode.INTERNAL, "INTERNAL", f"ingest failed: {type(exc).__name__}: {exc}")
            await loop.run_in_executor(self._io_pool, self._fail_job, job, err)
            raise err from None
        finally:
            if self._watchdog is not None:
                self._watchdog.done(f"ingest {job.id}")
            self._pending_ingests -= 1
            metrics.ACTIVE_INGESTS.set(self._pending_ingests)
            if owns_file:
                _unlink(path)
                _unlink(os.path.join(self.uploads_dir, f"{job.id}.json"))

    def _sampling(self, rec: CollectionRecord, fps: float | None = None, query: bool = False,
                  max_samples: int | None = None):
        from .pipeline import SamplingSettings

        s = rec.sampling
        dedup = s.get("dedup_threshold") or None
        if not query and not max_samples:
            # a video holds at most MAX_SAMPLES_PER_VIDEO index vectors, its coarse twins included:
            # a long video at a high rate is sampled on a sparser grid rather than refused once embedded
            max_samples = MAX_SAMPLES_PER_VIDEO // (2 if self.settings.index_coarse_scale else 1)
        return SamplingSettings(fps=fps or float(s.get("fps") or self.settings.default_fps),
                                max_samples=max_samples or None,
                                drop_blank=not s.get("keep_blank_frames", False),
                                dedup_threshold=None if query else dedup,
                                keyframes_only=False if query else bool(s.get("keyframes_only", False)),
                                flip=query,  # queries also search their mirror image (flipped copies)
                                # and a coarse view of every frame (heavily degraded copies)
                                # (SearchByVideo's coarse view; for ingest the coarse twins of the index)
                                coarse_scale=(self.settings.query_coarse_scale if query
                                              else self.settings.index_coarse_scale) or None,
                                deblock_sigma=(self.settings.query_deblock_sigma or None) if query else None)

    def _limits(self):
        from .media import MediaLimits

        return MediaLimits(max_width=self.settings.max_width, max_height=self.settings.max_height,
                           max_duration_s=self.settings.max_video_seconds,
                           decode_timeout_s=self.settings.decode_timeout_s)

    def _embed(self, source, sampling, progress=None):
        from .media import MediaError
        from .pipeline import embed_media

        try:
            return embed_media(source, self.embedder, sampling, progress=progress, cancel=self._cancel,
                               limits=self._limits())
        except MediaError as exc:
            raise from_media_error(exc) from None

    def _ingest_sync(self, rec: CollectionRecord, req: IngestRequest, job: JobRecord, path: str, sha256: str,
                     size: int, is_image: bool) -> IngestResult:
        t0 = time.perf_counter()
        self._beat(job)  # from here on the watchdog expects progress (a queued job is not stalled)
        job.state = JobState.RUNNING
        self.storage.update_job(job)
        self._watchers.notify(job.id)
        last = [0.0]

        def progress(done: int, total: int | None) -> None:
            self._beat(job)
            now = time.perf_counter()
            job.samples_done, job.samples_total = done, total or 0
            if now - last[0] >= 0.5:  # throttle catalog writes
                last[0] = now
                self.storage.update_job(job)
                self._watchers.notify(job.id)

        media = self._embed(path, self._sampling(rec), progress)
        if is_image != bool(media.is_image):
            kind = "an image" if media.is_image else "a video"
            raise invalid(f"the upload is {kind}; use {'IngestImage' if media.is_image else 'IngestVideo'}",
                          "CORRUPT_MEDIA" if is_image else "NO_VIDEO_STREAM")
        if len(media) == 0:
            raise invalid("no informative frames (all samples were blank)", "EMPTY_MEDIA")
        copies: list[CopyMatch] = []
        if req.duplicate_policy in ("REPORT", "REJECT"):
            thr = req.duplicate_threshold or self.settings.copy_threshold
            # the upload's coarse twins stand in for a query's coarse view
            copies = [c for c in self._video_matches(rec, media.timestamps, [media.vectors, media.coarse_vectors],
                                                     10, None, None) if c.score >= thr]
            if copies and req.duplicate_policy == "REJECT":
                best = copies[0]
                raise ServiceError(grpc.StatusCode.ALREADY_EXISTS, "DUPLICATE_CONTENT",
                                   f"the upload copies {self.video_name(best.video)} (score {best.score:.2f})",
                                   video=self.video_name(best.video), score=f"{best.score:.4f}")
        elapsed = time.perf_counter() - t0
        realtime = (media.duration / elapsed) if media.duration and elapsed > 0 else 0.0
        v = VideoRecord(id=0, collection_id=rec.id, kind="image" if media.is_image else "video",
                        duration=float(media.duration), width=int(media.width), height=int(media.height),
                        sample_count=len(media), size_bytes=int(size), content_sha256=sha256,
                        external_key=req.external_key, labels=dict(req.labels),
                        filename=req.filename or os.path.basename(req.server_path), model=rec.model,
                        realtime_factor=realtime)
        self._beat(job)
        try:
            video = self.storage.add_video(rec.id, v, media.timestamps, media.vectors, twins=media.coarse_vectors)
        except StorageError as exc:
            raise _storage_error(exc) from None
        job.state, job.video_id = JobState.SUCCEEDED, video.id
        job.samples_done = job.samples_total = len(media)
        job.duration = job.media_seconds_done = float(media.duration)
        self.storage.update_job(job)
        self._watchers.notify(job.id)
        self._set_index_gauge(rec.id)
        metrics.INGESTED.labels(v.kind).inc()
        if realtime:
            metrics.INGEST_REALTIME.observe(realtime)
        log.info("ingested", video=self.video_name(video), samples=len(media), duration=round(media.duration, 2),
                 seconds=round(elapsed, 2), realtime=round(realtime, 1), decoder=media.decoder)
        return IngestResult(job=job, video=video, copies=copies)

    def _require_embedder(self, rec: CollectionRecord) -> None:
        if self.embedder is None:
            raise ServiceError(grpc.StatusCode.FAILED_PRECONDITION, "MODEL_UNAVAILABLE",
                               f"the embedding model could not be loaded on this server ({self.embedder_error}); "
                               "only SearchByVector works")
        if rec.model != self.settings.model:
            raise ServiceError(grpc.StatusCode.FAILED_PRECONDITION, "MODEL_UNAVAILABLE",
                               f"collection uses model {rec.model!r}, this server runs {self.settings.model!r}")
        if int(self.embedder.dim) != rec.dimension:
            raise ServiceError(grpc.StatusCode.FAILED_PRECONDITION, "MODEL_UNAVAILABLE",
                               f"collection {rec.name!r} is {rec.dimension}-d, the loaded model {self.embedder.dim}-d")

    async def get_job(self, name: str) -> JobRecord:
        self.check_ready()
        return await self._io(self.storage.get_job, parse_job(name))

    async def watch_job(self, name: str):
        """Yield the job now and after every change, until it is terminal."""
        job = await self.get_job(name)
        ev = self._watchers.subscribe(job.id)
        try:
            while True:
                yield job
                if job.state.terminal:
                    return
                try:
                    await asyncio.wait_for(ev.wait(), timeout=2.0)
                except asyncio.TimeoutError:
                    pass
                ev.clear()
                job = await self._io(self.storage.get_job, job.id)
        finally:
            self._watchers.unsubscribe(job.id, ev)

    # -- search ---------------------------------------------------------------------------------
    async def _groups_filter(self, rec: CollectionRecord, opts: SearchOptions) -> tuple[np.ndarray | None, set[int]]:
        groups = None
        if opts.labels:
            _check_labels(opts.labels)
            groups = await self._io(self.storage.video_ids, VideoQuery(collection_id=rec.id, labels=opts.labels))
        if opts.videos:
            ids = []
            for n in opts.videos:
                c, v = parse_video(n)
                if c == rec.name:
                    ids.append(v)
            arr = np.asarray(ids, dtype=np.uint64)
            groups = arr if groups is None else np.intersect1d(groups, arr)
        # a name in another collection names another video (ids are not unique across
        # collections' names): it excludes nothing here, as it admits nothing in `videos`
        exclude = {v for c, v in map(parse_video, opts.exclude_videos) if c == rec.name}
        return groups, exclude

    def _validate_opts(self, opts: SearchOptions) -> None:
        if opts.k < 0 or opts.k > MAX_K:
            raise invalid(f"k must be in 1..{MAX_K}", field="k")
        opts.k = opts.k or 10
        if not 0 <= opts.max_matches_per_video <= 100:
            raise invalid("max_matches_per_video must be in 0..100", field="max_matches_per_video")
        opts.max_matches_per_video = opts.max_matches_per_video or 1
        if not 0 <= opts.ef <= 4096:
            raise invalid("ef must be in 0..4096", field="ef")
        if math.isnan(opts.min_score):
            raise invalid("min_score is NaN", field="min_score")

    def _admit_search(self) -> None:
        if self._searches >= self.settings.max_concurrent_searches:
            raise exhausted(f"too many searches in flight (limit {self.settings.max_concurrent_searches})",
                            limit=self.settings.max_concurrent_searches)

    def check_vector(self, rec: CollectionRecord, values) -> np.ndarray:
        vec = np.asarray(values, dtype=np.float32)
        if vec.shape != (rec.dimension,):
            raise invalid(f"vector has {vec.size} values; collection {rec.name!r} expects {rec.dimension}",
                          "DIMENSION_MISMATCH", expected=rec.dimension, got=vec.size)
        # One float64 dot product is the finiteness check too: squares of finite float32 values
        # cannot overflow float64, so the sum is non-finite exactly when a value is NaN or infinite.
        v64 = vec.astype(np.float64)
        ss = float(v64 @ v64)
        if not math.isfinite(ss):
            raise invalid("vector contains NaN or infinity", "NON_FINITE_VECTOR")
        if rec.metric == "ip":
            norm = math.sqrt(ss)
            if norm == 0:
                raise invalid("vector is all zeros", "INVALID_ARGUMENT", field="vector")
            vec = vec / norm
        return vec.reshape(1, -1)

    async def search_vector(self, parent: str, values, opts: SearchOptions) -> tuple[list[Hit], str]:
        rec = self._collection_now(parent) or await self.collection(parent)
        self._validate_opts(opts)
        q = self.check_vector(rec, values)
        if not (opts.labels or opts.videos or opts.exclude_videos) and self._inline():
            # the hot path (no filters, search on the loop): no coroutine hop at all
            self._admit_search()
            return self._search_sync(rec, q, opts, None, set()), rec.model
        return await self._search_vectors(rec, q, opts), rec.model

    async def search_image(self, parent: str, image: bytes, opts: SearchOptions) -> tuple[list[Hit], str]:
        rec = await self.collection(parent)
        self._validate_opts(opts)
        self._require_embedder(rec)
        if not image:
            raise invalid("image is empty (zero bytes)", "EMPTY_MEDIA")
        if len(image) > self.settings.max_image_bytes:
            raise exhausted(f"image larger than {self.settings.max_image_bytes} bytes", "MEDIA_TOO_LARGE")
        self._admit_search()
        self._searches += 1
        try:
            media = await asyncio.get_running_loop().run_in_executor(
                self._query_pool, self._embed, image, self._sampling(rec, query=True))
        finally:
            self._searches -= 1
        if len(media) == 0:
            raise invalid("the image has no informative content (blank)", "EMPTY_MEDIA")
        return await self._search_vectors(rec, media.vectors[:1], opts), rec.model

    async def _search_vectors(self, rec: CollectionRecord, q: np.ndarray, opts: SearchOptions) -> list[Hit]:
        groups, exclude = await self._groups_filter(rec, opts) if (opts.labels or opts.videos or
                                                                   opts.exclude_videos) else (None, set())
        if groups is not None and groups.size == 0:
            return []
        self._admit_search()
        if self._inline():
            return self._search_sync(rec, q, opts, groups, exclude)
        self._searches += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(
                self._search_pool, self._search_sync, rec, q, opts, groups, exclude)
        finally:
            self._searches -= 1

    def _inline(self) -> bool:
        """Run single-vector searches on the event loop? A single-vector HNSW query takes well under
        a millisecond: a thread hop costs about as much as the search (see Settings.search_inline)."""
        inline = self.settings.search_inline
        return inline if inline is not None else self.settings.workers > 1

    def _score(self, rec: CollectionRecord, dist: np.ndarray) -> np.ndarray:
        return (1.0 - dist) if rec.metric == "ip" else (1.0 - dist / 2.0)

    def _search_sync(self, rec, q, opts: SearchOptions, groups, exclude: set[int]) -> list[Hit]:
        """Top videos for one query vector.

        A plain frame kNN (k * matches * 4 frames, at least 32) grouped by video here; this is
        also the path for one timestamp per video, because the native group-by search costs
        3-5x a plain kNN on video data. The grouping is exact: a video absent from the kNN has
        every frame farther than the kNN's last frame, hence farther than any video kept. On video
        data the nearest frames can all belong to a few videos; only when that leaves fewer than
        k videos although the kNN came back full (and its last frame still passes min_score) does a
        group-by search (distinct videos) supply the missing ones. So the common case costs one
        plain kNN and the answer still has k videos. Where the fallback is the rule (a collection of
        long static shots), one-match searches go straight to the group search (_knn_rarely_enough).
        """
        k, m = opts.k + len(exclude), opts.max_matches_per_video
        ef = opts.ef or None
        hits: dict[int, Hit] = {}
        if m == 1 and self._knn_rarely_enough(rec.id):
            # on this collection the kNN almost never yields k videos (long static shots): going
            # straight to the group search saves the wasted kNN
            try:
                _, gids, gdist = self.storage.search_groups(rec.id, q, k, ef=ef, groups=groups)
            except StorageError as exc:
                raise _storage_error(exc) from None
            self._collect(rec, hits, gids[0], gdist[0], opts, exclude, m)
            return sorted(hits.values(), key=lambda h: -h.score)
        kf = min(max(k * m * 4, 32), 4096)
        try:
            ids, dist = self.storage.search(rec.id, q, kf, ef=ef, groups=groups)
        except StorageError as exc:
            raise _storage_error(exc) from None
        ids, dist = ids[0], dist[0]
        full = bool((ids != NO_ID).all())
        self._collect(rec, hits, ids, dist, opts, exclude, m)
        # frames beyond the kNN score at most its last frame: if that one fails min_score, so do they
        more = full and float(self._score(rec, dist[-1:])[0]) >= opts.min_score
        if m == 1:
            self._knn_outcome(rec.id, missed=len(hits) < opts.k and more)
        if len(hits) < opts.k and more:
            try:
                _, gids, gdist = self.storage.search_groups(rec.id, q, k, ef=ef, groups=groups)
            except StorageError as exc:
                raise _storage_error(exc) from None
            self._collect(rec, hits, gids[0], gdist[0], opts, exclude, m)
        out = sorted(hits.values(), key=lambda h: -h.score)
        for h in out:
            h.matches.sort(key=lambda x: -x[1])
        return out

    # How often the kNN-first path needs the group-search fallback, per collection (exponential
    # average over recent one-match-per-video searches). Above KNN_MISS_SKIP the kNN is skipped,
    # except every KNN_PROBE_EVERY-th search, which keeps the estimate current as the data changes.
    KNN_MISS_SKIP, KNN_PROBE_EVERY = 0.8, 32

    def _knn_rarely_enough(self, collection_id: int) -> bool:
        miss, n = self._knn_stats.get(collection_id, (0.0, 0))
        self._knn_stats[collection_id] = (miss, n + 1)
        return miss > self.KNN_MISS_SKIP and n % self.KNN_PROBE_EVERY != 0

    def _knn_outcome(self, collection_id: int, missed: bool) -> None:
        miss, n = self._knn_stats.get(collection_id, (0.0, 0))
        self._knn_stats[collection_id] = (0.9 * miss + 0.1 * float(missed), n)

    def _collect(self, rec, hits: dict, ids, dist, opts: SearchOptions, exclude: set[int], m: int) -> None:
        """Fold (sample id, distance) results, best first, into per-video hits (at most k videos,
        m timestamps each). Sample ids map to (video, timestamp) through the storage's in-memory
        video map, without SQL."""
        keep = (ids != NO_ID) & (self._score(rec, dist) >= opts.min_score)
        ids, scores = ids[keep], self._score(rec, dist[keep])
        vids, idx = split_sample_ids(ids)
        entry, k = self.storage.video_entry, opts.k
        if m == 1 and not hits:
            # one timestamp per video: only each video's first (best) frame matters, so keep those,
            # in order, before the Python loop (a kNN has ~4x as many frames as videos wanted)
            _, first = np.unique(vids, return_index=True)
            first.sort()
            vids, idx, scores = vids[first], idx[first], scores[first]
        for vid, i, s in zip(vids.tolist(), idx.tolist(), scores.tolist()):
            h = hits.get(vid)
            if h is None:
                if len(hits) >= k or vid in exclude:
                    continue
                try:
                    video, times = entry(vid)
                except NotFound:  # deleted between the search and now
                    continue
                h = hits[vid] = Hit(video=video, score=s, matches=[(float(times[i % len(times)]), s)])
                continue
            if len(h.matches) < m:
                times = self.storage.video_timestamps(vid)
                t = float(times[i % len(times)])  # a coarse twin (split_sample_ids) is its sample
                if all(t0 != t for t0, _ in h.matches):  # the group search may repeat a kNN frame
                    h.matches.append((t, s))
                    h.score = max(h.score, s)

    async def search_video(self, rec: CollectionRecord, path: str, k: int, min_score: float, frame_k: int,
                           labels: dict, videos: list[str], exclude: list[str], fps: float,
                           regions: str | None = None) -> VideoSearchResult:
        """`regions`: "off" | "auto" | "on" (SamplingSettings.regions); None = the server's
        `region_search` setting."""
        self._require_embedder(rec)
        regions = regions or self.settings.region_search
        if regions not in ("off", "auto", "on"):
            raise invalid("region_search must be OFF, AUTO or ON", field="region_search")
        if not 0 <= k <= MAX_K:
            raise invalid(f"k must be in 1..{MAX_K}", field="k")
        if not 0 <= frame_k <= 1024:
            raise invalid("frame_k must be in 0..1024", field="frame_k")
        if not 0 <= fps <= 30:
            raise invalid("fps must be in 0..30", field="fps")
        opts = SearchOptions(labels=labels, videos=videos, exclude_videos=exclude)
        groups, excl = await self._groups_filter(rec, opts)
        thr = self.settings.copy_threshold if min_score == 0 else min_score
        self._admit_search()
        self._searches += 1
        try:
            loop = asyncio.get_running_loop()
            # the server's rate is bounded by query_max_samples; a rate the caller asked for is not
            sampling = self._sampling(rec, fps or self.settings.query_fps, query=True,
                                      max_samples=None if fps else self.settings.query_max_samples)
            sampling.regions = regions
            media = await loop.run_in_executor(self._query_pool, self._embed, path, sampling)
            if len(media) == 0:
                raise invalid("the clip has no informative frames (all blank)", "EMPTY_MEDIA")
            if groups is not None and groups.size == 0:
                matches = []
            else:
                matches = await loop.run_in_executor(
                    self._search_pool, self._video_matches, rec, media.timestamps, media.views, k or 10,
                    groups, frame_k or self.settings.frame_k, media.sample_fps or sampling.fps, thr)
        finally:
            self._searches -= 1
        matches = [m for m in matches if m.score >= thr and m.video.id not in excl]
        return VideoSearchResult(matches=matches, query_duration=float(media.duration),
                                 query_samples=len(media), model=rec.model)

    def _video_matches(self, rec: CollectionRecord, times: np.ndarray, views: np.ndarray | Sequence[np.ndarray],
                       k: int, groups: np.ndarray | None, frame_k: int | None = None,
                       query_fps: float | None = None, refine_above: float | None = None) -> list[CopyMatch]:
        """Per-frame kNN -> `frameseek.matching.align` (IDF-like and redundancy weights, native
        frame-vote aggregation, calibrated score) -> candidates with aligned segments. `views`:
        the query frames' vectors [q, dim], or several vector sets of them, the whole frame first
        (`EmbeddedMedia.views`: mirrored frames, the coarse view, crops of picture-in-picture
        insets); all neighbour sets sit side by side ([q, views * k]); a reference frame listed
        twice for one query frame counts once, and a query frame matches at most one reference
        frame per segment, so the score stays in [0, 1].
        Candidates scoring at least `refine_above` (default: the copy threshold, i.e. the ones that
        get reported; at most the best MAX_REFINED_MATCHES) are then re-placed with dense evidence
        against the reference's stored vectors (`matching.refine_alignment`); this moves
        segments, never changes scores."""
        if not hasattr(self._native, "aggregate"):
            raise ServiceError(grpc.StatusCode.UNIMPLEMENTED, "INTERNAL",
                               "this build has no native frame-vote aggregation (frameseek._native.aggregate)")
        frame_k = frame_k or self.settings.frame_k
        ef = max(frame_k, int(rec.index.get("ef_search", 64)))
        if isinstance(views, np.ndarray) and views.ndim == 2:
            views = [views]
        vecs = np.asarray(views[0], dtype=np.float32)
        views = [vecs, *(np.asarray(v, dtype=np.float32) for v in views[1:] if v is not None and len(v) == len(vecs))]
        n = len(vecs)
        # one batched index call for every view, then [views * q, k] -> [q, views * k]
        ids, dist = self.storage.search(rec.id, np.ascontiguousarray(np.vstack(views)), frame_k, ef=ef, groups=groups)
        if len(views) > 1:
            ids = np.hstack([ids[i * n:(i + 1) * n] for i in range(len(views))])
            dist = np.hstack([dist[i * n:(i + 1) * n] for i in range(len(views))])
        valid = ids != NO_ID
        vids, idx = split_sample_ids(np.where(valid, ids, 0))
        ntimes = np.zeros(ids.shape, dtype=np.float64)
        durations: dict[int, float] = {}
        for vid in np.unique(vids[valid]).tolist():
            try:
                ts = self.storage.video_timestamps(vid)
                durations[vid] = max(float(self.storage.get_video(vid).duration), 1e-3)
            except NotFound:  # deleted meanwhile
                valid &= vids != vid
                continue
            sel = valid & (vids == vid)
            idx[sel] %= len(ts)  # a coarse twin (split_sample_ids) stands for its sample
            ntimes[sel] = ts[idx[sel]]
        # canonical sample ids: a reference frame found through both of its vectors counts once
        ids = np.where(valid, (vids.astype(np.uint64) << np.uint64(SAMPLE_BITS)) | idx.astype(np.uint64), NO_ID)
        ids = np.ascontiguousarray(ids.astype(np.uint64))
        sims = np.ascontiguousarray(np.where(valid, matching.similarities(dist, rec.metric), -1).astype(np.float32))
        groups_arr = np.ascontiguousarray(np.where(valid, vids, NO_ID).astype(np.uint64))
        settings = matching.MatchSettings(frame_k=frame_k)
        ms = matching.align(times, ids, groups_arr, ntimes, sims, frame_weights=matching.redundancy_weights(vecs),
                            settings=settings, ref_durations=durations,
                            query_interval=1.0 / query_fps if query_fps else None,
                            ref_interval=1.0 / float(rec.sampling.get("fps") or self.settings.default_fps),
                            max_candidates=int(k))
        refine_above = self.settings.copy_threshold if refine_above is None else refine_above
        out = []
        for rank, m in enumerate(ms):  # best first by the calibrated score (frameseek.matching)
            try:
                video = self.storage.get_video(m.video)
                if m.score >= refine_above and m.segments and rank < MAX_REFINED_MATCHES:
                    m = matching.refine_alignment(m, times, views, self.storage.video_timestamps(m.video),
                                                  self.storage.video_vectors(m.video), settings,
                                                  ref_twins=self.storage.video_twins(m.video))
            except NotFound:  # deleted meanwhile
                continue
            segs = [Segment(g.query_start, g.query_end, g.ref_start, g.ref_end, g.score) for g in m.segments]
            out.append(CopyMatch(video=video, score=m.score, query_coverage=m.query_coverage,
                                 reference_coverage=m.ref_coverage or 0.0, offset=m.offset, speed=m.speed,
                                 segments=segs))
        return out

    # -- stats ----------------------------------------------------------------------------------
    async def stats(self) -> dict:
        self.check_ready()

        def _collect():
            colls = []
            for rec in self.storage.list_collections("", MAX_PAGE):
                n, s, d = self.storage.collection_counts(rec.id)
                colls.append({"collection": collection_name(rec), "video_count": n, "sample_count": s,
                              "total_duration_seconds": d, "index_vectors": self.storage.vectors_of(rec.id)})
            return colls, self.storage.storage_bytes()

        colls, nbytes = await self._io(_collect)
        return {"version": __version__, "uptime_seconds": time.time() - self.started_at, "collections": colls,
                "video_count": sum(c["video_count"] for c in colls),
                "sample_count": sum(c["sample_count"] for c in colls), "storage_bytes": nbytes,
                "active_ingests": self._pending_ingests, "copy_threshold": self.settings.copy_threshold,
                "simd_level": self._native.simd_level() if self._native else "",
                "recovery_problems": self.storage.recovery_problems()}


def _page_size(n: int) -> int:
    if n < 0:
        raise invalid("page_size must be >= 0", field="page_size")
    return min(n or DEFAULT_PAGE, MAX_PAGE)


def _encode_token(kind: str, value: str) -> str:
    import base64

    return base64.urlsafe_b64encode(f"{kind}:{value}".encode()).decode()


def _decode_token(token: str, kind: str) -> str:
    if not token:
        return ""
    import base64
    import binascii

    try:
        k, _, v = base64.urlsafe_b64decode(token.encode()).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise invalid("malformed page_token", field="page_token") from None
    if k != kind:
        raise invalid("page_token belongs to another list", field="page_token")
    return v


def _code_by_value(v: int) -> grpc.StatusCode:
    for c in grpc.StatusCode:
        if c.value[0] == v:
            return c
    return grpc.StatusCode.INTERNAL


def _unlink(path: str | None) -> None:
    if path:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass


def _write_json(path: str, obj) -> None:
    """Atomically: a crash or a full disk leaves the whole file or none."""
    import json

    tmp = path + ".tmp"
    try:
        with open(tmp, "w") as f:
            json.dump(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        _unlink(tmp)
        raise


def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
