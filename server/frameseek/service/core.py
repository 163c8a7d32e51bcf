"""What every verb family of the service shares: settings, storage, the embedder, the thread pools,
readiness, and the media plumbing (sampling, limits, embedding) that ingest and search both use.

Blocking work never runs on the event loop: decode + embed run in a bounded ingest pool (queries
in their own pool), native searches (which release the GIL) in a search pool, catalog calls in an
I/O pool.
"""

from __future__ import annotations

import asyncio
import os
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import structlog

from .. import metrics
from ..config import Settings
from ..errors import ErrorCode, ServiceError, failed_precondition, from_media_error, unavailable
from ..ids import MAX_SAMPLES_PER_VIDEO
from ..modality import Modality, Purpose
from ..storage import (
    Aborted,
    AlreadyExists,
    CollectionRecord,
    EmbeddedStorage,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    Storage,
    StorageError,
    Unavailable,
)
from ..watchdog import Watchdog

log = structlog.get_logger("frameseek.service")

#: CollectionRecord.model of a collection that holds the client's own vectors (service/items.py)
OWN_VECTORS_MODEL = ""

_STORAGE_CODES = {
    NotFound: ErrorCode.NOT_FOUND,
    AlreadyExists: ErrorCode.ALREADY_EXISTS,
    FailedPrecondition: ErrorCode.FAILED_PRECONDITION,
    InvalidArgument: ErrorCode.INVALID_ARGUMENT,
    ResourceExhausted: ErrorCode.RESOURCE_EXHAUSTED,
    Unavailable: ErrorCode.UNAVAILABLE,
    Aborted: ErrorCode.ABORTED,
}


def open_storage(settings: Settings) -> Storage:
    """The one place that turns the storage settings into a Storage (Settings.vector_store)."""
    if settings.vector_store == "milvus":
        from ..storage.scaleout import ScaleOutStorage

        return ScaleOutStorage(
            settings.catalog_url,
            settings.milvus_uri,
            server_id=settings.server_id or f"{socket.gethostname()}:{os.path.abspath(settings.data_dir)}",
            pending_lease_s=settings.pending_lease_s,
            timeout_s=settings.backend_timeout_s,
            milvus_prefix=settings.milvus_collection_prefix,
        )
    if settings.role == "replica":  # a search replica reads the primary's data dir and never writes
        from ..storage.replica import ReplicaStorage

        return ReplicaStorage(settings.data_dir, catalog_path=settings.sqlite_catalog_path)
    # the catalog rows' checksums are verified once the server serves (FrameSeekService.start), not
    # inside open(): a pass over every row would hold up SERVING (benchmarks/load/README.md, restart)
    return EmbeddedStorage(
        settings.data_dir,
        snapshot_every=settings.snapshot_every_vectors,
        catalog_path=settings.sqlite_catalog_path,
        check_rows_at_open=False,
    )


def storage_error(exc: StorageError) -> ServiceError:
    return ServiceError(_STORAGE_CODES.get(type(exc), ErrorCode.INTERNAL), exc.reason, str(exc))


class Core:
    """Shared state of one service instance (see the module docstring)."""

    def __init__(self, settings: Settings, storage: Storage | None, embedder: Any):
        self.settings = settings
        self.replica = settings.role == "replica"
        self.storage: Any = storage or open_storage(settings)
        self.embedder = embedder
        self.embedder_error: str = ""
        from ..modality.frames import FRAMES  # imports the media pipeline (PyAV, PIL) on first use

        # what ingest extracts, embeds and indexes, and how a clip's matches aggregate (frameseek.modality)
        self.modality: Modality = FRAMES
        from ..modality.faces import FaceModels

        # the face detector + encoder of collections created with faces on (loaded on first use)
        self.face_models = FaceModels(settings.faces)
        self.ready = False
        self.closing = False
        self.started_at = time.time()
        self.ingest_pool = ThreadPoolExecutor(settings.ingest_workers, thread_name_prefix="ingest")
        self.query_pool = ThreadPoolExecutor(max(1, settings.ingest_workers), thread_name_prefix="query-embed")
        self.search_pool = ThreadPoolExecutor(settings.search_threads, thread_name_prefix="search")
        self.io_pool = ThreadPoolExecutor(2, thread_name_prefix="catalog")
        self.tasks: set[asyncio.Task] = set()
        self.cancel = threading.Event()
        self.watchdog = Watchdog(settings.stall_report_s) if settings.stall_report_s else None
        #: where accepted uploads wait for their ingest job ({job}.media + {job}.json); the API
        #: layer spools incoming bytes here too ({uuid}.part) before they are accepted
        self.uploads_dir = os.path.join(os.path.abspath(settings.data_dir), "uploads")

    def pools(self) -> tuple[ThreadPoolExecutor, ...]:
        return self.ingest_pool, self.query_pool, self.search_pool, self.io_pool

    def check_ready(self) -> None:
        if self.closing:
            raise unavailable("server is shutting down", "NOT_READY")
        if not self.ready:
            raise unavailable("server is loading its index; retry shortly", "NOT_READY")

    async def io(self, fn: Callable, *args):
        """`fn(*args)` in the I/O pool; storage errors become ServiceErrors."""
        try:
            return await asyncio.get_running_loop().run_in_executor(self.io_pool, fn, *args)
        except StorageError as exc:
            raise storage_error(exc) from None

    def spawn(self, coro) -> asyncio.Task:
        t = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(t)
        t.add_done_callback(self.tasks.discard)
        return t

    def beat(self, what: str) -> None:
        if self.watchdog is not None:
            self.watchdog.beat(what)

    def done(self, what: str) -> None:
        if self.watchdog is not None:
            self.watchdog.done(what)

    def set_index_gauge(self, rec: CollectionRecord) -> None:
        """The index's own count (a video's vectors are its samples plus their coarse twins, if
        any), not a running sum; a collection deleted meanwhile is skipped."""
        try:
            metrics.INDEX_VECTORS.labels(rec.name).set(self.storage.vectors_of(rec.id))
        except Exception:
            pass

    # -- media plumbing -------------------------------------------------------------------------
    def require_embedder(self, rec: CollectionRecord) -> None:
        if rec.model == OWN_VECTORS_MODEL:
            raise failed_precondition(
                f"collection {rec.name!r} holds its own vectors and has no model: media cannot be ingested or "
                "searched there; use UpsertItems and SearchByVector",
                "NO_MODEL",
            )
        if self.embedder is None:
            raise failed_precondition(
                f"the embedding model could not be loaded on this server "
                f"({self.embedder_error}); only SearchByVector works",
                "MODEL_UNAVAILABLE",
            )
        if rec.model != self.settings.model:
            raise failed_precondition(
                f"collection uses model {rec.model!r}, this server runs {self.settings.model!r}", "MODEL_UNAVAILABLE"
            )
        if int(self.embedder.dim) != rec.dimension:
            raise failed_precondition(
                f"collection {rec.name!r} is {rec.dimension}-d, the loaded model {self.embedder.dim}-d",
                "MODEL_UNAVAILABLE",
            )

    def sampling(
        self,
        rec: CollectionRecord,
        purpose: Purpose = Purpose.INDEX,
        fps: float | None = None,
        max_samples: int | None = None,
    ):
        """How media is sampled for `purpose`, and the views it is embedded under (only the views
        that purpose uses: `FRAMES.views`, from the `views` settings group)."""
        from ..pipeline import SamplingSettings

        s = rec.sampling
        index = purpose is Purpose.INDEX
        dedup = s.get("dedup_threshold") or None
        views = self.modality.views(purpose, self.settings.views)
        if index and not max_samples:
            # a video holds at most MAX_SAMPLES_PER_VIDEO index vectors, its coarse twins included:
            # a long video at a high rate is sampled on a sparser grid rather than refused once embedded
            max_samples = MAX_SAMPLES_PER_VIDEO // len(views)
        return SamplingSettings(
            fps=fps or float(s.get("fps") or self.settings.sampling.default_fps),
            max_samples=max_samples or None,
            drop_blank=not s.get("keep_blank_frames", False),
            dedup_threshold=dedup if index else None,
            keyframes_only=bool(s.get("keyframes_only", False)) if index else False,
            views=views,
        )

    def embed(self, source, sampling, progress=None, shown_as: str = "the upload", on_sample=None):
        """Decode, sample and embed `source` (a path or bytes); media errors become ServiceErrors
        that name the input as `shown_as`, never by its path on the server."""
        from ..media import MediaError

        try:
            return self.modality.embed(
                source,
                self.embedder,
                sampling,
                progress=progress,
                cancel=self.cancel,
                limits=self.settings.media,
                on_sample=on_sample,
            )
        except MediaError as exc:
            raise from_media_error(exc, source if isinstance(source, str) else None, shown_as) from None

    def media_kind(self, path: str) -> str:
        """'image', 'container' or 'unknown', from the first bytes only (no decoding)."""
        from ..media import MediaError, open_source

        try:
            return open_source(path).kind
        except MediaError as exc:
            raise from_media_error(exc, path) from None
