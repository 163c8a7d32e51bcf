"""gRPC servicer: translates frameseek.v1 messages to FrameSeekService calls and results back.

No business logic lives here. Every method goes through `_rpc`, which counts and times the call
and turns a ServiceError into a google.rpc.Status with an ErrorInfo detail (reason, domain,
metadata) in the `grpc-status-details-bin` trailer.
"""
from __future__ import annotations

import asyncio
import functools
import hashlib
import math
import os
import struct
import time

import grpc
import structlog
from google.protobuf import any_pb2, empty_pb2
from google.rpc import error_details_pb2, status_pb2

from . import metrics
from .errors import DOMAIN, ServiceError, disk_full, exhausted, invalid
from .service import (CopyMatch, FrameSeekService, Hit, IngestRequest, IngestResult, SearchOptions,
                      collection_name)
from .storage import CollectionRecord, JobRecord, VideoRecord
from .v1 import frameseek_pb2 as pb
from .v1 import frameseek_pb2_grpc as pb_grpc

log = structlog.get_logger("frameseek.rpc")

MAX_CHUNK = 1 << 20
_METRIC = {"ip": pb.METRIC_COSINE, "l2": pb.METRIC_L2}
#: VideoQuery.region_search -> SamplingSettings.regions (None = the server's setting; an unknown
#: value from a newer client is refused by the service as INVALID_ARGUMENT)
_REGION_SEARCH = {pb.REGION_SEARCH_UNSPECIFIED: None, pb.REGION_SEARCH_OFF: "off", pb.REGION_SEARCH_AUTO: "auto",
                  pb.REGION_SEARCH_ON: "on"}
_METRIC_IN = {pb.METRIC_UNSPECIFIED: "ip", pb.METRIC_COSINE: "ip", pb.METRIC_L2: "l2"}
_POLICY = {pb.DUPLICATE_POLICY_UNSPECIFIED: "ALLOW", pb.DUPLICATE_POLICY_ALLOW: "ALLOW",
           pb.DUPLICATE_POLICY_REPORT: "REPORT", pb.DUPLICATE_POLICY_REJECT: "REJECT"}
_JOB_STATE = {"QUEUED": pb.INGEST_JOB_STATE_QUEUED, "RUNNING": pb.INGEST_JOB_STATE_RUNNING,
              "SUCCEEDED": pb.INGEST_JOB_STATE_SUCCEEDED, "FAILED": pb.INGEST_JOB_STATE_FAILED}


def rich_status(err: ServiceError) -> tuple[tuple[str, bytes], ...]:
    st = status_pb2.Status(code=err.code.value[0], message=err.message)
    detail = any_pb2.Any()
    detail.Pack(error_details_pb2.ErrorInfo(reason=err.reason, domain=DOMAIN, metadata=err.metadata))
    st.details.append(detail)
    return (("grpc-status-details-bin", st.SerializeToString()),)


_REQUESTS: dict[tuple[str, str], object] = {}


def _count(name: str, code: str) -> None:
    # labels() hashes and locks on every call; the labelled children are looked up once instead
    c = _REQUESTS.get((name, code))
    if c is None:
        c = _REQUESTS[(name, code)] = metrics.REQUESTS.labels(name, code)
    c.inc()


def _rpc(fn):
    name = fn.__name__
    latency = metrics.LATENCY.labels(name)

    @functools.wraps(fn)
    async def wrapper(self, request, context):
        t0, code = time.perf_counter(), "OK"
        try:
            return await fn(self, request, context)
        except ServiceError as err:
            code = err.code.name
            if err.code in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN):
                log.error("rpc_failed", method=name, error=str(err))
            await context.abort(err.code, err.message, trailing_metadata=rich_status(err))
        except asyncio.CancelledError:
            code = "CANCELLED"
            raise
        except grpc.aio.AbortError:
            code = "ABORTED"
            raise
        except Exception as exc:
            err = disk_full(exc)  # e.g. spooling an upload
            if err is None:  # a bug: report INTERNAL, keep serving
                log.exception("rpc_crashed", method=name)
                err = ServiceError(grpc.StatusCode.INTERNAL, "INTERNAL", f"internal error: {type(exc).__name__}")
            code = err.code.name
            await context.abort(err.code, err.message, trailing_metadata=rich_status(err))
        finally:
            _count(name, code)
            latency.observe(time.perf_counter() - t0)

    return wrapper


def _varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _len_field(tag: bytes, payload: bytes) -> bytes:
    n = len(payload)
    return tag + (bytes((n,)) if n < 0x80 else _varint(n)) + payload


_F32, _F64 = struct.Struct("<f"), struct.Struct("<d")


def encode_search_response(hits: list[tuple[bytes, float, list[tuple[float, float]]]], model: str) -> bytes:
    """A serialised `SearchResponse`, written field by field (byte-identical to building the
    message and calling SerializeToString, which tests/server/test_fast_path.py checks): the search
    RPCs' hottest path, where protobuf objects cost more than the search. `hits` are (serialised
    Video, score, [(timestamp, score), ...]). proto3 leaves zero scalars out; so does this."""
    out = []
    for video, score, matches in hits:
        parts = [_len_field(b"\x0a", video)]
        if score != 0.0 or math.copysign(1.0, score) < 0:
            parts.append(b"\x15" + _F32.pack(score))
        for t, ms in matches:
            m = b""
            if t != 0.0 or math.copysign(1.0, t) < 0:
                m = b"\x09" + _F64.pack(t)
            if ms != 0.0 or math.copysign(1.0, ms) < 0:
                m += b"\x15" + _F32.pack(ms)
            parts.append(_len_field(b"\x1a", m))
        out.append(_len_field(b"\x0a", b"".join(parts)))
    if model:
        out.append(_len_field(b"\x12", model.encode()))
    return b"".join(out)


def _ts(msg, seconds: float) -> None:
    if seconds:
        msg.FromNanoseconds(int(seconds * 1e9))


class Translator:
    """Records -> protos."""

    def __init__(self, service: FrameSeekService):
        self.svc = service
        self._videos: dict[int, tuple[VideoRecord, pb.Video]] = {}
        self._video_bytes: dict[int, tuple[VideoRecord, bytes]] = {}

    def collection(self, rec: CollectionRecord, counts: tuple[int, int, float] | None = None) -> pb.Collection:
        c = pb.Collection(name=collection_name(rec), description=rec.description, model=rec.model,
                          dimension=rec.dimension, metric=_METRIC.get(rec.metric, pb.METRIC_UNSPECIFIED),
                          sampling=pb.SamplingSettings(fps=rec.sampling.get("fps", 0),
                                                       keep_blank_frames=rec.sampling.get("keep_blank_frames", False),
                                                       dedup_threshold=rec.sampling.get("dedup_threshold", 0),
                                                       keyframes_only=rec.sampling.get("keyframes_only", False)),
                          index=pb.IndexSettings(m=rec.index.get("m", 0),
                                                 ef_construction=rec.index.get("ef_construction", 0),
                                                 ef_search=rec.index.get("ef_search", 0)),
                          is_default=rec.is_default)
        if counts:
            c.video_count, c.sample_count = counts[0], counts[1]
        _ts(c.create_time, rec.create_time)
        return c

    def video(self, v: VideoRecord) -> pb.Video:
        """Videos are immutable once indexed, so search results reuse one message per video."""
        cached = self._videos.get(v.id)
        if cached is None or cached[0] is not v:
            if len(self._videos) > 100_000:
                self._videos.clear()
            cached = self._videos[v.id] = (v, self._video(v))
        return cached[1]

    def _video(self, v: VideoRecord) -> pb.Video:
        out = pb.Video(name=self.svc.video_name(v), external_key=v.external_key, labels=v.labels,
                       kind=pb.MEDIA_KIND_IMAGE if v.kind == "image" else pb.MEDIA_KIND_VIDEO,
                       duration_seconds=v.duration, width=v.width, height=v.height, sample_count=v.sample_count,
                       size_bytes=v.size_bytes, content_sha256=v.content_sha256, filename=v.filename, model=v.model,
                       ingest_realtime_factor=v.realtime_factor,
                       state=pb.VIDEO_STATE_DAMAGED if v.state == "damaged" else pb.VIDEO_STATE_ACTIVE)
        _ts(out.create_time, v.create_time)
        return out

    def job(self, j: JobRecord) -> pb.IngestJob:
        out = pb.IngestJob(name=f"ingestJobs/{j.id}", state=_JOB_STATE[j.state.value],
                           collection=f"collections/{self.svc._coll_name(j.collection_id)}",
                           samples_done=j.samples_done, samples_total=j.samples_total, request_id=j.request_id)
        if j.state.value == "SUCCEEDED":
            out.progress = 1.0
        elif j.samples_total:
            out.progress = min(1.0, j.samples_done / j.samples_total)
            elapsed = time.time() - j.create_time
            if j.samples_done and elapsed > 0:
                out.estimated_seconds_remaining = elapsed / j.samples_done * max(0, j.samples_total - j.samples_done)
        if j.video_id is not None and j.state.value == "SUCCEEDED":
            v = VideoRecord(id=j.video_id, collection_id=j.collection_id, kind="", duration=0, width=0, height=0,
                            sample_count=0, size_bytes=0, content_sha256="")
            out.video = self.svc.video_name(v)
        if j.state.value == "FAILED":
            out.error.CopyFrom(pb.JobError(code=j.error_code, reason=j.error_reason, message=j.error_message))
        _ts(out.create_time, j.create_time)
        _ts(out.update_time, j.update_time)
        return out

    def video_bytes(self, v: VideoRecord) -> bytes:
        """The serialised Video message of a video (cached like video())."""
        cached = self._video_bytes.get(v.id)
        if cached is None or cached[0] is not v:
            if len(self._video_bytes) > self.VIDEO_CACHE:
                self._video_bytes.clear()
            cached = self._video_bytes[v.id] = (v, self._video(v).SerializeToString())
        return cached[1]

    VIDEO_CACHE = 100_000

    def warm(self, videos: list[VideoRecord]) -> int:
        """Encode the Video messages of `videos` ahead of the first searches (each costs ~20 us the
        first time a search returns it; a fresh process would otherwise pay that on its first
        ~50k hits). Returns how many were encoded."""
        n = 0
        for v in videos[:self.VIDEO_CACHE]:
            self.video_bytes(v)
            n += 1
        return n

    def hits_bytes(self, hits: list[Hit], model: str) -> bytes:
        """hits() already serialised (see encode_search_response); the search RPCs return these
        bytes, which their response serializer passes through (server.add_servicer)."""
        try:
            return encode_search_response([(self.video_bytes(h.video), h.score, h.matches) for h in hits], model)
        except (OverflowError, struct.error):  # a score beyond float32 (l2 far away): let protobuf convert it
            return self.hits(hits, model).SerializeToString()

    def hits(self, hits: list[Hit], model: str) -> pb.SearchResponse:
        return pb.SearchResponse(model=model, hits=[
            pb.VideoHit(video=self.video(h.video), score=h.score,
                        matches=[pb.FrameMatch(timestamp_seconds=t, score=s) for t, s in h.matches])
            for h in hits])

    def copy(self, c: CopyMatch) -> pb.VideoCopyMatch:
        return pb.VideoCopyMatch(
            video=self.video(c.video), score=c.score, query_coverage=c.query_coverage,
            reference_coverage=c.reference_coverage, offset_seconds=c.offset, speed=c.speed,
            segments=[pb.AlignedSegment(query_start_seconds=s.query_start, query_end_seconds=s.query_end,
                                        reference_start_seconds=s.ref_start, reference_end_seconds=s.ref_end,
                                        score=s.score) for s in c.segments])

    def ingest(self, r: IngestResult) -> pb.IngestVideoResponse:
        out = pb.IngestVideoResponse(job=self.job(r.job), already_exists=r.already_exists,
                                     copies=[self.copy(c) for c in r.copies])
        if r.video is not None:
            out.video.CopyFrom(self.video(r.video))
        return out


def _ingest_request(m: pb.IngestMetadata) -> IngestRequest:
    return IngestRequest(parent=m.parent, external_key=m.external_key, labels=dict(m.labels),
                         request_id=m.request_id, filename=m.filename, server_path=m.server_path,
                         size_bytes=m.size_bytes, duplicate_policy=_POLICY.get(m.duplicate_policy, "?"),
                         duplicate_threshold=m.duplicate_threshold, return_job=m.return_job)


def _search_options(o: pb.SearchOptions) -> SearchOptions:
    f = o.filter
    return SearchOptions(
        k=o.k, min_score=o.min_score if o.min_score else float("-inf"),
        max_matches_per_video=o.max_matches_per_video, ef=o.ef, labels=dict(f.labels), videos=list(f.videos),
        exclude_videos=list(f.exclude_videos))


class FrameSeekServicer(pb_grpc.FrameSeekServicer):
    def __init__(self, service: FrameSeekService):
        self.svc = service
        self.tr = Translator(service)

    # -- collections
    @_rpc
    async def CreateCollection(self, request, context):
        c = request.collection
        rec = await self.svc.create_collection(
            request.collection_id, description=c.description, model=c.model,
            metric=_METRIC_IN.get(c.metric, "ip"),
            sampling={"fps": c.sampling.fps, "keep_blank_frames": c.sampling.keep_blank_frames,
                      "dedup_threshold": c.sampling.dedup_threshold, "keyframes_only": c.sampling.keyframes_only},
            index={"m": c.index.m, "ef_construction": c.index.ef_construction, "ef_search": c.index.ef_search})
        return self.tr.collection(rec, (0, 0, 0.0))

    @_rpc
    async def GetCollection(self, request, context):
        if not request.name:
            raise invalid("name is required", field="name")
        rec = await self.svc.collection(request.name)
        return self.tr.collection(rec, await self.svc.collection_counts(rec))

    @_rpc
    async def ListCollections(self, request, context):
        recs, nxt = await self.svc.list_collections(request.page_size, request.page_token)
        out = pb.ListCollectionsResponse(next_page_token=nxt)
        for r in recs:
            out.collections.append(self.tr.collection(r, await self.svc.collection_counts(r)))
        return out

    @_rpc
    async def DeleteCollection(self, request, context):
        if not request.name:
            raise invalid("name is required", field="name")
        await self.svc.delete_collection(request.name, request.force)
        return empty_pb2.Empty()

    # -- ingest
    async def _spool(self, first_payload_kind: str, request_iterator, context):
        """Read the chunk messages after the first one into an upload file; returns (path, sha256, size)."""
        path = self.svc.new_upload_path()
        h, size = hashlib.sha256(), 0
        limit = self.svc.settings.max_upload_bytes
        try:
            with open(path, "wb") as f:
                async for msg in request_iterator:
                    if msg.WhichOneof("payload") != "chunk":
                        raise invalid(f"only the first message may carry {first_payload_kind}", "INVALID_ARGUMENT",
                                      field=first_payload_kind)
                    n = len(msg.chunk)
                    if n > MAX_CHUNK:
                        raise invalid(f"chunk of {n} bytes exceeds the 1 MiB limit", "CHUNK_TOO_LARGE",
                                      limit=MAX_CHUNK)
                    size += n
                    if size > limit:
                        raise exhausted(f"upload exceeds the limit of {limit} bytes", "MEDIA_TOO_LARGE", limit=limit)
                    h.update(msg.chunk)
                    f.write(msg.chunk)
        except BaseException:
            os.unlink(path)
            raise
        return path, h.hexdigest(), size

    async def _first(self, request_iterator, kind: str):
        try:
            first = await request_iterator.__anext__()
        except StopAsyncIteration:
            raise invalid(f"the stream is empty; the first message must carry {kind}", "MISSING_METADATA") from None
        if first.WhichOneof("payload") != kind:
            raise invalid(f"the first message must carry {kind} (got {first.WhichOneof('payload') or 'nothing'})",
                          "MISSING_METADATA")
        return first

    @_rpc
    async def IngestVideo(self, request_iterator, context):
        it = request_iterator.__aiter__()
        first = await self._first(it, "metadata")
        req = _ingest_request(first.metadata)
        rec, done = await self.svc.prepare_ingest(req)
        if done is not None:
            return self.tr.ingest(done)
        if req.server_path:
            real = self.svc.resolve_server_path(req.server_path)
            async for _ in it:
                raise invalid("no chunks may follow a metadata message with server_path", field="server_path")
            size = os.path.getsize(real)
            if size > self.svc.settings.max_upload_bytes:
                raise exhausted(f"file exceeds the limit of {self.svc.settings.max_upload_bytes} bytes",
                                "MEDIA_TOO_LARGE")
            from .service import sha256_file

            sha = await asyncio.get_running_loop().run_in_executor(None, sha256_file, real)
            result = await self.svc.ingest(rec, req, real, sha, size, owns_file=False)
        else:
            path, sha, size = await self._spool("metadata", it, context)
            result = await self.svc.ingest(rec, req, path, sha, size)
        return self.tr.ingest(result)

    @_rpc
    async def IngestImage(self, request, context):
        req = _ingest_request(request.metadata)
        req.return_job, req.server_path = False, ""
        rec, done = await self.svc.prepare_ingest(req)
        if done is not None:
            return self.tr.ingest(done)
        if len(request.image) > self.svc.settings.max_image_bytes:
            raise exhausted(f"image exceeds {self.svc.settings.max_image_bytes} bytes", "MEDIA_TOO_LARGE")
        path = self.svc.new_upload_path()
        with open(path, "wb") as f:
            f.write(request.image)
        sha = hashlib.sha256(request.image).hexdigest()
        return self.tr.ingest(await self.svc.ingest(rec, req, path, sha, len(request.image), is_image=True))

    @_rpc
    async def GetIngestJob(self, request, context):
        return self.tr.job(await self.svc.get_job(request.name))

    async def WatchIngestJob(self, request, context):
        t0, code = time.perf_counter(), "OK"
        try:
            async for job in self.svc.watch_job(request.name):
                await context.write(self.tr.job(job))
        except ServiceError as err:
            code = err.code.name
            await context.abort(err.code, err.message, trailing_metadata=rich_status(err))
        finally:
            _count("WatchIngestJob", code)
            metrics.LATENCY.labels("WatchIngestJob").observe(time.perf_counter() - t0)

    # -- search
    @_rpc
    async def SearchByVector(self, request, context):
        hits, model = await self.svc.search_vector(request.parent, request.vector, _search_options(request.options))
        return self.tr.hits_bytes(hits, model)

    @_rpc
    async def SearchByImage(self, request, context):
        hits, model = await self.svc.search_image(request.parent, request.image, _search_options(request.options))
        return self.tr.hits_bytes(hits, model)

    @_rpc
    async def SearchByVideo(self, request_iterator, context):
        it = request_iterator.__aiter__()
        first = await self._first(it, "query")
        q = first.query
        self.svc.check_ready()
        rec = await self.svc.collection(q.parent)
        if q.server_path:
            path, owned = self.svc.resolve_server_path(q.server_path), False
            async for _ in it:
                raise invalid("no chunks may follow a query with server_path", field="server_path")
        else:
            path, _, size = await self._spool("query", it, context)
            owned = True
            if size == 0:
                os.unlink(path)
                raise invalid("the clip is empty (zero bytes)", "EMPTY_MEDIA")
        try:
            f = q.filter
            res = await self.svc.search_video(rec, path, q.k, q.min_score, q.frame_k, dict(f.labels), list(f.videos),
                                              list(f.exclude_videos), q.fps,
                                              _REGION_SEARCH.get(q.region_search, f"unknown({q.region_search})"))
        finally:
            if owned:
                os.unlink(path)
        return pb.SearchByVideoResponse(matches=[self.tr.copy(m) for m in res.matches],
                                        query_duration_seconds=res.query_duration, query_samples=res.query_samples,
                                        model=res.model)

    # -- videos
    @_rpc
    async def GetVideo(self, request, context):
        return self.tr.video(await self.svc.get_video(request.name))

    @_rpc
    async def ListVideos(self, request, context):
        vids, nxt, total = await self.svc.list_videos(request.parent, request.page_size, request.page_token,
                                                      dict(request.labels), request.content_sha256,
                                                      request.external_key)
        return pb.ListVideosResponse(videos=[self.tr.video(v) for v in vids], next_page_token=nxt, total_size=total)

    @_rpc
    async def DeleteVideo(self, request, context):
        await self.svc.delete_video(request.name)
        return empty_pb2.Empty()

    @_rpc
    async def GetStats(self, request, context):
        s = await self.svc.stats()
        return pb.Stats(version=s["version"], uptime_seconds=s["uptime_seconds"],
                        collections=[pb.CollectionStats(**c) for c in s["collections"]],
                        video_count=s["video_count"], sample_count=s["sample_count"],
                        storage_bytes=s["storage_bytes"], active_ingests=s["active_ingests"],
                        copy_threshold=s["copy_threshold"], simd_level=s["simd_level"],
                        recovery_problems=s["recovery_problems"])


# Methods whose handlers return an already serialised response (bytes).
PRESERIALISED = ("SearchByVector", "SearchByImage")


def _pass_bytes(serialize):
    def serializer(response) -> bytes:
        return response if type(response) is bytes else serialize(response)
    return serializer


def add_servicer(servicer: FrameSeekServicer, server) -> None:
    """`add_FrameSeekServicer_to_server`, except that the PRESERIALISED methods' serializers pass
    bytes through (the handlers encode those responses themselves, see encode_search_response)."""
    import grpc as _grpc

    class _Capture:
        def add_generic_rpc_handlers(self, handlers) -> None:
            pass

        def add_registered_method_handlers(self, service: str, handlers: dict) -> None:
            self.service, self.handlers = service, handlers

    cap = _Capture()
    pb_grpc.add_FrameSeekServicer_to_server(servicer, cap)
    handlers = dict(cap.handlers)
    for name in PRESERIALISED:
        h = handlers[name]
        handlers[name] = h._replace(response_serializer=_pass_bytes(h.response_serializer))
    server.add_generic_rpc_handlers((_grpc.method_handlers_generic_handler(cap.service, handlers),))
    server.add_registered_method_handlers(cap.service, handlers)
