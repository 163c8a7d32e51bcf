"""The catalog's ingest jobs, and the idempotency keys (request ids) that they carry: a request id
names one job, so a retried upload finds the job of its first try. Mixed into `Catalog` (it runs
on the catalog's connection and transactions)."""

from __future__ import annotations

import sqlite3
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
    """The jobs table: create, update and look up ingest jobs."""

    def create_job(self, j: JobRecord) -> JobRecord:
        now = time.time()
        j.create_time = j.update_time = now
        try:
            with self._tx() as db:
                db.execute(
                    f"INSERT INTO jobs ({_JOB_COLS}) VALUES ({','.join('?' * 15)})",
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
                        int(j.already_exists),
                    ),
                )
        except sqlite3.IntegrityError:
            raise AlreadyExists(f"request_id {j.request_id!r} already used", "DUPLICATE_REQUEST") from None
        return j

    def update_job(self, j: JobRecord) -> None:
        j.update_time = time.time()
        with self._tx() as db:
            db.execute(
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
                    int(j.already_exists),
                    j.id,
                ),
            )

    def get_job(self, job_id: str) -> JobRecord:
        rows = self._query(f"SELECT {_JOB_COLS} FROM jobs WHERE id=?", (job_id,))
        if not rows:
            raise NotFound(f"ingest job {job_id!r} not found", "JOB_NOT_FOUND")
        return _job(rows[0])

    def job_for_request(self, request_id: str) -> JobRecord | None:
        rows = self._query(f"SELECT {_JOB_COLS} FROM jobs WHERE request_id=?", (request_id,))
        return _job(rows[0]) if rows else None

    def unfinished_jobs(self) -> list[JobRecord]:
        return [_job(r) for r in self._query(f"SELECT {_JOB_COLS} FROM jobs WHERE state IN ('QUEUED','RUNNING')")]

    def delete_job(self, job_id: str) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM jobs WHERE id=?", (job_id,))
