"""The people tables on the PostgreSQL catalog: storage.people.PeopleTables (the SQL the SQLite
catalog runs too; the tables come from migrations/0003_people.sql) given the host methods it
needs, on PostgresCatalog's pooled connections. Mixed into PostgresCatalog (its `_conn`, `_rows`).

Two advisory locks stand where SQLite has one writer: every people-writing transaction takes a
transaction lock (as BEGIN IMMEDIATE excludes other writers, so that assign_tracks' read-then-insert
cannot race another server's), and a server deciding a video's persons holds a session lock of
that collection for the whole decision (`assigning`).
"""

from __future__ import annotations

import contextlib

import psycopg

from .people import PeopleTables

#: pg_advisory_xact_lock key of every people-writing transaction ("fspl")
_PEOPLE_WRITE_LOCK = 0x6673706C
#: pg_advisory_lock keys of `assigning`, one per collection: this class ("fspa") in the high 32
#: bits, the collection id in the low
_ASSIGNING_LOCK = 0x66737061 << 32


def pyformat(sql: str) -> str:
    """SQL written for sqlite3's qmark parameters ('?', storage.people) in psycopg's style ('%s')."""
    return sql.replace("%", "%%").replace("?", "%s")


class _QmarkConnection:
    """A psycopg connection inside a transaction, taking qmark SQL (PeopleTables' `_tx`)."""

    def __init__(self, conn: psycopg.Connection):
        self.conn = conn

    def execute(self, sql: str, args=()) -> psycopg.Cursor:
        return self.conn.execute(pyformat(sql), args)


class PostgresPeople(PeopleTables):
    """PeopleTables' host methods (storage.people's docstring) on PostgreSQL."""

    def _query(self, sql: str, args=()) -> list[tuple]:
        return self._rows(pyformat(sql), args)  # type: ignore[attr-defined]

    @contextlib.contextmanager
    def _tx(self):
        with self._conn() as c, c.transaction():  # type: ignore[attr-defined]
            c.execute("SELECT pg_advisory_xact_lock(%s)", (_PEOPLE_WRITE_LOCK,))
            yield _QmarkConnection(c)

    @contextlib.contextmanager
    def assigning(self, collection_id: int):
        """PeopleTables.assigning across every server: a session advisory lock per collection,
        held on one pooled connection (PostgreSQL frees it if the server dies holding it)."""
        key = _ASSIGNING_LOCK | (int(collection_id) & 0xFFFFFFFF)
        with self._conn() as c:  # type: ignore[attr-defined]
            c.execute("SELECT pg_advisory_lock(%s)", (key,))
            try:
                yield
            finally:
                c.execute("SELECT pg_advisory_unlock(%s)", (key,))


__all__ = ["PostgresPeople"]
