"""The catalog's people tables: persons (stable ids, display names) and which face track of which
video each one is. Mixed into both catalogs, `Catalog` (SQLite, the embedded store) and
`PostgresCatalog` (the scale-out store, through postgres_people.PostgresPeople; the tables come
from migrations/0003_people.sql): one
implementation of the SQL, run on the host catalog's connection and transactions. The face
modality decides the assignment (frameseek.service.people), the catalog keeps it.

What a host provides: `_tx()`, a context manager giving a connection inside one transaction that
excludes every other people-writing transaction (SQLite's BEGIN IMMEDIATE; PostgreSQL takes an
advisory lock), whose `execute(sql, args)` returns a cursor (iteration, fetchone, rowcount); and
`_query(sql, args)` -> rows. The SQL here is written in sqlite3's qmark style ('?'), and in what
SQLite >= 3.35 and PostgreSQL both understand (INSERT ... RETURNING); a host whose driver uses
another parameter style translates it.

A person id is allocated once (AUTOINCREMENT, never reused) and a track keeps its person: ids are
stable across restarts and later ingests. Track rows go with their video (ON DELETE CASCADE); a
person whose every track is gone is no longer listed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time

PEOPLE_SCHEMA = """
CREATE TABLE IF NOT EXISTS people (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  collection_id INTEGER NOT NULL,
  display_name TEXT NOT NULL DEFAULT '',
  create_time REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS person_tracks (
  video_id INTEGER NOT NULL REFERENCES videos(id) ON DELETE CASCADE,
  track INTEGER NOT NULL,
  person_id INTEGER NOT NULL REFERENCES people(id),
  PRIMARY KEY (video_id, track)
);
CREATE INDEX IF NOT EXISTS person_tracks_by_person ON person_tracks(person_id);
"""


@dataclasses.dataclass(frozen=True)
class PersonRecord:
    id: int
    collection_id: int
    display_name: str
    tracks: tuple[tuple[int, int], ...]  # (video id, track) of its active videos, by video


class PeopleTables:
    """Catalog methods for the people tables (see the module docstring)."""

    def assigning(self, collection_id: int) -> contextlib.AbstractContextManager:
        """Held while one video's persons are decided and written (service.people): the decision
        reads the persons of other videos, so two assignments in a collection must not
        interleave. Here nothing: one process owns the SQLite catalog and serialises its own
        assignments; a catalog that several servers share (PostgresCatalog) holds a lock they
        all see."""
        return contextlib.nullcontext()

    def assign_tracks(
        self, collection_id: int, video_id: int, groups: list[tuple[list[int], int | None]]
    ) -> dict[int, int]:
        """Record which person each track of one video is: `groups` of (tracks, person id), None
        = a new person for that group. Tracks already assigned keep theirs (idempotent: a retried
        assignment changes nothing). Returns track -> person id."""
        now = time.time()
        out: dict[int, int] = {}
        with self._tx() as db:  # type: ignore[attr-defined]
            for track, pid in db.execute("SELECT track, person_id FROM person_tracks WHERE video_id=?", (video_id,)):
                out[int(track)] = int(pid)
            for tracks, person in groups:
                todo = [t for t in tracks if t not in out]
                if not todo:
                    continue
                if person is None:
                    # fetchall: the statement is finished before the transaction commits
                    person = db.execute(
                        "INSERT INTO people (collection_id, create_time) VALUES (?, ?) RETURNING id",
                        (collection_id, now),
                    ).fetchall()[0][0]
                for t in todo:
                    db.execute("INSERT INTO person_tracks VALUES (?,?,?)", (video_id, int(t), int(person)))
                    out[int(t)] = int(person)
        return out

    def unassigned_videos(self, collection_id: int, modality: str) -> list[int]:
        """Active videos with items of `modality` (faces) none of whose tracks has a person."""
        rows = self._query(  # type: ignore[attr-defined]
            "SELECT v.id FROM videos v JOIN video_extras e ON e.video_id=v.id "
            "WHERE v.collection_id=? AND v.state='active' AND e.modality=? AND e.item_count > 0 "
            "AND NOT EXISTS (SELECT 1 FROM person_tracks t WHERE t.video_id=v.id) ORDER BY v.id",
            (collection_id, modality),
        )
        return [int(r[0]) for r in rows]

    def track_people(self, video_ids: list[int]) -> dict[tuple[int, int], int]:
        """(video, track) -> person id for these videos' assigned tracks."""
        if not video_ids:
            return {}
        marks = ",".join("?" * len(video_ids))
        rows = self._query(  # type: ignore[attr-defined]
            f"SELECT video_id, track, person_id FROM person_tracks WHERE video_id IN ({marks})",
            tuple(int(v) for v in video_ids),
        )
        return {(int(v), int(t)): int(p) for v, t, p in rows}

    def people(self, collection_id: int, after: int = 0, limit: int = 1000, video_id: int | None = None):
        """Persons of a collection with at least one track in an active video, by id (those with a
        track in `video_id` when given): the first `limit` after id `after`, each with its tracks.
        The page is chosen in SQL, so a page reads only its own persons' rows."""
        page = (
            "SELECT p.id FROM people p WHERE p.collection_id=? AND p.id>? AND EXISTS (SELECT 1 FROM "
            "person_tracks t JOIN videos v ON v.id=t.video_id WHERE t.person_id=p.id AND v.state='active') "
        )
        args: tuple = (collection_id, after)
        if video_id is not None:
            page += "AND p.id IN (SELECT person_id FROM person_tracks WHERE video_id=?) "
            args += (video_id,)
        rows = self._query(  # type: ignore[attr-defined]
            "SELECT p.id, p.display_name, t.video_id, t.track FROM people p "
            "JOIN person_tracks t ON t.person_id=p.id JOIN videos v ON v.id=t.video_id "
            f"WHERE v.state='active' AND p.id IN ({page} ORDER BY p.id LIMIT ?) ORDER BY p.id, t.video_id, t.track",
            (*args, limit),
        )
        names: dict[int, str] = {}
        tracks: dict[int, list[tuple[int, int]]] = {}
        for pid, name, vid, track in rows:
            names[int(pid)] = str(name)
            tracks.setdefault(int(pid), []).append((int(vid), int(track)))
        return [PersonRecord(pid, collection_id, names[pid], tuple(ts)) for pid, ts in tracks.items()]

    def person(self, collection_id: int, person_id: int) -> PersonRecord | None:
        found = self.people(collection_id, person_id - 1, 1)
        return found[0] if found and found[0].id == person_id else None

    def set_person_name(self, collection_id: int, person_id: int, name: str) -> bool:
        with self._tx() as db:  # type: ignore[attr-defined]
            cur = db.execute(
                "UPDATE people SET display_name=? WHERE id=? AND collection_id=?", (name, person_id, collection_id)
            )
            return cur.rowcount == 1

    def person_names(self, person_ids: list[int]) -> dict[int, str]:
        if not person_ids:
            return {}
        marks = ",".join("?" * len(person_ids))
        rows = self._query(f"SELECT id, display_name FROM people WHERE id IN ({marks})", tuple(person_ids))  # type: ignore[attr-defined]
        return {int(i): str(n) for i, n in rows}


__all__ = ["PEOPLE_SCHEMA", "PeopleTables", "PersonRecord"]
