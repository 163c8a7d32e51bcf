"""The service layer: frameseek's business logic, independent of any protocol.

`FrameSeekService` is a thin facade over one module per verb family, which share a `Core`
(settings, storage, embedder, thread pools, readiness):

    collections.py   collections and the videos in them (create, resolve, list, delete, counts)
    ingest.py        ingest + jobs (admission, idempotency, spooled uploads, resumption, progress)
    audio.py         soundtrack fingerprints in memory (a storage observer) and SearchByAudio
    items.py         own-vector collections: UpsertItems / DeleteItems (items are video records)
    search.py        search by vector, image and video clip
    people.py        search by face (collections with the face modality)
    stats.py         GetStats

It takes ids (collection ids such as 'default', video ids, job ids), never resource names, and
raises `frameseek.errors.ServiceError` (an ErrorCode + reason); the API layer (frameseek/api)
translates names, pages and uploads, and maps errors onto gRPC statuses in one place.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from typing import Any

import structlog

from .. import _native, metrics
from ..config import Settings
from ..storage import AlreadyExists, NotFound, Storage, Unavailable
from .audio import AudioHit, AudioSearchResult, Soundtracks
from .collections import COLLECTION_ID_RE, DEFAULT_COLLECTION, Collections, Videos
from .core import OWN_VECTORS_MODEL, Core
from .ingest import Ingest
from .items import ITEM_KIND, ItemBatch, Items
from .people import People, PersonView, QueryFace
from .search import MAX_K, Search
from .stats import stats
from .types import CopyMatch, Hit, IngestRequest, IngestResult, SearchOptions, Segment, VideoSearchResult

log = structlog.get_logger("frameseek.service")

#: reconnecting to an unreachable backend: first wait, doubled per failure up to the last
BACKEND_RETRY_FIRST_S, BACKEND_RETRY_MAX_S = 0.5, 30.0

__all__ = [
    "BACKEND_RETRY_FIRST_S",
    "BACKEND_RETRY_MAX_S",
    "ITEM_KIND",
    "OWN_VECTORS_MODEL",
    "ItemBatch",
    "AudioHit",
    "AudioSearchResult",
    "COLLECTION_ID_RE",
    "DEFAULT_COLLECTION",
    "MAX_K",
    "CopyMatch",
    "FrameSeekService",
    "Hit",
    "IngestRequest",
    "IngestResult",
    "PersonView",
    "QueryFace",
    "SearchOptions",
    "Segment",
    "VideoSearchResult",
    "low_priority",
]


def low_priority() -> None:
    """The calling thread at nice 19 (Linux: a thread has its own nice value): work after SERVING
    that must not slow the searches down."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
    except OSError:
        pass


class FrameSeekService:
    """Create, then `await start()`; calls before the storage is loaded raise UNAVAILABLE
    (reason NOT_READY). The verb families: `.collections`, `.videos`, `.ingest`, `.search`."""

    def __init__(self, settings: Settings, storage: Storage | None = None, embedder: Any = None):
        self.core = core = Core(settings, storage, embedder)
        self.collections = Collections(core)
        self.videos = Videos(core, self.collections)
        self.search = Search(core, self.collections, self.videos)
        self.soundtracks = Soundtracks(core, self.search)  # SearchByAudio and the audio of ingests
        self.search.soundtracks = self.soundtracks  # audio evidence in SearchByVideo
        self.ingest = Ingest(core, self.collections, self.search, self.soundtracks)
        self.people = People(core, self.collections, self.search)
        self.items = Items(core, self.collections)  # UpsertItems / DeleteItems (own vectors)
        self.ingest.faces_committed = self.people.assign_video

    # the shared state callers look at
    @property
    def settings(self) -> Settings:
        return self.core.settings

    @property
    def storage(self):
        return self.core.storage

    @property
    def replica(self) -> bool:
        return self.core.replica

    @property
    def ready(self) -> bool:
        return self.core.ready

    @property
    def closing(self) -> bool:
        return self.core.closing

    @closing.setter
    def closing(self, value: bool) -> None:
        self.core.closing = value

    @property
    def uploads_dir(self) -> str:
        return self.core.uploads_dir

    def check_ready(self) -> None:
        self.core.check_ready()

    async def stats(self) -> dict:
        return await stats(self.core, self.ingest, self.soundtracks, self.search.recall)

    # -- lifecycle ------------------------------------------------------------------------------
    async def start(self) -> None:
        core = self.core
        loop = asyncio.get_running_loop()
        self.ingest.watchers.bind(loop)
        if core.watchdog is not None:
            core.watchdog.start()
            core.spawn(self._heartbeat())
        t0 = time.perf_counter()
        await loop.run_in_executor(core.io_pool, self._load)
        core.ready = True
        self.search.recall.start()
        threading.Thread(target=self._collapse_huge_pages, name="huge-pages", daemon=True).start()
        if not core.replica and getattr(core.storage, "check_rows", None) is not None:
            threading.Thread(target=self._check_rows, name="check-rows", daemon=True).start()
        metrics.READY.set(1)
        log.info(
            "service_ready",
            seconds=round(time.perf_counter() - t0, 3),
            embedder=getattr(core.embedder, "name", None),
            embedder_error=core.embedder_error or None,
            kernels=_native.kernel_simd_levels(),
        )
        if core.replica:  # snapshots and unfinished ingests belong to the primary
            return
        core.spawn(self._snapshot_loop())
        for job in await loop.run_in_executor(core.io_pool, core.storage.unfinished_jobs):
            self.ingest.resume(job)

    def _check_rows(self) -> None:
        """Once serving, verify the catalog rows' checksums at low priority (EmbeddedStorage.
        check_rows: damaged rows are marked and taken out of the search paths, and reported)."""
        low_priority()
        t0 = time.perf_counter()
        try:
            problems = self.core.storage.check_rows()
        except Exception:  # a catalog that fails to read here failed quick_check at open already
            log.exception("catalog_row_check_failed")
            return
        log.info("catalog_rows_checked", seconds=round(time.perf_counter() - t0, 3), problems=len(problems))

    def _collapse_huge_pages(self) -> None:
        """Once serving, move the loaded indexes onto huge pages at low priority: their load read
        into 4 KiB pages, so that a restart does not wait for the kernel to compact memory
        (HnswIndex.collapse_huge_pages; benchmarks/load/README.md, restart time)."""
        low_priority()
        t0, collapsed = time.perf_counter(), 0
        for _, index in self.core.storage.live_collections():
            if self.core.closing:
                return
            collapse = getattr(index, "collapse_huge_pages", None)  # the embedded store's HnswIndex
            if collapse is not None:
                collapsed += collapse()
        log.info("huge_pages_collapsed", bytes=collapsed, seconds=round(time.perf_counter() - t0, 3))

    def _load(self) -> None:
        core = self.core
        os.makedirs(core.uploads_dir, exist_ok=True)
        if core.embedder is None:
            try:
                from ..embed import EmbedderSettings, load_embedder

                core.embedder = load_embedder(
                    EmbedderSettings(
                        model=core.settings.model,
                        backend=core.settings.embed_backend,
                        threads=core.settings.embed_threads,
                    )
                )
            except Exception as exc:  # media endpoints answer FAILED_PRECONDITION, vectors still work
                core.embedder_error = f"{type(exc).__name__}: {exc}"
                log.warning("embedder_unavailable", error=core.embedder_error)
        self._open_storage()
        self.search.follow_storage()
        self.soundtracks.follow_storage()
        try:
            core.storage.get_collection(DEFAULT_COLLECTION)
        except NotFound:
            if core.replica:  # the primary creates it before it starts replicas
                raise
            try:
                self.collections.create_sync(DEFAULT_COLLECTION, "", "", "ip", {}, {}, is_default=True)
            except AlreadyExists:  # another server of a scale-out deployment made it meanwhile
                pass
        for rec in core.storage.list_collections("", 1000):
            core.set_index_gauge(rec)

    def _open_storage(self) -> None:
        """Open the storage; an external backend that cannot be reached yet (vector_store = milvus)
        is retried with exponential backoff (calls answer UNAVAILABLE / NOT_READY meanwhile)."""
        delay = BACKEND_RETRY_FIRST_S
        while True:
            try:
                self.core.storage.open()
                return
            except Unavailable as exc:
                if self.core.closing:
                    raise
                log.warning("storage_unavailable", error=str(exc), retry_in_s=delay)
                time.sleep(delay)
                delay = min(delay * 2, BACKEND_RETRY_MAX_S)

    async def close(self) -> None:
        """Stop background work and flush storage (snapshot). In-flight RPCs are drained by the server."""
        core = self.core
        core.closing = True
        core.cancel.set()
        if core.watchdog is not None:
            core.watchdog.stop()
        for t in list(core.tasks):
            t.cancel()
        self.search.recall.stop()
        for pool in (core.ingest_pool, core.query_pool, core.search_pool):
            pool.shutdown(wait=True, cancel_futures=True)
        if core.ready:
            await asyncio.get_running_loop().run_in_executor(core.io_pool, core.storage.close)
        core.io_pool.shutdown(wait=True)
        metrics.READY.set(0)

    async def _heartbeat(self) -> None:
        """The event loop's sign of life for the watchdog (a loop blocked by a call that should
        have gone to a thread shows up as a stall of "event_loop")."""
        watchdog = self.core.watchdog
        while True:
            watchdog.beat("event_loop")
            await asyncio.sleep(watchdog.period_s)

    async def _snapshot_loop(self) -> None:
        core = self.core
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(core.settings.snapshot_interval_s)
            try:
                await loop.run_in_executor(
                    core.io_pool, lambda: core.storage.snapshot(force=False) or core.storage.snapshot(force=True)
                )
            except Exception:
                log.exception("periodic_snapshot_failed")
