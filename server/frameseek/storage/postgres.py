"""The scale-out catalog in PostgreSQL (psycopg 3): collections, videos (with their sample
timestamps), ingest jobs and idempotency keys, shared by every frameseek server of a deployment.

The schema is versioned in the repository: storage/migrations/NNNN_name.sql, applied in order at
open under an advisory lock (servers starting together apply each once), each version recorded in
`schema_migrations`. A catalog newer than this server's migrations is refused.

Video rows go pending -> active -> (deleting ->) gone; see scaleout.py for the commit protocol. A
pending row carries its server (`owner`) and a lease: a row whose lease ran out belongs to a crashed
or stuck ingest, and `claim_unsettled` hands it to whichever server sweeps first.

Every connection failure (PostgreSQL down, restarting, unreachable) raises Unavailable (reason
BACKEND_UNAVAILABLE); the pool reconnects by itself with exponential backoff (psycopg_pool), and
every connection is checked before use, so a restarted PostgreSQL costs failed calls, not a restart.

The collections and ingest jobs: storage.collection_tables.CollectionTables and storage.jobs.JobTables
(the SQL the SQLite catalog runs too), mixed in. The people
tables (persons and their face tracks): postgres_people.PostgresPeople, mixed in.
"""

from __future__ import annotations

import importlib.resources
import re
import time
from collections.abc import Mapping, Sequence

import numpy as np
import psycopg
from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool, PoolTimeout

from .base import (
    ITEM_KIND,
    Aborted,
    FailedPrecondition,
    ModalityData,
    NotFound,
    Unavailable,
    VideoQuery,
    VideoRecord,
)
from .collection_tables import CollectionTables
from .jobs import JobTables
from .postgres_people import PostgresPeople, pyformat

#: pg_advisory_xact_lock key taken while migrating ("fsmg")
_MIGRATION_LOCK = 0x66736D67

_VIDEO_COLS = (
    "id, collection_id, kind, duration, width, height, sample_count, size_bytes, content_sha256, "
    "external_key, labels, filename, model, realtime_factor, create_time, state"
)


def migrations() -> list[tuple[int, str, str]]:
    """(version, name, sql) of storage/migrations/NNNN_name.sql, in version order."""
    out = []
    for f in importlib.resources.files(__package__).joinpath("migrations").iterdir():
        m = re.fullmatch(r"(\d{4})_(\w+)\.sql", f.name)
        if m:
            out.append((int(m.group(1)), m.group(2), f.read_text()))
    return sorted(out)


def _video(r) -> VideoRecord:
    return VideoRecord(
        id=r[0],
        collection_id=r[1],
        kind=r[2],
        duration=r[3],
        width=r[4],
        height=r[5],
        sample_count=r[6],
        size_bytes=r[7],
        content_sha256=r[8],
        external_key=r[9],
        labels=r[10],
        filename=r[11],
        model=r[12],
        realtime_factor=r[13],
        create_time=r[14],
        state=r[15],
    )


def _times(blob) -> np.ndarray:
    return np.frombuffer(bytes(blob), dtype="<f8")


class _Connection:
    """A pooled connection; connection-level failures become Unavailable."""

    def __init__(self, catalog: PostgresCatalog):
        self.catalog = catalog
        self.cm = None

    def __enter__(self) -> psycopg.Connection:
        try:
            self.cm = self.catalog.pool.connection()
            return self.cm.__enter__()
        except (psycopg.OperationalError, psycopg.InterfaceError, PoolTimeout) as exc:
            raise self.catalog.unavailable(exc) from exc

    def __exit__(self, exc_type, exc, tb):
        try:
            self.cm.__exit__(exc_type, exc, tb)
        except (psycopg.OperationalError, psycopg.InterfaceError) as failed:
            raise self.catalog.unavailable(failed) from failed
        if isinstance(exc, (psycopg.OperationalError, psycopg.InterfaceError, PoolTimeout)):
            raise self.catalog.unavailable(exc) from exc
        return False


class PostgresCatalog(CollectionTables, JobTables, PostgresPeople):
    """Thread-safe (a connection pool); every method is one short transaction."""

    def __init__(self, url: str, *, timeout_s: float = 10.0, max_connections: int = 8):
        self.url = url
        self.timeout_s = timeout_s
        self.pool = ConnectionPool(
            url,
            min_size=1,
            max_size=max_connections,
            timeout=timeout_s,
            open=False,
            check=ConnectionPool.check_connection,  # a connection that died with the server is replaced
            reconnect_timeout=max(60.0, timeout_s),
            kwargs={"autocommit": True, "connect_timeout": max(1, int(timeout_s))},
            name="frameseek-catalog",
        )

    def unavailable(self, exc: BaseException) -> Unavailable:
        where = re.sub(r"//[^@/]*@", "//", self.url)  # never a password in an error
        return Unavailable(
            f"the catalog (PostgreSQL at {where}) is unreachable: {str(exc).strip() or type(exc).__name__}"
        )

    def open(self) -> None:
        self.pool.open(wait=False)
        self.migrate()

    def close(self) -> None:
        self.pool.close()

    def _conn(self) -> _Connection:
        return _Connection(self)

    def _rows(self, sql: str, args=()) -> list[tuple]:
        with self._conn() as c:
            return c.execute(sql, args).fetchall()

    def _write(self, sql: str, args=()) -> list[tuple]:
        """One statement in qmark style (storage.jobs), committed alone (the pool's connections
        autocommit); the rows it returns (RETURNING), none when it returns none."""
        with self._conn() as c:
            cur = c.execute(pyformat(sql), args)
            return cur.fetchall() if cur.description is not None else []

    _DUPLICATE_KEY = psycopg.errors.UniqueViolation  # the host of JobTables and CollectionTables

    def ping(self) -> None:
        self._rows("SELECT 1")

    def database_bytes(self) -> int:
        """The catalog database's size on the PostgreSQL server (tables, indexes, TOAST)."""
        return int(self._rows("SELECT pg_database_size(current_database())")[0][0])

    # -- schema ---------------------------------------------------------------------------------
    def migrate(self) -> int:
        """Apply the repository's migrations that the catalog lacks; returns the schema version."""
        known = migrations()
        with self._conn() as c, c.transaction():
            c.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
            c.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, "
                "applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
            )
            done = {r[0] for r in c.execute("SELECT version FROM schema_migrations").fetchall()}
            newest = max((v for v, _, _ in known), default=0)
            if done and max(done) > newest:
                raise RuntimeError(
                    f"the catalog has schema version {max(done)}, this server knows up to {newest}: upgrade the server"
                )
            for version, name, sql in known:
                if version not in done:
                    c.execute(sql)
                    c.execute("INSERT INTO schema_migrations (version, name) VALUES (%s, %s)", (version, name))
        return newest

    def schema_version(self) -> int:
        return int(self._rows("SELECT coalesce(max(version), 0) FROM schema_migrations")[0][0])

    # -- collections (CollectionTables: storage.collection_tables) ----------------------------
    def _to_json(self, value) -> Jsonb:
        return Jsonb(value)

    def _from_json(self, stored):
        return stored  # psycopg decodes JSONB

    def set_index_setting(self, collection_id: int, key: str, value) -> None:
        """Set one key of the collection's index settings (a JSONB object)."""
        rows = self._rows(
            "UPDATE collections SET index_settings = index_settings || %s WHERE id=%s RETURNING id",
            (Jsonb({key: value}), collection_id),
        )
        if not rows:
            raise NotFound(f"collection #{collection_id} not found", "COLLECTION_NOT_FOUND")

    def delete_collection(self, collection_id: int, force: bool) -> list[int]:
        """Delete the collection row (with force its videos too): the commit point of a collection
        delete; the vectors go afterwards (dropping a Milvus collection is idempotent)."""
        with self._conn() as c, c.transaction():
            ids = [r[0] for r in c.execute("SELECT id FROM videos WHERE collection_id=%s FOR UPDATE", (collection_id,))]
            if ids and not force:
                raise FailedPrecondition(
                    f"collection has {len(ids)} videos; delete them or pass force", "COLLECTION_NOT_EMPTY"
                )
            c.execute("DELETE FROM videos WHERE collection_id=%s", (collection_id,))
            c.execute("DELETE FROM collections WHERE id=%s", (collection_id,))
        return ids

    def vector_count(self, collection_id: int) -> int:
        return int(
            self._rows(
                "SELECT coalesce(sum(vector_count), 0) FROM videos WHERE collection_id=%s AND state='active'",
                (collection_id,),
            )[0][0]
        )

    # -- videos ---------------------------------------------------------------------------------
    def insert_pending(
        self,
        collection_id: int,
        v: VideoRecord,
        timestamps: np.ndarray,
        vector_count: int,
        owner: str,
        lease_s: float,
        extras: Mapping[str, ModalityData] | None = None,
    ) -> int:
        """Step 1 of an ingest: the pending row and its modalities' data, in one transaction."""
        return self.insert_pending_many(collection_id, [(v, timestamps, vector_count, extras)], owner, lease_s)[0]

    def insert_pending_many(
        self,
        collection_id: int,
        videos: Sequence[tuple[VideoRecord, np.ndarray, int, Mapping[str, ModalityData] | None]],
        owner: str,
        lease_s: float,
    ) -> list[int]:
        """Step 1 of a batch ingest: every (record, timestamps, vector count, extras) as a pending
        row of `owner` with one lease, and the modalities' data, in ONE transaction (all or none)."""
        now = time.time()
        ids = []
        with self._conn() as c, c.transaction():
            for v, timestamps, vector_count, extras in videos:
                vid = c.execute(
                    "INSERT INTO videos (collection_id, state, kind, duration, width, height, sample_count, "
                    "vector_count, size_bytes, content_sha256, external_key, labels, filename, model, "
                    "realtime_factor, create_time, sample_times, owner, lease_until) "
                    "VALUES (%s,'pending',%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s) RETURNING id",
                    (
                        collection_id,
                        v.kind,
                        v.duration,
                        v.width,
                        v.height,
                        v.sample_count,
                        vector_count,
                        v.size_bytes,
                        v.content_sha256,
                        v.external_key,
                        Jsonb(v.labels),
                        v.filename,
                        v.model,
                        v.realtime_factor,
                        now,
                        np.ascontiguousarray(timestamps, dtype="<f8").tobytes(),
                        owner,
                        now + lease_s,
                    ),
                ).fetchone()[0]
                for name, d in (extras or {}).items():
                    c.execute(
                        "INSERT INTO video_extras (video_id, modality, times, payload) VALUES (%s,%s,%s,%s)",
                        (vid, name, np.ascontiguousarray(d.times, dtype="<f8").tobytes(), bytes(d.payload)),
                    )
                ids.append(int(vid))
        return ids

    def video_extra(self, video_id: int, modality: str) -> ModalityData | None:
        """An active video's data of one modality without vectors (Milvus holds them), None when
        it has none; NotFound when the video is not active."""
        rows = self._rows(
            "SELECT v.id, x.times, x.payload FROM videos v LEFT JOIN video_extras x ON x.video_id = v.id "
            "AND x.modality = %s WHERE v.id = %s AND v.state = 'active'",
            (modality, video_id),
        )
        if not rows:
            raise NotFound(f"video {video_id} not found", "VIDEO_NOT_FOUND")
        if rows[0][1] is None:
            return None
        return ModalityData(times=_times(rows[0][1]), vectors=None, payload=bytes(rows[0][2]))

    def activate(self, video_id: int) -> VideoRecord:
        """The commit point of an ingest. Aborted when a sweep took the pending row meanwhile."""
        return self.activate_many([video_id])[0]

    def activate_many(self, video_ids: Sequence[int]) -> list[VideoRecord]:
        """The commit point of a batch ingest, in one transaction: all its rows become active, or
        none (Aborted, rolled back, when a sweep took any of them meanwhile)."""
        ids = [int(v) for v in video_ids]
        with self._conn() as c, c.transaction():
            rows = c.execute(
                f"UPDATE videos SET state='active', create_time=%s, owner='', lease_until=0 "
                f"WHERE id = ANY(%s) AND state='pending' RETURNING {_VIDEO_COLS}",
                (time.time(), ids),
            ).fetchall()
            if len(rows) != len(ids):
                lost = sorted(set(ids) - {r[0] for r in rows})
                raise Aborted(  # raised inside the transaction: it rolls back, nothing commits
                    f"the ingest of video(s) {lost[:10]} outlived its lease and was swept before it committed",
                    "INGEST_LEASE_EXPIRED",
                )
        by_id = {r[0]: _video(r) for r in rows}
        return [by_id[v] for v in ids]

    def forget_pending(self, video_ids: Sequence[int]) -> None:
        """Drop pending rows (an ingest that failed before its commit point undoes step 1)."""
        self._rows(
            "DELETE FROM videos WHERE id = ANY(%s) AND state='pending' RETURNING id", ([int(v) for v in video_ids],)
        )

    def claim_unsettled(self, owner: str | None) -> list[tuple[int, int]]:
        """(video id, collection id) of every row a sweep must finish: pending rows whose lease ran
        out, pending rows of `owner` (a server that restarted: its ingests died with it; None at
        a periodic sweep, when the server's own ingests are alive), and rows left 'deleting'. They
        are marked 'deleting' here, so an ingest still running can no longer commit (activate is
        conditional on 'pending')."""
        return [
            (r[0], r[1])
            for r in self._rows(
                "UPDATE videos SET state='deleting' WHERE state='deleting' OR (state='pending' AND "
                "(owner=%s OR lease_until < %s)) RETURNING id, collection_id",
                (owner, time.time()),  # owner=NULL matches no row
            )
        ]

    def mark_deleting(self, video_id: int) -> VideoRecord:
        """The commit point of a delete: from here on no search returns the video."""
        rows = self._rows(
            "UPDATE videos SET state='deleting' WHERE id=%s AND state IN ('active', 'damaged') "
            f"RETURNING {_VIDEO_COLS}",
            (video_id,),
        )
        if not rows:
            raise NotFound(f"video {video_id} not found", "VIDEO_NOT_FOUND")
        return _video(rows[0])

    def drop_rows(self, video_ids) -> None:
        """Remove 'deleting' rows whose vectors are gone."""
        self._rows(
            "DELETE FROM videos WHERE id = ANY(%s) AND state='deleting' RETURNING id", ([int(v) for v in video_ids],)
        )

    def get_video(self, video_id: int, states: tuple[str, ...] = ("active",)) -> VideoRecord:
        rows = self._rows(f"SELECT {_VIDEO_COLS} FROM videos WHERE id=%s AND state = ANY(%s)", (video_id, list(states)))
        if not rows:
            raise NotFound(f"video {video_id} not found", "VIDEO_NOT_FOUND")
        return _video(rows[0])

    def video_entries(self, video_ids) -> list[tuple[VideoRecord, np.ndarray]]:
        """(record, sample timestamps) of those of `video_ids` that are active."""
        rows = self._rows(
            f"SELECT {_VIDEO_COLS}, sample_times FROM videos WHERE id = ANY(%s) AND state='active'",
            ([int(v) for v in video_ids],),
        )
        return [(_video(r), _times(r[16])) for r in rows]

    def active_of(self, video_ids) -> set[int]:
        """Which of `video_ids` are active now (what a search may return)."""
        return {r[0] for r in self._rows("SELECT id FROM videos WHERE id = ANY(%s) AND state='active'", (video_ids,))}

    def active_video_entries(self, limit: int | None = None) -> list[tuple[VideoRecord, np.ndarray]]:
        sql = f"SELECT {_VIDEO_COLS}, sample_times FROM videos WHERE state='active' ORDER BY id DESC"
        rows = self._rows(sql + " LIMIT %s", (limit,)) if limit is not None else self._rows(sql)
        return [(_video(r), _times(r[16])) for r in rows]

    def find_by_hash(self, collection_id: int, sha256: str) -> VideoRecord | None:
        rows = self._rows(
            f"SELECT {_VIDEO_COLS} FROM videos WHERE collection_id=%s AND content_sha256=%s "
            f"AND kind != '{ITEM_KIND}' AND state='active' ORDER BY id LIMIT 1",
            (collection_id, sha256),
        )
        return _video(rows[0]) if rows else None

    @staticmethod
    def _where(q: VideoQuery, states: tuple[str, ...]) -> tuple[str, list]:
        conds, args = ["state = ANY(%s)"], [list(states)]
        if q.collection_id is not None:
            conds.append("collection_id=%s")
            args.append(q.collection_id)
        if q.content_sha256:  # media only (base.ITEM_KIND), through videos_by_hash
            conds.append(f"content_sha256=%s AND kind != '{ITEM_KIND}'")
            args.append(q.content_sha256)
        if q.external_key:
            conds.append("external_key=%s")
            args.append(q.external_key)
        if q.labels:
            conds.append("labels @> %s")
            args.append(Jsonb(q.labels))
        return " AND ".join(conds), args

    def list_videos(self, q: VideoQuery, before_id: int | None, limit: int) -> tuple[list[VideoRecord], int]:
        """Active and damaged videos (each with its state), newest first."""
        where, args = self._where(q, ("active", "damaged"))
        total = self._rows(f"SELECT count(*) FROM videos WHERE {where}", args)[0][0]
        if before_id is not None:
            where += " AND id < %s"
            args = args + [before_id]
        rows = self._rows(f"SELECT {_VIDEO_COLS} FROM videos WHERE {where} ORDER BY id DESC LIMIT %s", args + [limit])
        return [_video(r) for r in rows], int(total)

    def video_ids(self, q: VideoQuery) -> np.ndarray:
        where, args = self._where(q, ("active",))
        return np.asarray([r[0] for r in self._rows(f"SELECT id FROM videos WHERE {where}", args)], dtype=np.uint64)

    def video_ids_by_key(self, collection_id: int, keys: Sequence[str]) -> dict[str, list[int]]:
        """Storage.video_ids_by_key: one query."""
        out: dict[str, list[int]] = {}
        rows = self._rows(
            "SELECT id, external_key FROM videos WHERE collection_id=%s AND state='active' "
            "AND external_key = ANY(%s) ORDER BY id",
            (collection_id, list(dict.fromkeys(k for k in keys if k))),
        )
        for vid, key in rows:
            out.setdefault(key, []).append(int(vid))
        return out
