"""The catalog's ingest jobs, and the idempotency keys (request ids) that they carry: a request id
names one job, so a retried upload finds the job of its first try. Mixed into both catalogs,
`Catalog` (SQLite, the embedded store; the table comes from catalog_schema) and `PostgresCatalog`
(the scale-out store; migrations/0001_catalog.sql): one implementation of the SQL, run on the host
catalog's connection, as storage.people's PeopleTables is.

What a host provides: `_query(sql, args)` -> rows; `_write(sql, args)` -> rows, one statement in a
transaction of its own; and `_DUPLICATE_KEY`, its driver's exception for a broken unique constraint
(a request id used twice). The SQL here is written in sqlite3's qmark style ('?'); a host whose
driver uses another parameter style translates it.

A catalog that several servers share gives each job the server that spooled its upload
(`owner`, a column of its jobs table): only that server can resume the job. The embedded catalog has
one server, and no owner column.
"""

from __future__ import annotations

import dataclasses
import time

from .base import (
    AlreadyExists,
    JobRecord,
    JobState,
    NotFound,
)

# a job row's columns are JobRecord's fields, in its order
_JOB_FIELDS = tuple(f.name for f in dataclasses.fields(JobRecord))
_JOB_COLS = ", ".join(_JOB_FIELDS)
# what update_job writes: all but the job's identity and its creation
_UPDATED = tuple(c for c in _JOB_FIELDS if c not in ("id", "collection_id", "request_id", "create_time"))
_UNFINISHED = "state IN ('QUEUED', 'RUNNING')"


def _job(row) -> JobRecord:
    j = JobRecord(*row)
    j.state, j.already_exists = JobState(j.state), bool(j.already_exists)
    return j


def _stored(j: JobRecord, columns: tuple[str, ...]) -> tuple:
    """The job's values of `columns` as stored: its state by value, already_exists a bool."""
    stored = {"state": j.state.value, "already_exists": bool(j.already_exists)}
    return tuple(stored[c] if c in stored else getattr(j, c) for c in columns)


class JobTables:
    """The jobs table: create, update and look up ingest jobs (see the module docstring)."""

    _DUPLICATE_KEY: type[Exception]

    def create_job(self, j: JobRecord, owner: str | None = None) -> JobRecord:
        """Insert the job; `owner`: its server, on a catalog that several servers share."""
        j.create_time = j.update_time = time.time()
        cols, args = _JOB_COLS, _stored(j, _JOB_FIELDS)
        if owner is not None:
            cols, args = f"{cols}, owner", (*args, owner)
        try:
            self._write(f"INSERT INTO jobs ({cols}) VALUES ({','.join('?' * len(args))})", args)  # type: ignore[attr-defined]
        except self._DUPLICATE_KEY:
            raise AlreadyExists(f"request_id {j.request_id!r} already used", "DUPLICATE_REQUEST") from None
        return j

    def update_job(self, j: JobRecord) -> None:
        j.update_time = time.time()
        sets = ", ".join(f"{c}=?" for c in _UPDATED)
        self._write(f"UPDATE jobs SET {sets} WHERE id=?", (*_stored(j, _UPDATED), j.id))  # type: ignore[attr-defined]

    def get_job(self, job_id: str) -> JobRecord:
        rows = self._query(f"SELECT {_JOB_COLS} FROM jobs WHERE id=?", (job_id,))  # type: ignore[attr-defined]
        if not rows:
            raise NotFound(f"ingest job {job_id!r} not found", "JOB_NOT_FOUND")
        return _job(rows[0])

    def job_for_request(self, request_id: str) -> JobRecord | None:
        rows = self._query(f"SELECT {_JOB_COLS} FROM jobs WHERE request_id=?", (request_id,))  # type: ignore[attr-defined]
        return _job(rows[0]) if rows else None

    def unfinished_jobs(self, owner: str | None = None) -> list[JobRecord]:
        """The queued or running jobs (of `owner`, on a catalog that several servers share: only
        the server that spooled an upload can resume it)."""
        where, args = (_UNFINISHED, ()) if owner is None else (f"owner=? AND {_UNFINISHED}", (owner,))
        rows = self._query(f"SELECT {_JOB_COLS} FROM jobs WHERE {where}", args)  # type: ignore[attr-defined]
        return [_job(r) for r in rows]

    def delete_job(self, job_id: str) -> None:
        self._write("DELETE FROM jobs WHERE id=?", (job_id,))  # type: ignore[attr-defined]
