"""The catalog's SQLite schema: its tables, its version and the migrations from older versions,
and the row checksums (CRC-32) that the video rows carry. Mixed into `Catalog` (runs on its
connection, at open)."""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence

from .base import ITEM_KIND
from .people import PEOPLE_SCHEMA

# 2: video state 'damaged'; 3: collections.modalities, video_extras; 4: row checksums; 5: people;
# 6: videos_by_hash without items
SCHEMA_VERSION = 6

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS collections (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  name TEXT NOT NULL UNIQUE,
  description TEXT NOT NULL DEFAULT '',
  model TEXT NOT NULL,
  dimension INTEGER NOT NULL,
  metric TEXT NOT NULL,
  sampling TEXT NOT NULL,
  index_settings TEXT NOT NULL,
  create_time REAL NOT NULL,
  is_default INTEGER NOT NULL DEFAULT 0,
  modalities TEXT NOT NULL DEFAULT '{}'  -- CollectionRecord.modalities (JSON)
);
"""

_VIDEOS_TABLE = """
CREATE TABLE IF NOT EXISTS {name} (
  id INTEGER PRIMARY KEY AUTOINCREMENT,   -- never reused: sample ids are derived from it
  collection_id INTEGER NOT NULL REFERENCES collections(id),
  state TEXT NOT NULL CHECK (state IN ('pending', 'active', 'damaged')),
  kind TEXT NOT NULL,
  duration REAL NOT NULL,
  width INTEGER NOT NULL,
  height INTEGER NOT NULL,
  sample_count INTEGER NOT NULL,
  size_bytes INTEGER NOT NULL,
  content_sha256 TEXT NOT NULL,
  external_key TEXT NOT NULL DEFAULT '',
  labels TEXT NOT NULL DEFAULT '{}',
  filename TEXT NOT NULL DEFAULT '',
  model TEXT NOT NULL DEFAULT '',
  realtime_factor REAL NOT NULL DEFAULT 0,
  create_time REAL NOT NULL,
  -- float64 little-endian, sample i -> timestamp (s)
  sample_times BLOB NOT NULL,
  row_crc INTEGER
);
"""

_VIDEO_INDEXES = (
    "CREATE INDEX IF NOT EXISTS videos_by_collection ON videos(collection_id, state, id)",
    # media only (base.ITEM_KIND): the by-hash lookups say `kind != 'item'` so that SQLite uses it
    f"CREATE INDEX IF NOT EXISTS videos_by_hash ON videos(collection_id, content_sha256) WHERE kind != '{ITEM_KIND}'",
    "CREATE INDEX IF NOT EXISTS videos_by_key ON videos(external_key)",
)

# Per-video data of the collection's other modalities (base.ModalityData): written with the pending
# row, so it commits with the video; the vectors themselves live in the modality's vector log.
_EXTRAS_TABLE = """
CREATE TABLE IF NOT EXISTS video_extras (
  video_id INTEGER NOT NULL REFERENCES videos(id) ON DELETE CASCADE,
  modality TEXT NOT NULL,
  item_count INTEGER NOT NULL,
  item_times BLOB NOT NULL,              -- float64 little-endian, item i -> timestamp (s)
  payload BLOB NOT NULL,
  row_crc INTEGER,
  PRIMARY KEY (video_id, modality)
);
"""

_SCHEMA += (
    _VIDEOS_TABLE.replace("{name}", "videos")
    + ";\n".join(_VIDEO_INDEXES)
    + """;
CREATE TABLE IF NOT EXISTS labels (
  video_id INTEGER NOT NULL REFERENCES videos(id) ON DELETE CASCADE,
  key TEXT NOT NULL, value TEXT NOT NULL,
  PRIMARY KEY (video_id, key)
);
CREATE INDEX IF NOT EXISTS labels_by_kv ON labels(key, value);
CREATE TABLE IF NOT EXISTS jobs (
  id TEXT PRIMARY KEY,
  collection_id INTEGER NOT NULL,
  state TEXT NOT NULL,
  request_id TEXT NOT NULL DEFAULT '',
  samples_done INTEGER NOT NULL DEFAULT 0,
  samples_total INTEGER NOT NULL DEFAULT 0,
  media_seconds_done REAL NOT NULL DEFAULT 0,
  duration REAL NOT NULL DEFAULT 0,
  video_id INTEGER,
  error_code INTEGER NOT NULL DEFAULT 0,
  error_reason TEXT NOT NULL DEFAULT '',
  error_message TEXT NOT NULL DEFAULT '',
  already_exists INTEGER NOT NULL DEFAULT 0,
  create_time REAL NOT NULL,
  update_time REAL NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS jobs_by_request ON jobs(request_id) WHERE request_id != '';
"""
    + _EXTRAS_TABLE
    + PEOPLE_SCHEMA
)


# SQLite keeps no checksums: a flipped byte inside a row's text or number reads back as another
# valid value. Each video row (and each video_extras row) carries a CRC-32 of the fields that never
# change after insert, id included; the engine checks them at start (Catalog.rows_failing_checksum)
# and marks a video whose row fails damaged instead of serving altered data.
_CRC_VIDEO_COLS = (
    "id, collection_id, kind, duration, width, height, sample_count, size_bytes, content_sha256, "
    "external_key, labels, filename, model, realtime_factor, sample_times"
)
_CRC_EXTRA_COLS = "video_id, modality, item_count, item_times, payload"


def _row_crcs(rows: Sequence[Sequence]) -> list[int]:
    """CRC-32 of each row's values in order: each value's repr (a blob's bytes) after its length
    (u32 LE), all chained. A column whose value is the same in every row (most of a batch's: an
    item's kind, sizes, labels, model ...) is encoded once for all of them: repr and encode of each
    value cost a one-vector item ~3 of its ~5 us."""
    if not rows:
        return []
    template: list[bytes | int] = []  # runs of same-valued columns, joined; a varying column's index
    for i, column in enumerate(zip(*rows)):
        if _same_everywhere(column):
            part = _encoded(column[0])
            if template and isinstance(template[-1], bytes):
                template[-1] += part
            else:
                template.append(part)
        else:
            template.append(i)
    crc32, encoded = zlib.crc32, _encoded
    return [crc32(b"".join([t if type(t) is bytes else encoded(row[t]) for t in template])) for row in rows]


def _row_crc(row: Sequence) -> int:
    return _row_crcs([row])[0]


def _encoded(value) -> bytes:
    data = bytes(value) if isinstance(value, bytes | memoryview) else repr(value).encode()
    return len(data).to_bytes(4, "little") + data


def _same_everywhere(column: tuple) -> bool:
    """Does every value of the column encode as its first does? (Equal and of one type: 0, 0.0 and
    False are equal but encode apart; so are 0.0 and -0.0, told apart by their sign.)"""
    first = column[0]
    if len(column) == 1:
        return True
    if column.count(first) != len(column) or len(set(map(type, column))) != 1:
        return False
    return not (type(first) is float and first == 0.0 and len({math.copysign(1.0, v) for v in column}) != 1)


class CatalogSchema:
    """Creates the schema of a new catalog and migrates an older one, at open."""

    def _open_schema(self, path: str) -> None:
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.executescript(_SCHEMA)
        row = self._db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        if row is None:
            self._db.execute("INSERT INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
            return
        version = int(row[0])
        if version > SCHEMA_VERSION or version < 1:
            raise RuntimeError(f"catalog {path} has schema {row[0]}, this server needs {SCHEMA_VERSION}")
        if version == 1:
            self._migrate_v1()
        if version <= 2:
            self._migrate_v2()
        if version <= 3:
            self._migrate_v3()
        if version <= 5:  # 4 -> 5, the people tables, needs only the schema script (IF NOT EXISTS)
            self._migrate_v5()

    def _migrate_v5(self) -> None:
        """Schema 5 -> 6: videos_by_hash rebuilt without the items' rows (base.ITEM_KIND)."""
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            db.execute("DROP INDEX IF EXISTS videos_by_hash")
            db.execute(next(sql for sql in _VIDEO_INDEXES if " videos_by_hash " in sql))
            db.execute("UPDATE meta SET value=? WHERE key='schema_version'", (str(SCHEMA_VERSION),))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def _migrate_v2(self) -> None:
        """Schema 2 -> 3: collections gain `modalities` ('{}': frames only, what they were);
        video_extras was created by the schema script (IF NOT EXISTS)."""
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            cols = [r[1] for r in db.execute("PRAGMA table_info(collections)")]
            if "modalities" not in cols:
                db.execute("ALTER TABLE collections ADD COLUMN modalities TEXT NOT NULL DEFAULT '{}'")
            db.execute("UPDATE meta SET value='3' WHERE key='schema_version'")
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def _migrate_v3(self) -> None:
        """Schema 3 -> 4: row checksums, computed for the rows as they are at the migration."""
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            for table in ("videos", "video_extras"):
                if "row_crc" not in [r[1] for r in db.execute(f"PRAGMA table_info({table})")]:
                    db.execute(f"ALTER TABLE {table} ADD COLUMN row_crc INTEGER")
            for row in db.execute(f"SELECT {_CRC_VIDEO_COLS} FROM videos").fetchall():
                db.execute("UPDATE videos SET row_crc=? WHERE id=?", (_row_crc(row), row[0]))
            for row in db.execute(f"SELECT {_CRC_EXTRA_COLS} FROM video_extras").fetchall():
                db.execute(
                    "UPDATE video_extras SET row_crc=? WHERE video_id=? AND modality=?", (_row_crc(row), row[0], row[1])
                )
            db.execute("UPDATE meta SET value=? WHERE key='schema_version'", (str(SCHEMA_VERSION),))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def _migrate_v1(self) -> None:
        """Schema 1 -> 2: the videos table's state CHECK admits 'damaged'. SQLite cannot alter a
        CHECK, so the table is rebuilt (sqlite's documented 12-step procedure), keeping the
        AUTOINCREMENT high-water mark so that no id is ever reused."""
        db = self._db
        db.execute("PRAGMA foreign_keys=OFF")
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                row = db.execute("SELECT seq FROM sqlite_sequence WHERE name='videos'").fetchone()
                db.execute(_VIDEOS_TABLE.replace("{name}", "videos_v2"))
                cols = ", ".join(r[1] for r in db.execute("PRAGMA table_info(videos)"))
                db.execute(f"INSERT INTO videos_v2 ({cols}) SELECT {cols} FROM videos")
                db.execute("DROP TABLE videos")
                db.execute("ALTER TABLE videos_v2 RENAME TO videos")
                for sql in _VIDEO_INDEXES:
                    db.execute(sql)
                if row is not None:
                    db.execute("UPDATE sqlite_sequence SET seq=max(seq, ?) WHERE name='videos'", (row[0],))
                db.execute("UPDATE meta SET value='2' WHERE key='schema_version'")
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        finally:
            db.execute("PRAGMA foreign_keys=ON")
