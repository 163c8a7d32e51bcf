"""End to end through a real server process with the real model: ingest generated and opencv-doc
videos, find frames and sub-clips, dedup, jobs, bad media, delete, and kill -9 during ingests."""

from __future__ import annotations

import os
import pathlib
import shutil
import threading
import time
import uuid

import grpc
import pytest

from frameseek.client import Client, FrameSeekError
from frameseek.v1 import frameseek_pb2 as pb

from .helpers import OPENCV_DATA, ServerProcess, ffmpeg_subclip, grab_frame, make_video, needs_aggregate, needs_media

pytestmark = [needs_media, pytest.mark.slow]


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    d = tmp_path_factory.mktemp("media")
    vids = {f"gen{i}": make_video(d / f"gen{i}.mp4", seconds=s, seed=100 + i) for i, s in enumerate((10, 12, 8))}
    vids["megamind"] = d / "Megamind.avi"
    shutil.copy(OPENCV_DATA / "Megamind.avi", vids["megamind"])
    vids["tree"] = d / "tree.avi"
    shutil.copy(OPENCV_DATA / "tree.avi", vids["tree"])
    return d, vids


@pytest.fixture(scope="module")
def srv(tmp_path_factory, media):
    s = ServerProcess(tmp_path_factory.mktemp("msrv") / "data", ingest_workers=2).start()
    yield s
    assert s.stop() == 0, s.log()


@pytest.fixture(scope="module")
def indexed(srv, media):
    _, vids = media
    names = {}
    with srv.client(timeout=600) as fs:
        for key, path in vids.items():
            r = fs.ingest_video(path, labels={"src": key}, external_key=key)
            assert r.video.sample_count > 0 and not r.already_exists
            assert r.job.state == pb.INGEST_JOB_STATE_SUCCEEDED
            names[key] = r.video.name
    return names


@pytest.mark.parametrize("key, t", [("gen0", 4.3), ("gen1", 9.6), ("gen2", 1.2), ("megamind", 6.0), ("tree", 20.0)])
def test_frame_finds_video_at_timestamp(srv, media, indexed, key, t, tmp_path):
    _, vids = media
    frame = grab_frame(vids[key], t, tmp_path / "frame.png")
    with srv.client() as fs:
        r = fs.search_by_image(frame, k=3, max_matches_per_video=3)
    assert r.hits[0].video.name == indexed[key]
    assert abs(r.hits[0].matches[0].timestamp_seconds - t) <= 1.0
    assert r.hits[0].score > 0.5


@needs_aggregate
@pytest.mark.parametrize("key, start, dur", [("gen1", 3.0, 6.0), ("megamind", 4.0, 5.0)])
def test_reencoded_subclip_finds_source_with_offset(srv, media, indexed, key, start, dur, tmp_path):
    _, vids = media
    clip = ffmpeg_subclip(vids[key], start, dur, tmp_path / "clip.mp4")
    with srv.client(timeout=600) as fs:
        r = fs.search_by_video(clip, k=3, min_score=-1)
    assert r.matches and r.matches[0].video.name == indexed[key]
    m = r.matches[0]
    assert abs(m.offset_seconds - start) <= 1.0, m
    first = m.segments[0] if m.segments else None
    assert first and abs(first.reference_start_seconds - (start + first.query_start_seconds)) <= 1.0


@needs_aggregate
def test_long_query_is_sampled_within_the_servers_bound(media, tmp_path):
    """query_max_samples bounds the frames SearchByVideo embeds: a 9 s sub-clip under a bound of 5
    is sampled 5 times, spread over all of it, and still placed at its offset; a rate the caller
    sets is applied as given."""
    _, vids = media
    s = ServerProcess(tmp_path / "data", sampling__query_max_samples=5).start()
    try:
        with s.client(timeout=600) as fs:
            name = fs.ingest_video(vids["gen1"]).video.name
            clip = ffmpeg_subclip(vids["gen1"], 3.0, 9.0, tmp_path / "clip.mp4")
            bounded = fs.search_by_video(clip, k=3)
            asked = fs.search_by_video(clip, k=3, fps=1.0)
    finally:
        assert s.stop() == 0, s.log()
    assert (bounded.query_samples, asked.query_samples) == (5, 9)
    for r in (bounded, asked):
        assert r.matches and r.matches[0].video.name == name
        m = r.matches[0]
        assert abs(m.offset_seconds - 3.0) <= 1.0, m
        assert m.segments[-1].query_end_seconds >= 7.0, m  # the samples span the whole clip


@needs_aggregate
def test_picture_in_picture_copy_found_through_region_search(srv, media, indexed, tmp_path):
    """Megamind at half the frame width over vtest.avi (not indexed): the server's default
    region search (AUTO) detects the inset and finds Megamind; OFF scores it far lower."""
    import subprocess

    _, vids = media
    clip = tmp_path / "pip.mp4"
    subprocess.run(
        [
            "ffmpeg",
            "-hide_banner",
            "-loglevel",
            "error",
            "-y",
            "-t",
            "8",
            "-i",
            str(OPENCV_DATA / "vtest.avi"),
            "-t",
            "8",
            "-i",
            str(vids["megamind"]),
            "-filter_complex",
            "[0:v]scale=320:240,setsar=1[bg];[1:v]scale=160:-2,setsar=1[fg];[bg][fg]overlay=W*0.45:H*0.4:shortest=1",
            "-c:v",
            "libx264",
            "-preset",
            "veryfast",
            "-crf",
            "24",
            "-pix_fmt",
            "yuv420p",
            "-an",
            str(clip),
        ],
        check=True,
    )
    with srv.client(timeout=600) as fs:
        found = fs.search_by_video(clip, k=5)  # default threshold, default region search
        found = fs.search_by_video(clip, k=5, min_score=-1, region_search="auto")
        auto = {m.video.name: m.score for m in found.matches}
        off = {m.video.name: m.score for m in fs.search_by_video(clip, k=5, min_score=-1, region_search="off").matches}
        assert [m.video.name for m in found.matches][:1] == [indexed["megamind"]]
        assert abs(found.matches[0].offset_seconds) <= 1.0 and 0 < found.matches[0].score <= 1.0
        assert auto[indexed["megamind"]] >= off.get(indexed["megamind"], 0.0) + 0.1
        with pytest.raises(FrameSeekError) as ei:
            fs.search_by_video(clip, region_search=7)  # not a RegionSearch value
        assert ei.value.code == grpc.StatusCode.INVALID_ARGUMENT


def test_same_bytes_are_not_indexed_twice(srv, media, indexed):
    _, vids = media
    with srv.client() as fs:
        before = fs.get_collection().video_count
        r = fs.ingest_video(vids["gen0"])
        assert r.already_exists and r.video.name == indexed["gen0"]
        assert fs.get_collection().video_count == before
        sha = r.video.content_sha256
        assert fs.find_by_hash(sha).name == indexed["gen0"]


def test_request_id_makes_retries_idempotent(srv, tmp_path):
    path = make_video(tmp_path / "idem.mp4", seconds=3, seed=555)
    rid = uuid.uuid4().hex
    with srv.client() as fs:
        a = fs.ingest_video(path, request_id=rid)
        b = fs.ingest_video(path, request_id=rid)
        assert a.video.name == b.video.name and a.job.name == b.job.name
        fs.delete_video(a.video.name)


def test_return_job_and_watch(srv, tmp_path):
    path = make_video(tmp_path / "job.mp4", seconds=6, seed=777)
    with srv.client() as fs:
        r = fs.ingest_video(path, return_job=True)
        assert not r.HasField("video") and r.job.name.startswith("ingestJobs/")
        states = [j.state for j in fs.watch_job(r.job.name, timeout=300)]
        assert states[-1] == pb.INGEST_JOB_STATE_SUCCEEDED
        job = fs.get_job(r.job.name)
        assert job.progress == 1.0 and job.video
        assert fs.get_video(job.video).sample_count == job.samples_done > 0
        fs.delete_video(job.video)


def test_image_ingest_and_search(srv, media, tmp_path):
    _, vids = media
    img = grab_frame(vids["tree"], 3.0, tmp_path / "still.png")
    with srv.client() as fs:
        r = fs.ingest_image(img, labels={"kind": "still"})
        assert r.video.kind == pb.MEDIA_KIND_IMAGE and r.video.sample_count == 1
        hits = fs.search_by_image(img, k=5, labels={"kind": "still"}).hits
        assert [h.video.name for h in hits] == [r.video.name] and hits[0].score > 0.99
        fs.delete_video(r.video.name)


def _bad_inputs(media_dir: pathlib.Path, gen: pathlib.Path) -> dict[str, bytes]:
    data = gen.read_bytes()
    return {
        "random": os.urandom(50_000),
        "text": b"hello, I am not a video\n" * 100,
        "truncated": data[: len(data) // 3],
        "corrupt": data[:64] + os.urandom(len(data) - 64),
        "audio_only": _audio_only(media_dir),
    }


def _audio_only(d: pathlib.Path) -> bytes:
    import subprocess

    out = d / "tone.wav"
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", "sine=frequency=440:duration=1", str(out)], check=True
    )
    return out.read_bytes()


def test_bad_media_is_invalid_argument_and_server_keeps_serving(srv, media, indexed):
    d, vids = media
    with srv.client() as fs:
        before = fs.get_collection().video_count
        for name, blob in _bad_inputs(d, vids["gen2"]).items():
            with pytest.raises(FrameSeekError) as ei:
                fs.ingest_video(blob, filename=name)
            assert ei.value.code == grpc.StatusCode.INVALID_ARGUMENT, (name, ei.value)
            assert ei.value.reason in {
                "NOT_MEDIA",
                "CORRUPT_MEDIA",
                "NO_VIDEO_STREAM",
                "ZERO_DURATION",
                "EMPTY_MEDIA",
                "UNSUPPORTED_CODEC",
            }, (name, ei.value)
            with pytest.raises(FrameSeekError) as ei:
                fs.search_by_image(blob)
            assert ei.value.code == grpc.StatusCode.INVALID_ARGUMENT, (name, ei.value)
        assert fs.get_collection().video_count == before
        st = fs.stats()
        # nothing half-indexed: every sample's vector and its coarse twin (index_coarse_scale)
        assert all(c.index_vectors == 2 * c.sample_count for c in st.collections)


def test_delete_removes_from_every_search(srv, media, tmp_path):
    path = make_video(tmp_path / "del.mp4", seconds=8, seed=999)
    frame = grab_frame(path, 3.0, tmp_path / "del.png")
    with srv.client(timeout=600) as fs:
        v = fs.ingest_video(path).video
        assert fs.search_by_image(frame, k=1).hits[0].video.name == v.name
        fs.delete_video(v.name)
        assert v.name not in {h.video.name for h in fs.search_by_image(frame, k=20).hits}
        r = fs.search_by_video(path, k=20, min_score=-1) if _has_aggregate() else None
        assert r is None or v.name not in {m.video.name for m in r.matches}
        assert fs.find_by_hash(v.content_sha256) is None


def _has_aggregate() -> bool:
    from .helpers import have_aggregate

    return have_aggregate()


def test_kill9_during_concurrent_ingests(tmp_path):
    """Six uploads at once; SIGKILL after the second acknowledgement. After restart every
    acknowledged video is there and complete, and nothing is half-indexed."""
    vids = [make_video(tmp_path / f"k{i}.mp4", seconds=4 + i, seed=2000 + i) for i in range(6)]
    srv = ServerProcess(tmp_path / "data", ingest_workers=2).start()
    acked: dict[str, pb.Video] = {}
    lock = threading.Lock()

    def upload(p):
        try:
            with Client(srv.address, retries=0, timeout=600) as fs:
                r = fs.ingest_video(p, external_key=p.name)
            with lock:
                acked[p.name] = r.video
        except FrameSeekError:
            pass  # killed before the acknowledgement

    threads = [threading.Thread(target=upload, args=(p,)) for p in vids]
    for t in threads:
        t.start()
    while len(acked) < 2 and any(t.is_alive() for t in threads):
        time.sleep(0.05)
    srv.kill9()
    for t in threads:
        t.join()
    assert len(acked) >= 2
    srv.start()
    try:
        with srv.client(timeout=600) as fs:
            # uploads that were completely received but not yet indexed are resumed from their
            # spooled copy at start-up: let them finish before counting
            while fs.stats().active_ingests:
                time.sleep(0.1)
            listed = {v.external_key: v for v in fs.list_videos()}
            for key, v in acked.items():
                assert key in listed and listed[key].name == v.name
                assert listed[key].sample_count == v.sample_count
                frame = grab_frame(tmp_path / key, 2.0, tmp_path / f"{key}.png")
                assert fs.search_by_image(frame, k=1).hits[0].video.name == v.name
            st = fs.stats()
            # nothing half-indexed: every sample's vector and its coarse twin (index_coarse_scale)
            assert all(c.index_vectors == 2 * c.sample_count for c in st.collections)
            assert st.sample_count == sum(v.sample_count for v in listed.values())
            # every upload can simply be sent again: the same bytes give the same (complete) video
            for p in vids:
                r = fs.ingest_video(p)
                assert r.video.sample_count > 0
                if p.name in listed:
                    assert r.already_exists and r.video.name == listed[p.name].name
            assert fs.stats().sample_count == sum(v.sample_count for v in fs.list_videos())
    finally:
        assert srv.stop() == 0, srv.log()


@needs_aggregate
def test_duplicate_policy_reports_and_refuses_copies(srv, media, indexed, tmp_path):
    _, vids = media
    clip = ffmpeg_subclip(vids["gen1"], 2.0, 7.0, tmp_path / "copy.mp4")
    with srv.client(timeout=600) as fs:
        before = fs.get_collection().video_count
        with pytest.raises(FrameSeekError) as ei:
            fs.ingest_video(clip, duplicate_policy="reject")
        assert (ei.value.code, ei.value.reason) == (grpc.StatusCode.ALREADY_EXISTS, "DUPLICATE_CONTENT")
        assert ei.value.metadata["video"] == indexed["gen1"]
        assert fs.get_collection().video_count == before
        r = fs.ingest_video(clip, duplicate_policy="report")
        assert indexed["gen1"] in {c.video.name for c in r.copies}
        fs.delete_video(r.video.name)


def test_cli_ingest_directory_skip_and_search(srv, tmp_path):
    import json
    import subprocess
    import sys

    lib = tmp_path / "lib" / "nested"
    lib.mkdir(parents=True)
    a = make_video(lib / "a.mp4", seconds=5, seed=4242)
    make_video(tmp_path / "lib" / "b.mp4", seconds=4, seed=4343)
    (tmp_path / "lib" / "notes.txt").write_text("not media")  # ignored inside directories

    def cli(*args):
        return subprocess.run(
            [sys.executable, "-m", "frameseek.cli", *args, "--server", srv.address],
            capture_output=True,
            text=True,
            timeout=600,
        )

    r = cli("ingest", str(tmp_path / "lib"), "-l", "batch=cli", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["summary"]["ingested"] == 2 and len(out["files"]) == 2
    r = cli("ingest", str(tmp_path / "lib"), "--json")  # second run: skipped by content hash
    assert json.loads(r.stdout)["summary"]["skipped"] == 2
    r = cli("ingest", str(tmp_path / "lib" / "notes.txt"), "--json")  # an explicit non-media file fails
    assert r.returncode == 1, r.stderr
    assert json.loads(r.stdout)["summary"]["failed"] == 1, r.stderr
    frame = grab_frame(a, 2.5, tmp_path / "a.png")
    r = cli("search-image", str(frame), "-k", "1", "--json")
    hit = json.loads(r.stdout)["hits"][0]
    assert hit["video"]["external_key"].endswith("a.mp4") and abs(hit["matches"][0]["timestamp_seconds"] - 2.5) <= 1
    r = cli("search-image", str(frame), "-k", "1")
    assert r.returncode == 0 and "a.mp4" in r.stdout
    if _has_aggregate():
        r = cli("search-video", str(a), "--json")
        assert json.loads(r.stdout)["matches"][0]["video"]["external_key"].endswith("a.mp4")
    names = [f["video"] for f in out["files"]]
    assert cli("delete", *names).returncode == 0


def test_server_path_ingest_and_pending_ingest_limit(tmp_path):
    """server_path works only under ingest_path_root; beyond max_pending_ingests -> RESOURCE_EXHAUSTED."""
    root = tmp_path / "shared"
    root.mkdir()
    long_video = make_video(root / "long.mp4", seconds=40, seed=31337)
    short = make_video(root / "short.mp4", seconds=3, seed=31338)
    srv = ServerProcess(tmp_path / "data", ingest_path_root=root, max_pending_ingests=1, ingest_workers=1).start()
    try:
        with srv.client(timeout=600) as fs:
            v = fs.ingest_video(server_path="short.mp4").video
            assert v.filename == "short.mp4" and v.sample_count > 0
            with pytest.raises(FrameSeekError) as ei:
                fs.ingest_video(server_path="../data/catalog.sqlite3")
            assert (ei.value.code, ei.value.reason) == (grpc.StatusCode.PERMISSION_DENIED, "PATH_NOT_ALLOWED")
            job = fs.ingest_video(long_video, return_job=True).job
            while fs.get_job(job.name).state == pb.INGEST_JOB_STATE_QUEUED:
                time.sleep(0.05)
            if fs.get_job(job.name).state == pb.INGEST_JOB_STATE_RUNNING:  # still busy: the limit applies
                with pytest.raises(FrameSeekError) as ei:
                    fs.ingest_video(short.read_bytes() + b"\0")
                assert ei.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
            states = [j.state for j in fs.watch_job(job.name, timeout=600)]
            assert states[-1] == pb.INGEST_JOB_STATE_SUCCEEDED
            while fs.stats().active_ingests:  # the slot is released just after the job turns SUCCEEDED
                time.sleep(0.05)
            assert fs.ingest_video(short.read_bytes() + b"\0").video.sample_count > 0  # admitted again
    finally:
        assert srv.stop() == 0, srv.log()
