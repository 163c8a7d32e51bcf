"""The client's calls for soundtracks and own-vector items: search by audio, upsert and delete items."""

from __future__ import annotations

import functools

import grpc
import numpy as np

from ..v1 import frameseek_pb2 as pb
from ._transport import (
    CHUNK,
    FrameSeekError,
    MediaInput,
    _filter,
    _open,
    collection_name,
)


def _varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


@functools.lru_cache(maxsize=16)
def _one_vector_prefix(dim: int) -> bytes:
    """What item_vectors_wire puts before the floats of a one-vector item."""
    return item_vectors_wire(np.zeros((1, dim), dtype=np.float32))[: -4 * dim]


def _field_header(field: int, length: int) -> bytes:
    """A length-delimited field's tag (wire type 2) and length, as protobuf writes them."""
    return bytes([field << 3 | 2]) + _varint(length)


def item_vectors_wire(vectors: np.ndarray) -> bytes:
    """`Item.vectors` (field 3) holding float32 rows [n, dim], in protobuf's wire format, to be
    merged into an Item (MergeFromString). Each row is an ItemVector whose `values` (field 1, a
    packed repeated float) is the row's little-endian bytes, so this is one copy of the matrix:
    assigning `values` from a row instead converts each value to a Python float (~100 us per
    512-d vector, most of a bulk upload's client time)."""
    v = np.ascontiguousarray(vectors, dtype="<f4")
    n, dim = v.shape
    values = _field_header(1, 4 * dim)  # ItemVector.values
    prefix = _field_header(3, len(values) + 4 * dim) + values  # Item.vectors
    rows = np.empty((n, len(prefix) + 4 * dim), dtype=np.uint8)
    rows[:, : len(prefix)] = np.frombuffer(prefix, dtype=np.uint8)
    rows[:, len(prefix) :] = v.view(np.uint8).reshape(n, 4 * dim)
    return rows.tobytes()


def _length_delimited(field: int, body: bytes) -> bytes:
    return _field_header(field, len(body)) + body


def item_batch_request(items: list) -> pb.UpsertItemsRequest:
    """An UpsertItemsRequest of items (pb.Item, or (external_key, vectors [n, dim] or [dim],
    labels or None)), built as wire bytes and parsed once: a pb.Item per item and the merge of its
    vectors cost ~13 us of client CPU a one-vector item, and the client shares its machine with
    the server it feeds. Parsed as protobuf parses it: the same message."""
    parts = []
    for x in items:
        if isinstance(x, pb.Item):
            body = x.SerializeToString()
        else:
            key, vectors, labels = x
            v = np.asarray(vectors, dtype="<f4")
            one = v.ndim == 1 or len(v) == 1  # most items: their field 3 is a cached prefix + the row
            wire = _one_vector_prefix(v.shape[-1]) + v.tobytes() if one else item_vectors_wire(v)
            body = (_length_delimited(2, key.encode()) if key else b"") + wire
            if labels:
                body += pb.Item(labels=labels).SerializeToString()  # field 4: its map entries
        parts.append(_length_delimited(1, body))  # ItemBatch.items
    return pb.UpsertItemsRequest.FromString(_length_delimited(2, b"".join(parts)))  # .batch


class AudioAndItemCalls:
    """SearchByAudio, UpsertItems and DeleteItems, mixed into `Client` (uses its `_call`, `stub`, `timeout`)."""

    def search_by_audio(
        self,
        query: MediaInput | None = None,
        *,
        collection: str = "",
        k: int = 10,
        min_score: float = 0.0,
        labels: dict | None = None,
        videos: list[str] | None = None,
        exclude_videos: list[str] | None = None,
        server_path: str = "",
        timeout: float | None = None,
    ) -> pb.SearchByAudioResponse:
        """Which indexed videos' soundtracks contain the audio of `query` (an audio file or a
        video)? min_score 0 = the server's calibrated threshold, negative = every verified match."""
        q = pb.AudioQuery(
            parent=collection_name(collection),
            k=k,
            min_score=min_score,
            filter=_filter(labels, videos, exclude_videos),
            server_path=server_path,
        )

        def messages():
            yield pb.SearchByAudioRequest(query=q)
            if query is None:
                return
            f, owned, _ = _open(query)
            try:
                while block := f.read(CHUNK):
                    yield pb.SearchByAudioRequest(chunk=block)
            finally:
                if owned:
                    f.close()

        try:
            return self.stub.SearchByAudio(messages(), timeout=timeout if timeout is not None else self.timeout)
        except grpc.RpcError as err:
            raise FrameSeekError.from_rpc(err) from None

    # -- own vectors
    def upsert_items(
        self,
        items,
        *,
        collection: str = "",
        batch_size: int = 1000,
        return_names: bool = False,
        timeout: float | None = None,
    ) -> pb.UpsertItemsResponse:
        """Insert or replace items of an own-vector collection in one client stream. `items`: an
        iterable of pb.Item, or of (external_key, vectors [n, dim] or [dim], labels or None)
        tuples; sent `batch_size` items per message (the server reads one message ahead of its
        commits at most, so a large upload streams at the server's pace)."""

        def messages():
            yield pb.UpsertItemsRequest(
                header=pb.UpsertItemsHeader(parent=collection_name(collection), return_names=return_names)
            )
            batch: list = []
            for x in items:
                batch.append(x)
                if len(batch) >= batch_size:
                    yield item_batch_request(batch)
                    batch = []
            if batch:
                yield item_batch_request(batch)

        try:
            return self.stub.UpsertItems(messages(), timeout=timeout if timeout is not None else self.timeout)
        except grpc.RpcError as err:
            raise FrameSeekError.from_rpc(err) from None

    def delete_items(
        self, *, collection: str = "", names: list[str] | None = None, external_keys: list[str] | None = None
    ) -> pb.DeleteItemsResponse:
        return self._call(
            self.stub.DeleteItems,
            pb.DeleteItemsRequest(
                parent=collection_name(collection), names=names or [], external_keys=external_keys or []
            ),
            retry=False,
        )
