"""The scale-out vector store: one Milvus collection per frameseek collection (and per modality of
it that has vectors), through pymilvus.

A Milvus collection `<prefix><collection id>[_<modality>]` holds one row per indexed vector:
`id` (the sample id, frameseek.ids: video << SAMPLE_BITS | vector index; primary key), `video_id`
(what filters and group-by searches use), `timestamp` (seconds; sample i % samples for a coarse
twin) and `vector` (as given: unit vectors for IP, like the native index), under an HNSW index with
the collection's metric (IP or L2)
and its M / efConstruction. Label filters are resolved to video ids in the catalog (one place for
label semantics) and reach Milvus as `video_id in [...]`.

Results follow the native index's conventions, so that the one search (native SearchDirectory)
and the copy search (frameseek.matching) run on them unchanged: distances are 1 - inner product
(IP) or squared Euclidean (L2), best first, k long, padded with NO_ID / +inf.

Every call uses consistency level Strong: a vector inserted (acknowledged by Milvus) before a
search began is seen by it, on whichever server runs it. A Milvus that cannot be reached raises
Unavailable (reason BACKEND_UNAVAILABLE); the client is made on first use and its gRPC channel
reconnects by itself.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence

import numpy as np
from pymilvus import DataType, MilvusClient, MilvusException

from .. import _native
from ..ids import NO_ID, SAMPLE_BITS
from .base import NotFound, Unavailable

_CONSISTENCY = "Strong"
_COLLECTION_NOT_FOUND = 100  # pymilvus ErrorCode.COLLECTION_NOT_FOUND
_COLLECTION_NOT_LOADED = 101  # ... COLLECTION_NOT_LOADED (e.g. after a Milvus restart that did not reload it)

# pymilvus logs every failed reconnection attempt with a stack; the store reports the outage once
# per call as Unavailable (and the server's health probe logs it), so only its errors are kept
logging.getLogger("pymilvus").setLevel(logging.ERROR)


# pymilvus pings every 10 s, even between calls; a gRPC server with the library's defaults (Milvus
# Lite's) allows one ping per 5 minutes without data and answers more with GOAWAY "too_many_pings",
# which failed a call under load. Ping no more often than such a server allows.
_GRPC_OPTIONS = {"grpc.keepalive_time_ms": 300_000, "grpc.keepalive_permit_without_calls": False}


class _NotLoaded(Exception):
    """A Milvus collection that exists but is not loaded: load it and retry once."""


_QUERY_LIMIT = 16384  # Milvus' cap on the rows of one query (offset + limit)
_INSERT_BATCH = 2000  # rows per insert call (a request stays far below Milvus' 64 MB message limit)


class MilvusVectors:
    """Thread-safe (pymilvus' client is)."""

    def __init__(self, uri: str, *, timeout_s: float = 10.0, prefix: str = "frameseek_"):
        self.uri, self.timeout_s, self.prefix = uri, timeout_s, prefix
        self._client: MilvusClient | None = None
        self._lock = threading.Lock()

    def unavailable(self, exc: BaseException) -> Unavailable:
        return Unavailable(f"the vector store (Milvus at {self.uri}) is unreachable: {exc}")

    def _call(self, fn, *args, **kw):
        """fn(client, ...) with Milvus' failures as Unavailable."""
        try:
            with self._lock:
                if self._client is None:
                    self._client = MilvusClient(uri=self.uri, timeout=self.timeout_s, grpc_options=_GRPC_OPTIONS)
                client = self._client
            return fn(client, *args, **kw)
        except MilvusException as exc:
            code = getattr(exc, "code", None)
            if code == _COLLECTION_NOT_FOUND or "collection not found" in str(exc).lower():
                raise NotFound(f"no such Milvus collection ({exc})", "COLLECTION_NOT_FOUND") from exc
            if code == _COLLECTION_NOT_LOADED:
                raise _NotLoaded(str(exc)) from exc
            self._reconnect_next()
            raise self.unavailable(exc) from exc
        except Exception as exc:  # grpc's errors (the storage layer does not import grpc)
            if type(exc).__module__.startswith(("grpc", "pymilvus")):
                self._reconnect_next()
                raise self.unavailable(exc) from exc
            raise

    def _reconnect_next(self) -> None:
        """Drop the client after a failure: pymilvus' own recovery can give up on a restarted
        Milvus, so the next call connects afresh (callers and the health probe pace the retries)."""
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            try:
                client.close()
            except Exception:  # closing a dead channel
                pass

    def _read(self, name: str, fn):
        """A search or query of collection `name`, loading it first when Milvus has released it."""
        try:
            return self._call(fn)
        except _NotLoaded:
            self._call(lambda c: c.load_collection(name, timeout=self.timeout_s))
            return self._call(fn)

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                try:
                    self._client.close()
                except Exception:  # closing a dead channel
                    pass
                self._client = None

    def ping(self) -> None:
        self._call(lambda c: c.list_collections(timeout=self.timeout_s))

    def name(self, collection_id: int, modality: str = "") -> str:
        return f"{self.prefix}{collection_id}" + (f"_{modality}" if modality else "")

    def existing(self) -> dict[int, list[str]]:
        """frameseek collection id -> the names of its Milvus collections (frames and modalities)
        that exist under this prefix."""
        out: dict[int, list[str]] = {}
        for n in self._call(lambda c: c.list_collections(timeout=self.timeout_s)):
            head = n[len(self.prefix) :].split("_")[0] if n.startswith(self.prefix) else ""
            if head.isdigit():
                out.setdefault(int(head), []).append(n)
        return out

    # -- collections ----------------------------------------------------------------------------
    def ensure(self, name: str, dimension: int, metric: str, index: dict) -> None:
        """Create (idempotently) and load the Milvus collection."""

        def make(c: MilvusClient) -> None:
            if not c.has_collection(name, timeout=self.timeout_s):
                schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
                schema.add_field("id", DataType.INT64, is_primary=True)
                schema.add_field("video_id", DataType.INT64)
                schema.add_field("timestamp", DataType.DOUBLE)
                schema.add_field("vector", DataType.FLOAT_VECTOR, dim=int(dimension))
                params = c.prepare_index_params()
                params.add_index(
                    field_name="vector",
                    index_name="vector_hnsw",
                    index_type="HNSW",
                    metric_type=metric.upper(),
                    # the service always sets both; a bare index dict gets the embedded index's defaults
                    params={
                        "M": int(index.get("m") or _native.HNSW_DEFAULT_M),
                        "efConstruction": int(index.get("ef_construction") or _native.HNSW_DEFAULT_EF_CONSTRUCTION),
                    },
                )
                c.create_collection(
                    name, schema=schema, index_params=params, consistency_level=_CONSISTENCY, timeout=self.timeout_s
                )
            c.load_collection(name, timeout=self.timeout_s)

        self._call(make)

    def flush(self, name: str) -> None:
        """Seal what Milvus holds in memory into indexed segments (Milvus does it on its own
        timers too; the store asks on its periodic timer so that searches run on HNSW segments)."""
        self._call(lambda c: c.flush(name, timeout=max(self.timeout_s, 300.0)))  # background work: may be long

    def stored_bytes(self, name: str, dimension: int) -> int:
        """The bytes of the rows Milvus reports holding in a collection (row count x the schema's row:
        id, video_id, timestamp, float32[dimension]). Milvus' API reports no on-disk size, so its
        index, write-ahead log and compaction leftovers are not counted: a lower bound."""
        stats = self._call(lambda c: c.get_collection_stats(name, timeout=self.timeout_s))
        return int(stats.get("row_count", 0)) * (3 * 8 + 4 * int(dimension))

    def drop(self, name: str) -> None:
        self._call(lambda c: c.drop_collection(name, timeout=self.timeout_s))

    # -- vectors --------------------------------------------------------------------------------
    def insert(self, name: str, video_id: int, vectors: np.ndarray, times: np.ndarray, metric: str) -> None:
        """Vector i of the video gets sample id video << SAMPLE_BITS | i and timestamp times[i % len(times)]."""
        self.insert_many(name, [(video_id, vectors, times)])

    def insert_many(self, name: str, videos: Sequence[tuple[int, np.ndarray, np.ndarray]]) -> None:
        """The vectors of several (video id, vectors, times) as `insert` lays them out, sent as one
        stream of rows (split only where one request would grow past _INSERT_BATCH rows)."""
        rows = []
        for video_id, vectors, times in videos:
            vecs = np.ascontiguousarray(vectors, dtype=np.float32)
            base = int(video_id) << SAMPLE_BITS
            rows += [
                {
                    "id": base + i,
                    "video_id": int(video_id),
                    "timestamp": float(times[i % len(times)]),
                    "vector": vecs[i],
                }
                for i in range(len(vecs))
            ]
        for i in range(0, len(rows), _INSERT_BATCH):
            self._call(lambda c, b=rows[i : i + _INSERT_BATCH]: c.insert(name, data=b, timeout=self.timeout_s))

    def delete_videos(self, name: str, video_ids) -> None:
        """Remove every vector of these videos (idempotent: deleting nothing is no error)."""
        ids = [int(v) for v in video_ids]
        if ids:
            self._call(lambda c: c.delete(name, filter=f"video_id in {ids}", timeout=self.timeout_s))

    def has(self, name: str) -> bool:
        return bool(self._call(lambda c: c.has_collection(name, timeout=self.timeout_s)))

    def vectors(self, name: str, video_id: int, count: int) -> np.ndarray:
        """The stored vectors 0..count-1 of one video (fewer when it has fewer), in vector-index
        order: exactly what was inserted. Read in id ranges of at most _QUERY_LIMIT
        (Milvus' cap on one query's rows)."""
        base, rows = int(video_id) << SAMPLE_BITS, []
        for start in range(0, max(count, 1), _QUERY_LIMIT):
            lo, hi = base + start, base + min(start + _QUERY_LIMIT, count)
            rows += self._read(
                name,
                lambda c, lo=lo, hi=hi: c.query(
                    name,
                    filter=f"id >= {lo} and id < {hi}",
                    output_fields=["id", "vector"],
                    limit=hi - lo,
                    consistency_level=_CONSISTENCY,
                    timeout=self.timeout_s,
                ),
            )
        rows.sort(key=lambda r: r["id"])
        if not rows:
            return np.zeros((0, 0), dtype=np.float32)
        return np.asarray([r["vector"] for r in rows], dtype=np.float32)

    def search(
        self,
        name: str,
        metric: str,
        queries: np.ndarray,
        k: int,
        ef: int,
        videos: np.ndarray | None,
        group_by_video: bool = False,
    ) -> tuple[np.ndarray, np.ndarray]:
        """kNN of each query ([nq, dim]): (sample ids uint64 [nq, k], native distances float32
        [nq, k]), padded with NO_ID / +inf. group_by_video: the best vector of k distinct videos."""
        q = np.ascontiguousarray(queries, dtype=np.float32).reshape(len(queries), -1)
        kw = {}
        if videos is not None:
            kw["filter"] = f"video_id in {[int(v) for v in videos]}"
        if group_by_video:
            kw.update(group_by_field="video_id", group_size=1)
        found = self._read(
            name,
            lambda c: c.search(
                name,
                data=list(q),
                limit=k,
                anns_field="vector",
                search_params={"metric_type": metric.upper(), "params": {"ef": max(int(ef or 0), k)}},
                output_fields=[],
                consistency_level=_CONSISTENCY,
                timeout=self.timeout_s,
                **kw,
            ),
        )
        ids = np.full((len(q), k), NO_ID, dtype=np.uint64)
        dist = np.full((len(q), k), np.inf, dtype=np.float32)
        for row, hits in enumerate(found):
            for col, h in enumerate(list(hits)[:k]):
                ids[row, col] = int(h["id"])
                d = float(h["distance"])
                dist[row, col] = 1.0 - d if metric == "ip" else d  # Milvus IP is a similarity
        return ids, dist
