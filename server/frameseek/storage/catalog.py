"""SQLite catalog (WAL mode): collections, videos (with their sample timestamps), labels, ingest
jobs and idempotency keys.

Video rows go through two states: 'pending' (inserted before the vectors are logged) and 'active'
(committed after the vector log record is fsync'ed). Only active videos are searchable; pending
rows left by a crash are removed at startup (see embedded.py for the full commit protocol). A third
state, 'damaged', marks an acknowledged video whose vectors recovery could not find intact (a
damaged log record): it is listed with that state and never searched.

A write that fails because the disk is full raises ResourceExhausted (reason DISK_FULL).
synchronous=FULL makes a committed 'active' survive power loss, not just kill -9.
"""

from __future__ import annotations

import dataclasses
import json
import sqlite3
import threading
import time
from collections.abc import Mapping, Sequence

import numpy as np

from .base import (
    ITEM_KIND,
    FailedPrecondition,
    ModalityData,
    NotFound,
    ResourceExhausted,
    VideoQuery,
    VideoRecord,
    is_disk_full,
)
from .catalog_schema import (
    _CRC_EXTRA_COLS,
    _CRC_VIDEO_COLS,
    SCHEMA_VERSION,  # noqa: F401 (re-exported: callers read catalog.SCHEMA_VERSION)
    CatalogSchema,
    _row_crcs,
)
from .collection_tables import CollectionTables
from .jobs import JobTables
from .people import PeopleTables

# a video row's columns are VideoRecord's fields, in its order (`_video` builds a record from them)
_VIDEO_COLS = ", ".join(f.name for f in dataclasses.fields(VideoRecord))


def _video(row) -> VideoRecord:
    """A record from a row's `_VIDEO_COLS` values (in VideoRecord's field order; labels as JSON)."""
    labels = row[10]
    return VideoRecord.from_values((*row[:10], {} if labels == "{}" else json.loads(labels), *row[11:16]))


def _labels(text: str) -> dict | None:
    """A row's labels JSON, or None when it no longer parses (it then matches no labels table)."""
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _integer(x) -> int | float:
    """A value as an INTEGER column stores it (an integral float becomes an int)."""
    if type(x) is int:
        return x
    f = float(x)
    return int(x) if f.is_integer() else f


def _stored_video_row(vid: int, collection_id: int, v: VideoRecord, timestamps: np.ndarray) -> tuple:
    """A video row's `_CRC_VIDEO_COLS` values as SQLite stores and reads them back (REAL columns
    as float, INTEGER columns as int, labels as their JSON): its checksum is computed from these."""
    return (
        int(vid),
        int(collection_id),
        str(v.kind),
        float(v.duration),
        _integer(v.width),
        _integer(v.height),
        _integer(v.sample_count),
        _integer(v.size_bytes),
        str(v.content_sha256),
        str(v.external_key),
        json.dumps(v.labels, sort_keys=True) if v.labels else "{}",
        str(v.filename),
        str(v.model),
        float(v.realtime_factor),
        np.ascontiguousarray(timestamps, dtype="<f8").tobytes(),
    )


@dataclasses.dataclass(frozen=True)
class PendingRows:
    """What insert_pending_many wrote: the rows' ids, and each row's record values as SQLite
    stores them (`_VIDEO_COLS` up to realtime_factor), from which the committed records are built
    without reading them back."""

    ids: list[int]
    values: list[tuple]

    def records(self, create_time: float) -> list[VideoRecord]:
        """The rows' records once activated at `create_time` (what get_video then reads)."""
        return [_video((*v, create_time, "active")) for v in self.values]


def is_damage(exc: Exception) -> bool:
    """Errors that mean a damaged file ("file is not a database", "database disk image is
    malformed", text that does not decode), not a busy, full or failing disk."""
    if isinstance(exc, UnicodeDecodeError):
        return True
    if isinstance(exc, sqlite3.OperationalError):
        return str(exc).startswith("Could not decode")
    return True


class CatalogDamaged(RuntimeError):
    """The catalog file is damaged: the server does not start on it (the message says how to repair)."""

    def __init__(self, path: str, detail: str):
        super().__init__(
            f"the catalog {path} is damaged ({detail}); the server will not start on it. Keep a copy of the data "
            f"directory, then rebuild the catalog: `sqlite3 {path} .recover | sqlite3 {path}.recovered` and move "
            f"{path}.recovered in its place (remove {path}-wal and {path}-shm). Recovery then reports and never "
            "reuses what the rebuilt catalog lacks"
        )


class Catalog(CatalogSchema, CollectionTables, JobTables, PeopleTables):
    """Thread-safe SQLite catalog. One connection guarded by a lock: catalog calls are short and the
    hot search path only reads the in-memory video cache kept by the engine."""

    def __init__(self, path: str):
        self.path = path
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30)
        self._lock = threading.RLock()
        try:
            self._open_schema(path)
        except (sqlite3.DatabaseError, UnicodeDecodeError) as exc:
            if not is_damage(exc):
                raise
            self._db.close()
            raise CatalogDamaged(path, str(exc)) from exc

    def check_integrity(self) -> None:
        """SQLite's quick_check (reads every page once): CatalogDamaged when it finds damage."""
        try:
            rows = self._query("PRAGMA quick_check(5)")
        except sqlite3.DatabaseError as exc:
            rows = [(str(exc),)]
        if rows != [("ok",)]:
            raise CatalogDamaged(self.path, "; ".join(r[0].replace("\n", " ") for r in rows))

    # -- plumbing ---------------------------------------------------------------------------
    class _Tx:
        def __init__(self, cat: Catalog):
            self.cat = cat

        def __enter__(self):
            self.cat._lock.acquire()
            self.cat._db.execute("BEGIN IMMEDIATE")
            return self.cat._db

        def __exit__(self, exc_type, exc, tb):
            db = self.cat._db
            try:
                if exc_type is None:
                    try:
                        db.execute("COMMIT")
                    except sqlite3.OperationalError as failed:  # nothing of the transaction was written
                        exc = failed
                        if not is_disk_full(failed):
                            raise
                if db.in_transaction:  # SQLite may already have rolled back on SQLITE_FULL
                    db.execute("ROLLBACK")
            finally:
                self.cat._lock.release()
            if exc is not None and is_disk_full(exc):
                raise ResourceExhausted(f"the server's disk is full (catalog write failed: {exc})") from exc
            return False

    def _tx(self) -> Catalog._Tx:
        return Catalog._Tx(self)

    def _query(self, sql: str, args=()) -> list:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    def _write(self, sql: str, args=()) -> list:
        with self._tx() as db:
            return db.execute(sql, args).fetchall()  # fetched before the commit (RETURNING)

    _DUPLICATE_KEY = sqlite3.IntegrityError  # the host of JobTables and CollectionTables

    def data_version(self) -> int:
        """SQLite's `PRAGMA data_version`: changes when another connection commits (replicas poll it)."""
        return int(self._query("PRAGMA data_version")[0][0])

    def active_fingerprint(self, collection_id: int) -> tuple[int, int]:
        """(count, highest id) of a collection's active videos: a cheap "did it change" check."""
        row = self._query(
            "SELECT count(*), coalesce(max(id), 0) FROM videos WHERE collection_id=? AND state='active'",
            (collection_id,),
        )[0]
        return int(row[0]), int(row[1])

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -- collections (CollectionTables: storage.collection_tables) ----------------------------
    def _to_json(self, value) -> str:
        return json.dumps(value)

    def _from_json(self, stored: str):
        return json.loads(stored)

    def set_index_setting(self, collection_id: int, key: str, value) -> None:
        """Set one key of the collection's index settings (a JSON object), durably."""
        with self._tx() as db:
            row = db.execute("SELECT index_settings FROM collections WHERE id=?", (collection_id,)).fetchone()
            if row is None:
                raise NotFound(f"collection #{collection_id} not found", "COLLECTION_NOT_FOUND")
            index = {**json.loads(row[0]), key: value}
            db.execute("UPDATE collections SET index_settings=? WHERE id=?", (json.dumps(index), collection_id))

    def delete_collection(self, collection_id: int, force: bool) -> list[int]:
        """Delete the collection row (and with force its videos); returns the deleted video ids."""
        with self._tx() as db:
            ids = [r[0] for r in db.execute("SELECT id FROM videos WHERE collection_id=?", (collection_id,))]
            if ids and not force:
                raise FailedPrecondition(
                    f"collection has {len(ids)} videos; delete them or pass force", "COLLECTION_NOT_EMPTY"
                )
            for table in ("labels", "video_extras"):
                db.execute(
                    f"DELETE FROM {table} WHERE video_id IN (SELECT id FROM videos WHERE collection_id=?)",
                    (collection_id,),
                )
            db.execute("DELETE FROM videos WHERE collection_id=?", (collection_id,))
            db.execute("DELETE FROM collections WHERE id=?", (collection_id,))
        return ids

    # -- videos -----------------------------------------------------------------------------
    def insert_pending(
        self, collection_id: int, v: VideoRecord, timestamps: np.ndarray, extras: Mapping[str, ModalityData] = {}
    ) -> int:
        return self.insert_pending_many(collection_id, [(v, timestamps, extras)]).ids[0]

    def insert_pending_many(
        self, collection_id: int, videos: Sequence[tuple[VideoRecord, np.ndarray, Mapping[str, ModalityData]]]
    ) -> PendingRows:
        """Pending rows of several videos (with their labels, extras and checksums) in one
        transaction: one executemany per table. The ids are handed out here, as AUTOINCREMENT would
        (one above the highest ever used), so that each row's checksum (and record: PendingRows) is
        computed from its values as SQLite stores them (`_stored_video_row`), not read back."""
        if not videos:
            return PendingRows([], [])
        with self._tx() as db:
            base = db.execute(
                "SELECT max(coalesce((SELECT seq FROM sqlite_sequence WHERE name='videos'), 0), "
                "coalesce((SELECT max(id) FROM videos), 0))"
            ).fetchone()[0]
            ids = list(range(base + 1, base + 1 + len(videos)))
            now = time.time()
            stored, labels, extras = [], [], []
            for vid, (v, timestamps, extras_of) in zip(ids, videos):
                stored.append(_stored_video_row(vid, collection_id, v, timestamps))
                labels += [(vid, k, val) for k, val in v.labels.items()]
                for name, d in extras_of.items():
                    times = np.ascontiguousarray(d.times, dtype="<f8").tobytes()
                    extras.append((vid, name, len(d), times, bytes(d.payload)))
            db.executemany(
                f"INSERT INTO videos ({_CRC_VIDEO_COLS}, create_time, row_crc, state) "
                "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?, 'pending')",
                [(*row, now, crc) for row, crc in zip(stored, _row_crcs(stored))],
            )
            db.executemany("INSERT INTO labels VALUES (?,?,?)", labels)
            db.executemany(
                "INSERT INTO video_extras VALUES (?,?,?,?,?,?)",
                [(*row, crc) for row, crc in zip(extras, _row_crcs(extras))],
            )
        return PendingRows(ids, [row[:14] for row in stored])

    def activate(self, video_id: int) -> None:
        """The commit point of an ingest: after this the video exists."""
        self.activate_many([video_id])

    def activate_many(self, video_ids: Sequence[int]) -> float:
        """The commit point of several videos at once (one transaction); returns their create_time."""
        now, ids = time.time(), [int(v) for v in video_ids]
        with self._tx() as db:
            for i in range(0, len(ids), 900):  # one statement per 900 (SQLite's bound-parameter limit is 999)
                chunk = ids[i : i + 900]
                db.execute(
                    f"UPDATE videos SET state='active', create_time=? WHERE id IN ({','.join('?' * len(chunk))})",
                    [now, *chunk],
                )
        return now

    def drop_pending(self) -> list[int]:
        with self._tx() as db:
            ids = [r[0] for r in db.execute("SELECT id FROM videos WHERE state='pending'")]
            for table in ("labels", "video_extras"):
                db.execute(f"DELETE FROM {table} WHERE video_id IN (SELECT id FROM videos WHERE state='pending')")
            db.execute("DELETE FROM videos WHERE state='pending'")
        return ids

    def get_video(self, video_id: int, states: str = "'active'") -> VideoRecord:
        rows = self._query(f"SELECT {_VIDEO_COLS} FROM videos WHERE id=? AND state IN ({states})", (video_id,))
        if not rows:
            raise NotFound(f"video {video_id} not found", "VIDEO_NOT_FOUND")
        return _video(rows[0])

    def video_timestamps(self, video_id: int) -> np.ndarray:
        rows = self._query("SELECT sample_times FROM videos WHERE id=? AND state='active'", (video_id,))
        if not rows:
            raise NotFound(f"video {video_id} not found", "VIDEO_NOT_FOUND")
        return np.frombuffer(rows[0][0], dtype="<f8")

    _ENTRY_SQL = f"SELECT {_VIDEO_COLS}, sample_times FROM videos WHERE state='active'"

    def active_video_rows(self) -> list[tuple]:
        """Every active video's row as stored (entry_of_row reads one): the engine's video map
        at open, which builds a record when it is first asked for."""
        return self._query(self._ENTRY_SQL)

    @staticmethod
    def entry_of_row(row: tuple) -> tuple[VideoRecord, np.ndarray]:
        """(record, sample timestamps) of a row of active_video_rows."""
        return _video(row), np.frombuffer(row[16], dtype="<f8")

    def active_video_entries(self, video_ids=None) -> list[tuple[VideoRecord, np.ndarray]]:
        """(record, sample timestamps) of every active video, or of those in `video_ids`: one query,
        for the engine's in-memory video map (loaded at open, topped up when replicas catch up)."""
        sql = self._ENTRY_SQL
        if video_ids is None:
            rows = self._query(sql)
        else:
            ids = [int(v) for v in video_ids]
            rows = []
            for i in range(0, len(ids), 900):  # SQLite's default limit on bound parameters is 999
                chunk = ids[i : i + 900]
                rows += self._query(sql + f" AND id IN ({','.join('?' * len(chunk))})", chunk)
        return [self.entry_of_row(r) for r in rows]

    def find_by_hash(self, collection_id: int, sha256: str) -> VideoRecord | None:
        """The oldest active medium with this content hash (never an item: base.ITEM_KIND)."""
        rows = self._query(
            f"SELECT {_VIDEO_COLS} FROM videos WHERE collection_id=? AND content_sha256=? "
            f"AND kind != '{ITEM_KIND}' AND state='active' ORDER BY id LIMIT 1",
            (collection_id, sha256),
        )
        return _video(rows[0]) if rows else None

    def _where(self, q: VideoQuery, states: str = "'active'") -> tuple[str, list]:
        conds, args = [f"v.state IN ({states})"], []
        if q.collection_id is not None:
            conds.append("v.collection_id=?")
            args.append(q.collection_id)
        if q.content_sha256:  # media only (base.ITEM_KIND), through videos_by_hash
            conds.append(f"v.content_sha256=? AND v.kind != '{ITEM_KIND}'")
            args.append(q.content_sha256)
        if q.external_key:
            conds.append("v.external_key=?")
            args.append(q.external_key)
        for k, val in sorted((q.labels or {}).items()):
            conds.append("EXISTS (SELECT 1 FROM labels l WHERE l.video_id=v.id AND l.key=? AND l.value=?)")
            args += [k, val]
        return " AND ".join(conds), args

    def list_videos(self, q: VideoQuery, before_id: int | None, limit: int) -> tuple[list[VideoRecord], int]:
        """Active and damaged videos (each with its state), newest first."""
        where, args = self._where(q, "'active', 'damaged'")
        total = self._query(f"SELECT COUNT(*) FROM videos v WHERE {where}", args)[0][0]
        if before_id is not None:
            where += " AND v.id < ?"
            args = args + [before_id]
        cols = ", ".join("v." + c.strip() for c in _VIDEO_COLS.split(","))
        rows = self._query(f"SELECT {cols} FROM videos v WHERE {where} ORDER BY v.id DESC LIMIT ?", args + [limit])
        return [_video(r) for r in rows], int(total)

    def video_ids(self, q: VideoQuery) -> np.ndarray:
        where, args = self._where(q)
        return np.asarray(
            [r[0] for r in self._query(f"SELECT v.id FROM videos v WHERE {where}", args)], dtype=np.uint64
        )

    def video_ids_by_key(self, collection_id: int, keys: Sequence[str]) -> dict[str, list[int]]:
        """Storage.video_ids_by_key: one query per 900 keys (SQLite's bound-parameter limit is 999)."""
        wanted, out = list(dict.fromkeys(k for k in keys if k)), {}
        for i in range(0, len(wanted), 900):
            chunk = wanted[i : i + 900]
            # INDEXED BY: left to itself SQLite picks videos_by_collection (collection_id, state)
            # and reads every active row of the collection per call, an O(collection) lookup
            # that made each UpsertItems batch slower than the last
            rows = self._query(
                "SELECT id, external_key FROM videos INDEXED BY videos_by_key WHERE collection_id=? AND state='active' "
                f"AND external_key IN ({','.join('?' * len(chunk))}) ORDER BY id",
                [collection_id, *chunk],
            )
            for vid, key in rows:
                out.setdefault(key, []).append(int(vid))
        return out

    def active_video_hashes(self, collection_id: int) -> dict[int, tuple[int, str]]:
        """video id -> (sample count, content sha256) of every active video of a collection: what
        recovery checks a log record against before it attaches the record's vectors."""
        return {
            r[0]: (r[1], r[2])
            for r in self._query(
                "SELECT id, sample_count, content_sha256 FROM videos WHERE collection_id=? AND state='active'",
                (collection_id,),
            )
        }

    def video_extra(self, video_id: int, modality: str) -> ModalityData | None:
        """An active video's times + payload of one modality (vectors are in its vector log/index)."""
        rows = self._query(
            "SELECT e.item_times, e.payload FROM video_extras e JOIN videos v ON v.id=e.video_id "
            "WHERE e.video_id=? AND e.modality=? AND v.state='active'",
            (video_id, modality),
        )
        if not rows:
            self.get_video(video_id)  # NotFound when the video itself is not active
            return None
        return ModalityData(times=np.frombuffer(rows[0][0], dtype="<f8"), payload=bytes(rows[0][1]))

    def active_extra_hashes(self, collection_id: int, modality: str) -> dict[int, tuple[int, str]]:
        """Like active_video_hashes, for one modality's items: video id -> (item count, content
        sha256) of the active videos with at least one item (what its index must hold)."""
        return {
            r[0]: (r[1], r[2])
            for r in self._query(
                "SELECT v.id, e.item_count, v.content_sha256 FROM videos v JOIN video_extras e ON e.video_id=v.id "
                "WHERE v.collection_id=? AND v.state='active' AND e.modality=? AND e.item_count > 0",
                (collection_id, modality),
            )
        }

    def rows_failing_checksum(self) -> tuple[list[int], list[int]]:
        """Rows that no longer read back as written: (active or damaged videos whose row or
        video_extras row fails its CRC, or whose labels table disagrees with the row's labels;
        rows whose state is none of the known ones). Reads every row once, on a connection of its
        own in one read transaction: a snapshot of the catalog that commits made meanwhile (the
        server checks after it serves) neither block nor tear - a video committed between the labels
        read and the rows read would otherwise fail the labels comparison. Text that no longer
        decodes as UTF-8 reads with its bad bytes escaped, so it fails its row's checksum (or the
        labels comparison) and marks that one video, rather than raising."""
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        db.text_factory = lambda b: b.decode("utf-8", "surrogateescape")
        try:
            db.execute("BEGIN")  # deferred: the first SELECT fixes the snapshot every later one reads
            bad: set[int] = set()
            labels: dict[int, dict] = {}
            for vid, key, value in db.execute("SELECT video_id, key, value FROM labels"):
                labels.setdefault(vid, {})[key] = value
            rows = db.execute(f"SELECT {_CRC_VIDEO_COLS}, row_crc FROM videos WHERE state IN ('active', 'damaged')")
            while chunk := rows.fetchmany(4096):
                for row, crc in zip(chunk, _row_crcs([row[:-1] for row in chunk])):
                    if (row[-1] is not None and crc != row[-1]) or labels.get(row[0], {}) != _labels(row[10]):
                        bad.add(row[0])
            extras = db.execute(f"SELECT {_CRC_EXTRA_COLS}, row_crc FROM video_extras")
            while chunk := extras.fetchmany(4096):
                for row, crc in zip(chunk, _row_crcs([row[:-1] for row in chunk])):
                    if row[-1] is not None and crc != row[-1]:
                        bad.add(row[0])
            known = "'pending', 'active', 'damaged'"
            unknown = [r[0] for r in db.execute(f"SELECT id FROM videos WHERE state NOT IN ({known})")]
            db.execute("ROLLBACK")
        finally:
            db.close()
        return sorted(bad), unknown

    def mark_damaged(self, video_ids) -> None:
        """Active videos whose vectors could not be recovered: listed as damaged, never searched."""
        ids = [(int(v),) for v in video_ids]
        with self._tx() as db:
            db.executemany("UPDATE videos SET state='damaged' WHERE id=? AND state != 'pending'", ids)

    def video_id_high_water(self) -> int:
        """The highest video id ever handed out (AUTOINCREMENT never goes below it)."""
        row = self._query("SELECT seq FROM sqlite_sequence WHERE name='videos'")
        return int(row[0][0]) if row else 0

    def raise_video_id_high_water(self, seen: int) -> None:
        """Never hand out ids <= `seen` again (ids found in the vector log or a snapshot that this
        catalog has lost the rows of: a reused id would attach their vectors to another video)."""
        with self._tx() as db:
            if db.execute("UPDATE sqlite_sequence SET seq=? WHERE name='videos' AND seq<?", (seen, seen)).rowcount:
                return
            if db.execute("SELECT 1 FROM sqlite_sequence WHERE name='videos'").fetchone() is None:
                db.execute("INSERT INTO sqlite_sequence (name, seq) VALUES ('videos', ?)", (seen,))

    def delete_video_row(self, video_id: int) -> None:
        """Remove a row in any state (a pending row whose ingest failed)."""
        with self._tx() as db:
            db.execute("DELETE FROM labels WHERE video_id=?", (video_id,))
            db.execute("DELETE FROM video_extras WHERE video_id=?", (video_id,))
            db.execute("DELETE FROM videos WHERE id=?", (video_id,))

    def delete_video(self, video_id: int) -> VideoRecord:
        v = self.get_video(video_id, "'active', 'damaged'")
        with self._tx() as db:
            db.execute("DELETE FROM labels WHERE video_id=?", (video_id,))
            db.execute("DELETE FROM video_extras WHERE video_id=?", (video_id,))
            db.execute("DELETE FROM videos WHERE id=?", (video_id,))
        return v
