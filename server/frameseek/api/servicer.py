"""gRPC servicer: translates frameseek.v1 calls into the service's verbs and their results back.

It owns what is protocol: resource names (names.py), page tokens (pages.py), upload streams
(uploads.py) and the error mapping (status.py). Every method goes through `_rpc`, which counts
and times the call and turns a ServiceError into a google.rpc.Status with an ErrorInfo detail.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import os
import time

import grpc
import structlog
from google.protobuf import empty_pb2

from .. import metrics
from ..errors import ErrorCode, ServiceError, disk_full, exhausted, invalid
from ..service import DEFAULT_COLLECTION, FrameSeekService, SearchOptions
from ..v1 import frameseek_pb2 as pb
from ..v1 import frameseek_pb2_grpc as pb_grpc
from . import messages
from .messages import REGION_SEARCH, Translator, ingest_request, search_options, video_ids
from .names import ALL_COLLECTIONS, parse_collection, parse_job, parse_person, parse_video, video_name
from .pages import decode_id_token, decode_token, encode_token, page_size
from .status import abort
from .uploads import Uploads, client_of, resolve_server_path, sha256_file

log = structlog.get_logger("frameseek.rpc")

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
            if err.code in (ErrorCode.INTERNAL, ErrorCode.UNKNOWN):
                log.error("rpc_failed", method=name, error=str(err))
            await abort(context, err)
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
                err = ServiceError(ErrorCode.INTERNAL, "INTERNAL", f"internal error: {type(exc).__name__}")
            code = err.code.name
            await abort(context, err)
        finally:
            _count(name, code)
            latency.observe(time.perf_counter() - t0)

    return wrapper


async def _first(it, kind: str, uploads: Uploads):
    try:
        first = await uploads.next_message(it)
    except StopAsyncIteration:
        raise invalid(f"the stream is empty; the first message must carry {kind}", "MISSING_METADATA") from None
    if first.WhichOneof("payload") != kind:
        raise invalid(
            f"the first message must carry {kind} (got {first.WhichOneof('payload') or 'nothing'})", "MISSING_METADATA"
        )
    return first


async def _no_more(it, field: str, uploads: Uploads) -> None:
    try:
        await uploads.next_message(it)
    except StopAsyncIteration:
        return
    raise invalid("no chunks may follow a message with server_path", field=field)


class FrameSeekServicer(pb_grpc.FrameSeekServicer):
    def __init__(self, service: FrameSeekService):
        self.svc = service
        self.tr = Translator(service)
        s = service.settings
        self.uploads = Uploads(
            service.uploads_dir, s.media.max_upload_bytes, s.upload_idle_timeout_s, s.max_uploads_per_client
        )
        if not service.replica:  # a replica shares the primary's data dir, and its live uploads
            self.uploads.remove_stale()

    # -- collections
    @_rpc
    async def CreateCollection(self, request, context):
        c = request.collection
        rec = await self.svc.collections.create(
            request.collection_id,
            description=c.description,
            model=c.model,
            metric=messages.metric(c.metric),
            sampling={
                "fps": c.sampling.fps,
                "keep_blank_frames": c.sampling.keep_blank_frames,
                "dedup_threshold": c.sampling.dedup_threshold,
                "keyframes_only": c.sampling.keyframes_only,
            },
            index={
                "m": c.index.m,
                "ef_construction": c.index.ef_construction,
                "ef_search": c.index.ef_search,
                "target_recall": c.index.target_recall,
                "layer0_links": c.index.layer0_links,
            },
            faces=c.faces,
            audio=c.audio,
            own_dimension=c.vector_dimension if c.own_vectors else 0,
        )
        return self.tr.collection(rec, (0, 0, 0.0))

    @_rpc
    async def GetCollection(self, request, context):
        if not request.name:
            raise invalid("name is required", field="name")
        rec = await self.svc.collections.get(parse_collection(request.name, field="name"))
        return self.tr.collection(rec, await self.svc.collections.counts(rec))

    @_rpc
    async def ListCollections(self, request, context):
        size = page_size(request.page_size)
        recs = await self.svc.collections.list(decode_token(request.page_token, "c"), size + 1)
        out = pb.ListCollectionsResponse(
            next_page_token=encode_token("c", recs[size - 1].name) if len(recs) > size else ""
        )
        for r in recs[:size]:
            out.collections.append(self.tr.collection(r, await self.svc.collections.counts(r)))
        return out

    @_rpc
    async def DeleteCollection(self, request, context):
        if not request.name:
            raise invalid("name is required", field="name")
        await self.svc.collections.delete(parse_collection(request.name, field="name"), request.force)
        return empty_pb2.Empty()

    # -- ingest
    @_rpc
    async def IngestVideo(self, request_iterator, context):
        it = request_iterator.__aiter__()
        first = await _first(it, "metadata", self.uploads)
        req = ingest_request(first.metadata)
        with self.uploads.client_slot(None if req.server_path else client_of(context)):
            rec, done, slot = await self.svc.ingest.prepare(req)
            if done is not None:
                return self.tr.ingest(done)
            try:
                if req.server_path:
                    real = resolve_server_path(self.svc.settings.ingest_path_root, req.server_path)
                    await _no_more(it, "server_path", self.uploads)
                    size = os.path.getsize(real)
                    if size > self.svc.settings.media.max_upload_bytes:
                        raise exhausted(
                            f"file exceeds the limit of {self.svc.settings.media.max_upload_bytes} bytes",
                            "MEDIA_TOO_LARGE",
                        )
                    sha = await asyncio.get_running_loop().run_in_executor(None, sha256_file, real)
                    path, owned = real, False
                else:
                    path, sha, size = await self.uploads.spool("metadata", it)
                    owned = True
            except BaseException:
                slot.release()
                raise
        return self.tr.ingest(await self.svc.ingest.ingest(rec, req, path, sha, size, slot, owns_file=owned))

    @_rpc
    async def IngestImage(self, request, context):
        req = ingest_request(request.metadata)
        req.return_job, req.server_path = False, ""
        rec, done, slot = await self.svc.ingest.prepare(req)
        if done is not None:
            return self.tr.ingest(done)
        try:
            if len(request.image) > self.svc.settings.media.max_image_bytes:
                raise exhausted(f"image exceeds {self.svc.settings.media.max_image_bytes} bytes", "MEDIA_TOO_LARGE")
            path = self.uploads.write(request.image)
        except BaseException:
            slot.release()
            raise
        sha = hashlib.sha256(request.image).hexdigest()
        return self.tr.ingest(
            await self.svc.ingest.ingest(rec, req, path, sha, len(request.image), slot, is_image=True)
        )

    @_rpc
    async def GetIngestJob(self, request, context):
        return self.tr.job(await self.svc.ingest.get_job(parse_job(request.name)))

    async def WatchIngestJob(self, request, context):
        t0, code = time.perf_counter(), "OK"
        try:
            async for job in self.svc.ingest.watch_job(parse_job(request.name)):
                await context.write(self.tr.job(job))
        except ServiceError as err:
            code = err.code.name
            await abort(context, err)
        finally:
            _count("WatchIngestJob", code)
            metrics.LATENCY.labels("WatchIngestJob").observe(time.perf_counter() - t0)

    # -- search
    @_rpc
    async def SearchByVector(self, request, context):
        hits, model = await self.svc.search.by_vector(
            parse_collection(request.parent), request.vector, search_options(request.options)
        )
        return self.tr.hits_bytes(hits, model)

    @_rpc
    async def SearchByImage(self, request, context):
        hits, model = await self.svc.search.by_image(
            parse_collection(request.parent), request.image, search_options(request.options)
        )
        return self.tr.hits_bytes(hits, model)

    @_rpc
    async def SearchByFace(self, request, context):
        f = request.face
        box = (f.x0, f.y0, f.x1, f.y1) if request.HasField("face") else None
        rec_id = parse_collection(request.parent)
        results, face_model = await self.svc.people.search_face(
            rec_id, request.image, search_options(request.options), box
        )
        return self.tr.face_results(rec_id or DEFAULT_COLLECTION, results, face_model)

    @_rpc
    async def ListPeople(self, request, context):
        cid = parse_collection(request.parent) or DEFAULT_COLLECTION
        size = page_size(request.page_size)
        after = decode_id_token(request.page_token, "p") or 0
        people = await self.svc.people.list_people(cid, after, size + 1)
        out = pb.ListPeopleResponse(
            next_page_token=encode_token("p", str(people[size - 1].id)) if len(people) > size else ""
        )
        out.people.extend(self.tr.person(cid, p) for p in people[:size])
        return out

    @_rpc
    async def GetVideoPeople(self, request, context):
        if not request.name:
            raise invalid("name is required", field="name")
        cid, vid = parse_video(request.name)
        people = await self.svc.people.video_people(cid, vid)
        return pb.GetVideoPeopleResponse(people=[self.tr.person(cid, p) for p in people])

    @_rpc
    async def UpdatePerson(self, request, context):
        if not request.person.name:
            raise invalid("person.name is required", field="person.name")
        cid, pid = parse_person(request.person.name)
        p = await self.svc.people.update_person(cid, pid, request.person.display_name)
        return self.tr.person(cid, p)

    @contextlib.asynccontextmanager
    async def _query_file(self, q, it, context, what: str):
        """A query's media: a file under the ingest root (q.server_path; no chunks may follow it), or
        the chunks that follow, spooled to a temporary file that is removed afterwards."""
        if q.server_path:
            path = resolve_server_path(self.svc.settings.ingest_path_root, q.server_path)
            await _no_more(it, "server_path", self.uploads)
            yield path
            return
        with self.uploads.client_slot(client_of(context)):
            path, _, size = await self.uploads.spool("query", it)
        try:
            if size == 0:
                raise invalid(f"the {what} is empty (zero bytes)", "EMPTY_MEDIA")
            yield path
        finally:
            os.unlink(path)

    @_rpc
    async def SearchByVideo(self, request_iterator, context):
        it = request_iterator.__aiter__()
        first = await _first(it, "query", self.uploads)
        q = first.query
        self.svc.check_ready()
        rec = await self.svc.collections.get(parse_collection(q.parent))
        f = q.filter
        videos = video_ids(f.videos) if f.videos else []
        exclude = video_ids(f.exclude_videos) if f.exclude_videos else []
        async with self._query_file(q, it, context, "clip") as path:
            res = await self.svc.search.by_video(
                rec,
                path,
                q.k,
                q.min_score,
                q.frame_k,
                dict(f.labels),
                videos,
                exclude,
                q.fps,
                REGION_SEARCH.get(q.region_search, f"unknown({q.region_search})"),
            )
        return pb.SearchByVideoResponse(
            matches=[self.tr.copy(m) for m in res.matches],
            query_duration_seconds=res.query_duration,
            query_samples=res.query_samples,
            model=res.model,
        )

    @_rpc
    async def SearchByAudio(self, request_iterator, context):
        it = request_iterator.__aiter__()
        first = await _first(it, "query", self.uploads)
        q = first.query
        self.svc.check_ready()
        rec = await self.svc.collections.get(parse_collection(q.parent))
        f = q.filter
        opts = SearchOptions(
            k=q.k,
            min_score=q.min_score,
            labels=dict(f.labels),
            videos=video_ids(f.videos) if f.videos else [],
            exclude_videos=video_ids(f.exclude_videos) if f.exclude_videos else [],
        )
        async with self._query_file(q, it, context, "query") as path:
            res = await self.svc.soundtracks.by_audio(rec, path, opts)
        return pb.SearchByAudioResponse(
            matches=[self.tr.audio_match(h) for h in res.matches],
            query_duration_seconds=res.query_duration,
            query_fingerprints=res.query_fingerprints,
        )

    # -- own vectors (service/items.py)
    @_rpc
    async def UpsertItems(self, request_iterator, context):
        it = request_iterator.__aiter__()
        h = (await _first(it, "header", self.uploads)).header
        self.svc.check_ready()
        cid = parse_collection(h.parent)
        rec = await self.svc.collections.get(cid)
        self.svc.items.check_own(rec)
        items = vectors = replaced = 0
        names: list[str] = []

        def tally(done) -> None:
            nonlocal items, vectors, replaced
            items += len(done)
            vectors += sum(u.video.sample_count for u in done)
            replaced += sum(u.replaced for u in done)
            if h.return_names:
                names.extend(video_name(rec.name, u.video.id) for u in done)

        committing = None  # the previous batch's commit, running while the next message is read and parsed
        try:
            while True:
                try:
                    msg = await self.uploads.next_message(it)
                except StopAsyncIteration:
                    break
                if msg.WhichOneof("payload") != "batch":
                    raise invalid("only batches may follow the header", field="header")
                batch = messages.item_batch(msg.batch.items, rec.name, rec.dimension)
                # one batch at most waits for its commit: gRPC flow control holds a faster client
                if committing is not None:
                    tally(await committing)
                committing = asyncio.ensure_future(self.svc.core.io(self.svc.items.upsert_sync, rec, batch))
            if committing is not None:
                tally(await committing)
                committing = None
        finally:
            if committing is not None:  # the stream failed: the batch in flight still commits or fails first
                await asyncio.gather(committing, return_exceptions=True)
        return pb.UpsertItemsResponse(item_count=items, vector_count=vectors, replaced_count=replaced, names=names)

    @_rpc
    async def DeleteItems(self, request, context):
        self.svc.check_ready()
        cid = parse_collection(request.parent)
        rec = await self.svc.collections.get(cid)
        ids = []
        for n in request.names:
            c, vid = parse_video(n, field="names")
            if c != rec.name:
                raise invalid(f"item {n!r} is not in {request.parent or 'the default collection'}", field="names")
            ids.append(vid)
        deleted, missing = await self.svc.core.io(self.svc.items.delete_sync, rec, ids, list(request.external_keys))
        await self.svc.core.io(self.svc.core.set_index_gauge, rec)
        return pb.DeleteItemsResponse(deleted_count=deleted, not_found_count=missing)

    # -- videos
    @_rpc
    async def GetVideo(self, request, context):
        return self.tr.video(await self.svc.videos.get(*parse_video(request.name)))

    @_rpc
    async def ListVideos(self, request, context):
        cid = None if request.parent == ALL_COLLECTIONS else parse_collection(request.parent)
        size = page_size(request.page_size)
        before = decode_id_token(request.page_token, "v")
        vids, total = await self.svc.videos.list(
            cid, before, size + 1, dict(request.labels), request.content_sha256, request.external_key
        )
        nxt = encode_token("v", str(vids[size - 1].id)) if len(vids) > size else ""
        return pb.ListVideosResponse(
            videos=[self.tr.video(v) for v in vids[:size]], next_page_token=nxt, total_size=total
        )

    @_rpc
    async def DeleteVideo(self, request, context):
        await self.svc.videos.delete(*parse_video(request.name))
        return empty_pb2.Empty()

    @_rpc
    async def GetStats(self, request, context):
        s = await self.svc.stats()
        colls = [pb.CollectionStats(**{**c, "collection": f"collections/{c['collection']}"}) for c in s["collections"]]
        return pb.Stats(
            version=s["version"],
            uptime_seconds=s["uptime_seconds"],
            collections=colls,
            video_count=s["video_count"],
            sample_count=s["sample_count"],
            storage_bytes=s["storage_bytes"],
            active_ingests=s["active_ingests"],
            copy_threshold=s["copy_threshold"],
            simd_level=s["simd_level"],
            insecure=self.svc.settings.insecure,
            recovery_problems=s["recovery_problems"],
            audio_threshold=s["audio_threshold"],
            audio_fingerprints=s["audio_fingerprints"],
        )


# Methods whose handlers return an already serialised response (bytes).
PRESERIALISED = ("SearchByVector", "SearchByImage")


def _pass_bytes(serialize):
    def serializer(response) -> bytes:
        return response if type(response) is bytes else serialize(response)

    return serializer


def add_servicer(servicer: FrameSeekServicer, server) -> None:
    """`add_FrameSeekServicer_to_server`, except that the PRESERIALISED methods' serializers pass
    bytes through (the handlers encode those responses themselves, see Translator.hits_bytes)."""

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
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(cap.service, handlers),))
    server.add_registered_method_handlers(cap.service, handlers)
