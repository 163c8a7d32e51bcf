"""The console's way to the service: the public gRPC API over a grpc.aio channel to the server's own
address (the same calls, limits and errors as every other client), and the mapping of its
messages and errors to the JSON the pages read."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
from google.protobuf.json_format import MessageToDict

from ..client import CHUNK, FrameSeekError
from ..v1 import frameseek_pb2 as pb
from ..v1 import frameseek_pb2_grpc as pb_grpc

# gRPC status -> HTTP status of the console's JSON answer (the body carries the gRPC code and reason)
HTTP_STATUS = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.FAILED_PRECONDITION: 412,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.UNIMPLEMENTED: 501,
}


def as_dict(msg) -> dict:
    return MessageToDict(msg, preserving_proto_field_name=True, always_print_fields_with_no_presence=True)


def error_body(err: FrameSeekError) -> tuple[int, dict]:
    return HTTP_STATUS.get(err.code, 500), {
        "error": {"code": err.code.name, "reason": err.reason, "message": err.message, "metadata": err.metadata}
    }


def video_id(name: str) -> int:
    """`collections/{c}/videos/{id}` -> id."""
    return int(name.rsplit("/", 1)[1])


class Api:
    """Async calls of the FrameSeek service; errors raise FrameSeekError (code, reason, message)."""

    def __init__(self, address: str, max_message_bytes: int):
        self.channel = grpc.aio.insecure_channel(
            address,
            options=[
                ("grpc.max_receive_message_length", max_message_bytes),
                ("grpc.max_send_message_length", max_message_bytes),
            ],
        )
        self.stub = pb_grpc.FrameSeekStub(self.channel)

    async def close(self) -> None:
        await self.channel.close()

    async def _unary(self, method, request):
        try:
            return await method(request)
        except grpc.aio.AioRpcError as err:
            raise FrameSeekError.from_rpc(err) from None

    async def list_videos(self, parent: str, page_size: int, page_token: str, labels: dict) -> pb.ListVideosResponse:
        return await self._unary(
            self.stub.ListVideos,
            pb.ListVideosRequest(parent=parent, page_size=page_size, page_token=page_token, labels=labels),
        )

    async def list_collections(self) -> list[pb.Collection]:
        out, token = [], ""
        while True:
            r = await self._unary(
                self.stub.ListCollections, pb.ListCollectionsRequest(page_size=1000, page_token=token)
            )
            out += r.collections
            token = r.next_page_token
            if not token:
                return out

    async def get_video(self, name: str) -> pb.Video:
        return await self._unary(self.stub.GetVideo, pb.GetVideoRequest(name=name))

    async def delete_video(self, name: str) -> None:
        await self._unary(self.stub.DeleteVideo, pb.DeleteVideoRequest(name=name))

    async def stats(self) -> pb.Stats:
        return await self._unary(self.stub.GetStats, pb.GetStatsRequest())

    async def search_image(self, parent: str, image: bytes, k: int, labels: dict) -> pb.SearchResponse:
        return await self._unary(
            self.stub.SearchByImage,
            pb.SearchByImageRequest(
                parent=parent,
                image=image,
                options=pb.SearchOptions(k=k, max_matches_per_video=3, filter=pb.SearchFilter(labels=labels)),
            ),
        )

    async def search_video(self, query: pb.VideoQuery, chunks: AsyncIterator[bytes]) -> pb.SearchByVideoResponse:
        return await self._streaming(
            self.stub.SearchByVideo,
            pb.SearchByVideoRequest(query=query),
            lambda b: pb.SearchByVideoRequest(chunk=b),
            chunks,
        )

    async def ingest_video(self, meta: pb.IngestMetadata, chunks: AsyncIterator[bytes]) -> pb.IngestVideoResponse:
        return await self._streaming(
            self.stub.IngestVideo,
            pb.IngestVideoRequest(metadata=meta),
            lambda b: pb.IngestVideoRequest(chunk=b),
            chunks,
        )

    async def ingest_image(self, meta: pb.IngestMetadata, image: bytes) -> pb.IngestVideoResponse:
        return await self._unary(self.stub.IngestImage, pb.IngestImageRequest(metadata=meta, image=image))

    async def _streaming(self, method, first, wrap, chunks: AsyncIterator[bytes]):
        """A client-streaming call fed from `chunks` as they arrive (re-cut to the API's 1 MiB)."""

        async def messages():
            yield first
            async for block in rechunk(chunks):
                yield wrap(block)

        try:
            return await method(messages())
        except grpc.aio.AioRpcError as err:
            raise FrameSeekError.from_rpc(err) from None

    async def watch_job(self, name: str) -> AsyncIterator[pb.IngestJob]:
        call = self.stub.WatchIngestJob(pb.WatchIngestJobRequest(name=name))
        try:
            async for job in call:
                yield job
        except grpc.aio.AioRpcError as err:
            raise FrameSeekError.from_rpc(err) from None
        finally:
            call.cancel()


async def rechunk(blocks: AsyncIterator[bytes], size: int = CHUNK) -> AsyncIterator[bytes]:
    """Blocks of at most `size` bytes from blocks of any size (an HTTP body's pieces)."""
    buf = bytearray()
    async for block in blocks:
        buf += block
        while len(buf) >= size:
            yield bytes(buf[:size])
            del buf[:size]
    if buf:
        yield bytes(buf)
