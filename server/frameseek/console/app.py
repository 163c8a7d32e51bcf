"""The console's HTTP routes (Starlette): pages (HTML shells that render with static/console.js),
a small JSON API that calls the gRPC API (rpc.Api), thumbnails and originals (store.ConsoleMedia).

Uploads (ingest, search by clip) stream: the request body goes to the gRPC stream chunk by chunk
as it arrives, never held whole. Errors are JSON {"error": {code, reason, message}} carrying the
API's own code, reason and message, with the matching HTTP status.
"""

from __future__ import annotations

import asyncio
import json
import mimetypes
import os
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from ..client import FrameSeekError
from ..v1 import frameseek_pb2 as pb
from .rpc import Api, as_dict, error_body, video_id
from .stats import ServerRates
from .store import ConsoleMedia

HERE = Path(__file__).parent
PAGES = {
    "library": "Library",
    "search-image": "Search by image",
    "search-video": "Search by video",
    "ingest": "Ingest",
    "stats": "Stats",
}
IMAGE_TYPES = {"image/jpeg", "image/png", "image/webp", "image/bmp", "image/tiff", "image/gif"}
COPIES_QUERY_SAMPLES = 120
LIBRARY_PAGE_SIZE = 50  # the library's default page (library.html selects it)
IMMUTABLE = "public, max-age=31536000, immutable"  # video ids are never reused (catalog AUTOINCREMENT)


class BadRequest(Exception):
    pass


def _labels(request: Request) -> dict[str, str]:
    """`label=key:value` query parameters (repeatable)."""
    out = {}
    for item in request.query_params.getlist("label"):
        key, sep, value = item.partition(":")
        if not sep or not key:
            raise BadRequest(f"label {item!r} must be key:value")
        out[key] = value
    return out


def _int(request: Request, name: str, default: int, lo: int, hi: int) -> int:
    raw = request.query_params.get(name)
    try:
        v = int(raw) if raw not in (None, "") else default
    except ValueError:
        raise BadRequest(f"{name} must be an integer") from None
    if not lo <= v <= hi:
        raise BadRequest(f"{name} must be in [{lo}, {hi}]")
    return v


def _parent(request: Request, default: str = "") -> str:
    c = request.query_params.get("collection", "")
    return f"collections/{c}" if c else default


class SameOriginWrites:
    """Refuses a write (any method but GET/HEAD) sent by another site's page: the browser sends
    its Origin, which must name this console. (Reads need no check: another origin cannot read
    the answers, the browser withholds them without CORS headers, which the console never sends.)"""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and scope["method"] not in ("GET", "HEAD"):
            headers = dict(scope["headers"])
            origin = headers.get(b"origin", b"").decode()
            if origin and urlsplit(origin).netloc != headers.get(b"host", b"").decode():
                body = {
                    "error": {
                        "code": "PERMISSION_DENIED",
                        "reason": "CROSS_SITE_REQUEST",
                        "message": f"a page of {origin} may not change this library",
                    }
                }
                await JSONResponse(body, 403)(scope, receive, send)
                return
        await self.app(scope, receive, send)


def build_app(api: Api, media: ConsoleMedia, max_image_bytes: int, allowed_hosts: list[str] | None = None) -> Starlette:
    """`allowed_hosts`: the Host names the console answers to (None = any): on a loopback bind,
    only loopback names, so that a site whose name a DNS rebinding points at 127.0.0.1 is refused."""
    templates = Jinja2Templates(directory=str(HERE / "templates"))
    rates = ServerRates()

    def json_route(fn: Callable):
        async def handler(request: Request) -> Response:
            try:
                return await fn(request)
            except FrameSeekError as err:
                status, body = error_body(err)
                return JSONResponse(body, status)
            except BadRequest as err:
                return JSONResponse(
                    {"error": {"code": "INVALID_ARGUMENT", "reason": "INVALID_ARGUMENT", "message": str(err)}}, 400
                )

        return handler

    def page(name: str):
        async def handler(request: Request) -> Response:
            return templates.TemplateResponse(request, f"{name}.html", {"page": name, "pages": PAGES})

        return handler

    async def library_page(request: Request) -> Response:
        """The library with its first page's data inlined: rows render without a second round trip."""
        try:
            first = as_dict(await api.list_videos("collections/-", LIBRARY_PAGE_SIZE, "", {}))
        except FrameSeekError as err:
            first = error_body(err)[1]
        return templates.TemplateResponse(
            request,
            "library.html",
            {"page": "library", "pages": PAGES, "first_page": first, "first_page_size": LIBRARY_PAGE_SIZE},
        )

    async def video_page(request: Request) -> Response:
        return templates.TemplateResponse(request, "video.html", {"page": "video", "pages": PAGES})

    # -- JSON API --------------------------------------------------------------------------------
    async def collections(request: Request) -> Response:
        return JSONResponse({"collections": [as_dict(c) for c in await api.list_collections()]})

    async def videos(request: Request) -> Response:
        r = await api.list_videos(
            _parent(request, "collections/-"),
            _int(request, "page_size", LIBRARY_PAGE_SIZE, 1, 1000),
            request.query_params.get("page_token", ""),
            _labels(request),
        )
        return JSONResponse(as_dict(r))

    def _name(request: Request) -> str:
        return f"collections/{request.path_params['collection']}/videos/{request.path_params['video']}"

    async def video(request: Request) -> Response:
        v = await api.get_video(_name(request))
        thumbs = media.thumbnails(video_id(v.name))
        return JSONResponse(
            {
                "video": as_dict(v),
                "thumbnails": thumbs.timestamps if thumbs else [],
                "original": media.original(video_id(v.name)) is not None,
            }
        )

    async def delete_video(request: Request) -> Response:
        await api.delete_video(_name(request))
        return JSONResponse({"deleted": _name(request)})

    async def copies(request: Request) -> Response:
        """The indexed videos this one copies (or that copy it): SearchByVideo of its original."""
        name = _name(request)
        v = await api.get_video(name)
        path = media.original(video_id(v.name))
        if path is None:
            return JSONResponse(
                {
                    "error": {
                        "code": "FAILED_PRECONDITION",
                        "reason": "ORIGINAL_NOT_KEPT",
                        "message": "the original of this video is not kept (it was ingested "
                        "while the web console was off)",
                    }
                },
                412,
            )
        # denser than the server's query default (24 samples), which is tuned for clips, not whole
        # videos: up to COPIES_QUERY_SAMPLES at <= 1 fps
        fps = min(1.0, COPIES_QUERY_SAMPLES / v.duration_seconds) if v.duration_seconds > 0 else 0.0
        query = pb.VideoQuery(
            parent=name.rsplit("/videos/", 1)[0], k=10, fps=fps, filter=pb.SearchFilter(exclude_videos=[name])
        )
        r = await api.search_video(query, _file_blocks(path))
        return JSONResponse(as_dict(r))

    async def search_image(request: Request) -> Response:
        body = bytearray()
        async for block in request.stream():
            body += block
            if len(body) > max_image_bytes:
                raise BadRequest(f"the image is larger than the server's limit of {max_image_bytes} bytes")
        t0 = time.perf_counter()
        r = await api.search_image(_parent(request), bytes(body), _int(request, "k", 10, 1, 1000), _labels(request))
        return JSONResponse({**as_dict(r), "elapsed_ms": (time.perf_counter() - t0) * 1000})

    async def search_video(request: Request) -> Response:
        query = pb.VideoQuery(
            parent=_parent(request), k=_int(request, "k", 10, 1, 1000), filter=pb.SearchFilter(labels=_labels(request))
        )
        t0 = time.perf_counter()
        r = await api.search_video(query, request.stream())
        return JSONResponse({**as_dict(r), "elapsed_ms": (time.perf_counter() - t0) * 1000})

    async def ingest(request: Request) -> Response:
        filename = os.path.basename(request.query_params.get("filename", ""))
        meta = pb.IngestMetadata(
            parent=_parent(request),
            labels=_labels(request),
            filename=filename,
            request_id=request.query_params.get("request_id") or uuid.uuid4().hex,
            size_bytes=int(request.headers.get("content-length") or 0),
            return_job=True,
        )
        kind = request.headers.get("content-type", "").split(";")[0].strip()
        if kind in IMAGE_TYPES or (mimetypes.guess_type(filename)[0] or "") in IMAGE_TYPES:
            body = bytearray()
            async for block in request.stream():
                body += block
                if len(body) > max_image_bytes:
                    raise BadRequest(f"the image is larger than the server's limit of {max_image_bytes} bytes")
            r = await api.ingest_image(meta, bytes(body))
        else:
            r = await api.ingest_video(meta, request.stream())
        return JSONResponse(as_dict(r))

    async def job_events(request: Request) -> Response:
        """WatchIngestJob as Server-Sent Events: one `job` event per change, or one `error` event."""
        name = f"ingestJobs/{request.path_params['job']}"

        async def events():
            try:
                async for job in api.watch_job(name):
                    yield f"event: job\ndata: {json.dumps(as_dict(job))}\n\n"
            except FrameSeekError as err:
                yield f"event: error\ndata: {json.dumps(error_body(err)[1])}\n\n"
            yield "event: end\ndata: {}\n\n"

        return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-store"})

    async def stats(request: Request) -> Response:
        s = as_dict(await api.stats())
        s["rates"] = rates.sample()
        return JSONResponse(s)

    # -- media -----------------------------------------------------------------------------------
    async def thumbnail(request: Request) -> Response:
        """The JPEG of a video's sample nearest to ?t= seconds (or its sample ?i=)."""
        vid = request.path_params["video"]
        thumbs = media.thumbnails(vid)
        if thumbs is None or not thumbs.timestamps:
            return Response("no thumbnails for this video", 404)
        try:
            i = (
                int(request.query_params["i"])
                if "i" in request.query_params
                else thumbs.nearest(float(request.query_params.get("t", 0)))
            )
        except ValueError:
            raise BadRequest("t must be seconds, i a sample index") from None
        if not 0 <= i < len(thumbs.timestamps):
            return Response("no such sample", 404)
        etag = f'"{vid}.{i}"'
        headers = {"ETag": etag, "Cache-Control": IMMUTABLE}
        if etag in request.headers.get("if-none-match", ""):
            return Response(status_code=304, headers=headers)
        return Response(thumbs.jpeg(i), media_type="image/jpeg", headers=headers)

    async def original(request: Request) -> Response:
        """The original upload, with HTTP Range (206) so that a page can play from any time."""
        vid = request.path_params["video"]
        path, thumbs = media.original(vid), media.thumbnails(vid)
        if path is None or thumbs is None:
            return Response("the original of this video is not kept", 404)
        kind = mimetypes.guess_type(thumbs.filename)[0] or "application/octet-stream"
        return FileResponse(path, media_type=kind, headers={"Cache-Control": IMMUTABLE})

    routes = [
        Route("/", lambda r: RedirectResponse("/library")),
        Route("/library", library_page),
        *[Route(f"/{name}", page(name)) for name in PAGES if name != "library"],
        Route("/collections/{collection}/videos/{video:int}", video_page),
        Route("/api/collections", json_route(collections)),
        Route("/api/videos", json_route(videos)),
        Route("/api/collections/{collection}/videos/{video:int}", json_route(video)),
        Route("/api/collections/{collection}/videos/{video:int}", json_route(delete_video), methods=["DELETE"]),
        Route("/api/collections/{collection}/videos/{video:int}/copies", json_route(copies)),
        Route("/api/search/image", json_route(search_image), methods=["POST"]),
        Route("/api/search/video", json_route(search_video), methods=["POST"]),
        Route("/api/ingest", json_route(ingest), methods=["POST"]),
        Route("/api/jobs/{job}/events", job_events),
        Route("/api/stats", json_route(stats)),
        Route("/thumbs/{video:int}", json_route(thumbnail)),
        Route("/media/{video:int}", original),
        Mount("/static", StaticFiles(directory=str(HERE / "static")), name="static"),
    ]
    middleware = [Middleware(SameOriginWrites)]
    if allowed_hosts is not None:
        middleware.insert(0, Middleware(TrustedHostMiddleware, allowed_hosts=allowed_hosts))
    return Starlette(routes=routes, middleware=middleware)


async def _file_blocks(path: str, size: int = 1 << 20):
    loop = asyncio.get_running_loop()
    with open(path, "rb") as f:
        while block := await loop.run_in_executor(None, f.read, size):
            yield block
