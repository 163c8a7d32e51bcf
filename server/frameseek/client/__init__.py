"""Python client (SDK) for a frameseek server.

    from frameseek.client import Client
    with Client("127.0.0.1:50051") as fs:
        video = fs.ingest_video("movie.mp4", labels={"source": "archive"}).video
        for hit in fs.search_by_image("frame.jpg", k=5).hits:
            print(hit.video.name, hit.score, [m.timestamp_seconds for m in hit.matches])

Errors raise `FrameSeekError` with the gRPC `code`, the server's machine-readable `reason`
(google.rpc.ErrorInfo) and a message. A server with TLS and tokens (README "Security"):

    Client("search.example:50051", tls_ca="ca.pem", token=os.environ["FRAMESEEK_TOKEN"])

`tls_ca` (FRAMESEEK_TLS_CA) turns TLS on and trusts that CA; `tls_cert`/`tls_key`
(FRAMESEEK_CLIENT_CERT/KEY; not FRAMESEEK_TLS_CERT/KEY, which are the server's own) present a
client certificate (mTLS); `token` (FRAMESEEK_TOKEN) is sent as `authorization: Bearer <token>` on
every call. Uploads stream the file in 1 MiB chunks and carry a
request_id, so a retry after a lost connection never indexes a video twice.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Iterable, Iterator

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from ..v1 import frameseek_pb2 as pb
from ..v1 import frameseek_pb2_grpc as pb_grpc
from ._transport import (
    _POLICIES,
    CHUNK,
    FrameSeekError,
    MediaInput,
    _BearerToken,
    _filter,
    _open,
    _read_all,
    collection_name,
    default_address,
    file_sha256,
    tls_credentials,
)
from .faces import FaceCalls
from .items import AudioAndItemCalls

__all__ = [
    "CHUNK",
    "Client",
    "FrameSeekError",
    "MediaInput",
    "collection_name",
    "default_address",
    "file_sha256",
    "tls_credentials",
]


class Client(FaceCalls, AudioAndItemCalls):
    """Blocking client; thread-safe (share one across threads for parallel uploads).

    Security (each falls back to its environment variable): `token` (FRAMESEEK_TOKEN), `tls_ca`
    (FRAMESEEK_TLS_CA: TLS trusting this CA), `tls_cert` + `tls_key` (FRAMESEEK_CLIENT_CERT/KEY: a
    client certificate for mTLS). `credentials` replaces the TLS ones when given."""

    def __init__(
        self,
        address: str | None = None,
        *,
        timeout: float | None = 60.0,
        credentials: grpc.ChannelCredentials | None = None,
        retries: int = 3,
        options: Iterable[tuple[str, object]] = (),
        token: str | None = None,
        tls_ca: str | os.PathLike | None = None,
        tls_cert: str | os.PathLike | None = None,
        tls_key: str | os.PathLike | None = None,
    ):
        self.address = address or default_address()
        env = os.environ.get
        token = token or env("FRAMESEEK_TOKEN") or None
        tls_ca = tls_ca or env("FRAMESEEK_TLS_CA")
        tls_cert, tls_key = tls_cert or env("FRAMESEEK_CLIENT_CERT"), tls_key or env("FRAMESEEK_CLIENT_KEY")
        if credentials is None and (tls_ca or tls_cert or tls_key):
            credentials = tls_credentials(tls_ca, tls_cert, tls_key)
        opts = [("grpc.max_receive_message_length", 64 << 20), ("grpc.max_send_message_length", 16 << 20), *options]
        channel = (
            grpc.secure_channel(self.address, credentials, opts)
            if credentials
            else grpc.insecure_channel(self.address, opts)
        )
        self.channel = grpc.intercept_channel(channel, _BearerToken(token)) if token else channel
        self._raw_channel = channel
        self.stub = pb_grpc.FrameSeekStub(self.channel)
        self.health = health_pb2_grpc.HealthStub(self.channel)
        self.timeout, self.retries = timeout, retries

    def close(self) -> None:
        self._raw_channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _call(self, fn, request, timeout: float | None = None, retry: bool = True):
        """Unary call; retries UNAVAILABLE (server loading/restarting) with backoff when `retry`."""
        for attempt in range(self.retries + 1):
            try:
                return fn(request, timeout=timeout if timeout is not None else self.timeout)
            except grpc.RpcError as err:
                if retry and err.code() == grpc.StatusCode.UNAVAILABLE and attempt < self.retries:
                    time.sleep(min(2.0, 0.2 * 2**attempt))
                    continue
                raise FrameSeekError.from_rpc(err) from None

    # -- health
    def wait_ready(self, timeout: float = 60.0) -> None:
        """Block until the server reports SERVING (index loaded)."""
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            try:
                r = self.health.Check(health_pb2.HealthCheckRequest(service="frameseek.v1.FrameSeek"), timeout=2)
                if r.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError as err:
                last = err
            time.sleep(0.1)
        raise TimeoutError(f"frameseek at {self.address} not ready after {timeout}s ({last and last.code()})")

    # -- collections
    def create_collection(
        self,
        collection_id: str,
        *,
        fps: float = 0,
        metric: str = "cosine",
        description: str = "",
        ef_search: int = 0,
        faces: bool = False,
        audio: bool = False,
        vector_dimension: int = 0,
        target_recall: float = 0,
        layer0_links: int = 0,
    ) -> pb.Collection:
        """`audio`: also fingerprint every video's soundtrack (SearchByAudio). `vector_dimension`
        > 0: a collection of your own vectors of that dimension, no model (upsert_items).
        `layer0_links`: the graph's bottom-layer link slots per vector (IndexSettings; 0 = the server's default)."""
        c = pb.Collection(
            description=description,
            metric=pb.METRIC_L2 if metric == "l2" else pb.METRIC_COSINE,
            sampling=pb.SamplingSettings(fps=fps),
            index=pb.IndexSettings(ef_search=ef_search, target_recall=target_recall, layer0_links=layer0_links),
            faces=faces,
            audio=audio,
            own_vectors=vector_dimension > 0,
            vector_dimension=vector_dimension,
        )
        return self._call(
            self.stub.CreateCollection,
            pb.CreateCollectionRequest(collection_id=collection_id, collection=c),
            retry=False,
        )

    def get_collection(self, name: str = "default") -> pb.Collection:
        return self._call(self.stub.GetCollection, pb.GetCollectionRequest(name=collection_name(name)))

    def list_collections(self, page_size: int = 0) -> Iterator[pb.Collection]:
        token = ""
        while True:
            r = self._call(self.stub.ListCollections, pb.ListCollectionsRequest(page_size=page_size, page_token=token))
            yield from r.collections
            token = r.next_page_token
            if not token:
                return

    def delete_collection(self, name: str, force: bool = False) -> None:
        self._call(self.stub.DeleteCollection, pb.DeleteCollectionRequest(name=collection_name(name), force=force))

    # -- ingest
    def ingest_video(
        self,
        media: MediaInput | None = None,
        *,
        collection: str = "",
        external_key: str = "",
        labels: dict | None = None,
        request_id: str | None = None,
        filename: str | None = None,
        duplicate_policy: str | None = None,
        duplicate_threshold: float = 0.0,
        return_job: bool = False,
        server_path: str = "",
        progress: Callable[[int], None] | None = None,
        timeout: float | None = None,
    ) -> pb.IngestVideoResponse:
        """Upload and index a video (path, bytes or binary file object), or one at `server_path` on
        the server. `progress(n)` is called with each chunk's size. Retried on UNAVAILABLE with the
        same request_id, so the server indexes it at most once."""
        request_id = request_id or uuid.uuid4().hex
        size = 0
        if media is not None and isinstance(media, (str, os.PathLike)):
            size = os.path.getsize(media)
        elif isinstance(media, (bytes, bytearray)):
            size = len(media)
        for attempt in range(self.retries + 1):
            f, owned, name = _open(media) if media is not None else (None, False, "")
            meta = pb.IngestMetadata(
                parent=collection_name(collection),
                external_key=external_key,
                labels=labels or {},
                request_id=request_id,
                filename=filename or name,
                server_path=server_path,
                size_bytes=size,
                duplicate_policy=_POLICIES[duplicate_policy],
                duplicate_threshold=duplicate_threshold,
                return_job=return_job,
            )

            def messages(f=f, meta=meta):
                yield pb.IngestVideoRequest(metadata=meta)
                if f is None:
                    return
                while block := f.read(CHUNK):
                    yield pb.IngestVideoRequest(chunk=block)
                    if progress:
                        progress(len(block))

            try:
                return self.stub.IngestVideo(messages(), timeout=timeout)
            except grpc.RpcError as err:
                retry = err.code() == grpc.StatusCode.UNAVAILABLE and attempt < self.retries and (owned or f is None)
                if not retry:
                    raise FrameSeekError.from_rpc(err) from None
                time.sleep(min(2.0, 0.2 * 2**attempt))
            finally:
                if owned and f is not None:
                    f.close()
        raise AssertionError("unreachable")

    def ingest_image(
        self,
        image: MediaInput,
        *,
        collection: str = "",
        external_key: str = "",
        labels: dict | None = None,
        request_id: str | None = None,
        filename: str | None = None,
    ) -> pb.IngestVideoResponse:
        data, name = _read_all(image)
        meta = pb.IngestMetadata(
            parent=collection_name(collection),
            external_key=external_key,
            labels=labels or {},
            request_id=request_id or uuid.uuid4().hex,
            filename=filename or name,
        )
        return self._call(self.stub.IngestImage, pb.IngestImageRequest(metadata=meta, image=data))

    def get_job(self, name: str) -> pb.IngestJob:
        return self._call(self.stub.GetIngestJob, pb.GetIngestJobRequest(name=name))

    def watch_job(self, name: str, timeout: float | None = None) -> Iterator[pb.IngestJob]:
        try:
            yield from self.stub.WatchIngestJob(pb.WatchIngestJobRequest(name=name), timeout=timeout)
        except grpc.RpcError as err:
            raise FrameSeekError.from_rpc(err) from None

    # -- search
    def _options(self, k, min_score, max_matches_per_video, ef, labels, videos, exclude_videos) -> pb.SearchOptions:
        return pb.SearchOptions(
            k=k,
            min_score=min_score,
            max_matches_per_video=max_matches_per_video,
            ef=ef,
            filter=_filter(labels, videos, exclude_videos),
        )

    def search_by_vector(
        self,
        vector,
        *,
        collection: str = "",
        k: int = 10,
        min_score: float = 0.0,
        max_matches_per_video: int = 0,
        ef: int = 0,
        labels: dict | None = None,
        videos: list[str] | None = None,
        exclude_videos: list[str] | None = None,
        timeout: float | None = None,
    ) -> pb.SearchResponse:
        req = pb.SearchByVectorRequest(
            parent=collection_name(collection),
            vector=[float(x) for x in vector],
            options=self._options(k, min_score, max_matches_per_video, ef, labels, videos, exclude_videos),
        )
        return self._call(self.stub.SearchByVector, req, timeout)

    def search_by_image(
        self,
        image: MediaInput,
        *,
        collection: str = "",
        k: int = 10,
        min_score: float = 0.0,
        max_matches_per_video: int = 0,
        ef: int = 0,
        labels: dict | None = None,
        videos: list[str] | None = None,
        exclude_videos: list[str] | None = None,
        timeout: float | None = None,
    ) -> pb.SearchResponse:
        data, _ = _read_all(image)
        req = pb.SearchByImageRequest(
            parent=collection_name(collection),
            image=data,
            options=self._options(k, min_score, max_matches_per_video, ef, labels, videos, exclude_videos),
        )
        return self._call(self.stub.SearchByImage, req, timeout)

    def search_by_video(
        self,
        clip: MediaInput | None = None,
        *,
        collection: str = "",
        k: int = 10,
        min_score: float = 0.0,
        frame_k: int = 0,
        labels: dict | None = None,
        videos: list[str] | None = None,
        exclude_videos: list[str] | None = None,
        server_path: str = "",
        fps: float = 0.0,
        region_search: str | int = "",
        timeout: float | None = None,
    ) -> pb.SearchByVideoResponse:
        """Which indexed videos does `clip` copy? min_score 0 = the server's calibrated threshold,
        negative = every candidate. `region_search`: "off" | "auto" | "on" (or a
        pb.RegionSearch value); "" = the server's default (auto: picture-in-picture insets)."""
        if isinstance(region_search, str):
            region_search = pb.RegionSearch.Value(f"REGION_SEARCH_{region_search.upper() or 'UNSPECIFIED'}")
        q = pb.VideoQuery(
            parent=collection_name(collection),
            k=k,
            min_score=min_score,
            frame_k=frame_k,
            filter=_filter(labels, videos, exclude_videos),
            server_path=server_path,
            fps=fps,
            region_search=region_search,
        )

        def messages():
            yield pb.SearchByVideoRequest(query=q)
            if clip is None:
                return
            f, owned, _ = _open(clip)
            try:
                while block := f.read(CHUNK):
                    yield pb.SearchByVideoRequest(chunk=block)
            finally:
                if owned:
                    f.close()

        try:
            return self.stub.SearchByVideo(messages(), timeout=timeout if timeout is not None else self.timeout)
        except grpc.RpcError as err:
            raise FrameSeekError.from_rpc(err) from None

    # -- videos
    def get_video(self, name: str) -> pb.Video:
        return self._call(self.stub.GetVideo, pb.GetVideoRequest(name=name))

    def list_videos(
        self,
        collection: str = "",
        *,
        labels: dict | None = None,
        content_sha256: str = "",
        external_key: str = "",
        page_size: int = 0,
    ) -> Iterator[pb.Video]:
        """Every matching video, newest first (pages fetched lazily). collection '-' = all."""
        token = ""
        while True:
            r = self._call(
                self.stub.ListVideos,
                pb.ListVideosRequest(
                    parent=collection_name(collection),
                    page_size=page_size,
                    page_token=token,
                    labels=labels or {},
                    content_sha256=content_sha256,
                    external_key=external_key,
                ),
            )
            yield from r.videos
            token = r.next_page_token
            if not token:
                return

    def find_by_hash(self, sha256: str, collection: str = "") -> pb.Video | None:
        """The video already indexed from exactly these bytes, if any."""
        return next(self.list_videos(collection, content_sha256=sha256, page_size=1), None)

    def delete_video(self, name: str) -> None:
        self._call(self.stub.DeleteVideo, pb.DeleteVideoRequest(name=name))

    def stats(self) -> pb.Stats:
        return self._call(self.stub.GetStats, pb.GetStatsRequest())
