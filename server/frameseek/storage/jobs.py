"""The catalog's ingest jobs, and the idempotency keys (request ids) that they carry: a request id
names one job, so a retried upload finds the job of its first try. Mixed into both catalogs,
`Catalog` (SQLite, the embedded store; the table comes from catalog_schema) and `PostgresCatalog`
(the scale-out store; migrations/0001_catalog.sql): one implementation of the SQL, run on the host
catalog's connection, as storage.people's PeopleTables is.

What a host provides: `_query(sql, args)` -> rows; `_write(sql, args)`, one statement in a
transaction of its own; and `_DUPLICATE_KEY`, its driver's exception for a broken unique constraint
(a request id used twice). The SQL here is written in sqlite3's qmark style ('?'); a host whose
driver uses another parameter style translates it.

A catalog that several servers share gives each job the server that spooled its upload
(`owner`, a column of its jobs table): only that server can resume the job. The embedded catalog has
one server, and no owner column.
"""

from __future__ import annotations

import time

from .base import (
    AlreadyExists,
    JobRecord,
    JobState,
    NotFound,
)

_JOB_COLS = (
    "id, collection_id, state, request_id, samples_done, samples_total, media_seconds_done, duration, "
    "video_id, error_code, error_reason, error_message, create_time, update_time, already_exists"
)
_UNFINISHED = "state IN ('QUEUED', 'RUNNING')"


def _job(row) -> JobRecord:
    return JobRecord(
        id=row[0],
        collection_id=row[1],
        state=JobState(row[2]),
        request_id=row[3],
        samples_done=row[4],
        samples_total=row[5],
        media_seconds_done=row[6],
        duration=row[7],
        video_id=row[8],
        error_code=row[9],
        error_reason=row[10],
        error_message=row[11],
        create_time=row[12],
        update_time=row[13],
        already_exists=bool(row[14]),
    )


class JobTables:
    """The jobs table: create, update and look up ingest jobs (see the module docstring)."""

    _DUPLICATE_KEY: type[Exception]

    def create_job(self, j: JobRecord, owner: str | None = None) -> JobRecord:
        """Insert the job; `owner`: its server, on a catalog that several servers share."""
        now = time.time()
        j.create_time = j.update_time = now
        cols, args = (
            _JOB_COLS,
            (
                j.id,
                j.collection_id,
                j.state.value,
                j.request_id,
                j.samples_done,
                j.samples_total,
                j.media_seconds_done,
                j.duration,
                j.video_id,
                j.error_code,
                j.error_reason,
                j.error_message,
                j.create_time,
                j.update_time,
                bool(j.already_exists),
            ),
        )
        if owner is not None:
            cols, args = f"{cols}, owner", (*args, owner)
        try:
            self._write(f"INSERT INTO jobs ({cols}) VALUES ({','.join('?' * len(args))})", args)  # type: ignore[attr-defined]
        except self._DUPLICATE_KEY:
            raise AlreadyExists(f"request_id {j.request_id!r} already used", "DUPLICATE_REQUEST") from None
        return j

    def update_job(self, j: JobRecord) -> None:
        j.update_time = time.time()
        self._write(  # type: ignore[attr-defined]
            "UPDATE jobs SET state=?, samples_done=?, samples_total=?, media_seconds_done=?, duration=?, "
            "video_id=?, error_code=?, error_reason=?, error_message=?, update_time=?, already_exists=? "
            "WHERE id=?",
            (
                j.state.value,
                j.samples_done,
                j.samples_total,
                j.media_seconds_done,
                j.duration,
                j.video_id,
                j.error_code,
                j.error_reason,
                j.error_message,
                j.update_time,
                bool(j.already_exists),
                j.id,
            ),
        )

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
