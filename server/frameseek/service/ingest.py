"""Ingest and its jobs: admission, idempotent retries, the durable hand-over of an upload to its
job, decode + embed + index in the ingest pool, resumption after a restart, job progress.

Admission is counted from the moment an ingest is admitted (`prepare`, before the first byte of
an upload is read) until its job ends: an `IngestSlot` holds one of `max_pending_ingests`, so
uploads that never finish cannot pile up behind the limit. An accepted upload is kept under its
job's name (`uploads/{job}.media` + `{job}.json`) until the job ends, so a restart resumes it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import time
import uuid
from collections.abc import Callable

import structlog

from .. import metrics
from ..errors import ErrorCode, JobRef, ServiceError, VideoRef, disk_full, exhausted, invalid, not_found
from ..modality import Purpose
from ..modality.faces import FACES_MODALITY, chain_samples
from ..storage import CollectionRecord, JobRecord, JobState, ModalityData, NotFound, StorageError, VideoRecord
from .audio import Soundtracks
from .collections import Collections, check_labels
from .core import Core, storage_error
from .search import Search
from .types import CopyMatch, IngestRequest, IngestResult

log = structlog.get_logger("frameseek.service")

DUPLICATE_POLICIES = ("ALLOW", "REPORT", "REJECT")


class JobWatchers:
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


class IngestSlot:
    """One admitted ingest (see the module docstring); release() is idempotent."""

    def __init__(self, ingest: Ingest):
        self._ingest, self.held = ingest, True

    def hand_over(self) -> IngestSlot:
        """The same admission as a new slot (the job's task owns it from now on); this one is spent."""
        self.held = False
        return IngestSlot(self._ingest)

    def release(self) -> None:
        if self.held:
            self.held = False
            self._ingest.pending -= 1
            metrics.ACTIVE_INGESTS.set(self._ingest.pending)


def _unlink(path: str | None) -> None:
    if path:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass


def _write_json(path: str, obj) -> None:
    """Atomically: a crash or a full disk leaves the whole file or none."""
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


class Ingest:
    def __init__(self, core: Core, collections: Collections, search: Search, soundtracks: Soundtracks):
        self.core, self.collections, self.search, self.soundtracks = core, collections, search, soundtracks
        self.pending = 0  # admitted ingests: uploading, queued or running
        self.watchers = JobWatchers()
        # Optional: (job, collection id, sha256, media path) -> an on_sample callback for embed_media
        # (or None), called once per ingest; the web console's thumbnails (frameseek.console).
        self.ingest_frames: Callable[[JobRecord, int, str, str], Callable | None] | None = None
        # Optional: (collection, video id) after a video with faces is committed: the people
        # service assigns its face tracks to persons (People.assign_video).
        self.faces_committed: Callable[[CollectionRecord, int], None] | None = None

    # -- admission ------------------------------------------------------------------------------
    def admit(self) -> IngestSlot:
        limit = self.core.settings.max_pending_ingests
        if self.pending >= limit:
            raise exhausted(f"{self.pending} ingests pending (limit {limit}); retry later", limit=limit)
        self.pending += 1
        metrics.ACTIVE_INGESTS.set(self.pending)
        return IngestSlot(self)

    async def prepare(self, req: IngestRequest) -> tuple[CollectionRecord, IngestResult | None, IngestSlot | None]:
        """Validate an ingest before any bytes are read and admit it (a slot), or answer an
        idempotent retry at once (a result, no slot)."""
        self.core.check_ready()
        rec = await self.collections.get(req.collection)
        check_labels(req.labels)
        limit = self.core.settings.media.max_upload_bytes
        if req.size_bytes < 0:
            raise invalid("size_bytes must be >= 0", field="size_bytes")
        if req.size_bytes > limit:
            raise exhausted(
                f"upload of {req.size_bytes} bytes exceeds the limit of {limit}", "MEDIA_TOO_LARGE", limit=limit
            )
        if req.duplicate_policy not in DUPLICATE_POLICIES:
            raise invalid("unknown duplicate_policy", field="duplicate_policy")
        if not 0 <= req.duplicate_threshold <= 1:  # False for NaN too
            raise invalid("duplicate_threshold must be in [0, 1]", field="duplicate_threshold")
        if len(req.request_id) > 128 or len(req.external_key) > 1024:
            raise invalid("request_id (<=128) or external_key (<=1024) too long", field="request_id")
        if req.request_id:
            prev = await self.core.io(self.core.storage.job_for_request, req.request_id)
            if prev is not None:
                return rec, await self._result_of(prev, wait=not req.return_job), None
        return rec, None, self.admit()

    async def _result_of(self, job: JobRecord, wait: bool) -> IngestResult:
        """Result of an existing job (idempotent retry): wait for it unless return_job."""
        while wait and not job.state.terminal:
            ev = self.watchers.subscribe(job.id)
            try:
                await asyncio.wait_for(ev.wait(), timeout=1.0)
            except TimeoutError:
                pass
            finally:
                self.watchers.unsubscribe(job.id, ev)
            job = await self.core.io(self.core.storage.get_job, job.id)
        if job.state is JobState.FAILED:
            raise ServiceError(ErrorCode.of(job.error_code), job.error_reason, job.error_message, job=JobRef(job.id))
        video = (
            await self.core.io(self.core.storage.get_video, job.video_id) if job.state is JobState.SUCCEEDED else None
        )
        return IngestResult(job=job, video=video, already_exists=job.already_exists)

    # -- ingest ---------------------------------------------------------------------------------
    async def ingest(
        self,
        rec: CollectionRecord,
        req: IngestRequest,
        path: str,
        sha256: str,
        size: int,
        slot: IngestSlot,
        is_image: bool = False,
        owns_file: bool = True,
    ) -> IngestResult:
        """Index media stored at `path` (an upload spooled by the API layer, which this call then
        owns, or a server path). `slot` (from prepare) is released when the job ends."""
        try:
            return await self._ingest(rec, req, path, sha256, size, slot, is_image, owns_file)
        except BaseException:
            if owns_file and slot.held:  # not handed over to a job: nothing else will remove it
                _unlink(path)
            slot.release()
            raise

    async def _ingest(
        self,
        rec: CollectionRecord,
        req: IngestRequest,
        path: str,
        sha256: str,
        size: int,
        slot: IngestSlot,
        is_image: bool,
        owns_file: bool,
    ) -> IngestResult:
        if size == 0:
            raise invalid("the upload is empty (zero bytes)", "EMPTY_MEDIA")
        self.core.require_embedder(rec)
        # an image sent as a video, or a video as an image, is refused from its first bytes,
        # before anything is decoded
        kind = await self.core.io(self.core.media_kind, path)
        if is_image and kind == "container":
            raise invalid("the upload is a video; use IngestVideo", "CORRUPT_MEDIA")
        if not is_image and kind == "image":
            raise invalid("the upload is an image; use IngestImage", "NO_VIDEO_STREAM")
        job = JobRecord(id=uuid.uuid4().hex, collection_id=rec.id, state=JobState.QUEUED, request_id=req.request_id)
        existing = await self.core.io(self.core.storage.find_video_by_hash, rec.id, sha256)
        if existing is not None:  # the same bytes: the same video, not indexed twice
            job.state, job.video_id, job.already_exists = JobState.SUCCEEDED, existing.id, True
            job.samples_done = job.samples_total = existing.sample_count
            await self.core.io(self.core.storage.create_job, job)
            if owns_file:
                _unlink(path)
            slot.release()
            return IngestResult(job=job, video=existing, already_exists=True)
        try:
            await self.core.io(self.core.storage.create_job, job)
        except ServiceError:  # a concurrent retry with the same request_id won the race
            if owns_file:
                _unlink(path)
            slot.release()
            prev = await self.core.io(self.core.storage.job_for_request, req.request_id)
            return await self._result_of(prev, wait=not req.return_job)
        if owns_file:  # keep the upload under the job's name so a restart can resume it
            spool = os.path.join(self.core.uploads_dir, f"{job.id}.media")
            os.replace(path, spool)
            try:
                _write_json(
                    os.path.join(self.core.uploads_dir, f"{job.id}.json"),
                    {"req": dataclasses.asdict(req), "sha256": sha256, "size": size, "is_image": is_image},
                )
            except OSError as exc:  # e.g. the disk is full: the job fails now, nothing is left behind
                _unlink(spool)
                err = disk_full(exc) or ServiceError(ErrorCode.INTERNAL, "INTERNAL", "spooling the upload failed")
                await self.core.io(self._fail_job, job, err)
                raise err from None
            path = spool
        task = self.core.spawn(self._run(rec, req, job, path, sha256, size, is_image, owns_file, slot.hand_over()))
        if req.return_job:
            return IngestResult(job=job, video=None)
        return await asyncio.shield(task)

    def resume(self, job: JobRecord) -> None:
        """A job that was queued/running when the server stopped: run it again from its spooled upload."""
        meta_path = os.path.join(self.core.uploads_dir, f"{job.id}.json")
        media_path = os.path.join(self.core.uploads_dir, f"{job.id}.media")
        try:
            with open(meta_path) as f:
                meta = json.load(f)
            if not os.path.exists(media_path):
                raise FileNotFoundError(media_path)
        except (OSError, ValueError):  # gone, or cut short (e.g. the disk filled up while it was written)
            job.state, job.error_code = JobState.FAILED, int(ErrorCode.ABORTED)
            job.error_reason = "INTERRUPTED"
            job.error_message = "the server stopped during this ingest and its upload is gone; upload again"
            self.core.storage.update_job(job)
            _unlink(media_path)
            _unlink(meta_path)
            return
        done = self.core.storage.find_video_by_hash(job.collection_id, meta["sha256"])
        if done is not None:  # the crash came after the commit, before the job update: indexed already
            job.state, job.video_id, job.samples_done = JobState.SUCCEEDED, done.id, done.sample_count
            job.samples_total, job.duration, job.media_seconds_done = done.sample_count, done.duration, done.duration
            self.core.storage.update_job(job)
            _unlink(media_path)
            _unlink(meta_path)
            return
        fields = {f.name for f in dataclasses.fields(IngestRequest)}
        req = IngestRequest(**{k: v for k, v in meta["req"].items() if k in fields})  # older spools: 'parent'
        try:
            rec = self.core.storage.collection_by_id(job.collection_id)
        except NotFound:
            self._fail_job(job, not_found("collection was deleted", "COLLECTION_NOT_FOUND"))
            return
        slot = IngestSlot(self)
        self.pending += 1  # a resumed job is admitted regardless of the limit: it was before the restart
        log.info("ingest_resumed", job=job.id)
        self.core.spawn(
            self._run(rec, req, job, media_path, meta["sha256"], meta["size"], meta["is_image"], True, slot)
        )

    def _fail_job(self, job: JobRecord, err: ServiceError) -> None:
        job.state, job.error_code, job.error_reason, job.error_message = (
            JobState.FAILED,
            int(err.code),
            err.reason,
            err.message,
        )
        try:
            self.core.storage.update_job(job)
        except StorageError as exc:  # disk full: the caller still gets `err`; the job is retried at start
            log.warning("job_update_failed", job=job.id, error=str(exc))
        self.watchers.notify(job.id)

    async def _run(
        self,
        rec: CollectionRecord,
        req: IngestRequest,
        job: JobRecord,
        path: str,
        sha256: str,
        size: int,
        is_image: bool,
        owns_file: bool,
        slot: IngestSlot,
    ) -> IngestResult:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(
                self.core.ingest_pool, self._ingest_sync, rec, req, job, path, sha256, size, is_image
            )
        except ServiceError as exc:
            await loop.run_in_executor(self.core.io_pool, self._fail_job, job, exc)
            raise
        except StorageError as exc:  # e.g. disk full while updating the job
            err = storage_error(exc)
            await loop.run_in_executor(self.core.io_pool, self._fail_job, job, err)
            raise err from None
        except Exception as exc:
            log.exception("ingest_failed", job=job.id)
            err = ServiceError(ErrorCode.INTERNAL, "INTERNAL", f"ingest failed: {type(exc).__name__}")
            await loop.run_in_executor(self.core.io_pool, self._fail_job, job, err)
            raise err from None
        finally:
            self.core.done(f"ingest {job.id}")
            slot.release()
            if owns_file:
                _unlink(path)
                _unlink(os.path.join(self.core.uploads_dir, f"{job.id}.json"))

    def _ingest_sync(
        self,
        rec: CollectionRecord,
        req: IngestRequest,
        job: JobRecord,
        path: str,
        sha256: str,
        size: int,
        is_image: bool,
    ) -> IngestResult:
        t0 = time.perf_counter()
        storage, settings = self.core.storage, self.core.settings
        self.core.beat(f"ingest {job.id}")  # from here on the watchdog expects progress (a queued job is not)
        job.state = JobState.RUNNING
        storage.update_job(job)
        self.watchers.notify(job.id)
        last = [0.0]

        def progress(done: int, total: int | None) -> None:
            self.core.beat(f"ingest {job.id}")
            now = time.perf_counter()
            job.samples_done, job.samples_total = done, total or 0
            if now - last[0] >= 0.5:  # throttle catalog writes
                last[0] = now
                storage.update_job(job)
                self.watchers.notify(job.id)

        shown_as = req.filename or os.path.basename(req.server_path) or "the upload"
        on_sample = self.ingest_frames(job, rec.id, sha256, path) if self.ingest_frames else None
        sampling = self.core.sampling(rec, Purpose.INDEX)
        faces = None
        if FACES_MODALITY.collection_flag in rec.modalities:  # faces ride on the same decode
            faces = self.core.face_models.collector()
            sampling.sample_short_side = self.core.settings.faces.sample_short_side
            on_sample = chain_samples(on_sample, faces)
        media = self.core.embed(path, sampling, progress, shown_as=shown_as, on_sample=on_sample)
        if is_image != bool(media.is_image):
            kind = "an image" if media.is_image else "a video"
            raise invalid(
                f"the upload is {kind}; use {'IngestImage' if media.is_image else 'IngestVideo'}",
                "CORRUPT_MEDIA" if is_image else "NO_VIDEO_STREAM",
            )
        if len(media) == 0:
            raise invalid("no informative frames (all samples were blank)", "EMPTY_MEDIA")
        copies: list[CopyMatch] = []
        if req.duplicate_policy in ("REPORT", "REJECT"):
            thr = req.duplicate_threshold or settings.matching.copy_threshold
            # the upload's coarse twins stand in for a query's coarse view
            copies = [
                c
                for c in self.search.video_matches(
                    rec, media.timestamps, list(self.core.modality.index_vectors(media)), 10, None
                )
                if c.score >= thr
            ]
            if copies and req.duplicate_policy == "REJECT":
                best = copies[0]
                raise ServiceError(
                    ErrorCode.ALREADY_EXISTS,
                    "DUPLICATE_CONTENT",
                    f"the upload copies video {best.video.id} of collection {rec.name!r} (score {best.score:.2f})",
                    video=VideoRef(rec.name, best.video.id),
                    score=f"{best.score:.4f}",
                )
        elapsed = time.perf_counter() - t0
        realtime = (media.duration / elapsed) if media.duration and elapsed > 0 else 0.0
        v = VideoRecord(
            id=0,
            collection_id=rec.id,
            kind="image" if media.is_image else "video",
            duration=float(media.duration),
            width=int(media.width),
            height=int(media.height),
            sample_count=len(media),
            size_bytes=int(size),
            content_sha256=sha256,
            external_key=req.external_key,
            labels=dict(req.labels),
            filename=req.filename or os.path.basename(req.server_path),
            model=rec.model,
            realtime_factor=realtime,
        )
        # the soundtrack's fingerprints (a collection with audio), committed with the vectors
        extras = {} if media.is_image else self.soundtracks.fingerprint(rec, path, shown_as)
        self.core.beat(f"ingest {job.id}")
        try:
            vectors, twins = self.core.modality.index_vectors(media)
            if faces is not None:
                found = faces.result()
                # a video without a face has no face vectors (storage takes None for none)
                vectors_or_none = found.vectors if len(found) else None
                extras[FACES_MODALITY.name] = ModalityData(found.times, vectors_or_none, found.payload())
            video = storage.add_video(rec.id, v, media.timestamps, vectors, twins=twins, extras=extras)
            if FACES_MODALITY.name in extras and self.faces_committed is not None:
                self.faces_committed(rec, video.id)
        except StorageError as exc:
            raise storage_error(exc) from None
        job.state, job.video_id = JobState.SUCCEEDED, video.id
        job.samples_done = job.samples_total = len(media)
        job.duration = job.media_seconds_done = float(media.duration)
        storage.update_job(job)
        self.watchers.notify(job.id)
        self.core.set_index_gauge(rec)
        metrics.INGESTED.labels(v.kind).inc()
        if realtime:
            metrics.INGEST_REALTIME.observe(realtime)
        log.info(
            "ingested",
            collection=rec.name,
            video=video.id,
            samples=len(media),
            duration=round(media.duration, 2),
            seconds=round(elapsed, 2),
            realtime=round(realtime, 1),
            decoder=media.decoder,
        )
        return IngestResult(job=job, video=video, copies=copies)

    # -- jobs -----------------------------------------------------------------------------------
    async def get_job(self, job_id: str) -> JobRecord:
        self.core.check_ready()
        return await self.core.io(self.core.storage.get_job, job_id)

    async def watch_job(self, job_id: str):
        """Yield the job now and after every change, until it is terminal."""
        job = await self.get_job(job_id)
        ev = self.watchers.subscribe(job.id)
        try:
            while True:
                yield job
                if job.state.terminal:
                    return
                try:
                    await asyncio.wait_for(ev.wait(), timeout=2.0)
                except TimeoutError:
                    pass
                ev.clear()
                job = await self.core.io(self.core.storage.get_job, job.id)
        finally:
            self.watchers.unsubscribe(job.id, ev)
