"""The catalog's collections table: create, read, list and count collections. Mixed into both
catalogs, `Catalog` (SQLite, the embedded store) and `PostgresCatalog` (the scale-out store): one
implementation of the SQL, run on the host catalog's connection, as storage.jobs' JobTables is
(its module docstring names the host methods: `_query`, `_write`, `_DUPLICATE_KEY`).

The JSON columns (sampling, index_settings, modalities) are where the two differ: a host gives
`_to_json(value)`, the value it binds for one (SQLite: the JSON text; PostgreSQL: a JSONB
parameter), and `_from_json(stored)`, the value back (SQLite parses the text; psycopg has already).
Changing a collection's index settings and deleting a collection stay with each host (JSONB's own
operator, PostgreSQL's cascades and row locks).
"""

from __future__ import annotations

import dataclasses
import json
import time

from .base import AlreadyExists, CollectionRecord, NotFound

# CollectionRecord's fields in the table's column order (`index` is the index_settings column)
_FIELDS = tuple("id name description model dimension metric sampling index create_time is_default modalities".split())
_INSERTED = _FIELDS[1:]  # all but the id, which the table assigns
_JSON_FIELDS = ("sampling", "index", "modalities")


def _columns(fields: tuple[str, ...]) -> str:
    return ", ".join("index_settings" if f == "index" else f for f in fields)


_COLL_COLS = _columns(_FIELDS)


def _sorted_keys(value: dict) -> dict:
    """`value` with its keys (nested too) in sorted order: modalities are stored that way."""
    return json.loads(json.dumps(value, sort_keys=True))


class CollectionTables:
    """The collections table (see the module docstring)."""

    def _collection(self, row) -> CollectionRecord:
        """A record from a row's `_COLL_COLS` values."""
        values = dict(zip(_FIELDS, row))
        for f in _JSON_FIELDS:
            values[f] = self._from_json(values[f])  # type: ignore[attr-defined]
        return CollectionRecord(**{**values, "is_default": bool(values["is_default"])})

    def create_collection(self, name: str, **settings) -> CollectionRecord:
        """Storage.create_collection's row: `settings` are CollectionRecord's (model, dimension,
        metric, sampling, index; description, is_default, modalities), TypeError for any other."""
        c = CollectionRecord(id=0, name=name, create_time=time.time(), **settings)
        c = dataclasses.replace(c, is_default=bool(c.is_default), modalities=_sorted_keys(c.modalities or {}))
        args = tuple(self._to_json(getattr(c, f)) if f in _JSON_FIELDS else getattr(c, f) for f in _INSERTED)  # type: ignore[attr-defined]
        marks = ",".join("?" * len(args))
        try:
            rows = self._write(  # type: ignore[attr-defined]
                f"INSERT INTO collections ({_columns(_INSERTED)}) VALUES ({marks}) RETURNING {_COLL_COLS}", args
            )
        except self._DUPLICATE_KEY:  # type: ignore[attr-defined]
            raise AlreadyExists(f"collection {name!r} already exists", "COLLECTION_EXISTS") from None
        return self._collection(rows[0])

    def get_collection(self, name: str) -> CollectionRecord:
        rows = self._query(f"SELECT {_COLL_COLS} FROM collections WHERE name=?", (name,))  # type: ignore[attr-defined]
        if not rows:
            raise NotFound(f"collection {name!r} not found", "COLLECTION_NOT_FOUND")
        return self._collection(rows[0])

    def collection_by_id(self, collection_id: int) -> CollectionRecord:
        rows = self._query(f"SELECT {_COLL_COLS} FROM collections WHERE id=?", (collection_id,))  # type: ignore[attr-defined]
        if not rows:
            raise NotFound(f"collection #{collection_id} not found", "COLLECTION_NOT_FOUND")
        return self._collection(rows[0])

    def list_collections(self, after: str = "", limit: int = 1000) -> list[CollectionRecord]:
        sql = f"SELECT {_COLL_COLS} FROM collections WHERE name > ? ORDER BY name LIMIT ?"
        return [self._collection(r) for r in self._query(sql, (after, limit))]  # type: ignore[attr-defined]

    def all_collections(self) -> list[CollectionRecord]:
        return [self._collection(r) for r in self._query(f"SELECT {_COLL_COLS} FROM collections ORDER BY id")]  # type: ignore[attr-defined]

    def collection_counts(self, collection_id: int) -> tuple[int, int, float]:
        """(videos, samples, seconds) of the collection's active videos."""
        r = self._query(  # type: ignore[attr-defined]
            "SELECT count(*), coalesce(sum(sample_count), 0), coalesce(sum(duration), 0) FROM videos "
            "WHERE collection_id=? AND state='active'",
            (collection_id,),
        )[0]
        return int(r[0]), int(r[1]), float(r[2])
