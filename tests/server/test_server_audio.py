"""Soundtracks over gRPC against the real server: a collection created with audio fingerprints
every ingested video's soundtrack (committed with it), SearchByAudio finds an excerpt (an audio
file or a video, re-encoded) with its offset and duration, deletes and restarts keep the
fingerprint index in step, and bad queries get the right status and reason.

The audio is real speech (espeak-ng) and music (fluidsynth + a GM soundfont), laid under
opencv-doc's footage (benchmarks/audio/sources)."""

from __future__ import annotations

import json
import subprocess
import sys

import grpc
import pytest

from benchmarks.audio import sources
from frameseek.client import FrameSeekError
from frameseek.v1 import frameseek_pb2 as pb

from .helpers import ServerProcess, needs_media

pytestmark = [needs_media, pytest.mark.slow]


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    sources.ensure_tools()
    d = tmp_path_factory.mktemp("audio")
    films = sources.footage()
    speech = sources.concat_audio(
        d / "speech.wav", [sources.speech(d / f"s{i}.wav", sources.TEXTS[i], v) for i, v in enumerate(["en", "de"])]
    )
    other_speech = sources.concat_audio(
        d / "speech2.wav",
        [sources.speech(d / f"t{i}.wav", sources.TEXTS[2 + i], v) for i, v in enumerate(["fr", "es"])],
    )
    song = sources.music(d / "song.wav", seed=11, seconds=24.0)
    unrelated = sources.music(d / "unrelated.wav", seed=12, seconds=12.0)
    silent = d / "silent.mp4"
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y", "-i", str(films[0]), "-t", "6", "-an", "-vf", "scale=320:240", str(silent)],
        check=True,
    )
    return {
        "speech": sources.with_picture(d / "speech.mp4", speech, films[0]),
        "speech2": sources.with_picture(d / "speech2.mp4", other_speech, films[1 % len(films)]),
        "song": sources.with_picture(d / "song.mp4", song, films[2 % len(films)]),
        "silent": silent,
        "song_wav": song,
        "unrelated": unrelated,
        "dir": d,
    }


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    s = ServerProcess(tmp_path_factory.mktemp("asrv") / "data", ingest_workers=1).start()
    yield s
    assert s.stop() == 0, s.log()


@pytest.fixture(scope="module")
def indexed(srv, media):
    names = {}
    with srv.client(timeout=600) as fs:
        c = fs.create_collection("sound", audio=True)
        assert c.audio
        for key in ("speech", "speech2", "song", "silent"):
            r = fs.ingest_video(media[key], collection="sound", external_key=key)
            assert r.job.state == pb.INGEST_JOB_STATE_SUCCEEDED
            names[key] = r.video.name
    return names


def excerpt(media, key: str, transform: str, start: float, seconds: float):
    src = media["song_wav"] if key == "song" else media[key]
    return sources.transform(media["dir"], src, transform, start, seconds)


def test_collection_reports_audio(srv, indexed):
    with srv.client() as fs:
        assert fs.get_collection("sound").audio
        assert not fs.get_collection("default").audio
        stats = fs.stats()
        assert stats.audio_fingerprints > 3 * 8 * 10  # three soundtracks of 10 s and more
        assert 0 < stats.audio_threshold < 1
        # a video without an audio track is indexed without a soundtrack, and says so
        assert fs.get_video(indexed["silent"]).audio_seconds == 0
        assert fs.get_video(indexed["song"]).audio_seconds == pytest.approx(24.0, abs=2.5)


@pytest.mark.parametrize("transform", ["identity", "mp3_32k", "aac_48k", "volume_-6db", "resample_8k"])
def test_an_excerpt_is_found_with_its_offset(srv, media, indexed, transform):
    q = excerpt(media, "song", transform, 7.3, 10.0)
    with srv.client() as fs:
        r = fs.search_by_audio(q, collection="sound")
    assert [m.video.name for m in r.matches] == [indexed["song"]]
    m = r.matches[0]
    assert m.offset_seconds == pytest.approx(7.3, abs=0.2)
    assert m.reference_start_seconds - m.query_start_seconds == pytest.approx(m.offset_seconds)
    assert m.duration_seconds > 7.0
    assert m.score == pytest.approx(1 - 2 * m.bit_error_rate, abs=1e-6) and m.bit_error_rate < 0.3
    assert (
        r.query_duration_seconds == pytest.approx(10.0, abs=0.1) and r.query_fingerprints > 50
    )  # about 8 per second, less the analysis window


def test_a_video_query_searches_its_soundtrack(srv, media, indexed, tmp_path):
    clip = tmp_path / "clip.mp4"
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y", "-ss", "2", "-t", "8", "-i", str(media["speech"]), "-vf", "hflip", str(clip)],
        check=True,
    )
    with srv.client() as fs:
        r = fs.search_by_audio(clip, collection="sound")
    assert [m.video.name for m in r.matches] == [indexed["speech"]]
    assert r.matches[0].offset_seconds == pytest.approx(2.0, abs=0.2)


def test_unrelated_audio_finds_nothing(srv, media, indexed):
    with srv.client() as fs:
        assert list(fs.search_by_audio(media["unrelated"], collection="sound").matches) == []


def test_filters_apply(srv, media, indexed):
    q = excerpt(media, "song", "identity", 3.0, 8.0)
    with srv.client() as fs:
        assert fs.search_by_audio(q, collection="sound", exclude_videos=[indexed["song"]]).matches == []
        only = fs.search_by_audio(q, collection="sound", videos=[indexed["song"], indexed["speech"]])
        assert [m.video.name for m in only.matches] == [indexed["song"]]


def error_of(fn) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(FrameSeekError) as e:
        fn()
    return e.value.code, e.value.reason


def test_bad_queries(srv, media, indexed, tmp_path):
    short = excerpt(media, "song", "identity", 0.0, 1.5)
    with srv.client() as fs:
        assert error_of(lambda: fs.search_by_audio(media["song_wav"])) == (
            grpc.StatusCode.FAILED_PRECONDITION,
            "MODALITY_NOT_ENABLED",
        )
        assert error_of(lambda: fs.search_by_audio(media["silent"], collection="sound")) == (
            grpc.StatusCode.INVALID_ARGUMENT,
            "NO_AUDIO_STREAM",
        )
        assert error_of(lambda: fs.search_by_audio(short, collection="sound")) == (
            grpc.StatusCode.INVALID_ARGUMENT,
            "AUDIO_TOO_SHORT",
        )
        junk = tmp_path / "junk.bin"
        junk.write_bytes(b"not audio " * 500)
        assert error_of(lambda: fs.search_by_audio(junk, collection="sound"))[1] == "NOT_MEDIA"


def test_cli_search_audio_json(srv, media, indexed):
    q = excerpt(media, "speech", "mp3_64k", 1.0, 6.0)
    out = subprocess.run(
        [sys.executable, "-m", "frameseek.cli", "search-audio", str(q), "--collection", "sound", "--json"]
        + ["--server", srv.address],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    assert got["matches"][0]["video"]["name"] == indexed["speech"]


def test_delete_and_restart_keep_the_index_in_step(tmp_path, media):
    """A deleted video is gone from SearchByAudio at once; a restart rebuilds the fingerprint index
    from storage (what was acknowledged is found again, nothing deleted comes back)."""
    srv = ServerProcess(tmp_path / "data", ingest_workers=1).start()
    q = excerpt(media, "song", "mp3_32k", 5.0, 8.0)
    q2 = excerpt(media, "speech", "identity", 1.0, 6.0)
    try:
        with srv.client(timeout=600) as fs:
            fs.create_collection("sound", audio=True)
            song = fs.ingest_video(media["song"], collection="sound").video.name
            speech = fs.ingest_video(media["speech"], collection="sound").video.name
            assert [m.video.name for m in fs.search_by_audio(q, collection="sound").matches] == [song]
            fs.delete_video(song)
            assert fs.search_by_audio(q, collection="sound").matches == []
        assert srv.stop() == 0
        srv.start()
        with srv.client(timeout=600) as fs:
            assert fs.search_by_audio(q, collection="sound").matches == []
            assert [m.video.name for m in fs.search_by_audio(q2, collection="sound").matches] == [speech]
    finally:
        srv.stop()


@pytest.mark.parametrize("edit", ["black", "overlay", "mirror", "crop"])
def test_fusion_finds_a_picture_only_edit_by_its_soundtrack(srv, media, indexed, edit):
    """SearchByVideo: a copy whose picture is replaced (black) or altered keeps its soundtrack; the
    audio evidence finds it (a black picture alone would be refused as blank)."""
    clip = sources.picture_edit(media["dir"], media["song"], edit, 4.0, 9.0)
    with srv.client(timeout=300) as fs:
        r = fs.search_by_video(clip, collection="sound")
        thr = fs.stats().copy_threshold
    top = r.matches[0]
    assert top.video.name == indexed["song"]
    assert top.audio_score >= 0.5 and top.score >= thr
    assert top.score == pytest.approx(max(top.frame_score, top.score), abs=1e-6)
    (seg,) = top.audio_segments
    assert seg.reference_start_seconds - seg.query_start_seconds == pytest.approx(4.0, abs=0.2)
    if edit == "black":
        assert top.frame_score == 0 and list(top.segments) == []


def test_fusion_keeps_frame_matches_with_new_audio(srv, media, indexed, tmp_path):
    """The same picture under unrelated audio is still found by its frames (no audio evidence)."""
    clip = tmp_path / "newaudio.mp4"
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y", "-ss", "3", "-t", "9", "-i", str(media["song"]), "-i", str(media["unrelated"])]
        + ["-map", "0:v", "-map", "1:a", "-c:v", "copy", "-c:a", "aac", "-shortest", str(clip)],
        check=True,
    )
    with srv.client(timeout=300) as fs:
        r = fs.search_by_video(clip, collection="sound")
    top = r.matches[0]
    assert top.video.name == indexed["song"]
    assert top.frame_score > 0 and top.audio_score == 0 and list(top.audio_segments) == []
    assert top.score == pytest.approx(top.frame_score)
