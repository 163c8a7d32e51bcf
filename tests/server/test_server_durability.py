"""Durability through a real server process (issue 17): a full disk, then kill -9, loses nothing
acknowledged; a job interrupted between the catalog commit and its own update is not indexed twice."""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import sqlite3

import grpc
import pytest

from frameseek.client import FrameSeekError
from frameseek.v1 import frameseek_pb2 as pb

from .helpers import ServerProcess, grab_frame, make_video, needs_media, tmpfs

pytestmark = [needs_media, pytest.mark.slow]


@pytest.fixture
def small_disk(tmp_path):
    """A real 40 MiB filesystem (tmpfs) for the data directory."""
    with tmpfs(tmp_path / "disk", "40m") as mnt:
        yield mnt


def _fill(path, leave: int) -> None:
    """Grow `path` until the filesystem has about `leave` bytes free."""
    st = os.statvfs(path.parent)
    free = st.f_bavail * st.f_frsize
    with open(path, "ab", buffering=0) as f, contextlib.suppress(OSError):
        left = free - leave
        while left > 0:
            left -= f.write(b"\0" * min(left, 1 << 20))


def _searchable(fs, name: str, video, tmp_path) -> bool:
    frame = grab_frame(video, 2.2, tmp_path / "q.png")
    r = fs.search_by_image(frame, k=3)
    return bool(r.hits) and r.hits[0].video.name == name


def test_disk_full_then_kill9_loses_no_acknowledged_ingest(small_disk, tmp_path):
    videos = [make_video(tmp_path / f"v{i}.mp4", seconds=4, seed=500 + i) for i in range(14)]
    filler = small_disk / "filler"
    srv = ServerProcess(small_disk / "data", ingest_workers=1, snapshot_interval_s=3600).start()
    acked: dict[str, int] = {}  # video name -> index into videos
    refused: list[str] = []
    try:
        with srv.client(timeout=300) as fs:
            for i in range(2):
                acked[fs.ingest_video(videos[i]).video.name] = i
            # from plenty of room down to none: whichever write hits the full disk (the upload
            # spool, the catalog, the vector log), the answer is DISK_FULL or success
            for i, leave in zip(
                range(2, 12), (400_000, 300_000, 200_000, 150_000, 120_000, 100_000, 80_000, 60_000, 30_000, 0)
            ):
                _fill(filler, leave)
                try:
                    acked[fs.ingest_video(videos[i]).video.name] = i
                except FrameSeekError as err:
                    assert err.code == grpc.StatusCode.RESOURCE_EXHAUSTED and err.reason == "DISK_FULL", err
                    refused.append(err.message)
                filler.unlink()
            # the sweep hits each kind of write (deterministic for these videos and this model)
            assert any("vector log write failed" in m for m in refused), refused
            for i in (12, 13):  # space freed: acknowledged again
                acked[fs.ingest_video(videos[i]).video.name] = i
        srv.kill9()
        srv.start()
        with srv.client(timeout=300) as fs:
            listed = {v.name for v in fs.list_videos()}
            assert listed == set(acked)
            for name, i in acked.items():
                assert _searchable(fs, name, videos[i], tmp_path), name
            assert not fs.stats().recovery_problems
        log = srv.log()
    finally:
        srv.stop()
    print("refusals:", refused)
    assert "Traceback" not in log


def _stopped_at_a_crash_point(tmp_path, seed: int, *rewind: str):
    """A server that ingested one video and stopped, its catalog then set back by the `rewind`
    statements (`:job` is the job's id) to the state on disk at a crash: (server, video, ingest
    response, job id). The caller starts the server again (and stops it)."""
    video = make_video(tmp_path / "v.mp4", seconds=4, seed=seed)
    data = tmp_path / "data"
    srv = ServerProcess(data, ingest_workers=1).start()
    try:
        with srv.client(timeout=300) as fs:
            r = fs.ingest_video(video)
    finally:
        srv.stop()
    job_id = r.job.name.split("/")[-1]
    db = sqlite3.connect(str(data / "catalog.sqlite3"))
    with db:
        for sql in rewind:
            db.execute(sql, {"job": job_id})
    db.close()
    return srv, video, r, job_id


def test_resumed_job_whose_video_was_committed_is_not_indexed_twice(tmp_path):
    """A crash between the catalog commit of a video and the update of its job: on restart the
    job is found done (its content hash has an active video) instead of ingesting the bytes again."""
    # the state on disk at that crash point: the job still RUNNING, its upload still spooled
    srv, video, r, job_id = _stopped_at_a_crash_point(
        tmp_path, 7, "UPDATE jobs SET state='RUNNING', video_id=NULL WHERE id=:job"
    )
    try:
        uploads = srv.data_dir / "uploads"
        (uploads / f"{job_id}.media").write_bytes(video.read_bytes())
        req = {
            "parent": "",
            "external_key": "",
            "labels": {},
            "request_id": "",
            "filename": "v.mp4",
            "server_path": "",
            "size_bytes": 0,
            "duplicate_policy": "ALLOW",
            "duplicate_threshold": 0.0,
            "return_job": False,
        }
        (uploads / f"{job_id}.json").write_text(
            json.dumps({"req": req, "sha256": r.video.content_sha256, "size": video.stat().st_size, "is_image": False})
        )
        srv.start()
        with srv.client(timeout=300) as fs:
            job = list(fs.watch_job(r.job.name))[-1]  # until it is done, however it gets there
            assert job.state == pb.INGEST_JOB_STATE_SUCCEEDED and job.video == r.video.name
            videos = list(fs.list_videos())
            assert [v.name for v in videos] == [r.video.name]
            assert videos[0].state == pb.VIDEO_STATE_ACTIVE
        assert not (uploads / f"{job_id}.media").exists()
    finally:
        srv.stop()


def test_a_job_whose_spooled_request_was_cut_short_fails_instead_of_blocking_the_start(tmp_path):
    """Found by benchmarks/reliability/bench_disk_full: the disk filled up while the upload's
    request file was written, then kill -9. The job cannot be resumed; the server must still start
    and say so (INTERRUPTED), not refuse to start on an empty JSON file."""
    srv, video, r, job_id = _stopped_at_a_crash_point(
        tmp_path, 8, "UPDATE jobs SET state='QUEUED', video_id=NULL WHERE id=:job", "DELETE FROM videos"
    )
    data = srv.data_dir
    try:
        (data / "uploads" / f"{job_id}.media").write_bytes(video.read_bytes())
        (data / "uploads" / f"{job_id}.json").write_bytes(b"")
        srv.start()
        with srv.client(timeout=300) as fs:
            job = list(fs.watch_job(r.job.name))[-1]
            assert job.state == pb.INGEST_JOB_STATE_FAILED and job.error.reason == "INTERRUPTED"
        assert not list((data / "uploads").iterdir())
    finally:
        srv.stop()


def test_damaged_log_record_shows_as_a_damaged_video_and_in_stats(tmp_path):
    """Issue 17 item 2 through the API: the video of a damaged record is listed DAMAGED and never
    found; the videos after it stay searchable; GetStats says what recovery found."""
    from frameseek.storage.vectorlog import list_segments, scan_segment, segment_path

    videos = [make_video(tmp_path / f"v{i}.mp4", seconds=4, seed=900 + i) for i in range(3)]
    data = tmp_path / "data"
    srv = ServerProcess(data, ingest_workers=1, snapshot_interval_s=3600).start()
    try:
        with srv.client(timeout=300) as fs:
            names = [fs.ingest_video(v).video.name for v in videos]
            dim = fs.get_collection().dimension
        srv.kill9()  # no snapshot: the vectors are only in the log
        coll = data / "collections" / "1"
        seg = segment_path(str(coll), list_segments(str(coll))[-1])
        rec = {r.video_id: r.offset for r in scan_segment(seg, dim).records}[int(names[1].split("/")[-1])]
        raw = bytearray(pathlib.Path(seg).read_bytes())
        raw[rec + 200] ^= 0xFF
        pathlib.Path(seg).write_bytes(bytes(raw))
        srv.start()
        with srv.client(timeout=300) as fs:
            states = {v.name: v.state for v in fs.list_videos()}
            assert states == {
                names[0]: pb.VIDEO_STATE_ACTIVE,
                names[1]: pb.VIDEO_STATE_DAMAGED,
                names[2]: pb.VIDEO_STATE_ACTIVE,
            }
            assert fs.get_video(names[1]).state == pb.VIDEO_STATE_DAMAGED
            for name, video in zip(names, videos):
                hits = {h.video.name for h in fs.search_by_image(grab_frame(video, 2.2, tmp_path / "q.png"), k=5).hits}
                assert (name in hits) == (name != names[1]), (name, hits)
            problems = fs.stats().recovery_problems
            assert any("damaged log record" in p for p in problems), problems
            fs.delete_video(names[1])
            assert names[1] not in {v.name for v in fs.list_videos()}
    finally:
        srv.stop()
